"""The predictions' columns, declared once (batch_classify.columns): what the actor returns, how the
scores travel packed, and how the staging writer turns an output batch into Arrow columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from batch_classify.columns import (
    MODEL_OUTPUTS, PREDICTION_SCHEMA, PREDICTIONS, SCORED, SOURCES, TOP_K, empty_outputs, output_arrays, pack,
    scored_width, unpack, with_best,
)
from batch_classify.listing import RESERVED_COLUMNS


def test_every_column_is_declared_once_with_a_source_and_a_description():
    names = [c.name for c in PREDICTIONS]
    assert len(names) == len(set(names)) and PREDICTION_SCHEMA.names == names
    assert all(c.source in SOURCES and c.doc for c in PREDICTIONS)
    # A model output is either scored from the logits or read off a scored top-k list, never both.
    for c in MODEL_OUTPUTS:
        assert c.scored != bool(c.best_of), c.name
        if c.best_of:
            assert next(s for s in SCORED if s.name == c.best_of).top_k, c.name
    assert RESERVED_COLUMNS == set(names)  # a partition key named like a column would overwrite it


@pytest.mark.parametrize("k", [TOP_K, 3, 1])
def test_packed_scores_unpack_to_the_same_named_arrays(k):
    rng = np.random.default_rng(3)
    parts = {c.name: (rng.integers(0, 1000, (7, k)) if c.top_k else rng.integers(-1, 1000, 7)).astype(c.dtype)
             for c in SCORED}
    matrix = pack({n: v.astype(np.float32) for n, v in parts.items()}, k, np.concatenate)
    assert matrix.shape == (7, scored_width(k)) and matrix.dtype == np.float32
    back = unpack(matrix, k)
    assert list(back) == list(parts)
    for name, values in parts.items():
        np.testing.assert_array_equal(back[name], values)
        assert back[name].dtype == values.dtype
    with pytest.raises(ValueError, match="expected"):
        unpack(matrix[:, :-1], k)


def test_outputs_of_a_batch_with_a_failed_row_become_typed_columns_with_nulls():
    """Row 1 failed (its outputs at their fill); a model with 3 classes fills 3 of the TOP_K places."""
    out = empty_outputs(3)
    assert {n: v.shape for n, v in out.items()} == {c.name: ((3, TOP_K) if c.top_k else (3,)) for c in SCORED}
    out["top5_index"][[0, 2], :3] = [[2, 0, 1], [1, 2, 0]]
    out["top5_prob"][[0, 2], :3] = [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]]
    out["entropy"][[0, 2]] = [0.8, 1.0]
    batch = with_best(out)
    assert list(batch) == [c.name for c in MODEL_OUTPUTS]
    assert batch["pred_index"].tolist() == [2, -1, 1] and batch["confidence"].tolist() == pytest.approx([0.7, 0, 0.5])
    arrays = output_arrays(batch, np.array([0, 2]), k=3)
    assert {n: a.type for n, a in arrays.items()} == {c.name: c.type for c in MODEL_OUTPUTS}
    assert arrays["top5_index"].to_pylist() == [[2, 0, 1], [1, 2, 0]]
    assert arrays["restricted_index"].to_pylist() == [None, None]  # -1: no restricted classes, null
    assert arrays["entropy"].to_pylist() == pytest.approx([0.8, 1.0])
    # A batch from an actor that did not compute an output: that column is null, not invented.
    older = {n: v for n, v in batch.items() if n != "entropy"}
    assert output_arrays(older, np.array([0]), k=3)["entropy"].to_pylist() == [None]
    assert pa.table(arrays).num_rows == 2
