"""The layers' arrows point one way (issue 13): no import cycle among the product's modules, and
nothing that travels in a Ray Job reaches Prefect. Read from the source (every ``import``, at module
level or inside a function), so a lazy import cannot hide a loop. Also the packaging that keeps it so
(issue 13): one installed namespace, and a Ray Job's copy of the package without its Prefect layers."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import batch_classify
from batch_classify.report.html import TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
#: The product's packages by folder: the plain library, and the Prefect layers that pyproject.toml's
#: package-dir maps from the repository's top-level folders into it (flows/ -> batch_classify.flows).
FOLDERS = {"batch_classify": "batch_classify", **{folder: name for name, folder in SETUPTOOLS["package-dir"].items()}}
#: Prefect itself and the Prefect layers of the product.
LAYERS = tuple(f"batch_classify.{layer}" for layer in batch_classify.PREFECT_LAYERS)


def _prefect_side(names: set[str]) -> set[str]:
    return {n for n in names if n == "prefect" or any(n == layer or n.startswith(layer + ".") for layer in LAYERS)}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts[0] = FOLDERS.get(parts[0], parts[0])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))}


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
    source.write_text("def f():\n    from batch_classify.run import steps\n    import prefect\n")
    assert _imports(source, "batch_classify.m", {"batch_classify.run.steps", "batch_classify"}) == {"batch_classify.run.steps", "prefect"}


def test_no_import_cycle_among_the_products_modules():
    graph = _graph()
    assert len(graph) > 20  # the walk found the modules
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_what_travels_in_a_ray_job_reaches_no_prefect():
    """The Ray Job's entry point (``batch_classify.run.stage_job``) and everything it imports, directly or
    not, stay free of Prefect and of the Prefect layers (``batch_classify.tasks``, ``.flows``, ``.deployments``)."""
    graph = _graph()
    assert {"batch_classify.flows.classify", "batch_classify.tasks", "batch_classify.deployments"} <= set(graph)
    reached = _reach(graph, "batch_classify.run.stage_job")
    assert "batch_classify.run.steps" in reached and "batch_classify.stage.inference" in reached
    assert not _prefect_side(reached), sorted(_prefect_side(reached))


def test_the_library_imports_prefect_only_in_the_command_line():
    """Within ``batch_classify`` only the command line (which starts flows) touches Prefect."""
    graph = _graph()
    users = sorted(
        name for name, deps in graph.items()
        if name.startswith("batch_classify") and not _prefect_side({name}) and _prefect_side(deps)
    )
    assert users == ["batch_classify.cli.main", "batch_classify.cli.prefect_setup"]
    assert _prefect_side(graph["batch_classify.tasks"]) and _prefect_side(graph["batch_classify.flows.classify"])


def test_pyproject_installs_one_namespace_with_every_package_folder():
    """The Prefect layers install inside ``batch_classify`` (no top-level ``tasks``/``flows``), and the
    written-out ``packages`` list names every package folder (discovery cannot see a remapped one: a new
    subpackage missing from the list would be missing from the wheel)."""
    assert sorted(SETUPTOOLS["package-dir"]) == sorted(LAYERS)
    found = {_module_name(init.parent / "__init__.py") for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert sorted(SETUPTOOLS["packages"]) == sorted(found)
    assert all(name.split(".")[0] == "batch_classify" for name in SETUPTOOLS["packages"])


def _python_files_importing(folder: Path, root: Path) -> dict[str, set[str]]:
    """Module name (relative to ``root``) → the Prefect-side modules it imports, for each .py under ``folder``."""
    known = {".".join(p.relative_to(root).with_suffix("").parts) for p in folder.rglob("*.py")}
    known |= {name.removesuffix(".__init__") for name in known}
    found = {}
    for path in folder.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        found[name] = _prefect_side(_imports(path, name, known))
    return found


@pytest.mark.parametrize("layout", ["source checkout", "installed"])
def test_the_ray_jobs_package_copy_holds_no_prefect(tmp_path, layout):
    """What ``cluster._package_copy`` ships as a Ray Job's working_dir: the library, none of its Prefect
    layers, from a source checkout and from an installed package (where they sit inside it). The only
    modules of the copy that name Prefect are the command line's (lazily; the job never imports them)."""
    from batch_classify.run.cluster import _package_copy

    source = None
    if layout == "installed":  # the wheel's layout: site-packages/batch_classify/{flows,tasks,deployments}
        source = tmp_path / "site" / "batch_classify"
        shutil.copytree(ROOT / "batch_classify", source, ignore=shutil.ignore_patterns("__pycache__"))
        for name, folder in SETUPTOOLS["package-dir"].items():
            shutil.copytree(ROOT / folder, source / name.rpartition(".")[2], ignore=shutil.ignore_patterns("__pycache__"))
        # the check can fail: this layout does hold Prefect imports
        assert any(_python_files_importing(source, source.parent).values())
    copy = _package_copy(tmp_path / "job", source) / "batch_classify"
    assert (copy / "run" / "stage_job.py").is_file() and (copy / "run" / "steps.py").is_file()
    assert (copy / "demo_labels.csv").is_file()
    assert (copy / "report" / "templates" / TEMPLATE).is_file()  # steps imports report.html; it renders from it
    assert not [p for p in copy.iterdir() if p.name in batch_classify.PREFECT_LAYERS]
    imports = _python_files_importing(copy, copy.parent)
    assert "batch_classify.run.stage_job" in imports
    assert {k: v for k, v in imports.items() if v} == {"batch_classify.cli.main": {"prefect"}, "batch_classify.cli.prefect_setup": {"prefect"}}


def test_the_wheel_holds_one_top_level_package(tmp_path):
    """``pip wheel`` of the project: ``batch_classify`` (with its flows, tasks and deployments) and its
    metadata, no top-level ``tasks``, ``flows`` or ``deployments`` to collide with a user's packages."""
    pytest.importorskip("setuptools.command.bdist_wheel")  # setuptools >= 70.1, as the build needs
    project = tmp_path / "project"  # a clean copy: a build/ left in the checkout cannot leak into the wheel
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(project)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = tmp_path.glob("batch_classify-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"batch_classify", f"{wheel.name.split('-py')[0]}.dist-info"}
    for module in ("flows/classify.py", "tasks/__init__.py", "deployments/__init__.py", "run/stage_job.py", "demo_labels.csv"):
        assert f"batch_classify/{module}" in names, module
    # The page's templates are package data (pyproject.toml's package-data): without them report.html cannot render.
    templates = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "batch_classify/report/templates").iterdir())
    assert f"batch_classify/report/templates/{TEMPLATE}" in templates
    assert [t for t in templates if t not in names] == []


def test_the_report_package_sits_below_the_steps_and_its_numbers_draw_nothing():
    """``batch_classify.report`` (issue 13) is below ``job``: nothing in it imports ``job`` (``steps.report``
    calls ``report.build``). Its numbers and text (``metrics``, ``compare``, ``format``, ``markdown``) reach
    neither the pictures, the page nor storage: every fact is computed there once, drawn elsewhere."""
    graph = _graph()
    package = sorted(name for name in graph if name.startswith("batch_classify.report."))
    assert {"batch_classify.report.metrics", "batch_classify.report.build", "batch_classify.report.html"} <= set(package)
    assert not [name for name in package if "batch_classify.run.steps" in _reach(graph, name)]
    drawing = {"batch_classify.report.figures", "batch_classify.report.gallery", "batch_classify.report.html",
               "batch_classify.report.build", "batch_classify.storage", "matplotlib", "PIL"}
    for name in ("metrics", "compare", "format", "markdown"):
        reached = _reach(graph, f"batch_classify.report.{name}")
        assert not reached & drawing, (name, sorted(reached & drawing))


#: Lines past which a module must say, at the top of its docstring, why it is not split (issue 13).
MAX_LINES = 400
REASON = "Longer than 400 lines:"


def test_long_modules_say_why_they_are_not_split():
    """A module over ``MAX_LINES`` lines carries ``Longer than 400 lines: <why>`` in its docstring."""
    unexplained = []
    for name, path in _modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{name} ({text.count(chr(10))} lines)")
    assert not unexplained, f"split these, or say why at the top ('{REASON} …'): {', '.join(unexplained)}"


#: Ray's logging switches (``ray.init``'s keywords, the C++ core's variable, Ray Data's logger) and the
#: Jobs API's log calls: only ``ray_logs`` and ``job_log`` use them (issue 14, "Logs").
RAY_LOG_OWNERS = {"batch_classify.stage.ray_logs": ("log_to_driver", "logging_level", "configure_logging",
                                              "RAY_BACKEND_LOG_LEVEL", "ray.data"),
                  "batch_classify.run.job_log": ("get_job_logs", "tail_job_logs")}


def _ray_log_switches(path: Path) -> list[str]:
    """Keyword arguments, attributes and string literals (docstrings aside) in ``path`` naming one of them."""
    names = {n for owned in RAY_LOG_OWNERS.values() for n in owned}
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in names:
            found.append(node.arg)
        elif isinstance(node, ast.Attribute) and node.attr in names:
            found.append(node.attr)
        elif isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
            found.append(node.value)
    return found


def test_only_ray_logs_tunes_rays_logging_and_only_job_log_reads_a_jobs_log(tmp_path):
    probe = tmp_path / "m.py"
    probe.write_text('"""ray.data"""\nray.init(log_to_driver=False)\nlogging.getLogger("ray.data")\nc.get_job_logs(i)\n')
    assert sorted(_ray_log_switches(probe)) == ["get_job_logs", "log_to_driver", "ray.data"]  # the check can fail
    elsewhere = {name: hits for name, path in _modules().items() if name not in RAY_LOG_OWNERS
                 if (hits := _ray_log_switches(path))}
    assert not elsewhere, elsewhere
    for owner, names in RAY_LOG_OWNERS.items():  # and the owners do use theirs
        found = set(_ray_log_switches(_modules()[owner]))
        assert found and found <= set(names), (owner, found)


#: The names inside a run folder (``batch_classify.run.layout``): no other module spells them.
RUN_FOLDER_NAMES = ("_SUCCESS", "_staging", "_jobs", "_LEASE", "_attempt.json", "failures.parquet",
                    "report.json", "report.md", "report.html", ".pending")


def _spelled_run_names(path: Path) -> list[str]:
    """String literals (docstrings aside) in ``path`` that name a part of the run folder."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found += [f"{path.name}:{node.lineno}: {name}" for name in RUN_FOLDER_NAMES if name in node.value]
    return found


def test_only_the_run_layout_spells_the_run_folders_names(tmp_path):
    """One owner of the run folder (issue 13): results, reuse, lease, cluster and the report ask a
    ``RunLayout``; none spells ``_SUCCESS``, ``_staging`` or a report's file name."""
    probe = tmp_path / "m.py"
    probe.write_text('"""docstring: _SUCCESS is fine here."""\nx = "a/_staging/b"\n')
    assert _spelled_run_names(probe) == ["m.py:2: _staging"]  # the check can fail
    spelled = [hit for name, path in _modules().items() if name.startswith("batch_classify") and name != "batch_classify.run.layout"
               for hit in _spelled_run_names(path)]
    assert not spelled, spelled


def test_the_local_stage_and_the_ray_job_submission_do_not_import_each_other():
    """``job`` runs the stage on a local (or joined) Ray; ``cluster`` submits it as a Ray Job, whose
    entry point (``stage_job``) calls ``job`` and reads its request with ``cluster``. Neither of the two imports the other (issue 13)."""
    graph = _graph()
    assert "batch_classify.run.cluster" not in _reach(graph, "batch_classify.run.steps")
    assert "batch_classify.run.steps" not in _reach(graph, "batch_classify.run.cluster")
    assert {"batch_classify.run.steps", "batch_classify.run.cluster"} <= graph["batch_classify.run.stage_job"]


def test_only_the_demo_imports_scikit_image():
    """scikit-image is the `demo` extra (issue 14): nothing a run imports may need it."""
    graph = _graph()
    assert sorted(name for name, deps in graph.items() if "skimage" in deps) == ["batch_classify.cli.demo"]
    assert "batch_classify.cli.demo" not in _reach(graph, "batch_classify.flows.classify")


def test_only_the_table_module_imports_deltalake_and_only_when_writing():
    """``deltalake`` (the ``--table`` writer) is imported by ``batch_classify.run.table`` alone, inside the
    function that writes: the Ray Job's code imports ``steps`` → ``table`` but never writes a table, so a
    cluster without ``deltalake`` still runs the stage."""
    graph = _graph()
    users = sorted(name for name, deps in graph.items() if "deltalake" in deps)
    assert users == ["batch_classify.run.table"]
    assert "batch_classify.run.table" in _reach(graph, "batch_classify.run.stage_job")
    tree = ast.parse(_modules()["batch_classify.run.table"].read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not [n for n in top_level if "deltalake" in ast.unparse(n)], "import deltalake inside the writing function"


def test_the_predictions_columns_are_declared_only_in_columns():
    """Issue 29: one module owns the predictions' and failures' schemas and the model's outputs. It is a
    leaf (nothing of the package below it), and no other module builds a schema from its column names: a
    ``pa.schema([...])`` or ``pa.field(...)`` naming a column the model or the run fills (the listing's
    ``path``, ``label`` and ``content_id`` are the listing's too: the Ray Job's listing file has them)."""
    from batch_classify.columns import PREDICTIONS

    graph = _graph()
    assert not {m for m in graph["batch_classify.columns"] if m.startswith("batch_classify")}
    names = {c.name for c in PREDICTIONS if c.source != "listing"}
    spelled = {}
    for name, path in _modules().items():
        if name == "batch_classify.columns":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("schema", "field")
                    and any(isinstance(c, ast.Constant) and c.value in names for c in ast.walk(node))):
                spelled.setdefault(name, []).append(node.lineno)
    assert not spelled, spelled


#: Where a run's model is resolved (issue 29 item 3): the entry points, each once. The validation step is
#: the flow's (its ``Validation.spec`` is what the later steps take); ``stage_job`` is the Ray Job's;
#: ``cli.startup`` warms the caches ahead of the flow; ``cli.main`` describes a model (``batch-classify
#: models``); ``report.build``'s ``rerender_report`` draws a committed run's report again.
MODEL_ENTRIES = {"batch_classify.run.steps": 1, "batch_classify.run.stage_job": 1, "batch_classify.cli.startup": 1,
                 "batch_classify.cli.main": 2, "batch_classify.report.build": 1}


def _get_spec_calls(path: Path) -> int:
    return sum(1 for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)
               and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get_spec")


def test_the_model_is_resolved_only_at_the_entry_points(tmp_path):
    """Issue 29 item 3: every layer below an entry point takes the ``ModelSpec`` it was given (a model
    folder on S3 is read once per run, and every step sees the same folder); none looks it up again."""
    probe = tmp_path / "m.py"
    probe.write_text("from x import get_spec\nspec = get_spec('a')\nother = registry.get_spec('b')\n")
    assert _get_spec_calls(probe) == 2  # the check can fail
    calls = {name: n for name, path in _modules().items() if name.startswith("batch_classify")
             and name != "batch_classify.models.registry" and (n := _get_spec_calls(path))}
    assert calls == MODEL_ENTRIES


#: The sub-packages of ``batch_classify`` and what each may import of the package besides itself
#: (issue 29; ARCHITECTURE.md's table). The leaves (``LEAVES``) import only leaves; ``settings`` also reads
#: the defaults it does not own from their owners (``SETTINGS_OWNERS``).
LEAVES = {"batch_classify", "batch_classify.errors", "batch_classify.storage", "batch_classify.columns",
          "batch_classify.listing", "batch_classify.listed", "batch_classify.settings"}
SETTINGS_OWNERS = {"batch_classify.stage.capacity", "batch_classify.models.preprocess"}
MAY_IMPORT = {
    "batch_classify.models": set(),
    "batch_classify.stage": {"batch_classify.models"},
    "batch_classify.report": {"batch_classify.models", "batch_classify.stage", "batch_classify.run"},
    "batch_classify.run": {"batch_classify.models", "batch_classify.stage", "batch_classify.report"},
    "batch_classify.cli": {"batch_classify.models", "batch_classify.stage", "batch_classify.run", "batch_classify.report",
                           "batch_classify.flows", "batch_classify.deployments"},
}


def _subpackage(module: str) -> str | None:
    return next((p for p in (*MAY_IMPORT, *LAYERS) if module == p or module.startswith(p + ".")), None)


def test_each_subpackage_imports_only_the_layers_below_it():
    """Nothing under ``stage/`` imports ``run/``, ``report/`` or ``cli/`` (it travels in a Ray Job); ``models/``
    imports only the leaves; nothing but the command line (and the Prefect layers above it) imports ``cli/``;
    the leaves import leaves. ``report`` and ``run`` import each other's modules (a run's step writes the
    report; the report reads the run's files), never in a cycle of modules (the cycle test)."""
    crossings = []
    for module, imported in _graph().items():
        if not module.startswith("batch_classify"):
            continue
        own = _subpackage(module)
        for target in imported:
            if not target.startswith("batch_classify") or target in LEAVES:
                if module in LEAVES and target.startswith("batch_classify") and target not in LEAVES:
                    crossings.append((module, target))
                continue
            theirs = _subpackage(target)
            if module in LEAVES:
                if not (module == "batch_classify.settings" and target in SETTINGS_OWNERS):
                    crossings.append((module, target))
            elif own in MAY_IMPORT and theirs != own and theirs not in MAY_IMPORT[own]:
                crossings.append((module, target))
            elif own is None and module not in LEAVES and module != "batch_classify.__main__":
                crossings.append((module, "(a module outside every sub-package)"))
    assert not crossings, sorted(crossings)


def test_the_subpackage_rule_sees_a_crossing(tmp_path, monkeypatch):
    """The rule above can fail: a stage module importing the run's steps is a crossing."""
    graph = _graph()
    graph["batch_classify.stage.plan"] = graph["batch_classify.stage.plan"] | {"batch_classify.run.steps"}
    monkeypatch.setitem(globals(), "_graph", lambda: graph)
    with pytest.raises(AssertionError, match="batch_classify.stage.plan"):
        test_each_subpackage_imports_only_the_layers_below_it()
