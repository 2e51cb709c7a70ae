"""A user's own classifier, as a model folder in the layouts the Hugging Face ecosystem writes.

``--model`` takes a registry name or a folder (local path or ``s3://`` URI) holding:

* ``config.json``: the class names in logit order, as ``id2label`` (``{"0": "cat", "1": "dog"}``,
  what ``transformers`` and ``optimum`` write) or timm's ``label_names`` (a list, or a dict by
  index); for timm also ``architecture`` and ``pretrained_cfg``; for transformers ``architectures``
  and ``model_type``.
* the preprocessing: ``preprocessor_config.json`` (a transformers image processor's settings:
  ``size`` as ``{"shortest_edge": N}`` or ``{"height": N, "width": N}``, ``resample``,
  ``do_center_crop``/``crop_size``, ``crop_pct``, ``do_rescale``/``rescale_factor``,
  ``do_normalize``/``image_mean``/``image_std``), else timm's ``pretrained_cfg`` in ``config.json``
  (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``);
* the weights, exactly one of: ``model.onnx`` (what ``optimum-cli export onnx`` writes: input
  ``pixel_values`` float32 [N, 3, H, W], output ``logits`` float32 [N, K]), or ``model.safetensors``
  of a timm model (``architecture`` in ``config.json``, as timm's ``save_for_hf`` / hub export
  writes) or of a transformers image classifier (``AutoModelForImageClassification``). Pickled
  weights (``pytorch_model.bin``, ``*.pth``) are refused: loading a pickle can run code.

:func:`read_folder` checks all of this without loading the weights and raises :class:`ModelError`
with one line naming the file and what is wrong.

Longer than 400 lines: three folder formats (ONNX, timm, transformers) and two preprocessing
dialects, each with its one-line errors; they share the reading of ``config.json`` and class names.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_classify.errors import PermanentError, named
from batch_classify.listing import content_id
from batch_classify.models.preprocess import ClassificationPreset
from batch_classify.storage import StorageOptions, filesystem, is_remote_fs


class ModelError(PermanentError, ValueError):
    """Unknown model, a model folder that is incomplete or inconsistent, or weights that cannot be found or loaded."""


ONNX_FILE = "model.onnx"
SAFETENSORS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
#: Weights files refused in a folder: pickles (``torch.load`` of an untrusted file can run code).
PICKLED = (".bin", ".pth", ".pt", ".ckpt", ".pkl")
#: How many repeated class names, or files linked out of the folder, a message names.
MAX_NAMED = 5


def is_folder_reference(model: str) -> bool:
    """Whether ``--model`` names a folder rather than a registry entry: a URI (``s3://…``), or a
    path (it holds ``/``, or starts with ``.`` or ``~``). Registry names hold none of these."""
    return "://" in model or "/" in model or model.startswith((".", "~"))


@dataclass(frozen=True)
class ModelFolder:
    """What :func:`read_folder` found.

    Attributes:
        uri: the folder as given (no trailing slash).
        format: ``onnx``, ``timm`` or ``transformers``.
        class_names: K names in logit order.
        preset: the preprocessing.
        config: ``config.json`` as a dict.
        files: (path relative to the folder, size in bytes, content identity as listed: ETag, or
            size and mtime) of every file, sorted. Two reads of an unchanged folder compare equal
            (and hash alike: caches key on it); the files' contents make :meth:`sha256`.
        preprocessing_source: the file the preprocessing came from.
    """

    uri: str
    format: str
    class_names: tuple[str, ...]
    preset: ClassificationPreset
    config: dict = field(compare=False, hash=False)
    files: tuple[tuple[str, int, str], ...] = ()
    preprocessing_source: str = ""

    @property
    def weights_uri(self) -> str:
        return f"{self.uri}/{FORMATS[self.format].weights_file}"

    @property
    def onnx_only(self) -> bool:
        """Whether the folder's model runs under ONNX Runtime only (its format has no ``load``)."""
        return FORMATS[self.format].load is None

    def sha256(self, storage: StorageOptions) -> str:
        """SHA-256 (hex) over every file of the folder: each file's path and its own SHA-256, in path
        order. Any change to any file (weights, config, preprocessing) changes it."""
        fs, root = filesystem(self.uri, storage)
        outer = hashlib.sha256()
        for rel, _, _ in self.files:
            inner = hashlib.sha256()
            with fs.open(posixpath.join(root, rel), "rb") as f:
                while chunk := f.read(8 << 20):
                    inner.update(chunk)
            outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
        return outer.hexdigest()


def _fail(uri: str, name: str, what: str) -> ModelError:
    return ModelError(f"model folder {uri}: {name} {what}")


def read_folder(uri: str, storage: StorageOptions) -> ModelFolder:
    """Read and check a model folder (configuration only; the weights are not loaded).

    Raises:
        ModelError: the folder is missing; it has no or several weights files, or pickled ones
            only; ``config.json`` is missing, not JSON, or names no classes; the number of class
            names disagrees with ``num_labels``/``num_classes``; the preprocessing is missing or
            of a kind not supported (non-square input, an ambiguous ``size``); a timm or
            transformers architecture is unknown. The message names the file.
    """
    uri = uri.rstrip("/")
    fs, root = filesystem(uri, storage)
    try:
        exists = fs.isdir(root)
    except OSError as err:
        raise ModelError(f"model folder {uri} could not be read: {type(err).__name__}: {err}") from err
    if not exists:
        raise ModelError(
            f"model {uri} is neither a registry name nor an existing folder; `batch-classify models` lists the "
            "registry, and a model folder holds config.json and model.onnx or model.safetensors"
        )
    found = fs.find(root, detail=True)
    files = tuple(
        sorted(
            (posixpath.relpath(p, root), int(info.get("size") or 0), content_id(info))
            for p, info in found.items()
            if info.get("type") != "directory" and not any(part.startswith(".") for part in posixpath.relpath(p, root).split("/"))
        )
    )
    if not is_remote_fs(fs):
        _refuse_links_out(uri, root, [rel for rel, _, _ in files])
    names = {rel for rel, _, _ in files}
    weights = [w for w in (ONNX_FILE, SAFETENSORS_FILE) if w in names]
    if len(weights) > 1:
        raise _fail(uri, "holds both", f"{ONNX_FILE} and {SAFETENSORS_FILE}; keep the one to run (the other can live in another folder)")
    if not weights:
        pickles = sorted(n for n in names if n.lower().endswith(PICKLED))
        if pickles:
            raise _fail(
                uri, "has pickled weights only", f"({', '.join(pickles)}); pickles can run code when loaded. "
                "Save them as model.safetensors (save_pretrained(..., safe_serialization=True), timm's save_for_hf) "
                "or export model.onnx"
            )
        raise _fail(uri, "has no weights:", f"expected {ONNX_FILE} or {SAFETENSORS_FILE} (found: {', '.join(sorted(names)) or 'nothing'})")
    config = _read_json(fs, root, uri, CONFIG_FILE, required=True)
    preprocessor = _read_json(fs, root, uri, PREPROCESSOR_FILE, required=False)

    fmt = next((f for f in FORMATS.values() if f.weights_file == weights[0] and f.detect(config)), None)
    if fmt is None:
        raise _fail(
            uri, CONFIG_FILE, "names no architecture for model.safetensors: timm's hub export writes "
            "'architecture', transformers' save_pretrained writes 'architectures' and 'model_type'"
        )
    class_names = _class_names(uri, config)
    if preprocessor is not None:
        preset, source = _from_hf_processor(uri, preprocessor), PREPROCESSOR_FILE
    elif isinstance(config.get("pretrained_cfg"), dict):
        preset, source = _from_timm_cfg(uri, config["pretrained_cfg"]), f"{CONFIG_FILE} (pretrained_cfg)"
    else:
        raise _fail(
            uri, "has no preprocessing:", f"add {PREPROCESSOR_FILE} (transformers' image processor settings: size, "
            "resample, crop_size, rescale_factor, image_mean, image_std) or timm's pretrained_cfg in config.json"
        )
    fmt.check(uri, config)
    return ModelFolder(
        uri=uri, format=fmt.name, class_names=class_names, preset=preset, config=config, files=files,
        preprocessing_source=source,
    )


def _refuse_links_out(uri: str, root: str, files: list[str]) -> None:
    """Refuse files of a local folder that resolve outside it (a symbolic link to ``/etc/passwd``, or a
    link in a linked sub-folder): ``run`` would load them and ``models`` would describe them as the
    model's. Links that stay inside the folder are fine.

    Raises:
        ModelError: naming up to :data:`MAX_NAMED` such files and where they lead.
    """
    import os

    inside = os.path.realpath(root)
    out = [(rel, target) for rel in files
           if os.path.commonpath([inside, target := os.path.realpath(os.path.join(root, rel))]) != inside]
    if out:
        shown = named((f"{rel} -> {target}" for rel, target in out), MAX_NAMED)
        raise _fail(
            uri, "has files that are links leading outside it", f"({shown}); copy the files into the folder "
            "(a model folder is read as a whole: what it names must be in it)"
        )


def _read_json(fs, root: str, uri: str, name: str, *, required: bool) -> dict | None:
    path = posixpath.join(root, name)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        if required:
            raise _fail(uri, "has no", f"{name}; it carries the class names (id2label) and the architecture") from None
        return None
    try:
        value = json.loads(data)
    except ValueError as err:
        raise _fail(uri, name, f"is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise _fail(uri, name, "is not a JSON object")
    return value


def _class_names(uri: str, config: dict) -> tuple[str, ...]:
    """Class names in logit order from ``id2label`` or timm's ``label_names``; checked against
    ``num_labels`` / ``num_classes`` where the config gives them."""
    raw = config.get("id2label")
    key = "id2label"
    if raw is None:
        raw, key = config.get("label_names"), "label_names"
    if raw is None:
        raise _fail(
            uri, CONFIG_FILE, "has no class names: add id2label ({\"0\": \"first class\", …}, in logit order) "
            "or timm's label_names"
        )
    if isinstance(raw, list):
        names = [str(n) for n in raw]
    elif isinstance(raw, dict):
        try:
            by_index = {int(k): str(v) for k, v in raw.items()}
        except ValueError as err:
            raise _fail(uri, CONFIG_FILE, f"{key} keys must be class indices (\"0\", \"1\", …): {err}") from err
        if sorted(by_index) != list(range(len(by_index))):
            missing = sorted(set(range(max(by_index, default=-1) + 1)) - set(by_index))[:5]
            raise _fail(uri, CONFIG_FILE, f"{key} must name every index from 0 to {len(by_index) - 1}; missing {missing}")
        names = [by_index[i] for i in range(len(by_index))]
    else:
        raise _fail(uri, CONFIG_FILE, f"{key} must be a list or an object, not {type(raw).__name__}")
    if not names:
        raise _fail(uri, CONFIG_FILE, f"{key} is empty")
    for count in ("num_labels", "num_classes"):
        declared = config.get(count)
        if isinstance(declared, int) and declared != len(names):
            raise _fail(uri, CONFIG_FILE, f"says {count} {declared} but {key} names {len(names)} classes")
    at: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        at.setdefault(name, []).append(index)
    twice = {name: indices for name, indices in at.items() if len(indices) > 1}
    if twice:
        shown = named((f"{name!r} at {', '.join(map(str, indices))}" for name, indices in twice.items()), MAX_NAMED, sep="; ")
        raise _fail(
            uri, CONFIG_FILE, f"{key} gives one name to several classes ({shown}): their labels, predictions and "
            "per-class figures could not be told apart; give each class its own name (e.g. 'crane (bird)', 'crane (machine)')"
        )
    return tuple(names)


def _side(uri: str, name: str, what: str, value) -> int:
    """A square side from an int or ``{"height": H, "width": W}`` with H == W."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and {"height", "width"} <= set(value):
        if value["height"] != value["width"]:
            raise _fail(uri, name, f"{what} {value} is not square; only square inputs are supported")
        return int(value["height"])
    raise _fail(uri, name, f"{what} {value!r} is not supported; use {{\"height\": N, \"width\": N}}")


def _triple(uri: str, name: str, what: str, value) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if isinstance(value, list) and len(value) == 3:
        return tuple(float(v) for v in value)
    raise _fail(uri, name, f"{what} {value!r} must be three numbers (RGB)")


_RESAMPLE_BY_INT = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _from_hf_processor(uri: str, pc: dict) -> ClassificationPreset:
    """The preprocessing of a transformers image processor's ``preprocessor_config.json``.

    Supported, as the processors apply them: ``size`` ``{"shortest_edge": S}`` (the shorter side to
    S, then ``crop_size`` when ``do_center_crop``; with ``crop_pct`` and no centre crop, as
    ConvNeXt's processor: the shorter side to ``int(S / crop_pct)``, then a crop of S) or
    ``{"height": N, "width": N}`` (stretched to N × N, then ``crop_size`` when ``do_center_crop``).
    An integer ``size`` is refused: processors read it either way.
    """
    name = PREPROCESSOR_FILE
    if not pc.get("do_resize", True):
        raise _fail(uri, name, "has do_resize false: batches need one input size; set size and do_resize")
    size = pc.get("size")
    if size is None:
        raise _fail(uri, name, "has no size")
    if isinstance(size, int):
        raise _fail(uri, name, f"size {size} is ambiguous (shortest edge or square): write {{\"shortest_edge\": {size}}} "
                    f"or {{\"height\": {size}, \"width\": {size}}}")
    do_crop = bool(pc.get("do_center_crop", False))
    crop = _side(uri, name, "crop_size", pc["crop_size"]) if do_crop and "crop_size" in pc else None
    if do_crop and crop is None:
        raise _fail(uri, name, "has do_center_crop but no crop_size")
    if isinstance(size, dict) and "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if crop is not None:
            resize, mode = edge, "shorter"
        elif pc.get("crop_pct") is not None:
            resize, crop, mode = int(edge / float(pc["crop_pct"])), edge, "shorter"
        else:
            raise _fail(uri, name, f"size {size} keeps the aspect ratio and has no centre crop: batches need square "
                        "inputs; set do_center_crop and crop_size")
    elif isinstance(size, dict) and {"height", "width"} <= set(size):
        resize, mode = _side(uri, name, "size", size), "square"
        crop = crop if crop is not None else resize
    else:
        raise _fail(uri, name, f"size {size!r} is not supported; use {{\"shortest_edge\": N}} or {{\"height\": N, \"width\": N}}")
    resample = pc.get("resample", 2)
    if resample not in _RESAMPLE_BY_INT:
        raise _fail(uri, name, f"resample {resample!r} is not a Pillow filter number (0-5)")
    rescale = float(pc.get("rescale_factor", 1 / 255)) if pc.get("do_rescale", True) else 1.0
    if pc.get("do_normalize", True):
        if "image_mean" not in pc or "image_std" not in pc:
            raise _fail(uri, name, "has do_normalize but no image_mean/image_std")
        mean, std = _triple(uri, name, "image_mean", pc["image_mean"]), _triple(uri, name, "image_std", pc["image_std"])
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if crop > resize:
        raise _fail(uri, name, f"crop {crop} is larger than the resized image ({resize})")
    return ClassificationPreset(
        resize_size=resize, crop_size=crop, mean=mean, std=std, interpolation=_RESAMPLE_BY_INT[resample],
        resize_mode=mode, rescale=rescale,
    )


def _from_timm_cfg(uri: str, cfg: dict) -> ClassificationPreset:
    """The eval preprocessing timm derives from a ``pretrained_cfg`` (``timm.data.create_transform``):
    the shorter side to ``floor(input_size / crop_pct)``, then a centre crop of ``input_size``."""
    name = f"{CONFIG_FILE} pretrained_cfg"
    size = cfg.get("test_input_size") or cfg.get("input_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 3):
        raise _fail(uri, name, f"input_size {size!r} must be [3, H, W]")
    if size[0] != 3 or size[1] != size[2]:
        raise _fail(uri, name, f"input_size {list(size)} is not a square RGB input; only those are supported")
    crop_pct = float(cfg.get("test_crop_pct") or cfg.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT
    mode = cfg.get("crop_mode", "center")
    if mode != "center":
        raise _fail(uri, name, f"crop_mode {mode!r} is not supported; only 'center'")
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming"):
        raise _fail(uri, name, f"interpolation {interpolation!r} is not supported")
    if "mean" not in cfg or "std" not in cfg:
        raise _fail(uri, name, "has no mean/std")
    return ClassificationPreset(
        resize_size=math.floor(int(size[1]) / crop_pct), crop_size=int(size[1]),
        mean=_triple(uri, name, "mean", cfg["mean"]), std=_triple(uri, name, "std", cfg["std"]),
        interpolation=interpolation,
    )


def _check_timm_architecture(uri: str, config: dict) -> None:
    architecture = str(config["architecture"])
    import timm

    if not timm.is_model(architecture):
        raise _fail(uri, CONFIG_FILE, f"names architecture {architecture!r}, which timm {timm.__version__} does not know")


def _check_transformers_architecture(uri: str, config: dict) -> None:
    try:
        import transformers
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    except ImportError as err:
        raise _fail(
            uri, "is a transformers model, but", "the transformers package is not installed: "
            "pip install 'batch-classify[transformers]'"
        ) from err
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    known = set(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.values())
    if model_type not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        raise _fail(
            uri, CONFIG_FILE, f"names model_type {model_type!r}, which has no image-classification model in "
            f"transformers {transformers.__version__}"
        )
    for arch in architectures:
        if arch not in known:
            raise _fail(uri, CONFIG_FILE, f"names architecture {arch!r}, not an image classifier of transformers {transformers.__version__}")


def load_module(folder: ModelFolder, storage: StorageOptions):
    """The torch module of a timm or transformers folder, weights loaded from ``model.safetensors``,
    in eval mode on the CPU: float32 [N, 3, H, W] → logits float32 [N, K].

    Raises:
        ModelError: the weights file cannot be read or does not fit the architecture (missing or
            unexpected tensors: a head left randomly initialised would invent predictions).
    """
    load = FORMATS[folder.format].load
    if load is None:
        raise _fail(folder.uri, "is an ONNX model:", "it runs under ONNX Runtime only (--runtime onnx)")
    return load(folder, storage)


def _timm_load(folder: ModelFolder, storage: StorageOptions):
    """timm's module from ``config.json``'s ``architecture``, with the folder's safetensors."""
    from safetensors.torch import load as load_safetensors

    fs, root = filesystem(folder.uri, storage)
    try:
        state = load_safetensors(fs.cat_file(posixpath.join(root, SAFETENSORS_FILE)))
    except FileNotFoundError as err:
        raise _fail(folder.uri, "has no", SAFETENSORS_FILE) from err
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise _fail(folder.uri, SAFETENSORS_FILE, f"could not be read: {type(err).__name__}: {err}") from err
    return _timm_module(folder, state)


def _check_keys(folder: ModelFolder, missing, unexpected) -> None:
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected:
        shown = ", ".join((["missing " + k for k in missing[:3]] + ["unexpected " + k for k in unexpected[:3]]))
        raise _fail(
            folder.uri, SAFETENSORS_FILE, f"does not fit the architecture in {CONFIG_FILE}: {len(missing)} tensors "
            f"missing, {len(unexpected)} unexpected ({shown})"
        )


def _timm_module(folder: ModelFolder, state: dict):
    import timm

    kwargs = dict(folder.config.get("model_args") or {})
    kwargs["num_classes"] = len(folder.class_names)
    model = timm.create_model(folder.config["architecture"], pretrained=False, **kwargs)
    result = model.load_state_dict(state, strict=False)
    _check_keys(folder, result.missing_keys, result.unexpected_keys)
    return model.eval()


def _transformers_module(folder: ModelFolder, storage: StorageOptions):
    """A transformers image classifier built from ``config.json`` with the folder's tensors.

    Built with ``AutoModelForImageClassification.from_pretrained`` on a local copy of the config and
    weights (the folder itself when local), so that transformers applies its own loading rules
    (renamed keys, tied weights); refused when any tensor is missing or left over.
    """
    import tempfile

    import torch
    from transformers import AutoModelForImageClassification

    class LogitsOnly(torch.nn.Module):
        """``model(pixel_values=x).logits``: a plain tensor out, as the engines and the ONNX export need."""

        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    fs, root = filesystem(folder.uri, storage)
    with tempfile.TemporaryDirectory(prefix="batch-classify-model-") as tmp:
        if is_remote_fs(fs):
            local = tmp
            for name in (CONFIG_FILE, SAFETENSORS_FILE):
                fs.get_file(posixpath.join(root, name), posixpath.join(tmp, name))
        else:
            local = root
        model, info = AutoModelForImageClassification.from_pretrained(
            local, local_files_only=True, output_loading_info=True, dtype=torch.float32
        )
    _check_keys(folder, info.get("missing_keys", ()), info.get("unexpected_keys", ()))
    return LogitsOnly(model.eval()).eval()


@dataclass(frozen=True)
class FolderFormat:
    """One model-folder format: how to tell it, check it and load it (timm's registry-and-factory
    shape, for the file layouts the Hugging Face ecosystem writes).

    Attributes:
        name: the format's name (``ModelFolder.format``, ``ModelSpec.format``, ``batch-classify models``).
        weights_file: the file that holds its weights.
        detect: given ``config.json``, whether a folder with ``weights_file`` is of this format (the
            table is tried in order: the first that matches).
        check: ``(uri, config)``: refuses an architecture the installed library does not know, with
            :class:`ModelError` (one line naming the file); called by :func:`read_folder`.
        load: ``(folder, storage)``: the torch module, weights loaded, eval mode, float32 [N, 3, H, W] →
            logits float32 [N, K]; None: the format runs under ONNX Runtime only.
    """

    name: str
    weights_file: str
    detect: Callable[[dict], bool]
    check: Callable[[str, dict], None]
    load: Callable[[ModelFolder, StorageOptions], object] | None


#: The model-folder formats, tried in this order. Adding a format: a record here (and its functions in
#: this module); ``read_folder``, ``load_module``, ``ModelFolder.weights_uri`` and ``onnx_only``, and so the
#: engines and the plan, read it from here.
FORMATS: dict[str, FolderFormat] = {f.name: f for f in (
    FolderFormat("onnx", ONNX_FILE, detect=lambda config: True, check=lambda uri, config: None, load=None),
    # before timm: TimmWrapper configs of transformers carry timm's 'architecture' key too
    FolderFormat("transformers", SAFETENSORS_FILE, detect=lambda config: bool(config.get("architectures") or config.get("model_type")),
                 check=_check_transformers_architecture, load=_transformers_module),
    FolderFormat("timm", SAFETENSORS_FILE, detect=lambda config: "architecture" in config,
                 check=_check_timm_architecture, load=_timm_load),
)}
