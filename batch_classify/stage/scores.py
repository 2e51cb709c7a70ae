"""Per-image scores from logits: top-k of the softmax, its entropy, the restricted argmax; each a
scored column of :data:`batch_classify.columns.PREDICTIONS`, computed here by its name.

Computed where the logits are:

* logits on the host (ONNX Runtime, the CPU actors): numpy, so that a CPU actor never imports
  torch (``import torch`` costs about 1.7 s of one core per actor process, measured on the 2-core
  development machine: ``python -X importtime -c "import torch"``);
* a torch tensor (the PyTorch engine, on a GPU or the CPU): torch, on its device, and only the
  packed [N, 2k + 2] float32 result crosses to the host (:func:`batch_classify.columns.pack`).

Both return the same named arrays.
"""

from __future__ import annotations

import numpy as np

from batch_classify.columns import TOP_K, pack, unpack


def scores(logits, restricted: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Softmax top-k, entropy and restricted argmax of ``logits``.

    Args:
        logits: float [N, C], a numpy array or a torch tensor (on any device).
        restricted: int64 [R] class indices: the argmax of the logits over these only (the
            Imagenette-style evaluation); None: ``restricted_index`` is -1.

    Returns:
        the scored columns (:data:`batch_classify.columns.SCORED`), with k = min(TOP_K, C):
        ``top5_index`` int64 [N, k] and ``top5_prob`` float32 [N, k], largest first (equal
        probabilities: the lower class index first); ``restricted_index`` int64 [N];
        ``entropy`` float32 [N], of the softmax over all C classes, nats.
    """
    if isinstance(logits, np.ndarray):
        return _scores_numpy(logits, restricted)
    return _scores_torch(logits, restricted)


def _scores_numpy(logits: np.ndarray, restricted: np.ndarray | None) -> dict[str, np.ndarray]:
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    probs = e / total
    k = min(TOP_K, x.shape[1])
    # Largest first; among equal probabilities the lower class index first (a stable sort).
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    parts = {
        "top5_index": idx,
        "top5_prob": np.take_along_axis(probs, idx, axis=1),
        # entropy = -sum p log p, with log p = shifted - log(total) (no log of a zero probability)
        "entropy": -(probs * (shifted - np.log(total))).sum(axis=1),
        "restricted_index": np.full(len(x), -1, np.int64) if restricted is None
        else restricted[x[:, restricted].argmax(axis=1)],
    }
    # Through the packed layout, as the torch path: one set of dtypes and shapes for both.
    return unpack(pack({n: v.astype(np.float32) for n, v in parts.items()}, k, np.concatenate), k)


def _scores_torch(logits, restricted: np.ndarray | None) -> dict[str, np.ndarray]:
    import torch

    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    k = min(TOP_K, probs.shape[1])
    p, i = probs.topk(k, dim=1)
    if restricted is None:
        best = torch.full((len(logits),), -1.0, device=logits.device)
    else:
        allowed = torch.from_numpy(restricted).to(logits.device)
        best = allowed[logits[:, allowed].argmax(dim=1)].float()
    parts = {"top5_index": i.float(), "top5_prob": p, "entropy": torch.special.entr(probs).sum(dim=1),
             "restricted_index": best}
    return unpack(pack(parts, k, torch.cat).cpu().numpy(), k)  # one transfer of the small result
