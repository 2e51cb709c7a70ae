"""int8 models for ``--precision int8``: the stage's ONNX model quantized statically, calibrated on photos,
checked against float32 (issue 28).

The recipe (:data:`RECIPE`), chosen by ``benchmarks/int8_probe.py`` (BENCHMARKS.md, "int8, probed"):
ONNX Runtime's ``quantize_static`` in QDQ form, int8 weights per output channel, uint8 activations,
min-max calibration, with the first convolution and the last ``Gemm``/``MatMul`` (the stem and the
classifier) kept in float32. On EfficientNet-Lite0 and the 500 shared ImageNet photos: the model alone
1.74× as fast on 2 cores, top-1 0.886 against 0.890 (0.25 points below on the 400 photos not calibrated
on), the top-1 class the same as float32's for 97.6% of the photos. Quantizing the stem and the
classifier too was slower and 6 points worse.

Calibration photos: :data:`CALIBRATION_IMAGES` spread evenly over a listing (``--calibration URI``, or
the run's own input), decoded with the model's preprocessing. The check: on :data:`CHECK_IMAGES` other
photos of it (the same ones where there are too few), the int8 model's top-1 class must be float32's for
at least :data:`MIN_AGREEMENT` of them, or the run stops (:class:`Int8Rejected`). Quantizing takes about
5 s for Lite0 here; the result is cached beside the float32 export (``CACHE_DIR/onnx/<key>.int8.onnx``),
named by the float32 model, the recipe, the ONNX Runtime version and the calibration pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from batch_classify.stage.engines import cache_files
from batch_classify.errors import PermanentError
from batch_classify.stage.inference import decode_batch
from batch_classify.models.preprocess import ClassificationPreset
from batch_classify.storage import StorageOptions

log = logging.getLogger(__name__)

#: Photos the quantization is calibrated on. The probe gave the same top-1 with 256 as with 100.
CALIBRATION_IMAGES = 100
#: Other photos on which the int8 model is checked against float32.
CHECK_IMAGES = 100
#: The least share of the check photos whose top-1 class int8 must keep. The recipe kept 97.6% on the
#: 500 shared photos; per-tensor int8 (6 points of top-1 lost) kept 87%: below this, the run stops.
MIN_AGREEMENT = 0.95
#: Names the recipe in the cache key: change it when the recipe changes.
RECIPE = "qdq-u8s8-perchannel-minmax-stem-head-fp32-v1"


class Int8Rejected(PermanentError, RuntimeError):
    """The int8 model does not keep float32's top-1 class on enough of the check photos."""


@dataclass(frozen=True)
class Int8Model:
    """A quantized model and what its check found.

    Attributes:
        blob: the ONNX model (QDQ), input and output as the float32 export's.
        digest: the first 16 hex digits of ``blob``'s SHA-256: part of the run's model identity, so
            that ``--incremental`` never mixes int8 predictions with float32 ones.
        agreement: share of the check photos whose top-1 class int8 and float32 agree on (0 to 1).
        n_checked: check photos.
        n_calibrated: calibration photos.
    """

    blob: bytes
    digest: str
    agreement: float
    n_checked: int
    n_calibrated: int


def spread(paths: list[str], n: int) -> list[str]:
    """``n`` of ``paths`` spaced evenly over them (all of them where there are no more than ``n``)."""
    if len(paths) <= n:
        return list(paths)
    step = len(paths) / n
    return [paths[int(i * step)] for i in range(n)]


def int8_model(
    float_blob: bytes,
    *,
    paths: list[str],
    preset: ClassificationPreset,
    storage: StorageOptions,
    cache_dir: str | None,
    num_threads: int | None = None,
) -> Int8Model:
    """Quantize ``float_blob`` (the stage's float32 ONNX model) with :data:`RECIPE`, or load it from the cache.

    Args:
        paths: the photos to calibrate and check on (a listing's, sorted); :data:`CALIBRATION_IMAGES`
            spread over them calibrate, :data:`CHECK_IMAGES` between those check.
        preset: the model's preprocessing (the photos become uint8 [N, crop, crop, 3]).
        cache_dir: where the float32 export is cached (``""`` or None: no cache).

    Raises:
        Int8Rejected: the check failed (the message gives the agreement and says to use float32), or no
            photo of ``paths`` could be decoded.
    """
    name = _uint8_input(float_blob)
    picked = spread(paths, CALIBRATION_IMAGES + CHECK_IMAGES)
    calibration = _decoded(picked[0::2] if len(picked) > CALIBRATION_IMAGES else picked, preset, storage)
    check = _decoded(picked[1::2], preset, storage) if len(picked) > CALIBRATION_IMAGES else calibration
    if not len(calibration) or not len(check):
        raise Int8Rejected("--precision int8: none of the calibration photos could be decoded; "
                           "pass --calibration with a folder of photos like the input's")
    key = hashlib.sha256(b"\0".join([
        hashlib.sha256(float_blob).hexdigest().encode(), RECIPE.encode(), version("onnxruntime").encode(),
        hashlib.sha256(calibration.tobytes()).hexdigest().encode(), hashlib.sha256(check.tobytes()).hexdigest().encode(),
    ])).hexdigest()[:32]
    folder = Path(cache_dir).expanduser() / "onnx" if cache_dir else None
    cached = _read_cache(folder, key) if folder else None
    if cached is not None:
        return cached
    blob = _quantized(float_blob, name, calibration)
    agreement = _agreement(float_blob, blob, check, num_threads)
    model = Int8Model(blob, hashlib.sha256(blob).hexdigest()[:16], agreement, len(check), len(calibration))
    log.info("int8 model: the top-1 class of float32 kept on %.1f%% of %d photos (calibrated on %d)",
             100 * agreement, len(check), len(calibration))
    if agreement < MIN_AGREEMENT:
        raise Int8Rejected(
            f"--precision int8: the int8 model keeps float32's top-1 class on {agreement:.1%} of {len(check)} photos, "
            f"below {MIN_AGREEMENT:.0%}; run with --precision float32 (or calibrate on photos like the input's: --calibration)"
        )
    if folder:
        _write_cache(folder, key, model)
    return model


def _decoded(paths: list[str], preset: ClassificationPreset, storage: StorageOptions) -> np.ndarray:
    """uint8 [N, crop, crop, 3]: the photos of ``paths`` that decoded."""
    if not paths:
        return np.zeros((0, preset.crop_size, preset.crop_size, 3), dtype=np.uint8)
    batch = {"path": np.asarray(paths, dtype=object), "label": np.full(len(paths), None, dtype=object)}
    out = decode_batch(batch, storage=storage, preset=preset)
    return out["image"][out["error"] == ""]


def _quantized(float_blob: bytes, name: str, images: np.ndarray) -> bytes:
    """:data:`RECIPE` applied to ``float_blob``, calibrated on ``images`` (uint8 [N, crop, crop, 3]) fed to
    its input ``name``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: images[i : i + 16]} for i in range(0, len(images), 16)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="batch-classify-int8-") as tmp:
        fp32, pre, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        fp32.write_bytes(float_blob)
        quant_pre_process(str(fp32), str(pre))
        nodes = onnx.load(str(pre)).graph.node
        ends = [n.name for n in nodes if n.op_type == "Conv"][:1] + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=ends)
        return int8.read_bytes()


def _uint8_input(blob: bytes) -> str:
    """The name of the model's input, which must take uint8 pixels [N, H, W, 3] (the export of a PyTorch model,
    normalisation inside). An ONNX folder's model takes normalised float32 [N, 3, H, W] that photos cannot feed
    calibration without the folder's preset.

    Raises:
        Int8Rejected: the input is not uint8.
    """
    import onnxruntime as ort

    first = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).get_inputs()[0]
    if first.type != "tensor(uint8)":
        raise Int8Rejected("--precision int8 quantizes the exports of PyTorch models (uint8 input); this ONNX model "
                           f"takes {first.type}: run it with --precision float32")
    return first.name


def _agreement(float_blob: bytes, int8_blob: bytes, images: np.ndarray, num_threads: int | None) -> float:
    """Share of ``images`` whose top-1 class the two models agree on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    top1 = []
    for blob in (float_blob, int8_blob):
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        logits = np.concatenate([session.run(None, {name: images[i : i + 32]})[0] for i in range(0, len(images), 32)])
        top1.append(logits.argmax(axis=1))
    return float(np.mean(top1[0] == top1[1]))


def _read_cache(folder: Path, key: str) -> Int8Model | None:
    try:
        blob = (folder / f"{key}.int8.onnx").read_bytes()
        meta = json.loads((folder / f"{key}.int8.json").read_text())
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            log.warning("cached int8 model %s does not match its checksum; quantizing again", folder / f"{key}.int8.onnx")
            return None
        return Int8Model(blob, meta["sha256"][:16], meta["agreement"], meta["n_checked"], meta["n_calibrated"])
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(folder: Path, key: str, model: Int8Model) -> None:
    meta = {"sha256": hashlib.sha256(model.blob).hexdigest(), "agreement": model.agreement, "n_checked": model.n_checked,
            "n_calibrated": model.n_calibrated, "recipe": RECIPE}
    cache_files(folder, {f"{key}.int8.onnx": model.blob, f"{key}.int8.json": json.dumps(meta).encode()}, "the int8 model")
