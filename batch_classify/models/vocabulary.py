"""Class vocabularies: index ⇄ class name (⇄ wnid for ImageNet-1k), and matching labels to classes.

Two kinds:

* **ImageNet-1k** (:func:`imagenet`): the 1000 wnids in sorted order (index = position in that
  list) and their WordNet lemmas from timm's ``ImageNetInfo`` (shipped with the timm package, no
  download); the short display names are torchvision's ImageNet category names
  (``weights.meta["categories"]``), in the same class order. Labels match a wnid, then a name or
  lemma as spelled, then a name or lemma in any case.
* **A model's own classes** (:func:`from_names`): the class names in logit order, as a model
  folder's ``config.json`` gives them (``id2label``, or timm's ``label_names``). Labels match a
  name exactly, then in any case (``_`` and runs of spaces count as one space).

A label that matches several classes at the first step that matches at all is refused, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from batch_classify.errors import PermanentError


def _spaced(name: str) -> str:
    """Underscores and runs of spaces made one space, case kept: ``great_white  shark`` → ``great white shark``."""
    return " ".join(name.replace("_", " ").split())


def _norm(name: str) -> str:
    """Lower case, underscores and runs of spaces made one space: ``Great_White shark`` → ``great white shark``."""
    return " ".join(name.replace("_", " ").casefold().split())


class LabelError(PermanentError, ValueError):
    """Labels that cannot be mapped onto the model's classes."""


class AmbiguousLabel(LabelError):
    """A label that names several of the model's classes (never guessed)."""


@dataclass(frozen=True)
class Vocabulary:
    """The classes of a classifier, in logit order.

    Attributes:
        names: display name of every class index (``"tench"``), ``num_classes`` of them.
        wnids: the WordNet id of every class index for ImageNet-1k models; None for a model's own classes.
    """

    names: tuple[str, ...]
    wnids: tuple[str, ...] | None = None
    _tiers: tuple[dict[str, set[int]], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        exact: dict[str, set[int]] = {}
        normed: dict[str, set[int]] = {}
        for index, name in enumerate(self.names):
            exact.setdefault(_spaced(name) if self.wnids else name, set()).add(index)
            normed.setdefault(_norm(name), set()).add(index)
        if self.wnids is None:
            object.__setattr__(self, "_tiers", (exact, normed))
            return
        if len(self.wnids) != len(self.names):
            raise ValueError(f"{len(self.wnids)} wnids for {len(self.names)} class names")
        lemmas = _timm_lemmas()
        wnid: dict[str, set[int]] = {}
        for index, w in enumerate(self.wnids):
            wnid.setdefault(w.lower(), set()).add(index)
            for term in lemmas.get(w, "").split(","):
                if term.strip():
                    exact.setdefault(_spaced(term), set()).add(index)  # a lemma as WordNet spells it
                    normed.setdefault(_norm(term), set()).add(index)
        object.__setattr__(self, "_tiers", (wnid, exact, normed))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def is_imagenet(self) -> bool:
        """Whether this is the ImageNet-1k vocabulary (wnids, lemmas)."""
        return self.wnids is not None

    def class_key(self, index: int) -> str:
        """The identity of a class across runs and models: its wnid for ImageNet, else its name."""
        return self.wnids[index] if self.wnids is not None else self.names[index]

    def describe(self, index: int) -> str:
        """``name (wnid)`` for ImageNet, the name otherwise."""
        return f"{self.names[index]} ({self.wnids[index]})" if self.wnids is not None else self.names[index]

    def lookup(self, label: str) -> int:
        """Class index of a label.

        ImageNet, tried in this order: a wnid (``n01440764``); the spelling of a class name as
        torchvision writes it or of a WordNet lemma (``Cardigan`` the dog, ``cardigan`` the
        sweater, ``Tinca tinca``; ``_`` for spaces); the same in any case. At each step every
        class that has the label as a name or as a lemma is a candidate: ``crane`` is
        torchvision's name of the machine and a lemma of the bird, so it names both. A model's
        own classes: the name exactly, then in any case (``_`` for spaces).

        Raises:
            LabelError: unknown label; :class:`AmbiguousLabel` for a label that several classes
                share at the first step where it matches (the candidates are named, with wnids).
        """
        key = label.strip()
        if self.wnids is not None:
            wnid, exact, normed = self._tiers
            hits = wnid.get(key.lower()) or exact.get(_spaced(key)) or normed.get(_norm(key))
        else:
            exact, normed = self._tiers
            hits = exact.get(key) or normed.get(_norm(key))
        if not hits:
            if self.wnids is not None:
                raise LabelError(f"label {label!r} is no ImageNet wnid or class name")
            raise LabelError(f"label {label!r} is none of the model's {self.num_classes} class names")
        if len(hits) > 1:
            which = ", ".join(self.describe(i) for i in sorted(hits))
            kind = "ImageNet classes" if self.wnids is not None else "of the model's classes"
            fix = "use the wnid" if self.wnids is not None else "the model's class names must differ"
            raise AmbiguousLabel(f"label {label!r} names several {kind}: {which}; {fix}")
        return next(iter(hits))

    def try_map(self, labels: set[str]) -> tuple[dict[str, int], dict[str, LabelError]]:
        """Map what maps.

        Returns:
            (label → class index for every label that maps, label → the error of every other one:
            :class:`AmbiguousLabel` where it names several classes, :class:`LabelError` where none).
        """
        mapping: dict[str, int] = {}
        problems: dict[str, LabelError] = {}
        for label in sorted(labels):
            try:
                mapping[label] = self.lookup(label)
            except LabelError as err:
                problems[label] = err
        return mapping, problems

    def map_labels(self, labels: set[str]) -> dict[str, int]:
        """Map every distinct label to a class index.

        Raises:
            LabelError: naming every label that does not map (up to 20) and how to fix it.
        """
        mapping, problems = self.try_map(labels)
        if problems:
            reasons = [str(e) for e in problems.values()]
            shown = "; ".join(reasons[:20]) + (f"; and {len(reasons) - 20} more" if len(reasons) > 20 else "")
            if self.wnids is not None:
                how = "Name folders by wnid (e.g. n01440764)"
            else:
                examples = ", ".join(repr(n) for n in self.names[:3])
                how = f"Name folders by the model's class names (e.g. {examples})"
            raise LabelError(
                f"{len(reasons)} of {len(labels)} labels do not map onto the model's classes: {shown}. "
                f"{how}, pass --labels with a path,label manifest, or --labels none for an unlabelled run."
            )
        return mapping


def from_names(names) -> Vocabulary:
    """A model's own classes, in logit order (no wnids, no lemmas)."""
    return Vocabulary(names=tuple(str(n) for n in names))


def _timm_info_file(name: str) -> str:
    """Text of one of timm's ImageNet metadata files (``timm/data/_info``), read without importing
    timm: ``import timm.data`` adds 0.38 s of start-up after torch and torchvision (development machine)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the timm package is not installed; it supplies the ImageNet wnids (pip install timm)")
    with open(os.path.join(spec.submodule_search_locations[0], "data", "_info", name), encoding="utf-8") as f:
        return f.read()


@lru_cache(maxsize=1)
def _timm_lemmas() -> dict[str, str]:
    """wnid → comma-separated WordNet lemmas, as timm's ``ImageNetInfo.index_to_description``."""
    pairs = (line.split("\t", 1) for line in _timm_info_file("imagenet_synset_to_lemma.txt").splitlines() if line)
    return {w: lemma.strip() for w, lemma in pairs}


def _torchvision_imagenet_categories() -> tuple[str, ...]:
    """torchvision's ImageNet class names (``torchvision.models._meta._IMAGENET_CATEGORIES``, the
    ``categories`` of every ImageNet weights' meta), read from the source file without importing
    torchvision: ``import torchvision`` costs 4.3 s on the 2-core development machine (it imports
    torch and torch._dynamo), while the validation step of a run whose ONNX export is cached needs
    neither (cProfile of ``steps.validate``)."""
    import ast
    import importlib.util
    import os

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the torchvision package is not installed; it supplies the ImageNet class names")
    with open(os.path.join(spec.submodule_search_locations[0], "models", "_meta.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_IMAGENET_CATEGORIES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise RuntimeError("torchvision/models/_meta.py has no _IMAGENET_CATEGORIES list")


@lru_cache(maxsize=1)
def imagenet() -> Vocabulary:
    """The ImageNet-1k vocabulary (1000 classes): wnids from timm's metadata files, names from
    torchvision's list, both read without importing either package."""
    wnids = tuple(_timm_info_file("imagenet_synsets.txt").split())
    names = _torchvision_imagenet_categories()
    if len(wnids) != 1000 or len(names) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("ImageNet class metadata from timm/torchvision is not the expected 1000 sorted wnids")
    return Vocabulary(wnids=wnids, names=names)
