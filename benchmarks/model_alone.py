"""The model alone on pre-decoded uint8 tensors: the most this machine can classify per second.

Decodes ``--images`` photos once with the model's preset, then times the same engine the
model actors use (``batch_classify.engines``) over them at the pipeline's batch size, with
every core given to the model. Prints one JSON object: images/s per runtime (median of
``--repeats`` passes after one warm-up pass).

Usage: ``python -m benchmarks.model_alone INPUT_DIR [--model NAME] [--batch-size N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtimes", default="onnx,torch")
    args = parser.parse_args()

    from batch_classify.engines import build_engine
    from batch_classify.models import get_spec
    from batch_classify.storage import StorageOptions

    spec = get_spec(args.model)
    paths = sorted(Path(args.input).rglob("*.JPEG"))[: args.images]
    images = np.stack([spec.preset(p.read_bytes()) for p in paths])
    threads = os.cpu_count()
    out = {"images": len(images), "batch_size": args.batch_size, "threads": threads}
    for runtime in args.runtimes.split(","):
        engine = build_engine(args.model, args.weights, StorageOptions(), runtime=runtime, num_threads=threads)
        rates = []
        for rep in range(args.repeats + 1):
            start = time.perf_counter()
            for i in range(0, len(images), args.batch_size):
                engine(images[i : i + args.batch_size])
            if rep:  # the first pass warms up
                rates.append(len(images) / (time.perf_counter() - start))
        out[runtime] = round(statistics.median(rates), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
