"""The test suite's own layout (issue 13): tests/unit holds what runs without Ray, a Prefect server, an S3
server or a port; tests/integration the rest; shared code is the ``helpers`` package, never ``conftest``;
the shared photos' folder is ``--photos``; the docs name test files that exist."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.photos import DEFAULT_PHOTOS, missing_reason

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
UNIT, INTEGRATION = TESTS / "unit", TESTS / "integration"
#: conftest's fixtures that start Ray, Prefect's test server or moto's S3 server (``target`` does for its S3 case).
INTEGRATION_FIXTURES = {"ray_local", "prefect_harness", "s3_endpoint", "s3_dataset", "target"}
#: Modules (and their submodules) that start those, or serve on a port.
INTEGRATION_MODULES = ("ray", "moto", "boto3", "prefect.testing", "playwright", "helpers.s3_proxy")


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a`` and ``a.b``), at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _fixtures_used(path: Path) -> set[str]:
    """Of ``INTEGRATION_FIXTURES``, those ``path`` asks for: as function parameters, or by name in a call
    (``request.getfixturevalue("s3_endpoint")``, ``pytest.mark.usefixtures("ray_local")``)."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            used |= {a.arg for a in node.args.args + node.args.kwonlyargs}
        elif isinstance(node, ast.Call):
            used |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return used & INTEGRATION_FIXTURES


def test_tests_live_in_unit_or_integration():
    assert not sorted(p.name for p in TESTS.glob("test_*.py")), "put test files in tests/unit or tests/integration"
    assert sorted(UNIT.glob("test_*.py")) and sorted(INTEGRATION.glob("test_*.py"))
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names)), "test file names must be unique (pytest's default import mode)"


def test_nothing_imports_from_conftest():
    offenders = [str(p.relative_to(TESTS)) for p in sorted(TESTS.rglob("*.py")) if "conftest" in _imported(p)]
    assert not offenders, f"import from helpers.<module> (or use a fixture): {offenders}"


def test_unit_tests_start_no_server(tmp_path):
    """No unit test asks for Ray, Prefect's test server or an S3 server, nor imports what starts them."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("from moto.server import ThreadedMotoServer\ndef test_a(ray_local, tmp_path):\n"
                     "    request.getfixturevalue('s3_endpoint')\n")
    assert _fixtures_used(probe) == {"ray_local", "s3_endpoint"} and "moto.server" in _imported(probe)  # the check can fail
    found = {}
    for path in sorted(UNIT.glob("*.py")):
        modules = {m for m in _imported(path) if any(m == x or m.startswith(x + ".") for x in INTEGRATION_MODULES)}
        if modules or _fixtures_used(path):
            found[path.name] = sorted(modules | _fixtures_used(path))
    assert not found, f"move these to tests/integration: {found}"


def test_a_test_module_imports_test_modules_of_its_own_folder_only():
    """pytest puts a test file's own folder on ``sys.path``; another folder's is there only when collected first."""
    wrong = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for module in _imported(path):
            top = module.split(".")[0]
            if top.startswith("test_") and not (path.parent / f"{top}.py").is_file():
                wrong.append(f"{path.relative_to(TESTS)} imports {top}")
    assert not wrong, wrong


def test_the_docs_name_test_files_that_exist():
    """``tests/...py`` named in the docs, configuration and comments of the project exist."""
    sources = [*REPO.glob("*.md"), REPO / "pyproject.toml", *(REPO / ".ci").glob("*"), *(REPO / "docker").glob("*"),
               *(REPO / "scripts").glob("*"),
               *(p for folder in ("batch_classify", "flows", "tasks", "deployments", "benchmarks", "tests")
                 for p in (REPO / folder).rglob("*.py"))]
    missing = []
    for source in sources:
        if source.is_file() and source.name != "requirements.lock":
            for name in set(re.findall(r"\btests/[\w/]+\.py\b", source.read_text(errors="replace"))):
                if not (REPO / name).is_file():
                    missing.append(f"{source.relative_to(REPO)}: {name}")
    assert not missing, missing


def test_the_photos_default_to_the_shared_folder_beside_the_project(tmp_path):
    assert DEFAULT_PHOTOS == REPO.parent / "shared" / "imagenet-sample"
    assert str(tmp_path / "nowhere") in missing_reason(tmp_path / "nowhere") and "--photos" in missing_reason(tmp_path)


def test_the_photos_option_points_the_fixtures_elsewhere(tmp_path):
    """``pytest --photos DIR``: the ``photos`` fixture lists DIR's JPEGs; a missing DIR skips, naming it.
    Run in a pytest of its own over a copy of conftest.py and helpers/ (about 2 s)."""
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    shutil.copytree(TESTS / "helpers", tmp_path / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "test_probe.py").write_text(
        "def test_probe(photos, photos_dir):\n"
        "    assert [p.name for p in photos] == ['n01440764_1.JPEG', 'n01443537_2.JPEG']\n"
        "    assert photos_dir.name == 'mine'\n"
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("n01443537_2.JPEG", "n01440764_1.JPEG", "notes.txt"):
        (mine / name).write_bytes(b"")

    def pytest_run(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
             "--photos", str(folder), "test_probe.py"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )

    found = pytest_run(mine)
    assert found.returncode == 0 and "1 passed" in found.stdout, found.stdout + found.stderr
    gone = pytest_run(tmp_path / "gone")
    assert gone.returncode == 0 and "1 skipped" in gone.stdout, gone.stdout + gone.stderr
    assert missing_reason(tmp_path / "gone") in gone.stdout, gone.stdout
