"""Reading a model folder: formats, class names and preprocessing, and one clear line for every way a
folder can be incomplete or inconsistent (the weights are never loaded here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_classify.models.folder import ModelError, is_folder_reference, read_folder
from batch_classify.models.registry import get_spec
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()
NAMES = ["cat", "dog", "Golden Retriever"]
PROCESSOR = {
    "do_resize": True, "size": {"shortest_edge": 256}, "resample": 2, "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
    "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
}


def _folder(root: Path, *, config: dict | str | None = None, processor: dict | None = PROCESSOR,
            weights: tuple[str, ...] = ("model.onnx",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = {"id2label": {str(i): n for i, n in enumerate(NAMES)}}
    if config is not False:
        (root / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if processor is not None:
        (root / "preprocessor_config.json").write_text(json.dumps(processor))
    for name in weights:
        (root / name).write_bytes(b"not read by read_folder")
    return root


def test_folder_references_and_registry_names():
    for ref in ("./m", "models/m", "/abs/m", "s3://bucket/m", "~/m"):
        assert is_folder_reference(ref)
    for name in ("resnet152", "efficientnet_lite0"):
        assert not is_folder_reference(name)


def test_onnx_folder_with_hf_processor(tmp_path):
    folder = read_folder(str(_folder(tmp_path / "m")), OPTS)
    assert folder.format == "onnx" and folder.class_names == tuple(NAMES)
    p = folder.preset
    assert (p.resize_size, p.crop_size, p.resize_mode, p.interpolation) == (256, 224, "shorter", "bilinear")
    assert p.mean == p.std == (0.5, 0.5, 0.5) and p.rescale == pytest.approx(1 / 255)
    assert [rel for rel, _, _ in folder.files] == ["config.json", "model.onnx", "preprocessor_config.json"]
    spec = get_spec(str(tmp_path / "m"))
    assert spec.onnx_only and spec.vocabulary().names == tuple(NAMES) and spec.vocabulary().wnids is None


@pytest.mark.parametrize(
    ("processor", "expected"),
    [
        # ConvNeXt's processor: shortest edge 224 with crop_pct 0.875 → resize to 256, crop 224
        ({"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3, "image_mean": [0.4, 0.4, 0.4],
          "image_std": [0.2, 0.2, 0.2]}, (256, 224, "shorter", "bicubic")),
        # ViT's: stretched to 224 × 224, no crop
        ({"size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
         (224, 224, "square", "bilinear")),
        # DeiT's: stretched to 256 × 256, then a centre crop of 224
        ({"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
          "resample": 3, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}, (256, 224, "square", "bicubic")),
    ],
)
def test_hf_processor_variants(tmp_path, processor, expected):
    p = read_folder(str(_folder(tmp_path / "m", processor=processor)), OPTS).preset
    assert (p.resize_size, p.crop_size, p.resize_mode, p.interpolation) == expected


def test_no_rescale_and_no_normalize(tmp_path):
    processor = {"size": {"height": 64, "width": 64}, "do_rescale": False, "do_normalize": False}
    p = read_folder(str(_folder(tmp_path / "m", processor=processor)), OPTS).preset
    assert (p.rescale, p.mean, p.std) == (1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_timm_folder_preprocessing_from_pretrained_cfg(tmp_path):
    config = {
        "architecture": "tf_efficientnet_lite0", "num_classes": 3, "label_names": NAMES,
        "pretrained_cfg": {"input_size": [3, 224, 224], "crop_pct": 0.875, "interpolation": "bicubic",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_mode": "center"},
    }
    folder = read_folder(str(_folder(tmp_path / "m", config=config, processor=None, weights=("model.safetensors",))), OPTS)
    assert folder.format == "timm" and folder.class_names == tuple(NAMES)
    assert (folder.preset.resize_size, folder.preset.crop_size, folder.preset.interpolation) == (256, 224, "bicubic")
    assert folder.preprocessing_source.startswith("config.json")


def test_transformers_folder_is_recognised(tmp_path):
    config = {"architectures": ["ResNetForImageClassification"], "model_type": "resnet",
              "id2label": {"0": "a", "1": "b"}, "label2id": {"a": 0, "b": 1}}
    folder = read_folder(str(_folder(tmp_path / "m", config=config, weights=("model.safetensors",))), OPTS)
    assert folder.format == "transformers" and folder.class_names == ("a", "b")


def test_identity_changes_with_any_file(tmp_path):
    root = _folder(tmp_path / "m")
    before = read_folder(str(root), OPTS).sha256(OPTS)
    assert read_folder(str(root), OPTS).sha256(OPTS) == before
    (root / "preprocessor_config.json").write_text(json.dumps({**PROCESSOR, "resample": 3}))
    assert read_folder(str(root), OPTS).sha256(OPTS) != before


TIMM_CFG = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(weights=()), r"has no weights: expected model\.onnx or model\.safetensors"),
        (dict(weights=("pytorch_model.bin",)), r"pickled weights only \(pytorch_model\.bin\)"),
        (dict(weights=("model.onnx", "model.safetensors")), r"holds both model\.onnx and model\.safetensors"),
        (dict(config=False), r"has no config\.json"),
        (dict(config="{not json"), r"config\.json is not valid JSON"),
        (dict(config={"num_labels": 3}), r"config\.json has no class names: add id2label"),
        (dict(config={"id2label": {"0": "a", "2": "c"}}), r"id2label must name every index from 0 to 1; missing \[1\]"),
        (dict(config={"id2label": {"0": "a", "1": "b"}, "num_labels": 5}), r"says num_labels 5 but id2label names 2 classes"),
        (dict(processor=None), r"has no preprocessing: add preprocessor_config\.json"),
        (dict(processor={**PROCESSOR, "size": 224}), r"size 224 is ambiguous"),
        (dict(processor={**PROCESSOR, "crop_size": {"height": 224, "width": 200}}), r"is not square"),
        (dict(processor={k: v for k, v in PROCESSOR.items() if k != "image_std"}), r"no image_mean/image_std"),
        (dict(processor={"size": {"shortest_edge": 224}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}),
         r"has no centre crop"),
        (dict(config={"architecture": "no_such_net", "label_names": NAMES, "pretrained_cfg": TIMM_CFG},
              processor=None, weights=("model.safetensors",)), r"architecture 'no_such_net', which timm"),
        (dict(config={"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "id2label": {"0": "a"}},
              weights=("model.safetensors",)), r"model_type 'gpt2', which has no image-classification model"),
        (dict(config={"label_names": NAMES}, weights=("model.safetensors",)), r"names no architecture"),
    ],
)
def test_incomplete_or_inconsistent_folders_are_one_line_naming_the_file(tmp_path, kwargs, message):
    root = _folder(tmp_path / "m", **kwargs)
    with pytest.raises(ModelError, match=message) as err:
        read_folder(str(root), OPTS)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(ModelError, match="neither a registry name nor an existing folder"):
        get_spec(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        get_spec("resnet9000")


def test_a_corrupt_onnx_file_is_one_line_naming_the_folder(tmp_path):
    from batch_classify.stage.engines import build_engine

    root = _folder(tmp_path / "m")  # model.onnx holds text, not a model
    with pytest.raises(ModelError, match=rf"model folder {root}: model\.onnx could not be loaded by ONNX Runtime"):
        build_engine(get_spec(str(root)), None, OPTS, runtime="auto")


def test_files_linked_from_outside_the_folder_are_refused_and_links_inside_are_fine(tmp_path):
    """A ``model.onnx`` that is a symbolic link to ``/etc/passwd`` (or to any file outside, or inside a
    linked sub-folder) is refused by name and target, for ``run`` and ``models`` alike (both read the
    folder with ``read_folder``); a link to another file of the same folder is fine."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "weights.onnx").write_bytes(b"x")
    m = _folder(tmp_path / "m", weights=())
    (m / "model.onnx").symlink_to("/etc/passwd")
    with pytest.raises(ModelError) as caught:
        read_folder(str(m), OPTS)
    assert str(caught.value) == (
        f"model folder {m}: has files that are links leading outside it (model.onnx -> /etc/passwd); copy the files "
        "into the folder (a model folder is read as a whole: what it names must be in it)"
    )
    with pytest.raises(ModelError, match="links leading outside"):
        get_spec(str(m))
    (m / "model.onnx").unlink()
    (m / "sub").symlink_to(outside, target_is_directory=True)
    (m / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match=f"\(sub -> {outside}\)"):
        read_folder(str(m), OPTS)
    (m / "sub").unlink()
    (m / "model.onnx").unlink()
    (m / "real.onnx").write_bytes(b"x")
    (m / "model.onnx").symlink_to("real.onnx")
    assert read_folder(str(m), OPTS).format == "onnx"


def test_one_name_for_two_classes_is_refused_with_the_names():
    """``id2label`` with "crane" at 1 and 3 (as Hugging Face's ImageNet-1k configs have at 134 and 517):
    labels, predictions and per-class figures could not be told apart, so the folder is refused."""
    from batch_classify.models.folder import _class_names

    with pytest.raises(ModelError) as caught:
        _class_names("m", {"id2label": {"0": "cat", "1": "crane", "2": "dog", "3": "crane"}})
    assert str(caught.value) == (
        "model folder m: config.json id2label gives one name to several classes ('crane' at 1, 3): their labels, "
        "predictions and per-class figures could not be told apart; give each class its own name "
        "(e.g. 'crane (bird)', 'crane (machine)')"
    )
    assert _class_names("m", {"id2label": {"0": "Crane", "1": "crane"}}) == ("Crane", "crane")
