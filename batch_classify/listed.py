"""The listed images, held in columns (issue 28 item 3): a pyarrow table with one row per image, read as a
sequence of :class:`ImageRecord`.

A million listed images held as Python records weighed about 440 MB in the driver (measured here: a
1,000,000-file listing, ``benchmarks/scale_run.py``); as Arrow columns (the path's and content identity's
bytes, offsets and a size) they weigh about a quarter of that, outside Python's heap, and every step that
reads them whole (the stage's input pages, the reuse join, the Ray Job's request) reads columns, not objects.

Columns of :attr:`ListedImages.table` (:data:`LISTED_COLUMNS`, then one per partition key):

- ``path`` (string): the URI as listed, sorted;
- ``label`` (string, null when unknown): the label candidate;
- ``size`` (int64, bytes);
- ``content_id`` (string, ``""`` when unknown: :func:`batch_classify.listing.content_id`);
- ``partition:<key>`` (string, null where the path has no such folder), in the order the keys were first seen.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    import pyarrow as pa

#: The prefix of a partition key's column in :attr:`ListedImages.table`.
PARTITION = "partition:"
#: The listing's own columns (string, string, int64, string), before the partition columns. pyarrow is
#: imported on use, so that importing the listing costs a run's start-up nothing (about 0.2 s here).
LISTED_COLUMNS = ("path", "label", "size", "content_id")
#: Rows turned into Python objects at a time when the records are iterated.
_CHUNK = 8192


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One listed image.

    Attributes:
        path: the URI as listed (``s3://bucket/key`` or a local absolute path).
        label: ground-truth label string, or None when unknown.
        size: bytes, as listed.
        content_id: the content's identity as the store reports it, for incremental runs:
            ``etag=<ETag>`` on S3, ``size=<bytes>;mtime=<seconds>`` on a file system;
            ``""`` when unknown (never reused).
        partitions: (key, value) of each Hive-style partition folder between the input and the
            file (as read from :class:`ListedImages`: in the order of the listing's partition keys).
    """

    path: str
    label: str | None
    size: int
    content_id: str = ""
    partitions: tuple[tuple[str, str], ...] = ()


def partition_column(key: str) -> str:
    """The column of partition key ``key`` in :attr:`ListedImages.table`."""
    return f"{PARTITION}{key}"


class ListedImages(Sequence[ImageRecord]):
    """The listed images as a read-only sequence of :class:`ImageRecord` over an Arrow table (see the
    module's docstring for its columns). Indexing and iterating build records on demand; a slice is a
    zero-copy :class:`ListedImages`; whole-listing work reads :attr:`table`.

    Args:
        table: the columns of :data:`LISTED_COLUMNS`, then ``partition:<key>`` string columns.

    Raises:
        ValueError: a column of :data:`LISTED_COLUMNS` is missing.
    """

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        missing = [name for name in LISTED_COLUMNS if name not in table.column_names]
        if missing:
            raise ValueError(f"listed images need the columns {list(LISTED_COLUMNS)}; missing {missing}")
        self.table = table

    @classmethod
    def of(cls, records: Iterable[ImageRecord], partition_keys: Sequence[str] = ()) -> ListedImages:
        """The listed images of ``records`` (in their order), with a column for each of ``partition_keys``
        and for each further key the records name (in the order first seen)."""
        import pyarrow as pa

        records = list(records)
        keys = list(dict.fromkeys([*partition_keys, *(k for r in records for k, _ in r.partitions)]))
        columns = {
            "path": pa.array([r.path for r in records], pa.string()),
            "label": pa.array([r.label for r in records], pa.string()),
            "size": pa.array([r.size for r in records], pa.int64()),
            "content_id": pa.array([r.content_id for r in records], pa.string()),
            **{partition_column(k): pa.array([dict(r.partitions).get(k) for r in records], pa.string()) for k in keys},
        }
        return cls(pa.table(columns))

    @property
    def partition_keys(self) -> tuple[str, ...]:
        """The partition keys, in the order of their columns."""
        return tuple(name[len(PARTITION):] for name in self.table.column_names if name.startswith(PARTITION))

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> ImageRecord: ...

    @overload
    def __getitem__(self, index: slice) -> ListedImages: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            begin, end, step = index.indices(len(self))
            if step != 1:
                return ListedImages(self.table.take(list(range(begin, end, step))))
            return ListedImages(self.table.slice(begin, max(0, end - begin)))
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"listed image {index} out of range ({n} listed)")
        return next(_records(self.table.slice(index, 1)))

    def __iter__(self) -> Iterator[ImageRecord]:
        for begin in range(0, len(self), _CHUNK):
            yield from _records(self.table.slice(begin, _CHUNK))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListedImages):
            return self.table.equals(other.table)
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value

    def __repr__(self) -> str:
        return f"ListedImages({len(self)} images, partition keys {list(self.partition_keys)})"

    def __reduce__(self):
        return ListedImages, (self.table,)

    def paths(self) -> list[str]:
        """Every path, in order."""
        return self.table.column("path").to_pylist()

    def labels(self) -> set[str]:
        """The distinct label candidates (nulls left out)."""
        import pyarrow.compute as pc

        return {label for label in pc.unique(self.table.column("label")).to_pylist() if label is not None}

    def n_labelled(self) -> int:
        """How many images have a label candidate."""
        return len(self) - self.table.column("label").null_count

    def without(self, paths: Collection[str] | pa.Array | pa.ChunkedArray) -> ListedImages:
        """The images whose path is not in ``paths``, in order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not len(paths):
            return self
        if isinstance(paths, pa.ChunkedArray):
            paths = paths.combine_chunks()
        elif not isinstance(paths, pa.Array):
            paths = pa.array(list(paths), pa.string())
        keep = pc.invert(pc.is_in(self.table.column("path"), value_set=paths))
        return ListedImages(self.table.filter(keep))

    def facts_of(self, paths: pa.Array | pa.ChunkedArray) -> pa.Table:
        """The listed columns of each of ``paths`` (one row each, in their order; nulls where a path is not
        listed), found in one hash join: what a writer of reused rows needs from this run's listing."""
        import pyarrow.compute as pc

        index = pc.index_in(paths, value_set=self.table.column("path").combine_chunks())
        return self.table.take(index)


def _records(table: pa.Table) -> Iterator[ImageRecord]:
    """The rows of a (short) listed table as records."""
    keys = [(name[len(PARTITION):], table.column(name).to_pylist())
            for name in table.column_names if name.startswith(PARTITION)]
    columns = zip(*(table.column(name).to_pylist() for name in LISTED_COLUMNS), strict=True)
    for i, (path, label, size, content) in enumerate(columns):
        parts = tuple((key, values[i]) for key, values in keys if values[i] is not None)
        yield ImageRecord(path=path, label=label, size=size, content_id=content, partitions=parts)
