"""Typer options generated from a settings model's fields, so that each option's type, default, help
text and range is the field's (``RunSettings``, ``ServeSettings``) and written in one place.

A field ``max_top1_drop: float = Field(0.02, ge=0.0, le=1.0, description=...)`` becomes
``--max-top1-drop <float range>`` with the description as its help, ``[default: 0.02]`` and
``[0.0<=x<=1.0]``. The option itself defaults to None and only options given on the command line
reach the model, so ``BATCH_CLASSIFY_*`` environment variables fill the rest (the model reads them).

Mapping, field → option:

- name ``run_id`` → ``--run-id``; ``names`` gives others (``--input``/``-i``, ``--cron``);
- a ``Literal`` → its values as choices (``--device <auto|cpu|cuda>``);
- ``bool`` defaulting to False → a flag (``--anon``); defaulting to True → ``--resume/--no-resume``;
- ``ge``/``le`` → the option's min/max; ``gt`` on an int → min ``gt + 1`` (on a float pydantic
  checks it and the CLI prints its message);
- a required field → a required option, or with ``required=False`` an optional one whose help says
  which environment variable fills it.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Annotated, Any, Literal, Optional

import annotated_types
import typer
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from batch_classify.settings import without_none

#: The parameter of a decorated command that receives the given options as a dict (field → value).
GIVEN = "given"


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and (not value or " " in value):
        return repr(value)
    return str(value)


def _option(model: type, name: str, field: FieldInfo, names: tuple[str, ...], required: bool) -> inspect.Parameter:
    """One command parameter (``Annotated[type, typer.Option(...)]`` with its default) for ``field``."""
    kind = without_none(field.annotation)
    flag = names[0] if names else "--" + name.replace("_", "-")
    decls = names or (flag,)
    help_text = field.description or ""
    default = None
    if field.is_required():
        if required:
            default = ...
        else:
            env = f"{model.model_config.get('env_prefix', '')}{name}".upper()
            help_text += f" [default: ${env}]"
    elif field.default_factory is None and field.default is not None and field.default is not PydanticUndefined:
        if kind is bool:
            help_text += f" [default: {flag.removeprefix('--')}]" if field.default else ""
        else:
            help_text += f" [default: {_shown(field.default)}]"
    limits: dict[str, Any] = {}
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Ge):
            limits["min"] = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            limits["max"] = constraint.le
        elif isinstance(constraint, annotated_types.Gt) and kind is int:
            limits["min"] = constraint.gt + 1
    if kind is bool:
        if field.default is True:  # --x/--no-x; None: not given
            decls = (f"{flag}/--no-{flag.removeprefix('--')}",) + decls[1:]
            annotation, default = Optional[bool], None
        else:  # a flag; False: not given
            annotation, default = bool, False
    else:
        if typing.get_origin(kind) is Literal:
            values = typing.get_args(kind)
            kind = Enum(f"{name.title().replace('_', '')}Choice", {v: v for v in values}, type=str)
        annotation = kind if default is ... else Optional[kind]
    option = typer.Option(*decls, help=help_text.strip(), show_default=False, **limits)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=inspect.Parameter.empty if default is ... else default,
                             annotation=Annotated[annotation, option])


def settings_options(
    model: type,
    fields: Iterable[str] | None = None,
    *,
    exclude: Iterable[str] = (),
    names: Mapping[str, tuple[str, ...]] | None = None,
    required: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Typer command so that it takes ``model``'s fields as options.

    The command declares a parameter :data:`GIVEN` (a dict) and its own options; the decorated
    function's signature is the generated options, in ``fields`` order (default: the model's field
    order, less ``exclude``), followed by the command's own. ``given`` holds the options given on
    the command line only (an absent flag, an unset option: not there), as the model's field
    names and values (a choice as its string).

    Args:
        names: option names of a field when not ``--kebab-name`` (``{"input": ("--input", "-i")}``).
        required: False makes a required field's option optional (the environment may fill it).

    Raises:
        KeyError: a name in ``fields`` or ``names`` is not a field of ``model``.
    """
    names = dict(names or {})
    chosen = list(model.model_fields) if fields is None else list(fields)
    chosen = [f for f in chosen if f not in set(exclude)]
    unknown = (set(chosen) | set(names)) - set(model.model_fields)
    if unknown:
        raise KeyError(f"not fields of {model.__name__}: {sorted(unknown)}")
    generated = [_option(model, f, model.model_fields[f], tuple(names.get(f, ())), required) for f in chosen]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != GIVEN]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            given = {}
            for option in generated:
                value = kwargs.pop(option.name)
                if value is not option.default:  # None, or False for a flag: not on the command line
                    given[option.name] = value.value if isinstance(value, Enum) else value
            return func(**{GIVEN: given}, **kwargs)

        params = [*generated, *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own)]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def field_environment(model: type, name: str) -> tuple[str, ...]:
    """The environment variables that fill field ``name`` of the settings ``model``, as pydantic-settings
    reads them (case-insensitively; shown upper-case): the string choices of its ``validation_alias``
    when it has one (``AWS_ENDPOINT_URL``, ``RAY_ADDRESS``), else ``env_prefix`` + the field's name."""
    from pydantic import AliasChoices

    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(dict.fromkeys(c.upper() for c in alias.choices if isinstance(c, str)))
    if isinstance(alias, str):
        return (alias.upper(),)
    return (f"{model.model_config.get('env_prefix', '')}{name}".upper(),)


def environment_epilog(
    model: type,
    *,
    environment_only: Iterable[str] = (),
    names: Mapping[str, tuple[str, ...]] | None = None,
    others: Iterable[tuple[str, str]] = (),
) -> str:
    """A command's help epilog listing every environment variable it reads, one per line.

    A field the command offers as an option shows the option it fills ("same as --batch-size"); a
    field in ``environment_only`` (no option) shows its description and default. ``others`` are
    (variable, what it does) pairs read by other code (TORCH_HOME, PREFECT_API_URL, ...). The lines
    follow click's ``\\b`` marker, so that they are not re-wrapped into one paragraph.
    """
    names = dict(names or {})
    environment_only = set(environment_only)
    rows: list[tuple[str, str]] = []
    for name, field in model.model_fields.items():
        if name in environment_only:
            if field.default_factory is not None or field.is_required():
                default = ""
            else:
                default = f" [default: {'not set' if field.default is None else _shown(field.default)}]"
            text = f"{field.description or ''}{default}"
        else:
            text = f"same as {names.get(name, ('--' + name.replace('_', '-'),))[0]}"
        rows.extend((variable, text) for variable in field_environment(model, name))
    rows.extend(others)
    width = max(len(v) for v, _ in rows)
    lines = ["Environment variables (an option given on the command line wins over its variable):", "", "\b"]
    lines += [f"{variable.ljust(width)}  {text}" for variable, text in rows]
    return "\n".join(lines)
