"""Whole runs at scale on the default path (issue 28 item 3): the wall time and the driver's peak memory of
``batch-classify run`` over N files, where the data path (listing, reading, decoding, staging, the commit)
dominates and the model costs little.

**The benchmark model** (``WORKDIR/tiny-model``, written here, never used for accuracy): an ONNX model folder
in the layout ``optimum-cli export onnx`` writes, whose network is a 32×32 input, a global average pool and a
3 → 10 linear layer with fixed weights (10 made-up classes). Its preprocessing (resize 32, crop 32) lets
Pillow decode each JPEG at 1/8 scale (DCT scaling), so an image costs its read and a small decode: what is
measured is the pipeline around the model, not EfficientNet.

Inputs: ``WORKDIR/flat-N/part-K/NNNNNNN.JPEG``, hard links to the shared photos, 1,000 per folder, no labels
(``--labels none``: the nightly production case); made by :func:`benchmarks.driver_memory.prepare` if missing.

Each size runs once in a fresh process, ``/usr/bin/time`` giving the driver's peak RSS (the CLI's process:
Prefect's flow, the listing, the staging writer and the Ray driver; Ray's workers and the temporary Prefect
API are other processes).

Usage: ``python -m benchmarks.scale_run --files 100000 1000000 [--workdir /tmp/bc-mem] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.driver_memory import prepare

#: The benchmark model's input side, pixels.
TINY_SIZE = 32
TINY_CLASSES = tuple(f"class-{i}" for i in range(10))


def write_tiny_model(folder: Path) -> Path:
    """Write the benchmark model folder (see the module's docstring) and return it."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, len(TINY_CLASSES)))
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, TINY_SIZE, TINY_SIZE),), str(folder / "model.onnx"), dynamo=False,
                      opset_version=18, input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}})
    (folder / "config.json").write_text(json.dumps({
        "model_type": "benchmark_tiny", "id2label": {str(i): n for i, n in enumerate(TINY_CLASSES)},
        "label2id": {n: i for i, n in enumerate(TINY_CLASSES)}}, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "MobileNetV1ImageProcessor", "do_resize": True, "size": {"shortest_edge": TINY_SIZE},
        "resample": 2, "do_center_crop": True, "crop_size": {"height": TINY_SIZE, "width": TINY_SIZE},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }, indent=2))
    return folder


def run_once(input_dir: Path, out: Path, model: Path, run_id: str, extra: list[str]) -> dict:
    """One ``batch-classify run -q`` under ``/usr/bin/time``: wall seconds, driver peak RSS (MB), counts."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "TIME wall %e s, max RSS %M KB", sys.executable, "-m", "batch_classify", "run", "-q",
           "-i", str(input_dir), "-o", str(out), "--model", str(model), "--labels", "none", "--run-id", run_id, *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    found = re.search(r"TIME wall ([\d.]+) s, max RSS (\d+) KB", done.stderr)
    report = json.loads((out / run_id / "report.json").read_text()) if (out / run_id / "report.json").exists() else {}
    return {
        "rc": done.returncode, "wall_seconds": round(wall, 1), "driver_max_rss_mb": round(int(found.group(2)) / 1024) if found else None,
        "n_listed": report.get("n_listed"), "n_predicted": report.get("n_predicted"), "n_failed": report.get("n_failed"),
        "executor": report.get("executor"), "stage_seconds": report.get("stage_seconds"),
        "tail": "" if done.returncode == 0 else (done.stdout + done.stderr)[-1500:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bc-mem"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("extra", nargs="*", help="more options of `batch-classify run` (after --)")
    args = parser.parse_args(argv)
    model = write_tiny_model(args.workdir / "tiny-model")
    results = []
    for n in args.files:
        input_dir = prepare(args.workdir, n)
        result = {"files": n, **run_once(input_dir, args.workdir / "out", model, f"scale-{n}", args.extra)}
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
