"""Listing a dataset: every image under a folder or S3 prefix, with its label.

Labels come from the parent folder name (a wnid such as ``n01440764`` as in
Imagenette and ImageFolder, or a class name) or from a manifest (CSV or Parquet
with columns ``path,label``; ``path`` is the full URI as listed or relative to
the input).
"""

from __future__ import annotations

import io
import posixpath
from collections import Counter
from dataclasses import dataclass, field

from batch_classify.storage import StorageOptions, filesystem, is_remote_fs, normalize_uri, read_bytes

#: Extensions listed as images, compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class ListingError(ValueError):
    """Missing, empty or unreadable input, or a bad label manifest."""


@dataclass(frozen=True)
class ImageRecord:
    """One listed image.

    Attributes:
        path: the URI as listed (``s3://bucket/key`` or a local absolute path).
        label: ground-truth label string, or None when unknown.
        size: bytes, as listed.
        content_id: the content's identity as the store reports it, for incremental runs:
            ``etag=<ETag>`` on S3, ``size=<bytes>;mtime=<seconds>`` on a file system;
            ``""`` when unknown (never reused).
    """

    path: str
    label: str | None
    size: int
    content_id: str = ""


@dataclass(frozen=True)
class Listing:
    """What the list step found.

    Attributes:
        records: images sorted by path.
        n_ignored: files under the input that are not images, by extension.
        ignored_extensions: count of ignored files per extension (``""`` for none).
    """

    input: str
    records: tuple[ImageRecord, ...]
    n_ignored: int = 0
    ignored_extensions: dict[str, int] = field(default_factory=dict)


def _ext(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def content_id(info: dict) -> str:
    """The identity of one listed file's content, from its fsspec ``info``.

    S3 gives an ``ETag`` (the MD5 of the content for single-part uploads; changes with every
    write); other stores give size and modification time, as ``rsync``'s quick check does.
    """
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag={str(etag).strip(chr(34))}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    if mtime is None:
        return ""
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return f"size={int(info.get('size') or 0)};mtime={float(mtime):.6f}"


def list_images(
    uri: str, storage: StorageOptions, *, labels_uri: str | None = None, limit: int | None = None
) -> Listing:
    """List every image under ``uri``, recursively.

    Args:
        uri: local folder or ``s3://`` prefix (``s3://anonymous@bucket/...`` for anonymous access).
        labels_uri: optional ``path,label`` manifest; otherwise labels are parent folder names.
        limit: keep only the first N images after sorting by path.

    Raises:
        ListingError: the input is missing, unreadable or holds no image; or the manifest is bad.
    """
    fs, root = filesystem(uri, storage)
    try:
        if not fs.exists(root):
            raise ListingError(f"input {uri} does not exist; check the path or bucket name")
        if not fs.isdir(root):
            raise ListingError(f"input {uri} is a file, not a folder or prefix; pass the folder that holds the images")
        found = fs.find(root, detail=True)
    except ListingError:
        raise
    except (OSError, PermissionError) as err:
        raise ListingError(f"input {uri} could not be listed: {type(err).__name__}: {err}") from err

    remote = is_remote_fs(fs)
    anon_in_uri = normalize_uri(uri)[1]

    def as_uri(path: str) -> str:
        # Keep the user's ``s3://anonymous@`` form so every reader of the URI knows to sign nothing.
        if not remote:
            return path
        return f"s3://anonymous@{path}" if anon_in_uri else fs.unstrip_protocol(path)

    images: list[tuple[str, int, str]] = []
    ignored: Counter[str] = Counter()
    for path, info in found.items():
        if info.get("type") == "directory" or posixpath.basename(path).startswith("."):
            continue
        ext = _ext(path)
        if ext in IMAGE_EXTENSIONS:
            images.append((as_uri(path), int(info.get("size") or 0), content_id(info)))
        else:
            ignored[ext] += 1
    if not images:
        note = f" ({sum(ignored.values())} other files ignored)" if ignored else ""
        raise ListingError(
            f"input {uri} holds no image{note}; extensions listed: {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    images.sort()
    if limit is not None:
        images = images[:limit]

    root_uri = as_uri(root).rstrip("/")
    if labels_uri:
        manifest = read_manifest(labels_uri, storage)

        def label_of(path: str) -> str | None:
            return manifest.get(path) or manifest.get(path[len(root_uri) + 1 :])
    else:

        def label_of(path: str) -> str | None:
            parent = posixpath.dirname(path)
            return posixpath.basename(parent) if parent != root_uri else None

    records = tuple(ImageRecord(path=p, label=label_of(p), size=s, content_id=c) for p, s, c in images)
    return Listing(input=uri, records=records, n_ignored=sum(ignored.values()), ignored_extensions=dict(ignored))


def read_manifest(uri: str, storage: StorageOptions) -> dict[str, str]:
    """Read a ``path,label`` manifest (CSV with a header, or Parquet).

    Returns:
        path → label; empty labels are left out.

    Raises:
        ListingError: missing file, missing columns, or a path given two different labels.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        data = read_bytes(uri, storage)
    except (FileNotFoundError, OSError) as err:
        raise ListingError(f"label manifest {uri} could not be read: {err}") from err
    try:
        if _ext(uri) == ".parquet":
            table = pq.read_table(io.BytesIO(data), columns=["path", "label"])
        else:
            opts = pacsv.ConvertOptions(column_types={"path": "string", "label": "string"})
            table = pacsv.read_csv(io.BytesIO(data), convert_options=opts).select(["path", "label"])
    except Exception as err:  # pyarrow raises ArrowInvalid / KeyError for bad files
        raise ListingError(
            f"label manifest {uri} is not a CSV or Parquet file with columns path,label: {err}"
        ) from err
    mapping: dict[str, str] = {}
    for path, label in zip(table.column("path").to_pylist(), table.column("label").to_pylist(), strict=True):
        if not path or label is None or label == "":
            continue
        if mapping.get(path, label) != label:
            raise ListingError(f"label manifest {uri} gives {path} two labels: {mapping[path]!r} and {label!r}")
        mapping[path] = label
    return mapping
