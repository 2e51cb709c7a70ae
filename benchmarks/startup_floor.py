"""A short run's CPU floor: the busy CPU-seconds of ``batch-classify run`` over 10 files, and where they go.

On the 2-core development machine a run over 10 files keeps both cores busy from its start to its end
(issue 15). Its wall time cannot then fall below (busy CPU-seconds) / (cores), however its start-up is
overlapped; only less work makes it shorter. This benchmark runs, taking turns:

- ``ours-ray``: ``batch-classify run … -q --executor ray``, the stage on a local Ray;
- ``ours-local``: ``--executor local``, the stage in the CLI's own process (what ``auto`` picks for 10
  files; until issue 28 this was a what-if, ``benchmarks/without_ray.py``);

and records for each run its wall time and the whole machine's busy, idle and stolen CPU-seconds from
``/proc/stat`` (every process, no sampler running). With ``--breakdown``, one more run of each, untimed,
samples every process's CPU time every 0.1 s and groups the run's processes by kind.

Usage (from the project root, beside ../shared)::

    .venv/bin/python -m benchmarks.startup_floor --repeats 5 --breakdown --workdir /tmp/bc-bench \\
        --out benchmarks/results/startup-floor-10

Writes the table to stdout and, with ``--out FILE``, to FILE.md and FILE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil

from benchmarks.common import (
    IMPORT_PROBE,
    LOOP_ADDITIONS,
    import_seconds,
    median,
    prepare_input,
    python_loop_seconds,
    run_measured,
    warm_file_cache,
)
from benchmarks.compare import OVERHEAD_FILES
from benchmarks.compare import _command as compare_command
from batch_classify.settings import default_cache_dir

VARIANTS = ("ours-ray", "ours-local")
#: Kinds of a run's processes, by a text in the process's name, then in its command line (first match);
#: the run's own process is "CLI" and its unmatched descendants "other". Ray names its workers
#: ``ray::<what they run>``; the raylet's command line names the worker script, hence names first.
KINDS = (
    ("Prefect temporary API", ("uvicorn",)),
    ("watchdog", ("batch_classify.cli.watchdog",)),
    ("Ray daemons", ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnv", "dashboard.py", "log_monitor.py",
                     "monitor.py")),
    ("Ray model actor", ("ray::MapWorker",)),
    ("Ray Data helper actors", ("ray::_StatsActor", "ray::_Autoscal", "ray::ActorLocation")),
    ("Ray task workers", ("ray::IDLE", "ray::MapBatches", "ray::ReadBatch", "default_worker.py")),
)


def _command(variant: str, args: argparse.Namespace, input_dir: Path, out: Path, run_id: str) -> tuple[list[str], dict]:
    """``benchmarks.compare``'s command and environment for ``variant`` (one kept Prefect home under ``--workdir``)."""
    return compare_command(variant, args, input_dir, out, None, run_id)


def _cpu_ticks() -> dict[str, int]:
    """The machine's CPU time so far from ``/proc/stat``, in ticks: busy (user, nice, system, irq,
    softirq), idle (idle, iowait) and steal (taken by the hypervisor)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def _timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; its wall seconds and the machine's busy, idle and stolen CPU-seconds meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks()
    m = run_measured(cmd, env=env, interval=3600.0)  # one memory sample only: nothing else runs meanwhile
    after = _cpu_ticks()
    if m.returncode:
        raise RuntimeError(f"{cmd[2]} failed ({m.returncode}):\n{m.output[-4000:]}")
    return {"seconds": m.seconds, **{f"{k}_cpu_seconds": (after[k] - before[k]) / tick for k in before}}


def _kind(proc: psutil.Process, root: int) -> str | None:
    """The kind of ``proc`` (:data:`KINDS`); None where it can no longer be read (exiting)."""
    if proc.pid == root:
        return "CLI (flow, Prefect client, Ray driver)"
    try:
        texts = (proc.name(), " ".join(proc.cmdline()))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for text in texts:
        for kind, marks in KINDS:
            if any(mark in text for mark in marks):
                return kind
    return "other"


def _breakdown(cmd: list[str], env: dict, interval: float = 0.1) -> dict[str, float]:
    """CPU-seconds of the run's processes by kind (:data:`KINDS`), sampled every ``interval`` seconds
    (a process's last ``interval`` before it exits is lost); "sampler" is this process's own."""
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: dict[int, tuple[str, float]] = {}
    own = psutil.Process().cpu_times()
    while True:
        for p in psutil.process_iter(["ppid"]):
            if p.pid not in tree and p.pid != proc.pid and p.info["ppid"] not in tree and p.info["ppid"] != proc.pid:
                continue
            try:
                t = p.cpu_times()
                # Again each time: Ray renames a worker once it has a job. An exiting process may show
                # no command line: it keeps the kind it had.
                kind = _kind(p, proc.pid)
                if kind in (None, "other"):
                    kind = tree.get(p.pid, (kind or "other",))[0]
                tree[p.pid] = (kind, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        if proc.poll() is not None:
            break
        time.sleep(interval)
    if proc.returncode:
        raise RuntimeError(f"{cmd[2]} failed ({proc.returncode}) in the breakdown run")
    kinds: dict[str, float] = {}
    for kind, seconds in tree.values():
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    mine = psutil.Process().cpu_times()
    kinds["sampler"] = mine.user + mine.system - own.user - own.system
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--breakdown", action="store_true", help="one more, untimed run of each, sampled by process")
    parser.add_argument("--workdir", default="/tmp/batch-classify-bench")
    parser.add_argument("--out", help="write FILE.md and FILE.json")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    input_dir = prepare_input(workdir, OVERHEAD_FILES)
    out = workdir / "out" / "floor"
    cores = os.cpu_count() or 1
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    speed = {"loop": [python_loop_seconds()], "import": [import_seconds()]}

    def run(variant: str, run_id: str, timed: bool = True) -> dict:
        warm_file_cache(input_dir, workdir / "prefect-home", Path(default_cache_dir()))
        shutil.rmtree(out, ignore_errors=True)
        cmd, env = _command(variant, args, input_dir, out, run_id)
        return _timed(cmd, env) if timed else {"cpu_seconds_by_kind": _breakdown(cmd, env)}

    for variant in VARIANTS:  # untimed: Prefect's database, the ONNX export cache
        run(variant, "warm-up")
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for rep in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(run(variant, f"floor-{rep}"))
            r = runs[variant][-1]
            print(f"[{rep}] {variant}: {r['seconds']:.2f} s, busy {r['busy_cpu_seconds']:.1f} CPU-s, "
                  f"idle {r['idle_cpu_seconds']:.1f}, steal {r['steal_cpu_seconds']:.1f}", flush=True)
    breakdown = {v: run(v, "floor-breakdown", timed=False)["cpu_seconds_by_kind"] for v in VARIANTS} if args.breakdown else {}
    speed["loop"].append(python_loop_seconds())
    speed["import"].append(import_seconds())

    lines = [
        f"Run {started} on {cores} cores: `batch-classify run` over {OVERHEAD_FILES} files ({input_dir}), model {args.model}, "
        f"{args.repeats} alternating repeats, one kept Prefect home; medians (each run in brackets).",
        f"Core speed: {LOOP_ADDITIONS:,} Python additions took {speed['loop'][0]:.2f} s before and "
        f"{speed['loop'][-1]:.2f} s after; a fresh `{IMPORT_PROBE}` {speed['import'][0]:.2f} s and "
        f"{speed['import'][-1]:.2f} s.",
        "",
        f"| variant | wall s | busy CPU-s (whole machine) | floor: busy / {cores} cores, s | idle CPU-s | stolen CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for variant, rs in runs.items():
        def col(key: str) -> str:
            return f"{median([r[key] for r in rs]):.2f} ({', '.join(f'{r[key]:.1f}' for r in rs)})"
        floor = median([r["busy_cpu_seconds"] / cores for r in rs])
        lines.append(f"| {variant} | {col('seconds')} | {col('busy_cpu_seconds')} | {floor:.2f} | "
                     f"{col('idle_cpu_seconds')} | {col('steal_cpu_seconds')} |")
    if breakdown:
        kinds = list(dict.fromkeys(k for b in breakdown.values() for k in b))
        lines += ["", "CPU-seconds by process, one untimed run of each, sampled every 0.1 s:", "",
                  "| process | " + " | ".join(VARIANTS) + " |", "|---|" + "---|" * len(VARIANTS)]
        for kind in kinds:
            lines.append(f"| {kind} | " + " | ".join(f"{breakdown[v].get(kind, 0.0):.2f}" for v in VARIANTS) + " |")
        lines.append("| total | " + " | ".join(f"{sum(breakdown[v].values()):.2f}" for v in VARIANTS) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(table)
        raw = {"args": vars(args), "started": started, "cores": cores, "runs": runs, "breakdown": breakdown,
               "python_loop_seconds": speed["loop"], "import_seconds": speed["import"]}
        Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
