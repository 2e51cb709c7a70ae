"""The layers' arrows point one way (issue 13): no import cycle among the product's modules, and
nothing that travels in a Ray Job reaches Prefect. Read from the source (every ``import``, at module
level or inside a function), so a lazy import cannot hide a loop."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The product's packages: the plain library and the Prefect layers beside it.
PACKAGES = ("batch_classify", "tasks", "flows", "deployments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module (of ``known``, or a third-party top-level name) that ``path`` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # ``from pkg import mod`` imports the module ``pkg.mod`` where one exists
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            found.add(target)
    found.discard(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(graph.get(node, ()))
    return seen


def test_the_walk_sees_a_lazy_import_loop(tmp_path, monkeypatch):
    """The check itself can fail: two modules importing each other, one lazily, are a cycle."""
    graph = {"a": {"b"}, "b": {"a"}, "c": set()}
    assert _cycle(graph) in (["a", "b", "a"], ["b", "a", "b"])
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from batch_classify import job\n    import prefect\n")
    assert _imports(source, "batch_classify.m", {"batch_classify.job", "batch_classify"}) == {"batch_classify.job", "prefect"}


def test_no_import_cycle_among_the_products_modules():
    graph = _graph()
    assert len(graph) > 20  # the walk found the modules
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_what_travels_in_a_ray_job_reaches_no_prefect():
    """The Ray Job's entry point (``batch_classify.stage_job``) and everything it imports, directly or
    not, stay free of Prefect and of the Prefect layers (``tasks``, ``flows``, ``deployments``)."""
    graph = _graph()
    reached = _reach(graph, "batch_classify.stage_job")
    assert "batch_classify.job" in reached and "batch_classify.inference" in reached
    assert not reached & {"prefect", "tasks", "flows", "deployments"}, sorted(reached & {"prefect", "tasks", "flows", "deployments"})


def test_the_library_imports_prefect_only_in_the_command_line():
    """Within ``batch_classify`` only the command line (which starts flows) touches Prefect."""
    graph = _graph()
    users = sorted(
        name for name, deps in graph.items()
        if name.startswith("batch_classify") and deps & {"prefect", "tasks", "flows", "deployments"}
    )
    assert users == ["batch_classify.cli"]


def test_the_report_package_sits_below_the_steps_and_its_numbers_draw_nothing():
    """``batch_classify.report`` (issue 13) is below ``job``: nothing in it imports ``job`` (``job.report_step``
    calls ``report.build``). Its numbers and text (``metrics``, ``compare``, ``format``, ``markdown``) reach
    neither the pictures, the page nor storage: every fact is computed there once, drawn elsewhere."""
    graph = _graph()
    package = sorted(name for name in graph if name.startswith("batch_classify.report."))
    assert {"batch_classify.report.metrics", "batch_classify.report.build", "batch_classify.report.html"} <= set(package)
    assert not [name for name in package if "batch_classify.job" in _reach(graph, name)]
    drawing = {"batch_classify.report.figures", "batch_classify.report.gallery", "batch_classify.report.html",
               "batch_classify.report.build", "batch_classify.storage", "matplotlib", "PIL"}
    for name in ("metrics", "compare", "format", "markdown"):
        reached = _reach(graph, f"batch_classify.report.{name}")
        assert not reached & drawing, (name, sorted(reached & drawing))
