"""Sanity of the test factory ``model_folders``: the model folders it writes are what the Hugging Face tools
write and read, they carry the real Lite0 weights, and the three independent references agree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import model_folders as mf


@pytest.fixture(scope="module")
def names() -> list[str]:
    return mf.custom_names(mf.CLASS_PICK)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory, names):
    return mf.write_onnx_folder(tmp_path_factory.mktemp("onnx-model"), mf.CLASS_PICK, names)


@pytest.fixture(scope="module")
def timm_folder(tmp_path_factory, names):
    return mf.write_timm_folder(tmp_path_factory.mktemp("timm-model"), mf.CLASS_PICK, names)


@pytest.fixture(scope="module")
def transformers_folder(tmp_path_factory, names):
    return mf.write_transformers_folder(tmp_path_factory.mktemp("transformers-model"), mf.CLASS_PICK, names)


@pytest.fixture(scope="module")
def picked(photos):
    """(paths, K-class labels) of the shared photos of the picked classes."""
    paths, labels = mf.photos_of_classes(photos, mf.CLASS_PICK)
    assert len(paths) == len(mf.CLASS_PICK), "every picked class has a photo in the shared sample"
    return paths, labels


def _inputs(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, mf.CROP, mf.CROP, generator=torch.Generator().manual_seed(0))


def test_source_weights_are_the_registry_lite0():
    from batch_classify.models.registry import get_spec, load_model
    from batch_classify.storage import StorageOptions

    ours = mf.lite0_imagenet().state_dict()
    theirs = load_model(get_spec("efficientnet_lite0"), None, StorageOptions()).state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_k_class_model_keeps_the_picked_rows():
    x = _inputs()
    with torch.inference_mode():
        full = mf.lite0_imagenet()(x)
        k = mf.k_class_lite0(mf.CLASS_PICK)(x)
        tm = mf.timm_lite0(mf.CLASS_PICK)(x)
    assert k.shape == (2, len(mf.CLASS_PICK)) and k.dtype == torch.float32
    # The same rows of the same weights: equal up to float32 rounding (a 10-wide and a 1000-wide matrix
    # product may take different kernels; 4.8e-7 measured on the CI machine).
    torch.testing.assert_close(k, full[:, mf.CLASS_PICK], rtol=0, atol=1e-5)
    assert torch.allclose(tm, k, atol=1e-4)


def test_custom_names_are_the_users_own(names):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    imagenet = {info.index_to_description(i).casefold() for i in range(1000)} | {w.casefold() for w in mf.imagenet_wnids()}
    assert len(names) == len(mf.CLASS_PICK) == len({n.casefold() for n in names})
    assert all(n.casefold() not in imagenet and "/" not in n and n == n.strip() for n in names)
    assert names[0] == "SKU-001 Tench"
    assert all(c % 2 == 0 for c in mf.CLASS_PICK)


def test_onnx_folder_layout(onnx_folder, names):
    import onnx

    assert sorted(p.name for p in onnx_folder.iterdir()) == ["config.json", "model.onnx", "preprocessor_config.json"]
    config = json.loads((onnx_folder / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert config["label2id"] == {n: i for i, n in enumerate(names)}
    assert json.loads((onnx_folder / "preprocessor_config.json").read_text()) == mf.PREPROCESSOR_CONFIG
    graph = onnx.load(onnx_folder / "model.onnx").graph

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in graph.input] == [("pixel_values", ["batch_size", 3, 224, 224])]
    assert [(v.name, dims(v)) for v in graph.output] == [("logits", ["batch_size", len(names)])]
    assert graph.input[0].type.tensor_type.elem_type == graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_timm_folder_layout_and_transform(timm_folder, names):
    assert sorted(p.name for p in timm_folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((timm_folder / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0" and config["num_classes"] == len(names)
    assert config["label_names"] == names  # save_for_hf writes the list as given
    cfg = config["pretrained_cfg"]
    assert (cfg["input_size"], cfg["interpolation"], cfg["crop_pct"], cfg["crop_mode"], cfg["mean"], cfg["std"]) == (
        [3, 224, 224], "bilinear", 0.875, "center", [0.5] * 3, [0.5] * 3)
    model, transform = mf.load_timm_folder(timm_folder)
    steps = transform.transforms
    assert type(steps[0]).__name__ == "Resize" and steps[0].size == 256 and steps[0].interpolation.value == "bilinear"
    assert type(steps[1]).__name__ == "CenterCrop" and tuple(steps[1].size) == (224, 224)
    assert steps[-1].mean.tolist() == steps[-1].std.tolist() == [0.5] * 3
    x = _inputs()
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x), mf.k_class_lite0(mf.CLASS_PICK)(x), atol=1e-4)


def test_transformers_folder_loads_cleanly(transformers_folder, names):
    from transformers import AutoModelForImageClassification

    files = sorted(p.name for p in transformers_folder.iterdir())
    assert files == ["config.json", "model.safetensors", "preprocessor_config.json"]
    config = json.loads((transformers_folder / "config.json").read_text())
    assert config["architectures"] == ["TimmWrapperForImageClassification"] and config["model_type"] == "timm_wrapper"
    assert config["label_names"] == names and "id2label" not in config and "pretrained_cfg" not in config
    model, info = AutoModelForImageClassification.from_pretrained(transformers_folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.id2label == dict(enumerate(names))
    x = _inputs()
    with torch.inference_mode():
        assert torch.allclose(model.eval()(pixel_values=x).logits, mf.k_class_lite0(mf.CLASS_PICK)(x), atol=1e-4)


def test_image_processor_is_the_lite0_preprocessing(onnx_folder, transformers_folder, picked):
    """transformers' processor = resize 256 bilinear + centre crop 224 + normalise 0.5, with its crop anchored
    at floor((size - 224) / 2) (torchvision's CenterCrop rounds half to even): pixel for pixel with the PIL
    backend; within one uint8 level with the default torchvision backend (its antialiased tensor resize
    rounds a few pixels differently from Pillow's)."""
    from torchvision import transforms as T
    from torchvision.transforms import functional as F
    from transformers import AutoImageProcessor

    resize = T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True)
    for folder in (onnx_folder, transformers_folder):
        for backend, atol in (("pil", 1e-5), (None, 1 / 127.5 + 1e-5)):
            processor = AutoImageProcessor.from_pretrained(folder, **({"backend": backend} if backend else {}))
            assert type(processor).__name__.startswith("MobileNetV1ImageProcessor")
            for path in picked[0][:8]:
                img = mf._open_rgb(path)
                got = processor(images=img, return_tensors="pt")["pixel_values"]
                r = resize(img)
                top, left = (r.height - 224) // 2, (r.width - 224) // 2
                want = F.normalize(F.to_tensor(r.crop((left, top, left + 224, top + 224))), [0.5] * 3, [0.5] * 3)
                assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
                assert (got[0] - want).abs().max() <= atol and (got[0] - want).abs().mean() < 1e-3, (path.name, backend)


@pytest.mark.slow
def test_real_weight_folders_agree_and_are_accurate(onnx_folder, timm_folder, transformers_folder, picked):
    paths, labels = picked
    top_onnx, logits_onnx = mf.reference_onnx(onnx_folder, paths, with_logits=True)
    top_timm, logits_timm = mf.reference_timm(timm_folder, paths, with_logits=True)
    top_tr = mf.reference_transformers(transformers_folder, paths)
    assert top_onnx.dtype == np.int64 and top_onnx.shape == labels.shape
    assert logits_onnx.shape == (len(paths), len(mf.CLASS_PICK))
    # Same torchvision preprocessing, same weights: the same logits up to ONNX Runtime's arithmetic.
    np.testing.assert_allclose(logits_onnx, logits_timm, atol=1e-3)
    np.testing.assert_array_equal(top_onnx, top_timm)
    np.testing.assert_array_equal(top_onnx, top_tr)
    accuracy = float((top_onnx == labels).mean())
    print(f"K={len(mf.CLASS_PICK)}-class top-1 on {len(paths)} shared photos: {accuracy:.3f}")
    assert accuracy >= 0.95  # measured 1.000 (42/42); the same photos' 1000-way top-1 is 0.881


def test_arrange_by_custom_names(photos, names, tmp_path):
    root = mf.arrange_by_custom_names(photos, mf.CLASS_PICK, names, tmp_path / "by-name")
    assert sorted(p.name for p in root.iterdir()) == sorted(names)
    for k, name in enumerate(names):
        (photo,) = (root / name).iterdir()
        assert mf.class_index_of(photo) == mf.CLASS_PICK[k]


def test_tiny_transformers_folder(tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    names = ["Alpha Widget", "Beta Widget", "Gamma Widget"]
    folder = mf.write_tiny_transformers_folder(tmp_path / "tiny", names)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert json.loads((folder / "config.json").read_text())["id2label"] == {"0": "Alpha Widget", "1": "Beta Widget", "2": "Gamma Widget"}
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((90, 120), (150, 100))]
    pixels = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = model(pixel_values=pixels).logits
    assert logits.shape == (2, 3) and logits.dtype == torch.float32
    assert model.config.id2label == dict(enumerate(names))
