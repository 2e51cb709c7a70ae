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

``auto`` picks ``torch`` on CUDA and ``onnx`` on the CPU. A model folder holding
``model.onnx`` (see :mod:`batch_classify.models.folder`) always runs under ONNX
Runtime: on a GPU actor with its CUDA provider where ``onnxruntime-gpu`` is
installed, else on the CPU. Both engines take uint8 [N, H, W, 3] RGB and return
float32 logits [N, num_classes], so a quarter of the bytes of float32 pixels
travel between pipeline stages.

Longer than 400 lines: the two runtimes, the ONNX export with its parity check and disk cache, and
the factory that picks between them share the uint8 model wrapper and the check; split apart they
would import each other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import warnings
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import get_args

import numpy as np

from batch_classify.errors import ConfigError
from batch_classify.models.registry import ModelError, ModelSpec, load_model, weights_digest
from batch_classify.models.preprocess import ClassificationPreset
from batch_classify.settings import Runtime
from batch_classify.storage import StorageOptions, read_bytes

log = logging.getLogger(__name__)

RUNTIMES: tuple[str, ...] = get_args(Runtime)

#: Largest |logit| difference accepted between the ONNX export and PyTorch, relative to the
#: largest |logit|. Measured: 1.4e-5 absolute on EfficientNet-Lite0 (logits up to about 20).
PARITY_TOLERANCE = 1e-3


def resolve_runtime(runtime: str, device: str, *, onnx_only: bool = False) -> str:
    """``auto`` → ``torch`` on CUDA, ``onnx`` on the CPU; always ``onnx`` for an ONNX-only model.

    Raises:
        ConfigError (a ValueError): an unknown runtime; ``onnx`` asked for on CUDA with a PyTorch model (its
            export runs on the CPU only); ``torch`` asked for with an ONNX-only model.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if onnx_only:
        if runtime == "torch":
            raise ConfigError("the model is an ONNX file (model.onnx): it runs under ONNX Runtime; use --runtime auto or onnx")
        return "onnx"
    if runtime == "auto":
        return "torch" if device == "cuda" else "onnx"
    if runtime == "onnx" and device == "cuda":
        raise ConfigError("runtime 'onnx' runs on the CPU only; use --runtime torch (or auto) on a GPU")
    return runtime


def onnx_cuda_available() -> bool:
    """Whether this process's ONNX Runtime has the CUDA provider (the ``onnxruntime-gpu`` package)."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def uint8_model(model, mean, std, rescale: float = 1 / 255):
    """Wrap ``model`` so that it takes uint8 [N, H, W, 3] RGB and normalises inside.

    ``(x * rescale - mean) / std`` is computed as ``x * scale - shift`` with
    ``scale = rescale / std`` and ``shift = mean / std``, in float32.
    """
    import torch

    class UInt8Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self.register_buffer("scale", rescale / s)
            self.register_buffer("shift", m / s)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float()
            return self.model(x * self.scale - self.shift)

    return UInt8Classifier().eval()


def onnx_model(spec: ModelSpec, weights: str | None, storage: StorageOptions, *, cache_dir: str | None = None) -> bytes:
    """The model ``spec`` (as the run resolved it) as an ONNX file in memory.

    A PyTorch model (registry, timm or transformers folder) is exported with its normalisation
    included: input ``images`` uint8 [N, crop, crop, 3], output ``logits`` float32 [N, num_classes]
    (dynamic batch size); cached per process and model (a folder's files as listed are part of the
    key), so the validation and inference steps of one run export once. An ONNX folder's
    ``model.onnx`` is returned as it is (input float32 [N, 3, H, W]; :class:`OnnxEngine`
    normalises).

    With ``cache_dir``, an export that passed its check is also kept on disk, under
    ``CACHE_DIR/onnx/`` and named by :func:`export_key` (the weights' SHA-256, the preprocessing,
    the torch version, the opset), so the next run loads it instead of exporting again (4-6 s for
    EfficientNet-Lite0 on the 2-core development machine). A cached file whose checksum does not
    match is exported again and replaced.

    Raises:
        ModelError: see :func:`batch_classify.models.registry.load_model`; also when the export
            disagrees with PyTorch on a fixed input (argmax differs or logits differ by more
            than ``PARITY_TOLERANCE`` of their range).
    """
    if spec.onnx_only:
        return read_bytes(spec.weights_file, storage)
    if not cache_dir:
        return _exported(spec, weights, storage)
    return _cached_export(spec, weights, storage, str(cache_dir))


@lru_cache(maxsize=4)
def _cached_export(spec: ModelSpec, weights: str | None, storage: StorageOptions, cache_dir: str) -> bytes:
    key = export_key(spec, weights, storage)
    if key is None:  # no weights file: the export says what is missing
        return _exported(spec, weights, storage)
    folder = Path(cache_dir).expanduser() / "onnx"
    blob_path, sum_path = folder / f"{key}.onnx", folder / f"{key}.sha256"
    try:
        blob = blob_path.read_bytes()
        if hashlib.sha256(blob).hexdigest() == sum_path.read_text().strip():
            return blob
        log.warning("cached ONNX export %s does not match its checksum; exporting again", blob_path)
    except OSError:
        pass
    blob = _exported(spec, weights, storage)
    cache_files(folder, {blob_path.name: blob, sum_path.name: hashlib.sha256(blob).hexdigest().encode()}, "the ONNX export")
    return blob


def cache_files(folder: Path, files: dict[str, bytes], what: str) -> None:
    """Write ``files`` (name → bytes) into the cache ``folder``, each atomically (a concurrent run reads the
    old file or the new one); a folder that cannot be written (a read-only home) is a warning naming
    ``what``, and the run goes on without the cache."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            tmp = folder / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            tmp.replace(folder / name)
    except OSError as err:
        log.warning("could not cache %s under %s: %s", what, folder, err)


#: ONNX opset of the export; part of the cache key.
ONNX_OPSET = 18


def export_key(spec: ModelSpec, weights: str | None, storage: StorageOptions) -> str | None:
    """The cache name of ``spec``'s ONNX export: ``<model>-<32 hex>`` over the weights' SHA-256
    (:func:`batch_classify.models.registry.weights_digest`), the preprocessing, the class count, the torch
    version (its package metadata: a run whose export is cached never imports torch), the opset and
    the parity tolerance. None where the weights file is missing.
    """
    digest = weights_digest(spec, weights, storage)
    if digest is None:
        return None
    material = json.dumps(
        {
            "format": 1, "name": spec.name, "model_format": spec.format, "weights": digest,
            "preset": dataclasses.asdict(spec.preset), "num_classes": spec.num_classes,
            "torch": version("torch"), "opset": ONNX_OPSET, "tolerance": PARITY_TOLERANCE,
        },
        sort_keys=True,
    )
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec.name.rstrip("/")).name)[:60] or "model"
    return f"{safe}-{hashlib.sha256(material.encode()).hexdigest()[:32]}"


@lru_cache(maxsize=4)
def _exported(spec: ModelSpec, weights: str | None, storage: StorageOptions) -> bytes:
    import torch

    model_name = spec.name
    wrapped = uint8_model(load_model(spec, weights, storage), spec.preset.mean, spec.preset.std, spec.preset.rescale)
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
            opset_version=ONNX_OPSET,
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


def _clear_caches() -> None:
    _exported.cache_clear()
    _cached_export.cache_clear()


onnx_model.cache_clear = _clear_caches  # type: ignore[attr-defined]


#: Model call size on the CPU. Measured on the 2-core development machine, EfficientNet-Lite0,
#: 2 threads, batches of 64 (benchmarks/model_alone.py, runtimes taking turns, medians):
#: ONNX Runtime 352 images/s in calls of 8 against 278 in one call; PyTorch eager 123 against
#: 41 (larger calls spill the caches), so pipeline batches are split.
CPU_MICRO_BATCH = 8
#: Images per ONNX Runtime call on a GPU: the whole pipeline batch (it is never larger).
GPU_CALL_SIZE = 1 << 16


def _in_micro_batches(fn, images: np.ndarray, size: int) -> np.ndarray:
    parts = [fn(images[i : i + size]) for i in range(0, len(images), size)]
    return np.concatenate(parts) if len(parts) != 1 else parts[0]


class OnnxEngine:
    """ONNX Runtime, on the CPU (or a GPU through the CUDA provider, for ONNX folders).

    Args:
        blob: an ONNX model from :func:`onnx_model`.
        num_threads: intra-op threads (None: ONNX Runtime's default, one per core).
        micro_batch: images per ONNX Runtime call (a model with a fixed batch dimension is called
            with that many images, the last call padded).
        spin: let idle intra-op threads spin (faster alone, slower beside decoding tasks).
        normalize: for a model whose input is normalised float pixels [N, 3, H, W] (an ONNX
            folder's ``pixel_values``): the preset whose ``rescale``, ``mean`` and ``std`` this engine
            applies (in float32, with numpy) before each call. None: the model takes uint8
            [N, H, W, 3] itself (an export of :func:`onnx_model`).
        device: ``"cuda"`` runs on the CUDA provider when ONNX Runtime has it, else on the CPU
            with a warning.

    Raises:
        ModelError: the model's input is not [N, 3, crop, crop] float (with ``normalize``).
    """

    def __init__(
        self,
        blob: bytes,
        *,
        num_threads: int | None = None,
        micro_batch: int = CPU_MICRO_BATCH,
        spin: bool = False,
        normalize: ClassificationPreset | None = None,
        device: str = "cpu",
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
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if onnx_cuda_available():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("ONNX Runtime has no CUDA provider (pip install onnxruntime-gpu); the ONNX model runs on the CPU")
        try:
            self.session = ort.InferenceSession(blob, options, providers=providers)
        except Exception as err:  # onnxruntime's own error types (a corrupt or unsupported file)
            raise ModelError(f"model.onnx could not be loaded by ONNX Runtime: {type(err).__name__}: {err}") from err
        model_input = self.session.get_inputs()[0]
        outputs = [o.name for o in self.session.get_outputs()]
        self.input_name = model_input.name
        self.output_name = "logits" if "logits" in outputs else outputs[0]
        batch_dim = model_input.shape[0] if model_input.shape else None
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        self.micro_batch = self.fixed_batch or micro_batch
        self.scale = self.shift = None
        self.dtype = np.float32
        if normalize is not None:
            c = normalize.crop_size
            shape = list(model_input.shape)
            fixed = [d if isinstance(d, int) else None for d in shape[1:]]
            if len(shape) != 4 or fixed[0] not in (3, None) or any(d not in (c, None) for d in fixed[1:]):
                raise ModelError(
                    f"model.onnx takes {model_input.name} of shape {shape}; the preprocessing gives [N, 3, {c}, {c}]"
                )
            if model_input.type not in ("tensor(float)", "tensor(float16)"):
                raise ModelError(f"model.onnx takes {model_input.name} as {model_input.type}; float or float16 expected")
            self.dtype = np.float16 if model_input.type == "tensor(float16)" else np.float32
            std = np.asarray(normalize.std, dtype=np.float32).reshape(1, 3, 1, 1)
            self.scale = np.float32(normalize.rescale) / std
            self.shift = np.asarray(normalize.mean, dtype=np.float32).reshape(1, 3, 1, 1) / std

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.scale is not None:  # uint8 NHWC → normalised float NCHW
            x = (x.transpose(0, 3, 1, 2).astype(np.float32) * self.scale - self.shift).astype(self.dtype, copy=False)
        n = len(x)
        if self.fixed_batch and n < self.fixed_batch:
            x = np.concatenate([x, np.zeros((self.fixed_batch - n, *x.shape[1:]), dtype=x.dtype)])
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out[:n], dtype=np.float32)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] → float32 logits [N, num_classes]."""
        return _in_micro_batches(self._run, np.ascontiguousarray(images), self.micro_batch)


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
        return self.logits_tensor(images).cpu().numpy()

    def logits_tensor(self, images):
        """uint8 [N, H, W, 3], numpy or a torch tensor (already on the device: decoded there) →
        torch float32 logits [N, num_classes] on this engine's device.

        On CUDA, numpy input goes through one reused pinned buffer (:meth:`_staged`): the caller
        must bring the result (or something computed from it) to the host before the next call,
        as :class:`batch_classify.stage.inference.Classifier` does, so that the buffer is not overwritten
        while the copy still reads it.
        """
        import torch

        if isinstance(images, np.ndarray):
            images = np.ascontiguousarray(images)
            if self.device.type == "cuda":
                x = self._staged(images).to(self.device, non_blocking=True)
            else:
                if not images.flags.writeable:  # Ray hands zero-copy, read-only batches; torch wants writable memory
                    images = images.copy()
                x = torch.from_numpy(images)
        else:
            x = images.to(self.device)
        if self.device.type == "cuda":
            return self._forward(x)
        return torch.cat([self._forward(part) for part in x.split(self.micro_batch)])

    def _forward(self, x):
        import torch

        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(x).float()

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
    spec: ModelSpec,
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
        spec: the model, as the run resolved it (:func:`batch_classify.models.registry.get_spec`).
        onnx_blob: an export made elsewhere (the driver), so actors do not export again.

    Raises:
        ModelError, ValueError: see :func:`onnx_model`, :func:`resolve_runtime`.
    """
    if resolve_runtime(runtime, device, onnx_only=spec.onnx_only) == "onnx":
        blob = onnx_blob or onnx_model(spec, weights, storage)
        if spec.onnx_only:  # on a GPU the whole batch goes in one call, as TorchEngine does
            micro = CPU_MICRO_BATCH if device == "cpu" else GPU_CALL_SIZE
            try:
                return OnnxEngine(blob, num_threads=num_threads, normalize=spec.preset, device=device, micro_batch=micro)
            except ModelError as err:
                raise ModelError(f"model folder {spec.name}: {err}") from err
        return OnnxEngine(blob, num_threads=num_threads)
    import torch  # the PyTorch runtime only: an ONNX Runtime actor never imports torch (1.7 s of a core)

    if num_threads:
        torch.set_num_threads(num_threads)
    model = uint8_model(load_model(spec, weights, storage), spec.preset.mean, spec.preset.std, spec.preset.rescale)
    return TorchEngine(model, device=device, compile=compile)
