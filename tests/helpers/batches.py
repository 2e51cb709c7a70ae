"""Output batches as the model actors hand them to the driver, for tests of staging and the commit."""

from __future__ import annotations

import numpy as np


def actor_batch(paths: list[str], failed: set[str] = frozenset()) -> dict[str, np.ndarray]:
    """An output batch of the model actors: ``paths`` predicted as class 1, those in ``failed`` failed at decode."""
    n = len(paths)
    error = np.array(["DecodeError: not an image" if p in failed else "" for p in paths], dtype=object)
    return {
        "path": np.array(paths, dtype=object),
        "label": np.array([None] * n, dtype=object),
        "stage": np.where(error != "", "decode", "").astype(object),
        "error": error,
        "pred_index": np.ones(n, dtype=np.int64),
        "confidence": np.full(n, 0.9, dtype=np.float32),
        "top5_index": np.tile(np.arange(1, 6, dtype=np.int64), (n, 1)),
        "top5_prob": np.tile(np.array([0.9, 0.04, 0.03, 0.02, 0.01], dtype=np.float32), (n, 1)),
    }
