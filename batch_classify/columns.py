"""The run's tables, declared once: the predictions' columns (:data:`PREDICTIONS`), the failures'
columns (:data:`FAILURE_SCHEMA`) and, among the predictions, the per-image outputs of the model.

Everything else derives from here: the Parquet schemas (``results.PREDICTION_SCHEMA``), what the
scores from the logits hold (:func:`batch_classify.stage.scores.scores` computes each scored column by
name), what the model actor returns (:func:`empty_outputs`, :func:`with_best`), how the staging
writer turns an output batch into Arrow columns (:func:`output_arrays`), and the names a Hive
partition key may not take (``listing.RESERVED_COLUMNS``).

Adding a prediction column: declare it in :data:`PREDICTIONS`; a scored one is then computed in
:mod:`batch_classify.stage.scores` (both its numpy and its torch function); describe it in README's table
of the output. Nothing else changes.

A plain leaf: numpy and pyarrow only, nothing of this package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

#: Classes kept per image (top-5 accuracy is the field's second number).
TOP_K = 5

#: Who fills a column: the listing (the image and its label), the model (computed from the logits), the
#: run that wrote the row.
SOURCES = ("listing", "model", "run")


@dataclass(frozen=True)
class Column:
    """One column of ``predictions/*.parquet``.

    Attributes:
        name: the column's name.
        type: its Arrow type.
        source: one of :data:`SOURCES`.
        doc: what it holds (units, when it is null).
        dtype: for a model output, the dtype of the actor's numpy array.
        top_k: a model output with one value per best class, best first: int or float [N, TOP_K] in
            the actor, a list of ``min(TOP_K, classes)`` in the file.
        fill: a model output's value where the row failed (and in the places of a ``top_k`` list that a
            model with fewer than ``TOP_K`` classes lacks).
        nullable: a model output whose ``fill`` is written as null (a class index), else written as is.
        scored: a model output that :func:`batch_classify.stage.scores.scores` computes from the logits; the
            others are read off a scored one (``best_of``).
        best_of: for an unscored model output, the ``top_k`` output whose first (best) value it is.
    """

    name: str
    type: pa.DataType
    source: str
    doc: str
    dtype: type | None = None
    top_k: bool = False
    fill: float = 0
    nullable: bool = False
    scored: bool = False
    best_of: str | None = None


def _output(name: str, dtype: type, doc: str, *, top_k: bool = False, fill: float = 0, nullable: bool = False,
            best_of: str | None = None) -> Column:
    """A model output's column: its Arrow type follows from ``dtype`` (a list of it for ``top_k``)."""
    arrow = pa.from_numpy_dtype(dtype)
    return Column(name, pa.list_(arrow) if top_k else arrow, "model", doc, dtype=dtype, top_k=top_k, fill=fill,
                  nullable=nullable, scored=best_of is None, best_of=best_of)


#: The columns of ``predictions/*.parquet``, in order. Hive-style partition folders of the input add one
#: string column per key after these (``results.prediction_schema``).
PREDICTIONS: tuple[Column, ...] = (
    Column("path", pa.string(), "listing", "the image's URI, as listed"),
    Column("label", pa.string(), "listing", "the ground truth the run scored against; null in an unlabelled run"),
    Column("label_index", pa.int64(), "listing", "the model's class index of label; null without one"),
    _output("pred_index", np.int64, "the top-1 class index", best_of="top5_index"),
    Column("pred_label", pa.string(), "run", "the model's name of pred_index (ImageNet's, or the folder's id2label)"),
    _output("confidence", np.float32, "the top-1 probability (softmax over all classes)", best_of="top5_prob"),
    _output("top5_index", np.int64, "the best classes, best first (fewer for a model with fewer classes)",
            top_k=True, fill=-1),
    _output("top5_prob", np.float32, "their probabilities", top_k=True),
    Column("model", pa.string(), "run", "the model's identity (name, weights digest, precision)"),
    Column("run_id", pa.string(), "run", "the run that committed the row"),
    Column("content_id", pa.string(), "listing", "the image's identity when listed (listing.content_id)"),
    Column("computed_run_id", pa.string(), "run", "the run that computed the row: run_id, or the earlier run reused"),
    _output("restricted_index", np.int64, "the argmax over the classes present in the labels only; null "
            "without labels", fill=-1, nullable=True),
    _output("entropy", np.float32, "the entropy of the softmax over all classes, nats; null in rows written "
            "before it existed"),
)

#: Schema of ``predictions/*.parquet`` (:data:`PREDICTIONS`).
PREDICTION_SCHEMA = pa.schema([(c.name, c.type) for c in PREDICTIONS])
#: The model's per-image outputs, in :data:`PREDICTIONS`' order.
MODEL_OUTPUTS: tuple[Column, ...] = tuple(c for c in PREDICTIONS if c.source == "model")
#: Those :func:`batch_classify.stage.scores.scores` computes from the logits, in the order it packs them.
SCORED: tuple[Column, ...] = tuple(c for c in MODEL_OUTPUTS if c.scored)

#: Schema of the failures file (``failures/part-<attempt>.parquet``); ``stage`` is one of list, read,
#: decode, infer, write.
FAILURE_SCHEMA = pa.schema([("path", pa.string()), ("stage", pa.string()), ("error", pa.string())])


def scored_width(k: int) -> int:
    """Columns of the packed scores of a model whose top lists hold ``k`` classes (:func:`pack`)."""
    return sum(k if c.top_k else 1 for c in SCORED)


def pack(parts: dict, k: int, cat):
    """The scored outputs ``parts`` (name → [N, k] or [N]; numpy arrays or torch tensors) as one float32
    [N, :func:`scored_width`] matrix in :data:`SCORED`' order, joined by ``cat`` (``np.concatenate`` or
    ``torch.cat``, called with a list and ``axis``/``dim`` 1 as its second argument): one transfer
    from a GPU. Class indices are exact in float32 below 2**24."""
    return cat([parts[c.name] if c.top_k else parts[c.name].reshape(-1, 1) for c in SCORED], 1)


def unpack(matrix: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The named scored outputs of a :func:`pack`-ed float32 [N, scored_width(k)] matrix, each in its
    ``dtype``: [N, k] for a ``top_k`` output, [N] otherwise.

    Raises:
        ValueError: the matrix is not ``scored_width(k)`` wide.
    """
    if matrix.ndim != 2 or matrix.shape[1] != scored_width(k):
        raise ValueError(f"scores of shape {matrix.shape}, expected [N, {scored_width(k)}] for k = {k}")
    out, at = {}, 0
    for c in SCORED:
        width = k if c.top_k else 1
        values = matrix[:, at : at + width].astype(c.dtype)
        out[c.name] = values if c.top_k else values[:, 0]
        at += width
    return out


def empty_outputs(n: int) -> dict[str, np.ndarray]:
    """Every scored output for ``n`` rows, at its ``fill`` (as for rows that failed): [n, TOP_K] for a
    ``top_k`` output, [n] otherwise, each in its ``dtype``."""
    return {c.name: np.full((n, TOP_K) if c.top_k else n, c.fill, dtype=c.dtype) for c in SCORED}


def with_best(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``outputs`` (:func:`empty_outputs`' names) plus each unscored output read off its ``best_of``
    list's first column (``pred_index``, ``confidence``), in :data:`MODEL_OUTPUTS`' order."""
    return {c.name: outputs[c.best_of][:, 0].copy() if c.best_of else outputs[c.name] for c in MODEL_OUTPUTS}


def output_arrays(batch: dict, rows: np.ndarray, k: int) -> dict[str, pa.Array]:
    """The model outputs of ``batch`` (an actor's output) at ``rows`` as Arrow columns of their types:
    ``top_k`` ones cut to ``k`` (the model's classes, at most TOP_K), ``nullable`` ones null where negative,
    an output the batch lacks (written by an older actor) all null."""
    out = {}
    for c in MODEL_OUTPUTS:
        values = batch.get(c.name)
        if values is None:
            out[c.name] = pa.nulls(len(rows), c.type)
            continue
        picked = np.asarray(values)[rows].astype(c.dtype)
        if c.top_k:
            out[c.name] = pa.array(list(picked[:, :k]), c.type)
        else:
            out[c.name] = pa.array(picked, c.type, mask=picked < 0 if c.nullable else None)
    return out
