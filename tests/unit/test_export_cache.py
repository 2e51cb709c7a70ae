"""The ONNX export cache on disk (engines.onnx_model with cache_dir): a second run does not export again."""

from __future__ import annotations

import logging

import pytest

from batch_classify.stage import engines
from batch_classify.stage.engines import export_key, onnx_model
from batch_classify.models.registry import get_spec, load_weights
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()
LITE0 = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    onnx_model.cache_clear()
    yield
    onnx_model.cache_clear()


def test_second_call_loads_the_cached_export_instead_of_exporting(tmp_path, caplog):
    first = onnx_model(get_spec(LITE0), None, OPTS, cache_dir=str(tmp_path))
    assert engines._exported.cache_info().misses == 1
    cached = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    key = export_key(get_spec(LITE0), None, OPTS)
    assert cached == [f"{key}.onnx", f"{key}.sha256"] and key.startswith("efficientnet_lite0-")

    onnx_model.cache_clear()  # as a new process would start
    assert onnx_model(get_spec(LITE0), None, OPTS, cache_dir=str(tmp_path)) == first
    assert engines._exported.cache_info().misses == 0  # read from disk, not exported

    (tmp_path / "onnx" / f"{key}.onnx").write_bytes(first[:1000])  # a torn file
    onnx_model.cache_clear()
    with caplog.at_level(logging.WARNING, logger="batch_classify.stage.engines"):
        assert onnx_model(get_spec(LITE0), None, OPTS, cache_dir=str(tmp_path)) == first
    assert engines._exported.cache_info().misses == 1 and "does not match its checksum" in caplog.text
    assert (tmp_path / "onnx" / f"{key}.onnx").read_bytes() == first  # replaced


def test_other_weights_get_another_key(tmp_path):
    import torch

    state = load_weights(get_spec(LITE0), None, OPTS)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] * 1.01
    other = tmp_path / "tuned.pth"
    torch.save(state, other)
    spec = get_spec(LITE0)
    assert export_key(spec, str(other), OPTS) != export_key(spec, None, OPTS)
    assert export_key(spec, str(tmp_path / "missing.pth"), OPTS) is None


def test_unwritable_cache_still_returns_the_export(tmp_path, caplog):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    with caplog.at_level(logging.WARNING, logger="batch_classify.stage.engines"):
        blob = onnx_model(get_spec(LITE0), None, OPTS, cache_dir=str(blocked))
    assert blob[:2] and "could not cache the ONNX export" in caplog.text


def test_cache_dir_defaults_to_the_xdg_cache_and_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert RunSettings(input="in", output="out").cache_dir == str(tmp_path / "batch-classify")
    monkeypatch.setenv("BATCH_CLASSIFY_CACHE_DIR", "")
    assert RunSettings(input="in", output="out").cache_dir == ""
