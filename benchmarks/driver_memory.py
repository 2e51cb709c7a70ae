"""The driver's memory before its stage, by input size (issue 28 item 3's baseline): what ``steps.infer`` holds
for N files once the input is listed, the reusable predictions looked up, the staging writer made and the
stage's input pages written (the Ray stage's side: ``steps._run_ray_stage``), measured as the peak resident set of a fresh process doing exactly that.

Each size gets its own input, ``WORKDIR/flat-N/part-K/NNNNNNN.JPEG``: hard links to the shared photos, 1,000 per
folder, no labels (``--labels none``: the nightly production case). The process runs the product's own
``steps.list_dataset`` and the part of ``steps.infer`` before the stage, prints its peak RSS and the
seconds of each part, and exits; nothing is decoded.

Usage: ``python -m benchmarks.driver_memory --files 100000 1000000 [--workdir /tmp/bc-mem] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import SHARED

#: Files per folder of the inputs.
PER_FOLDER = 1000

CHILD = r"""
import json, resource, sys, time
from batch_classify.run import steps
from batch_classify.models.registry import get_spec
from batch_classify.run.results import StagingWriter
from batch_classify.settings import RunSettings
from batch_classify.run.staged_parts import write_stage_input

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

settings = RunSettings(input=sys.argv[1], output=sys.argv[2], model="efficientnet_lite0", labels="none", run_id="mem")
vocabulary = get_spec(settings.model).vocabulary()
out = {"start_mb": rss_mb()}
t = time.perf_counter()
listing = steps.list_dataset(settings)
out["list_seconds"] = time.perf_counter() - t
out["after_listing_mb"] = rss_mb()
t = time.perf_counter()
writer = StagingWriter(settings.run_uri(), run_id=settings.run_id, model=settings.model, vocabulary=vocabulary, label_map={},
                       storage=settings.storage_options(), records=listing.records,
                       partition_keys=listing.partition_keys, meta={}, rows_per_file=settings.checkpoint_rows)
todo = listing.records.without([])
pages = write_stage_input(todo, run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=settings.storage_options(),
                          batch_size=64)  # what the Ray stage reads (steps._run_ray_stage)
out["prepare_seconds"] = time.perf_counter() - t
out["after_stage_input_mb"] = rss_mb()
out["resident_mb"] = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
out["files"] = len(listing.records)
print(json.dumps(out))
"""


def prepare(workdir: Path, n: int) -> Path:
    """``workdir/flat-n``: n hard links to the shared photos, :data:`PER_FOLDER` per folder (made once)."""
    root = workdir / f"flat-{n}"
    if (root / ".complete").exists():
        return root
    photos = sorted(SHARED.glob("*.JPEG"))
    for i in range(n):
        folder = root / f"part-{i // PER_FOLDER:05d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        os.link(photos[i % len(photos)], folder / f"{i:07d}.JPEG")
    (root / ".complete").touch()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", default="/tmp/bc-mem")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    rows = []
    print("| files | listing s | peak RSS after listing MB | after the stage's input MB | bytes per file (over the start) | resident at the end MB |\n|---|---|---|---|---|---|")
    for n in args.files:
        started = time.perf_counter()
        root = prepare(workdir, n)
        made = time.perf_counter() - started
        r = subprocess.run([sys.executable, "-c", CHILD, str(root), str(workdir / "out")], capture_output=True, text=True,
                           check=True)
        row = json.loads(r.stdout.strip().splitlines()[-1]) | {"prepare_input_seconds": made}
        rows.append(row)
        per_file = (row["after_stage_input_mb"] - row["start_mb"]) * 2**20 / row["files"]
        print(f"| {row['files']:,} | {row['list_seconds']:.1f} | {row['after_listing_mb']:.0f} | "
              f"{row['after_stage_input_mb']:.0f} | {per_file:.0f} | {row['resident_mb']:.0f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
