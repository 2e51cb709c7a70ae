"""Decoding JPEGs on the model actor's device: nvJPEG on a GPU, batched.

With ``decode="device"`` the pipeline's reading tasks do not decode: they read each file's
bytes and its header (:func:`read_batch`), and the model actor decodes the batch on its own
device (:class:`DeviceDecoder`): ``torchvision.io.decode_jpeg(list_of_tensors, device="cuda")``
(nvJPEG, hardware engines where the GPU has them), then resizes and centre-crops there with
antialiasing, as the model's preset says, and hands the uint8 [N, crop, crop, 3] batch to the
model without leaving the device. About 100 KB of compressed bytes per photo cross Ray's object
store instead of a 147 KB crop, and no CPU core spends 3-4 ms per photo decoding.

Routing, per image:

- **device**: baseline JPEGs whose pixels are YCbCr or grey (Pillow mode ``RGB`` or ``L``),
  with no EXIF rotation (orientation absent or 1);
- **cpu** (the actor decodes it with Pillow, the CPU path's own code, inside the same actor):
  every other format, CMYK/YCCK and progressive JPEGs, JPEGs to be rotated, bytes Pillow cannot
  even open (it then fails with the CPU path's own message), and any image the device decoder
  refuses (the batch call fails: each image is tried alone, and the ones that still fail go to
  the CPU);
- **failed** before decoding: a read failure, or a header with more pixels than ``max_pixels``
  (the limit applies before any pixel is decoded, as on the CPU path).

Every failure is recorded per file with its stage (``read``, ``decode``), nothing is dropped.
``decode_jpeg`` also runs on the CPU (libjpeg-turbo), which is how the tests exercise this path
on a machine without a GPU.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from batch_classify.models.preprocess import DEFAULT_MAX_PIXELS, ClassificationPreset, DecodeError, pixel_limit_message
from batch_classify.stage.reading import carried, read_rows
from batch_classify.storage import DEFAULT_READ_TIMEOUT, StorageOptions

#: Pillow filter names that torchvision resizes tensors with (antialiased for bilinear and bicubic).
#: Lanczos, box and hamming have no tensor implementation: such presets decode on the CPU.
DEVICE_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: EXIF tag of the picture's orientation (1: as stored).
_ORIENTATION = 0x0112


def supports(preset: ClassificationPreset) -> bool:
    """Whether :class:`DeviceDecoder` reproduces ``preset`` (its interpolation has a tensor version)."""
    return preset.interpolation in DEVICE_INTERPOLATIONS


def route(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bool:
    """Read the header of one file: True when the device decodes it, False for the CPU path.

    Only the header is parsed (Pillow's lazy ``open``); no pixel is decoded.

    Raises:
        DecodeError: empty bytes; more pixels than ``max_pixels`` (the CPU path's messages).
    """
    if not data:
        raise DecodeError("empty file")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Exception:  # noqa: BLE001 - not an image Pillow opens: the CPU path fails it with its own message
        return False
    if max_pixels is not None and w * h > max_pixels:
        raise DecodeError(pixel_limit_message(w, h, max_pixels))
    if img.format != "JPEG" or img.mode not in ("RGB", "L"):
        return False
    if img.info.get("progressive") or img.info.get("progression"):
        return False
    try:
        orientation = img.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - an unreadable EXIF block: let the CPU path deal with it
        return False
    return orientation in (None, 0, 1)


def read_batch(
    batch: dict[str, np.ndarray],
    *,
    storage: StorageOptions,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
) -> dict[str, np.ndarray]:
    """Read a batch of files and route each (see :func:`route`), decoding nothing.

    Args:
        batch: ``path`` (object [N]) and ``label`` (object [N]).

    Returns:
        ``path``, ``label``; ``data`` object [N] (the file's bytes, ``b""`` where it failed);
        ``on_device`` bool [N]; ``stage``, ``error`` object [N] (``""`` where fine);
        ``unreachable`` bool [N] (as :func:`batch_classify.stage.inference.decode_batch` gives it).
    """
    paths = [str(p) for p in batch["path"]]
    n = len(paths)
    data = np.full(n, b"", dtype=object)
    on_device = np.zeros(n, dtype=bool)
    contents, stage, error, unreachable_ = read_rows(paths, storage, read_timeout=read_timeout)
    for i, got in enumerate(contents):
        if got is None:
            continue
        try:
            on_device[i] = route(got, max_pixels=max_pixels)
        except DecodeError as err:
            stage[i], error[i] = "decode", str(err)
            continue
        data[i] = got
    return {
        "path": np.asarray(paths, dtype=object), "label": batch["label"], "data": data, "on_device": on_device,
        "stage": stage, "error": error, "unreachable": unreachable_, **carried(batch),
    }


@dataclass
class DecodedBatch:
    """What :class:`DeviceDecoder` made of one batch.

    Attributes:
        images: torch uint8 [N, crop, crop, 3] on the decoder's device (zeros where failed).
        stage, error: object [N], as given, with ``"decode"`` and the message where decoding failed.
        n_device, n_cpu: images decoded on the device, and by the CPU path (fallbacks included).
    """

    images: object
    stage: np.ndarray
    error: np.ndarray
    n_device: int = 0
    n_cpu: int = 0


class DeviceDecoder:
    """Decode, resize and centre-crop a batch of images on one device, as ``preset`` says.

    Args:
        preset: the model's preprocessing (sizes, interpolation, resize mode).
        device: a torch device name (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        max_pixels: the pixel limit of the CPU fallback (the header check was done by :func:`read_batch`).

    Raises:
        ValueError: ``preset``'s interpolation has no tensor version (see :func:`supports`).
    """

    def __init__(
        self, preset: ClassificationPreset, *, device: str = "cuda", max_pixels: int | None = DEFAULT_MAX_PIXELS
    ) -> None:
        import torch
        from torchvision.transforms import InterpolationMode

        if not supports(preset):
            raise ValueError(
                f"interpolation {preset.interpolation!r} has no GPU version ({', '.join(DEVICE_INTERPOLATIONS)} do)"
            )
        self.preset, self.max_pixels = preset, max_pixels
        self.device = torch.device(device)
        self.interpolation = InterpolationMode(preset.interpolation)

    def _decode(self, blobs: list[bytes]) -> list:
        """JPEG bytes → uint8 [3, H, W] tensors on the device; raises when any fails."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():
            # torchvision 0.29 marks its decoders deprecated in favour of TorchCodec (not on the registry here).
            warnings.simplefilter("ignore")
            tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
            out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device)
        return list(out)

    def _resize_crop(self, img):
        """uint8 [3, H, W] → uint8 [crop, crop, 3], torchvision's eval transform (antialiased)."""
        from torchvision.transforms.v2 import functional as F

        p = self.preset
        size = [p.resize_size, p.resize_size] if p.resize_mode == "square" else [p.resize_size]
        img = F.resize(img, size, interpolation=self.interpolation, antialias=True)
        return F.center_crop(img, [p.crop_size, p.crop_size]).permute(1, 2, 0)

    def __call__(self, data: np.ndarray, on_device: np.ndarray, stage: np.ndarray, error: np.ndarray) -> DecodedBatch:
        """Decode the rows whose ``error`` is ``""``: ``on_device`` ones on the device, the rest on the CPU.

        Args:
            data: object [N] of bytes; on_device: bool [N]; stage, error: object [N] (copied, not changed).
        """
        import torch

        n, c = len(data), self.preset.crop_size
        stage, error = np.array(stage, dtype=object), np.array(error, dtype=object)
        images = torch.zeros((n, c, c, 3), dtype=torch.uint8, device=self.device)
        todo = [i for i in range(n) if error[i] == ""]
        gpu = [i for i in todo if on_device[i]]
        cpu = [i for i in todo if not on_device[i]]
        decoded: dict[int, object] = {}
        if gpu:
            try:
                decoded = dict(zip(gpu, self._decode([data[i] for i in gpu]), strict=True))
            except Exception:  # noqa: BLE001 - one image the device refuses fails the whole call: try each alone
                for i in gpu:
                    try:
                        decoded[i] = self._decode([data[i]])[0]
                    except Exception:  # noqa: BLE001 - refused by the device decoder: the CPU path decodes it
                        cpu.append(i)
        for i, img in decoded.items():
            images[i] = self._resize_crop(img)
        for i in sorted(cpu):
            try:
                images[i] = torch.tensor(self.preset(data[i], max_pixels=self.max_pixels)).to(self.device)
            except DecodeError as err:
                stage[i], error[i] = "decode", str(err)
            except Exception as err:  # noqa: BLE001 - any other decoder fault is this image's failure
                stage[i], error[i] = "decode", f"{type(err).__name__}: {err}"
        return DecodedBatch(images, stage, error, n_device=len(decoded), n_cpu=len(cpu))
