import hashlib
import shutil

import pytest
import torch

from batch_classify.models.registry import ModelError, get_spec, list_models, load_model
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()


def test_registry_names():
    names = list_models()
    assert {"resnet152", "resnet50", "efficientnet_b0", "efficientnet_lite0"} <= set(names)
    assert get_spec("resnet152").preset.resize_size == 232  # from ResNet152_Weights.IMAGENET1K_V2.transforms()
    assert get_spec("efficientnet_b0").preset.interpolation == "bicubic"
    with pytest.raises(ModelError, match="unknown model 'resnet9000'"):
        get_spec("resnet9000")


def test_missing_weights_error_names_file_place_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec("resnet50")
    assert not spec.weights_available()
    with pytest.raises(ModelError) as err:
        load_model(spec, None, OPTS)
    msg = str(err.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in msg
    assert "--weights" in msg and "download.pytorch.org" in msg


def test_hub_cache_and_explicit_weights(tmp_path, monkeypatch):
    """Weights from the torch hub cache (checked against the SHA-256 prefix in their canonical
    name) and from --weights, loaded with weights_only=True."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = get_spec("resnet18")
    state = spec.build().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / spec.weights_file)  # random weights under the published name
    with pytest.raises(ModelError, match=r"resnet18-f37072fd.pth is corrupt or not the published file.*SHA-256 f37072fd"):
        load_model(spec, None, OPTS)
    # The same bytes under a name whose prefix they match load from the cache and from --weights.
    digest = hashlib.sha256((cache / spec.weights_file).read_bytes()).hexdigest()[:8]
    shutil.move(cache / spec.weights_file, tmp_path / f"mine-{digest}.pth")
    assert torch.equal(load_model(spec, str(tmp_path / f"mine-{digest}.pth"), OPTS).fc.bias, state["fc.bias"])
    shutil.copy(tmp_path / f"mine-{digest}.pth", tmp_path / "mine.pth")  # no hash in the name: not checked
    assert torch.equal(load_model(spec, str(tmp_path / "mine.pth"), OPTS).fc.weight, state["fc.weight"])


def test_packaged_lite0_weights_match_the_hash_in_their_name():
    spec = get_spec("efficientnet_lite0")
    assert spec.weights_file.endswith("-57934424.pth")
    load_model(spec, None, OPTS)  # checked on every load


def test_weights_only_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model(get_spec("resnet18"), str(tmp_path / "evil.pth"), OPTS)


def test_wrong_architecture_weights(tmp_path):
    torch.save(get_spec("resnet18").build().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ModelError, match="does not fit efficientnet_lite0"):
        load_model(get_spec("efficientnet_lite0"), str(tmp_path / "r18.pth"), OPTS)


def test_lite0_weights_ship_with_the_package():
    assert get_spec("efficientnet_lite0").weights_available()


def test_weights_from_s3(s3_endpoint, tmp_path):
    import boto3

    spec = get_spec("resnet18")
    state = spec.build().state_dict()
    torch.save(state, tmp_path / "w.pth")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="weights")
    s3.upload_file(str(tmp_path / "w.pth"), "weights", "r18.pth")
    model = load_model(spec, "s3://weights/r18.pth", StorageOptions(endpoint_url=s3_endpoint))
    assert torch.equal(model.fc.bias, state["fc.bias"])

