"""The model alone on pre-decoded uint8 tensors: the most this machine can classify per second.

Decodes ``--images`` photos once with the model's preset, then times the same engine the
model actors use (``batch_classify.stage.engines``) over them at the pipeline's batch size, with
every core given to the model. Prints one JSON object: images/s per runtime (median of
``--repeats`` passes after one warm-up pass; the runtimes take turns, pass by pass).

Besides ``onnx`` and ``torch`` (the engines as shipped), ``--runtimes`` takes variants that
undo one choice each, to measure what it is worth: ``onnx-spin`` (spinning intra-op threads),
``onnx-whole`` and ``torch-whole`` (the whole batch in one call instead of calls of 8),
``torch-channels-last`` (``channels_last``, as on CUDA, instead of NCHW-contiguous), ``torch-no-grad``
(``torch.no_grad`` instead of ``torch.inference_mode``). On a GPU: ``torch-cuda`` (the torch engine as
a GPU actor builds it: CUDA, ``channels_last``, pinned host memory, bf16 autocast; the whole batch in
one call, copies to and from the device included), ``torch-cuda-fp32`` (the same without autocast) and
``torch-cuda-pin-per-batch`` (a fresh pinned copy of each batch instead of one reused pinned buffer),
``torch-cuda-compile`` (``torch.compile``, its default mode, as ``--compile`` does) and
``torch-cuda-max-autotune`` (``mode="max-autotune"``); the first round (warm-up) includes the compile.
With several runtimes, ``top1_agree_NAME`` is the share of the first batch where NAME's top-1 equals the first runtime's.
``--random-weights`` times models whose weights are not on this machine.

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
from batch_classify.models.registry import get_spec


def _variant(name: str, args, threads: int):
    """The engine for ``name``: ``onnx`` or ``torch`` as shipped, or one of them with one choice undone."""
    import torch

    from batch_classify.stage.engines import OnnxEngine, build_engine, onnx_model
    from batch_classify.storage import StorageOptions

    base = name.split("-")[0]
    if name.startswith("torch-cuda"):
        engine = build_engine(get_spec(args.model), args.weights, StorageOptions(), runtime="torch", device="cuda",
                              num_threads=threads)
        if name == "torch-cuda-fp32":
            engine.autocast = False
        elif name == "torch-cuda-pin-per-batch":  # before the reused pinned buffer
            model = engine.model

            def call(images):
                x = torch.from_numpy(images.copy()).pin_memory().to("cuda", non_blocking=True)  # Ray's batches are read-only
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return model(x).float()

            engine.logits_tensor = call
        elif name == "torch-cuda-compile":  # --compile as shipped: torch.compile's default mode
            engine.model = torch.compile(engine.model)
        elif name == "torch-cuda-max-autotune":
            engine.model = torch.compile(engine.model, mode="max-autotune")
        elif name != "torch-cuda":
            raise SystemExit(f"unknown runtime variant {name!r}")
        return engine
    if name == "onnx-spin":
        return OnnxEngine(onnx_model(get_spec(args.model), args.weights, StorageOptions()), num_threads=threads, spin=True)
    engine = build_engine(get_spec(args.model), args.weights, StorageOptions(), runtime=base, num_threads=threads)
    if name.endswith("-whole"):
        engine.micro_batch = 1 << 30
    elif name == "torch-channels-last":
        engine.model = engine.model.to(memory_format=torch.channels_last)
    elif name == "torch-no-grad":
        model = engine.model

        def call(images):
            with torch.no_grad():
                return torch.cat([model(torch.from_numpy(part)) for part in np.array_split(images, max(1, len(images) // 8))])

        engine.logits_tensor = call
    elif name not in ("onnx", "torch"):
        raise SystemExit(f"unknown runtime variant {name!r}")
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runtimes", default="onnx,torch")
    parser.add_argument("--random-weights", action="store_true", help="random weights (timing only)")
    parser.add_argument("--workdir", default="/tmp/batch-classify-bench", help="where random weights are saved")
    args = parser.parse_args()
    if args.random_weights and not args.weights:
        from benchmarks.common import random_weights

        args.weights = random_weights(Path(args.workdir), args.model)

    from batch_classify.models.registry import get_spec

    spec = get_spec(args.model)
    paths = sorted(Path(args.input).rglob("*.JPEG"))[: args.images]
    start = time.perf_counter()
    images = np.stack([spec.preset(p.read_bytes()) for p in paths])
    decode_ms = 1000 * (time.perf_counter() - start) / max(1, len(images))
    threads = os.cpu_count()
    out = {"images": len(images), "batch_size": args.batch_size, "threads": threads,
           "decode_ms_per_image": round(decode_ms, 2)}  # one core, read + preset, the first pass over the files
    names = args.runtimes.split(",")
    built = {name: _variant(name, args, threads) for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats + 1):  # alternate the variants; the first round warms up
        for name, engine in built.items():
            start = time.perf_counter()
            for i in range(0, len(images), args.batch_size):
                engine(images[i : i + args.batch_size])
            if rep:
                rates[name].append(len(images) / (time.perf_counter() - start))
    out.update({name: round(statistics.median(r), 1) for name, r in rates.items()})
    if len(built) > 1:  # each variant's top-1 against the first's, on the first batch (a faster variant must agree)
        first, *others = built
        ref = built[first](images[: args.batch_size]).argmax(1)
        for name in others:
            out[f"top1_agree_{name}"] = round(float((built[name](images[: args.batch_size]).argmax(1) == ref).mean()), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
