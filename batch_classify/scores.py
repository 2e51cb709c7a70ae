"""Per-image scores from logits: top-k of the softmax, its entropy, the restricted argmax.

Computed where the logits are, into one small float32 array per batch:

* logits on the host (ONNX Runtime, the CPU actors): numpy, so that a CPU actor never imports
  torch (``import torch`` costs about 1.7 s of one core per actor process, measured on the 2-core
  development machine: ``python -X importtime -c "import torch"``);
* a torch tensor (the PyTorch engine, on a GPU or the CPU): torch, on its device, and only the
  [N, 2k + 2] result crosses to the host.

Both return the same layout, so the actor reads them one way.
"""

from __future__ import annotations

import numpy as np

#: Classes kept per image (top-5 accuracy is the field's second number).
TOP_K = 5


def scores(logits, restricted: np.ndarray | None = None) -> np.ndarray:
    """Softmax top-k, entropy and restricted argmax of ``logits``.

    Args:
        logits: float [N, C], a numpy array or a torch tensor (on any device).
        restricted: int64 [R] class indices: also the argmax of the logits over these only
            (the Imagenette-style evaluation); None: no such column.

    Returns:
        float32 [N, 2k + 1] (+1 with ``restricted``), k = min(TOP_K, C): the k probabilities in
        descending order, their k class indices (exact in float32, below 2**24), the entropy of
        the softmax over all C classes (nats), then the restricted argmax (a class index).
    """
    if isinstance(logits, np.ndarray):
        return _scores_numpy(logits, restricted)
    return _scores_torch(logits, restricted)


def _scores_numpy(logits: np.ndarray, restricted: np.ndarray | None) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    probs = e / total
    k = min(TOP_K, x.shape[1])
    # Largest first; among equal probabilities the lower class index first (a stable sort).
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, idx, axis=1)
    # entropy = -sum p log p, with log p = shifted - log(total) (no log of a zero probability)
    entropy = -(probs * (shifted - np.log(total))).sum(axis=1, keepdims=True)
    columns = [top, idx.astype(np.float32), entropy]
    if restricted is not None:
        columns.append(restricted[x[:, restricted].argmax(axis=1)].astype(np.float32)[:, None])
    return np.concatenate(columns, axis=1).astype(np.float32, copy=False)


def _scores_torch(logits, restricted: np.ndarray | None) -> np.ndarray:
    import torch

    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    k = min(TOP_K, probs.shape[1])
    p, i = probs.topk(k, dim=1)
    columns = [p, i.float(), torch.special.entr(probs).sum(dim=1, keepdim=True)]
    if restricted is not None:
        allowed = torch.from_numpy(restricted).to(logits.device)
        columns.append(allowed[logits[:, allowed].argmax(dim=1)].float().unsqueeze(1))
    return torch.cat(columns, dim=1).cpu().numpy()  # one transfer of the small result
