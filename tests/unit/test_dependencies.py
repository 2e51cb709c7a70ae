"""What a run installs and what only the demo needs (issue 14): scikit-image is the `demo` extra, the
demo without it says so in one line, and scripts/setup.sh stops when pip fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_scikit_image_is_the_demo_extra_not_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("scikit-image")]
    assert [d for d in project["optional-dependencies"]["demo"] if d.startswith("scikit-image")]
    assert [d for d in project["dependencies"] if d.startswith("psutil")]  # the watchdog's, at run time


def test_demo_without_scikit_image_is_one_line(tmp_path):
    """scikit-image made unimportable the way an absent package is (sys.modules entry None)."""
    code = ("import sys; sys.modules['skimage'] = None; sys.argv[0] = 'batch-classify'; "
            "from batch_classify.cli.main import app; app()")
    r = subprocess.run([sys.executable, "-c", code, "demo", "--output", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == ["error: the demo needs scikit-image's photos: pip install 'batch-classify[demo]'"]
    assert not (tmp_path / "out" / "demo-input").exists() or not any((tmp_path / "out" / "demo-input").iterdir())


def test_setup_script_stops_when_pip_fails(tmp_path):
    """A venv without pip: the first `pip install` fails, and the script stops there with pip's
    message and a non-zero exit (it went on, `|| true`, to its import check)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=120, env=env)
    said = r.stdout + r.stderr
    assert r.returncode != 0
    assert said.count("No module named pip") == 1, said  # the first install, and nothing after it
    assert "Traceback" not in said and "ready:" not in said
