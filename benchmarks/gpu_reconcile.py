"""Issue 28 item 5: reconcile the GPU stage's figures before chasing a GPU target.

The contradiction (BENCHMARKS.md, H200, 2026-12-01): ResNet-152's stage at 0.80 of the model alone while
``nvidia-smi`` showed the GPU busy 13-18 % of the time; EfficientNet-Lite0's stage (2,361 images/s) slower
than ResNet-152's (3,934) on the same files, at 0.23 of its model alone. At most one of those readings can
be right. Three candidate explanations, each checked by one measurement here:

1. *The busy figure is wrong*: ``nvidia-smi`` sampled every 250 ms reports the share of its own sample
   window in which any kernel ran. It is read here from NVML every ``--every`` seconds (50 ms) in this
   process, and averaged over the stage's steady state only (first output batch to last), not over the
   actors' start-up.
2. *The model-alone figure is not the stage's model*: ``gpu_check.sh`` timed the model alone at batch 128,
   the stage runs batches of 256 (bf16 autocast, channels_last, images decoded on the GPU). Timed here at the
   stage's batch size, from a uint8 tensor already on the GPU (what the actor gets from nvJPEG) and from
   host memory (what it gets from CPU decoding).
3. *The actors are host-bound*: each actor's batches are timed by part (decode on the device, the model,
   the scores, the rest of ``__call__``) with CUDA synchronised at each boundary, and one actor records a
   torch profiler trace of one steady-state batch (``trace-<pid>-<batch>.json.gz``, open in Perfetto). Ray Data's
   per-operator stats (``DataContext.enable_auto_log_stats``) say whether the reading tasks or the actors
   are the stage's slowest operator.

Usage (on the lent machine; gpu_check.sh's part ``reconcile-<model>``)::

    python -m benchmarks.gpu_reconcile INPUT --model resnet152 --weights W.pth --out DIR \\
        [--batch-size 256] [--actors 4] [--decode device] [--images 12000]

``--device cpu`` is the dry run on a machine without a GPU (torch on the CPU, psutil's CPU busy in place of
NVML). Writes ``DIR/reconcile-<model>.json`` and prints a summary; the figures it needs to settle the
question are the steady-state GPU busy, the model alone at the stage's batch, and each actor's time by part.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from batch_classify.stage.inference import Classifier
from batch_classify.models.registry import get_spec

#: Where the actors write their timings and the trace (set by main, read in each actor's process).
OUT_ENV = "GPU_RECONCILE_OUT"
#: The steady-state batch one actor profiles (after the first three, which include warm-up): one trace,
#: gzipped, so that it fits what the lent machine sends back.
PROFILED_BATCHES = range(4, 5)


def _sync() -> None:
    """Wait for the GPU's queued work (nothing on the CPU), so that a part's time is its own."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TimedCall:
    """``fn``, its seconds added to ``timed[name]`` at each call (the GPU synchronised before and after)."""

    def __init__(self, fn, name: str, timed: dict[str, float]) -> None:
        self.fn, self.name, self.timed = fn, name, timed

    def __call__(self, *args, **kwargs):
        _sync()
        started = time.perf_counter()
        result = self.fn(*args, **kwargs)
        _sync()
        self.timed[self.name] = self.timed.get(self.name, 0.0) + time.perf_counter() - started
        return result


class TimedClassifier(Classifier):
    """The product's model actor, its ``__call__`` timed by part; the first actor to claim it also
    profiles :data:`PROFILED_BATCHES` with the torch profiler."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.out = Path(os.environ[OUT_ENV])
        self.n = 0
        self.parts: list[dict] = []
        try:  # one profiling actor: the first to create the claim file
            fd = os.open(self.out / "profiler.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            self.profiling = True
        except FileExistsError:
            self.profiling = False
        self._wrap()

    def _wrap(self) -> None:
        self.timed: dict[str, float] = {}
        self._logits = TimedCall(self._logits, "model", self.timed)
        if self.decoder is not None:
            self.decoder = TimedCall(self.decoder, "decode", self.timed)

    def __call__(self, batch):
        self.n += 1
        self.timed.clear()
        profile = self.profiling and self.n in PROFILED_BATCHES
        prof = None
        if profile:
            import torch

            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            prof = torch.profiler.profile(activities=activities, record_shapes=False)
            prof.__enter__()
        _sync()
        t = time.perf_counter()
        out = super().__call__(batch)
        _sync()
        total = time.perf_counter() - t
        if prof is not None:
            prof.__exit__(None, None, None)
            prof.export_chrome_trace(str(self.out / f"trace-{os.getpid()}-{self.n}.json.gz"))
        self.parts.append({"batch": self.n, "images": len(batch["path"]), "total": total, **self.timed,
                           "profiled": profile, "at": time.time()})
        (self.out / f"actor-{os.getpid()}.json").write_text(json.dumps(self.parts))
        return out


class Busy:
    """The device's busy share sampled every ``every`` seconds (NVML on a GPU, psutil's CPU share otherwise)."""

    def __init__(self, device: str, every: float) -> None:
        self.samples: list[tuple[float, float]] = []
        self.every = every
        self._stop = threading.Event()
        self.source = "psutil cpu_percent"
        self._read = self._cpu
        if device == "cuda":
            try:
                import pynvml
            except ImportError:
                from ray._private.thirdparty import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._read = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            self.source = "NVML utilization.gpu"

    @staticmethod
    def _cpu() -> float:
        import psutil

        return psutil.cpu_percent(interval=None)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((time.time(), self._read()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float, end: float) -> float:
        inside = [v for t, v in self.samples if start <= t <= end]
        return float(np.mean(inside)) if inside else float("nan")


def model_alone(model: str, weights: str | None, device: str, batch: int, crop: int, n: int) -> dict:
    """The product's engine alone at the stage's batch size: from a uint8 tensor on the device, and from host memory."""
    import torch

    from batch_classify.stage.engines import build_engine
    from batch_classify.storage import StorageOptions

    engine = build_engine(get_spec(model), weights, StorageOptions(), runtime="torch", device=device)
    host = np.random.default_rng(0).integers(0, 255, (batch, crop, crop, 3), dtype=np.uint8)
    on_device = torch.from_numpy(host).to(device)
    rates = {}
    for name, images in (("from_device", on_device), ("from_host", host)):
        for _ in range(3):
            engine.logits_tensor(images).float().cpu()
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        done = 0
        while done < n:
            engine.logits_tensor(images).float().cpu()
            done += batch
        rates[name] = done / (time.perf_counter() - t)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--model", default="resnet152")
    parser.add_argument("--weights")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--decode", default="device")
    parser.add_argument("--images", type=int, default=0, help="files of INPUT to use (0: all)")
    parser.add_argument("--alone-images", type=int, default=4096)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    import batch_classify.stage.inference as inference
    from batch_classify.models.registry import get_spec
    from batch_classify.stage.plan import ClusterPlan, plan_cluster
    from batch_classify.stage.ray_start import start_ray
    from batch_classify.storage import StorageOptions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profiler.claim").unlink(missing_ok=True)
    for old in out.glob("actor-*.json"):
        old.unlink()
    os.environ[OUT_ENV] = str(out.resolve())
    paths = sorted(str(p) for p in Path(args.input).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    paths = paths[: args.images] if args.images else paths
    records = [{"path": p, "label": None} for p in paths]
    start_ray(None, num_cpus=None, verbose=False)
    DataContext.get_current().enable_auto_log_stats = True
    stats: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stats.append(record.getMessage())

    logger = logging.getLogger("gpu_reconcile")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    if args.device == "cuda":
        plan = plan_cluster(ray.cluster_resources(), device="cuda", num_actors=args.actors, runtime="torch",
                            batch_size=args.batch_size, decode="gpu" if args.decode == "device" else "cpu",
                            preset=get_spec(args.model).preset)
    else:  # the dry run: the GPU plan's shape on the CPU
        plan = ClusterPlan("cpu", args.actors, 0.0, 1, "torch", args.batch_size, cpus_per_actor=0.5, decode=args.decode)
    inference.Classifier = TimedClassifier  # run_stage builds its actors from this name: the timed subclass
    outputs: list[float] = []
    with Busy(args.device, args.every) as busy:
        t0 = time.time()
        result = inference.run_stage(records, spec=get_spec(args.model), weights=args.weights, storage=StorageOptions(),
                                     plan=plan, on_batch=lambda b: outputs.append(time.time()), logger=logger)
        t1 = time.time()
    ray.shutdown()
    steady = (outputs[0], outputs[-1]) if len(outputs) > 1 else (t0, t1)
    actors = {p.name: json.loads(p.read_text()) for p in out.glob("actor-*.json")}
    parts = [b for batches in actors.values() for b in batches[2:] if not b["profiled"]]  # steady batches only
    by_part = {k: float(np.sum([b.get(k, 0.0) for b in parts])) for k in ("total", "decode", "model")}
    alone = model_alone(args.model, args.weights, args.device, args.batch_size, get_spec(args.model).preset.crop_size,
                        args.alone_images)
    summary = {
        "model": args.model, "device": args.device, "plan": repr(plan), "images": len(records),
        "stage_seconds": result.wall_seconds, "steady_images_per_second": result.steady_images_per_second,
        "busy_source": busy.source, "busy_steady_mean": busy.mean(*steady), "busy_whole_mean": busy.mean(t0, t1),
        "busy_samples": len(busy.samples),
        "model_alone_images_per_second": alone,
        "stage_over_model_alone_from_device": result.steady_images_per_second / alone["from_device"],
        "actor_steady_seconds_by_part": by_part,
        "actor_share_model": by_part["model"] / by_part["total"] if by_part["total"] else float("nan"),
        "actor_share_decode": by_part["decode"] / by_part["total"] if by_part["total"] else float("nan"),
        "actor_images_per_second_inside_call": sum(b["images"] for b in parts) / by_part["total"] if by_part["total"] else float("nan"),
        "actors": len(actors), "traces": sorted(p.name for p in out.glob("trace-*.json*")),
        "ray_data_stats": stats,
    }
    (out / f"reconcile-{args.model}.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k != "ray_data_stats"}, indent=2, default=str))
    print("\n".join(stats[-40:]))


if __name__ == "__main__":
    main()
