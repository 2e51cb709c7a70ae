"""Killing the CLI takes its children with it: Prefect's temporary API server and Ray's daemons,
agents and workers exit too (batch_classify/cli/watchdog.py). Real processes, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers.photos import arrange_in_wnid_folders

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog acts on Linux only")

#: Seconds the killed CLI's processes get to be gone (SIGTERM, GRACE = 5 s, SIGKILL, with slack).
DEADLINE = 20.0


def _alive(procs: dict) -> dict:
    """The recorded processes (keyed by pid and start time) that still run, zombies counting as gone."""
    alive = {}
    for key, proc in procs.items():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive[key] = proc
        except psutil.Error:
            pass
    return alive


def _descendants(pid: int, into: dict) -> None:
    try:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                into.setdefault((p.pid, p.create_time()), p)
            except psutil.Error:
                pass
    except psutil.Error:
        pass


def _describe(proc) -> str:
    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:100]}"
    except psutil.Error:
        return str(proc.pid)


def _wait_gone(procs: dict, deadline: float = DEADLINE) -> dict:
    end = time.monotonic() + deadline
    while (alive := _alive(procs)) and time.monotonic() < end:
        time.sleep(0.25)
    return alive


def _kill_all(procs: dict) -> None:
    """Hygiene: whatever survived a failing test is not left on the machine."""
    for proc in _alive(procs).values():
        try:
            proc.kill()
        except psutil.Error:
            pass


@linux_only
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("executor", ["ray", "local"])
def test_kill_9_of_the_cli_takes_prefect_and_ray_with_it(photos, tmp_path, executor):
    src = arrange_in_wnid_folders(photos[:40], tmp_path / "in")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "", "COLUMNS": "200",
           "RAY_TMPDIR": ray_tmp}
    script = Path(sys.executable).with_name("batch-classify")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "batch_classify"]
    log = tmp_path / "cli.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [*cli, "run", "--input", str(src), "--output", str(tmp_path / "out"), "--model", "efficientnet_lite0",
             "--run-id", "orphans", "--batch-size", "4", "--num-cpus", "2", "--quiet", "--executor", executor],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )
    recorded: dict = {}
    try:
        wanted = ("uvicorn", "raylet", "gcs_server", "ray::DashboardAgent", "ray::RuntimeEnvAgent") if executor == "ray" else (
            "uvicorn", "batch_classify.cli.watchdog")
        end = time.monotonic() + 300
        while True:
            _descendants(proc.pid, recorded)
            cmdlines = " ".join(_describe(p) for p in _alive(recorded).values())
            if all(w in cmdlines for w in wanted):
                break
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"the CLI ended (status {proc.returncode}) or took too long before starting "
                            f"{[w for w in wanted if w not in cmdlines]}: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        time.sleep(2)  # every process is at least one snapshot interval old
        _descendants(proc.pid, recorded)
        assert proc.poll() is None, f"the run finished before it could be killed: {log.read_text()[-2000:]}"

        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        survivors = _wait_gone(recorded)
        assert not survivors, (
            f"{len(survivors)} of {len(recorded)} processes the CLI started still run {DEADLINE:.0f} s after kill -9: "
            + "; ".join(_describe(p) for p in survivors.values())
        )
        print(f"{len(recorded)} processes gone {time.monotonic() - killed_at:.1f} s after kill -9")
        message = [line for line in log.read_text().splitlines() if "died; stopped" in line]
        assert len(message) == 1 and f"(pid {proc.pid})" in message[0] and "uvicorn" in message[0], log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_all(recorded)
        shutil.rmtree(ray_tmp, ignore_errors=True)


#: A stand-in for the CLI: starts the watchdog, then a daemon-like child in its own session that has a
#: child of its own (as Ray's raylet has agents and workers), prints the pids, and exits or sleeps.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from batch_classify.cli import watchdog
    w = watchdog.start()
    child = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\\n"
         "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\\n"
         "print(g.pid, flush=True)\\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    grandchild = int(child.stdout.readline())
    if sys.argv[1] == "orphan":  # a daemon whose parent exits at once, never seen in a snapshot as a descendant
        time.sleep(1.5)
        daemon = subprocess.run(
            [sys.executable, "-c", "import subprocess, sys\\n"
             "print(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True,\\n"
             "                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
            stdout=subprocess.PIPE, text=True, check=True,
        )
        print(w.pid, child.pid, grandchild, int(daemon.stdout), flush=True)
        time.sleep(600)
    print(w.pid, child.pid, grandchild, flush=True)
    time.sleep(1.5)  # at least one snapshot of the watchdog
    if sys.argv[1] == "sleep":
        time.sleep(600)
""")


def _start_parent(tmp_path, how: str) -> subprocess.Popen:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _procs(pids) -> dict:
    out = {}
    for pid in pids:
        p = psutil.Process(pid)
        out[(pid, p.create_time())] = p
    return out


@linux_only
def test_a_killed_parent_takes_its_descendants_but_nothing_else(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # not the parent's descendant
    parent = _start_parent(tmp_path, "sleep")
    recorded: dict = {}
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 3, parent.stderr.read() if parent.poll() is not None else pids
        recorded = _procs(pids)
        time.sleep(1.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        survivors = _wait_gone(recorded, 15)
        assert not survivors, [_describe(p) for p in survivors.values()]
        assert bystander.poll() is None
        stderr = parent.stderr.read()
        assert f"batch-classify: the command (pid {parent.pid}) died; stopped 2 processes it had started" in stderr, stderr
    finally:
        _kill_all(recorded)
        bystander.kill()
        bystander.wait()
        if parent.poll() is None:
            parent.kill()


@linux_only
def test_a_daemon_started_just_before_the_kill_is_found_by_its_inherited_token(tmp_path):
    """Ray's raylet dies with the CLI, and a worker it has just started is re-parented to init before
    any snapshot sees it: the watchdog finds it by the token in its environment."""
    parent = _start_parent(tmp_path, "orphan")
    recorded: dict = {}
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 4, parent.stderr.read() if parent.poll() is not None else pids
        recorded = _procs(pids)
        assert psutil.Process(pids[3]).ppid() != parent.pid  # already left the parent's tree
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        survivors = _wait_gone(recorded, 15)
        assert not survivors, [_describe(p) for p in survivors.values()]
    finally:
        _kill_all(recorded)
        if parent.poll() is None:
            parent.kill()


@linux_only
def test_a_normal_exit_stops_what_is_left_quietly_and_leaves_no_watchdog(tmp_path):
    parent = _start_parent(tmp_path, "exit")
    recorded: dict = {}
    try:
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 3, parent.stderr.read() if parent.poll() is not None else pids
        recorded = _procs(pids)  # the watchdog, and a child and grandchild the parent leaves running at exit
        _, err = parent.communicate(timeout=60)
        assert parent.returncode == 0, err
        # The exiting parent waited for its watchdog's sweep: nothing of it runs once it has returned.
        running = _alive(recorded)
        assert not running, [_describe(p) for p in running.values()]
        assert "died" not in err, err
    finally:
        _kill_all(recorded)
        if parent.poll() is None:
            parent.kill()


def test_other_platforms_start_nothing(monkeypatch):
    from batch_classify.cli import watchdog
    monkeypatch.setattr(watchdog, "_started", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert watchdog.start() is None
