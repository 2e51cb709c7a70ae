"""Short runs in a loop while the cores are busy, with Ray's metrics on and off: crashes out of N runs,
and the busy CPU-seconds of a quiet run (issue 27 item 8).

A fresh-clone CI run once lost a nightly-like run to a segmentation fault in Ray's C++ metrics exporter
(``opentelemetry::v1::sdk::metrics::MetricCollector::Produce`` ← ``MeterContext::ForEachMeter``, a
thread of the CLI's own process: its Ray driver). Nothing in this job reads Ray's metrics, so a local
Ray now starts without them (``RunSettings.ray_metrics`` off: ``enable_metrics_collection`` false).
This loop compares the two, taking turns:

- ``metrics-off``: ``batch-classify run`` as it is now;
- ``metrics-on``: the same with ``BATCH_CLASSIFY_RAY_METRICS=1`` (Ray's default, as before);

first ``--quiet-repeats`` runs of each on an idle machine, recording the machine's busy CPU-seconds
(``/proc/stat``: every process) and wall time; then ``--runs`` runs of each while ``--burners``
processes spin on the cores, recording every run's exit status. A crash is a run killed by a signal
(negative status, or 128 + N), or whose output names a segmentation fault or the watchdog's "died".

Usage (from the project root, beside ../shared)::

    .venv/bin/python -m benchmarks.ray_crash_loop --runs 40 --quiet-repeats 5 --workdir /tmp/bc-crash \\
        --out benchmarks/results/ray-metrics-crash-loop

Writes the table to stdout and, with ``--out FILE``, to FILE.md and FILE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import median, prepare_input, run_measured

ARMS = {"metrics-off": {}, "metrics-on": {"BATCH_CLASSIFY_RAY_METRICS": "1"}}
#: Words in a run's output that say it died of a signal rather than ended.
CRASH_WORDS = ("Segmentation fault", "SIGSEGV", "core dumped", "the command (pid")


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return user + nice + system + irq + softirq


def _run(arm: str, input_dir: Path, workdir: Path, k: int) -> dict:
    env = {"PREFECT_HOME": str(workdir / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **ARMS[arm]}
    cmd = [sys.executable, "-m", "batch_classify", "run", "-i", str(input_dir), "-o", str(workdir / "out" / arm),
           "--model", "efficientnet_lite0", "--run-id", f"{arm}-{k}", "-q"]
    before = _busy_ticks()
    m = run_measured(cmd, env=env, interval=3600.0)
    busy = (_busy_ticks() - before) / os.sysconf("SC_CLK_TCK")
    crashed = m.returncode < 0 or m.returncode > 128 or any(w in m.output for w in CRASH_WORDS)
    return {"arm": arm, "returncode": m.returncode, "crashed": crashed, "seconds": round(m.seconds, 2),
            "busy_cpu_seconds": round(busy, 2), "tail": m.output[-400:] if crashed or m.returncode else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="loaded runs per arm")
    parser.add_argument("--quiet-repeats", type=int, default=5, help="runs per arm on an idle machine, for the CPU")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--burners", type=int, default=2, help="processes spinning on the cores during the loaded runs")
    parser.add_argument("--workdir", default="/tmp/bc-crash")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    input_dir = prepare_input(workdir, args.images)
    _run("metrics-off", input_dir, workdir, -1)  # untimed: the Prefect database, the file cache
    quiet = [_run(arm, input_dir, workdir, k) for k in range(args.quiet_repeats) for arm in ARMS]
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burners)]
    try:
        loaded = []
        for k in range(args.runs):
            for arm in ARMS:
                loaded.append(_run(arm, input_dir, workdir, 1000 + k))
                print(json.dumps(loaded[-1]), flush=True)
    finally:
        for b in burners:
            b.kill()
    rows = []
    for arm in ARMS:
        q = [r for r in quiet if r["arm"] == arm]
        lo = [r for r in loaded if r["arm"] == arm]
        rows.append({
            "arm": arm, "quiet_runs": len(q), "busy_cpu_seconds_median": median([r["busy_cpu_seconds"] for r in q]),
            "wall_seconds_median": median([r["seconds"] for r in q]), "loaded_runs": len(lo),
            "crashed": sum(r["crashed"] for r in lo), "failed_otherwise": sum(bool(r["returncode"]) and not r["crashed"] for r in lo),
            "loaded_wall_seconds_median": median([r["seconds"] for r in lo]),
        })
    lines = [f"{args.images} images, efficientnet_lite0; quiet: {args.quiet_repeats} runs per arm; loaded: {args.runs} runs "
             f"per arm beside {args.burners} spinning processes; arms taking turns ({time.strftime('%Y-%m-%d')})", "",
             "| arm | busy CPU-s, quiet (median) | wall s, quiet (median) | loaded runs | crashed | failed otherwise | wall s, loaded (median) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['busy_cpu_seconds_median']:.2f} | {r['wall_seconds_median']:.2f} | {r['loaded_runs']} | "
              f"{r['crashed']} | {r['failed_otherwise']} | {r['loaded_wall_seconds_median']:.2f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(f"{args.out}.md").write_text(text + "\n")
        Path(f"{args.out}.json").write_text(json.dumps({"rows": rows, "quiet": quiet, "loaded": loaded}, indent=1))


if __name__ == "__main__":
    main()
