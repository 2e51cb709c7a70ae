"""Scores from logits: numpy (CPU actors, no torch) and torch (on the device) give the same columns;
a CPU actor running ONNX Runtime classifies real photos without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from batch_classify.columns import SCORED, TOP_K
from batch_classify.stage.scores import scores


def _logits(rows: int = 64, classes: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((rows, classes)) * 4).astype(np.float32)


@pytest.mark.parametrize("classes", [1000, 3])
def test_numpy_and_torch_scores_agree(classes):
    logits = _logits(classes=classes)
    restricted = np.array([0, 2], dtype=np.int64)
    a = scores(logits, restricted)
    b = scores(torch.from_numpy(logits), restricted)
    k = min(TOP_K, classes)
    assert list(a) == list(b) == [c.name for c in SCORED]
    assert a["top5_index"].shape == a["top5_prob"].shape == (64, k) and a["entropy"].shape == (64,)
    assert {n: v.dtype for n, v in a.items()} == {n: v.dtype for n, v in b.items()} == {c.name: c.dtype for c in SCORED}
    np.testing.assert_array_equal(a["top5_index"], b["top5_index"])  # the same classes, the same order
    np.testing.assert_allclose(a["top5_prob"], b["top5_prob"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["entropy"], b["entropy"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(a["restricted_index"], b["restricted_index"])  # restricted argmax
    assert set(np.unique(a["restricted_index"])) <= {0, 2}


def test_numpy_scores_are_the_softmax_of_the_logits():
    logits = _logits(rows=4)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    got = scores(logits)
    expected_idx = np.argsort(-p, axis=1)[:, :TOP_K]
    np.testing.assert_array_equal(got["top5_index"], expected_idx)
    np.testing.assert_allclose(got["top5_prob"], np.take_along_axis(p, expected_idx, axis=1), rtol=1e-5)
    np.testing.assert_allclose(got["entropy"], -(p * np.log(p)).sum(axis=1), rtol=1e-4)
    assert (got["restricted_index"] == -1).all()  # no restricted classes
    # A logit far below the others: its probability underflows to 0, the entropy stays finite.
    extreme = np.array([[0.0, -1e4, 1.0]], dtype=np.float32)
    assert all(np.isfinite(v).all() for v in scores(extreme).values())


ACTOR = """
import json, sys
import numpy as np
blob = open(sys.argv[1], "rb").read()
from batch_classify.stage.inference import Classifier, decode_batch
from batch_classify.storage import StorageOptions
from batch_classify.models.registry import get_spec
paths = sys.argv[2:]
c = Classifier(spec=get_spec("efficientnet_lite0"), weights=None, storage=StorageOptions(), runtime="onnx",
               onnx_blob=blob, num_threads=1)
batch = decode_batch({"path": np.array(paths, dtype=object), "label": np.array([None] * len(paths), dtype=object)},
                     preset=c.spec.preset, storage=StorageOptions())
out = c(batch)
print(json.dumps({"torch": "torch" in sys.modules, "pred": out["pred_index"].tolist(), "error": list(out["error"])}))
"""


def test_cpu_actor_classifies_without_importing_torch(photos, tmp_path):
    from batch_classify.models.registry import get_spec
    from batch_classify.stage.engines import onnx_model
    from batch_classify.stage.inference import Classifier, decode_batch
    from batch_classify.storage import StorageOptions

    blob = onnx_model(get_spec("efficientnet_lite0"), None, StorageOptions())
    (tmp_path / "m.onnx").write_bytes(blob)
    paths = [str(p) for p in photos[:8]]
    done = subprocess.run([sys.executable, "-c", ACTOR, str(tmp_path / "m.onnx"), *paths],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    assert got["error"] == [""] * 8
    # The same classes as the PyTorch runtime on the same crops (scores computed with torch there).
    here = Classifier(spec=get_spec("efficientnet_lite0"), weights=None, storage=StorageOptions(), runtime="torch")
    batch = decode_batch({"path": np.array(paths, dtype=object), "label": np.array([None] * 8, dtype=object)},
                         preset=here.spec.preset, storage=StorageOptions())
    assert here(batch)["pred_index"].tolist() == got["pred"]
