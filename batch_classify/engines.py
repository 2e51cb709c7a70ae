"""Inference engines: what turns a uint8 image batch into logits inside a model actor.

Two runtimes, chosen at run time (``--runtime``):

* ``onnx`` — ONNX Runtime on the CPU. The PyTorch model, with the
  normalisation folded in front of it, is exported to ONNX in memory
  (TorchScript-based exporter, about 0.6 s for EfficientNet-Lite0) and checked
  against PyTorch on a fixed input before use. Measured on the 2-core
  development machine (EfficientNet-Lite0, 2 threads): 352 images/s against
  123 for PyTorch eager; see ``BENCHMARKS.md``.
* ``torch`` — PyTorch eager under ``torch.inference_mode``; on CUDA with
  ``channels_last``, pinned host memory, non-blocking copies and bf16 autocast;
  ``torch.compile`` when asked.

``auto`` picks ``torch`` on CUDA and ``onnx`` on the CPU. Both engines take
uint8 [N, H, W, 3] RGB and return float32 logits [N, num_classes], so a
quarter of the bytes of float32 pixels travel between pipeline stages.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache

import numpy as np

from batch_classify.models import ModelError, get_spec, load_model
from batch_classify.storage import StorageOptions

RUNTIMES = ("auto", "torch", "onnx")

#: Largest |logit| difference accepted between the ONNX export and PyTorch, relative to the
#: largest |logit|. Measured: 1.4e-5 absolute on EfficientNet-Lite0 (logits up to about 20).
PARITY_TOLERANCE = 1e-3


def resolve_runtime(runtime: str, device: str) -> str:
    """``auto`` → ``torch`` on CUDA, ``onnx`` on the CPU.

    Raises:
        ValueError: an unknown runtime, or ``onnx`` asked for on CUDA.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "torch" if device == "cuda" else "onnx"
    if runtime == "onnx" and device == "cuda":
        raise ValueError("runtime 'onnx' runs on the CPU only; use --runtime torch (or auto) on a GPU")
    return runtime


def uint8_model(model, mean, std):
    """Wrap ``model`` so that it takes uint8 [N, H, W, 3] RGB and normalises inside.

    ``(x / 255 - mean) / std`` is computed as ``x * scale - shift`` with
    ``scale = 1 / (255 std)`` and ``shift = mean / std``, in float32.
    """
    import torch

    class UInt8Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", 1.0 / (255.0 * s))
            self.register_buffer("shift", m / s)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float()
            return self.model(x * self.scale - self.shift)

    return UInt8Classifier().eval()


@lru_cache(maxsize=4)
def onnx_model(model_name: str, weights: str | None, storage: StorageOptions) -> bytes:
    """The model, normalisation included, as an ONNX file in memory (dynamic batch size).

    Input ``images`` uint8 [N, crop, crop, 3]; output ``logits`` float32 [N, num_classes].
    Cached per process: the validation and inference steps of one run export once.

    Raises:
        ModelError: see :func:`batch_classify.models.load_model`; also when the export
            disagrees with PyTorch on a fixed input (argmax differs or logits differ by more
            than ``PARITY_TOLERANCE`` of their range).
    """
    import torch

    spec = get_spec(model_name)
    wrapped = uint8_model(load_model(spec, weights, storage), spec.preset.mean, spec.preset.std)
    c = spec.preset.crop_size
    probe = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, c, c, 3), dtype=np.uint8))
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation on every call
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (probe,),
            buf,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
            opset_version=18,
            dynamo=False,
        )
    blob = buf.getvalue()
    with torch.inference_mode():
        expected = wrapped(probe).numpy()
    got = OnnxEngine(blob, num_threads=1)(probe.numpy())
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max())
    if diff > PARITY_TOLERANCE * scale or not np.array_equal(got.argmax(1), expected.argmax(1)):
        raise ModelError(
            f"the ONNX export of {model_name} disagrees with PyTorch (max logit difference {diff:.2e}); "
            "run with --runtime torch"
        )
    return blob


#: Model call size on the CPU. Measured on the 2-core development machine, EfficientNet-Lite0,
#: 2 threads, batches of 64 (benchmarks/model_alone.py, runtimes taking turns, medians):
#: ONNX Runtime 352 images/s in calls of 8 against 278 in one call; PyTorch eager 123 against
#: 41 (larger calls spill the caches), so pipeline batches are split.
CPU_MICRO_BATCH = 8


def _in_micro_batches(fn, images: np.ndarray, size: int) -> np.ndarray:
    parts = [fn(images[i : i + size]) for i in range(0, len(images), size)]
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


class OnnxEngine:
    """ONNX Runtime on the CPU.

    Args:
        blob: an ONNX model from :func:`onnx_model`.
        num_threads: intra-op threads (None: ONNX Runtime's default, one per core).
        micro_batch: images per ONNX Runtime call.
        spin: let idle intra-op threads spin (faster alone, slower beside decoding tasks).
    """

    def __init__(
        self, blob: bytes, *, num_threads: int | None = None, micro_batch: int = CPU_MICRO_BATCH, spin: bool = False
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        if not spin:
            # Spinning threads burn the cores that decoding tasks share with the actor: measured
            # steady state 210 images/s spinning, 260 not (the model alone loses 5%: 368 → 350).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        self.micro_batch = micro_batch

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes]."""
        run = lambda x: self.session.run(None, {"images": x})[0]  # noqa: E731
        return _in_micro_batches(run, np.ascontiguousarray(images), self.micro_batch)


class TorchEngine:
    """PyTorch eager (or compiled) on the CPU or a CUDA device.

    Args:
        model: a module from :func:`uint8_model`.
        device: ``"cpu"`` or ``"cuda"``.
        compile: wrap in ``torch.compile`` (first batches are slow while it compiles).
        autocast: bf16 autocast on CUDA (ignored on the CPU).
        micro_batch: images per model call on the CPU (on CUDA the whole batch goes at once).
    """

    def __init__(
        self,
        model,
        *,
        device: str = "cpu",
        compile: bool = False,
        autocast: bool = True,
        micro_batch: int = CPU_MICRO_BATCH,
    ) -> None:
        import torch

        self.device = torch.device(device)
        # channels_last feeds the GPU's tensor cores; on the CPU it measured no different from
        # NCHW-contiguous (123.2 vs 123.7 images/s, benchmarks/model_alone.py), so it is left off.
        fmt = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt)
        if compile:
            self.model = torch.compile(self.model)
        self.autocast = autocast and self.device.type == "cuda"
        self.micro_batch = micro_batch
        self._pinned = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes]."""
        images = np.ascontiguousarray(images)
        if self.device.type == "cuda":
            return self._call(images)  # copied into the pinned buffer: read-only input is fine
        if not images.flags.writeable:  # Ray hands zero-copy, read-only batches; torch wants writable memory
            images = images.copy()
        return _in_micro_batches(self._call, images, self.micro_batch)

    def _call(self, images: np.ndarray) -> np.ndarray:
        import torch

        if self.device.type == "cuda":
            x = self._staged(images).to(self.device, non_blocking=True)
        else:
            x = torch.from_numpy(images)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(x).float().cpu().numpy()

    def _staged(self, images: np.ndarray):
        """``images`` copied into one page-locked host buffer, reused batch after batch.

        Pinning a fresh tensor per batch (``pin_memory()``) allocates page-locked memory every
        time and copies twice (read-only Ray batch → writable copy → pinned copy). The copy to
        the GPU reads the buffer asynchronously, but each call ends in ``.cpu()``, which waits
        for the GPU, so the next batch never overwrites a buffer still being read.
        """
        import torch

        n = len(images)
        if self._pinned is None or self._pinned.shape[0] < n or self._pinned.shape[1:] != images.shape[1:]:
            self._pinned = torch.empty(images.shape, dtype=torch.uint8).pin_memory()
        np.copyto(self._pinned.numpy()[:n], images)
        return self._pinned[:n]


def build_engine(
    model_name: str,
    weights: str | None,
    storage: StorageOptions,
    *,
    runtime: str = "auto",
    device: str = "cpu",
    num_threads: int | None = None,
    compile: bool = False,
    onnx_blob: bytes | None = None,
):
    """The engine for one actor (or the validation step).

    Args:
        onnx_blob: an export made elsewhere (the driver), so actors do not export again.

    Raises:
        ModelError, ValueError: see :func:`onnx_model`, :func:`resolve_runtime`.
    """
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
    if resolve_runtime(runtime, device) == "onnx":
        return OnnxEngine(onnx_blob or onnx_model(model_name, weights, storage), num_threads=num_threads)
    spec = get_spec(model_name)
    model = uint8_model(load_model(spec, weights, storage), spec.preset.mean, spec.preset.std)
    return TorchEngine(model, device=device, compile=compile)
