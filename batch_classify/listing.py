"""Listing a dataset: every image under a folder or S3 prefix, with its label candidate and partitions.

Labels come from the folder an image lies in (a wnid such as ``n01440764`` as in
Imagenette and ImageFolder, or a class name): the nearest folder above the file,
below the input, that is not a Hive-style partition; or from a manifest (CSV or
Parquet with columns ``path,label``; ``path`` is the full URI as listed or relative
to the input); or from nowhere (``--labels none``). Whether folder names are labels
at all is decided later, against the model's classes (the validation step): date
folders and camera ids are not.

Hive-style partition folders (``date=2026-11-30/``, ``camera=7/``) become values of
columns named by their keys, kept as strings.

Longer than 400 lines: walking local folders and S3 prefixes, labels, manifests, partitions and the
failures of listing are one concern (what the run's input is) and share the path rules.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batch_classify.columns import PREDICTIONS
from batch_classify.errors import PermanentError
from batch_classify.listed import ImageRecord, ListedImages, partition_column
from batch_classify.storage import StorageOptions, filesystem, is_remote_fs, normalize_uri, read_bytes

if TYPE_CHECKING:
    import pyarrow as pa

#: Extensions listed as images, compared case-insensitively.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: The ``ignored_extensions`` key of entries that are not regular files (FIFOs, sockets, devices), whatever their name.
NOT_A_FILE = "(not a regular file)"
#: The ``ignored_extensions`` key of folders not entered because the same folder (by device and inode)
#: was already listed: a symbolic link back to a folder above it (a loop), or a second way to one folder.
ALREADY_LISTED = "(folder already listed)"
#: The ``ignored_extensions`` keys of hidden entries (issue 27). The rule: an entry below the input whose
#: name starts with ``.`` is not part of the dataset. A hidden file is not listed (:data:`HIDDEN_FILE`;
#: AppleDouble ``._*`` files, macOS's resource forks beside each copied file, are never images:
#: :data:`APPLEDOUBLE`); a hidden folder (``.git``, ``.Trash``, ``.ipynb_checkpoints``) is not entered
#: and counts once (:data:`HIDDEN_FOLDER`). Each is counted in ``n_ignored``.
HIDDEN_FILE = "(hidden file)"
APPLEDOUBLE = "(AppleDouble ._ file)"
HIDDEN_FOLDER = "(hidden folder, not entered)"
#: ``--labels none``: the run is unlabelled whatever the folders are called.
NO_LABELS = "none"
#: A Hive-style partition folder: ``key=value``, the key a column name (Hive, Spark, pyarrow write these).
PARTITION_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
#: Names a partition key may not take: the predictions' columns (:data:`batch_classify.columns.PREDICTIONS`).
RESERVED_COLUMNS = frozenset(c.name for c in PREDICTIONS)


log = logging.getLogger(__name__)

__all__ = ["ImageRecord", "ListFailure", "Listing", "ListingError", "check_input", "count_images", "list_images"]


class ListingError(PermanentError, ValueError):
    """Missing, empty or unreadable input, or a bad label manifest."""


@dataclass(frozen=True)
class ListFailure:
    """A folder or entry under the input that could not be listed (no permission, an I/O error, a broken
    symbolic link): whatever it holds is unknown, so it counts as one failed image (a ``list`` row in
    the failures, in ``n_failed`` and against ``--max-failed-fraction``).

    Attributes:
        path: the folder's or entry's path, as the images under it would have been listed.
        error: one line: the error's type and message.
    """

    path: str
    error: str


@dataclass(frozen=True)
class Listing:
    """What the list step found.

    Attributes:
        records: images sorted by path, in columns (:class:`batch_classify.listed.ListedImages`; a sequence of
            :class:`ImageRecord` given here is turned into one).
        n_ignored: files under the input that are not images, by extension, and entries that are
            not regular files (FIFOs, sockets, devices: never read, a read could block forever).
        ignored_extensions: count of ignored files per extension (``""`` for none; :data:`NOT_A_FILE`
            for entries that are not regular files).
        label_source: where the records' labels came from: ``folders`` (candidates: the validation
            step decides whether they name classes), ``manifest`` or ``none``.
        partition_keys: keys of the Hive-style partition folders found, in the order first seen.
        manifest_rows, manifest_matched: with a label manifest, its labelled rows and how many of
            them name a listed image (before ``limit``); None without one.
        list_failures: folders and entries that could not be listed, by path (see :class:`ListFailure`);
            each is one failed image of the run.
        not_entered: (folder as met, the path it was listed under) for folders not entered twice: a
            symbolic link looping back above itself, or a second link to one folder; each is counted
            in ``n_ignored`` under :data:`ALREADY_LISTED`.
        left_out: folders under the input that are the run's own (its output, its ``--table``): not
            listed, not counted as ignored (the log names them).
    """

    input: str
    records: ListedImages
    n_ignored: int = 0
    ignored_extensions: dict[str, int] = field(default_factory=dict)
    label_source: str = "folders"
    partition_keys: tuple[str, ...] = ()
    manifest_rows: int | None = None
    manifest_matched: int | None = None
    list_failures: tuple[ListFailure, ...] = ()
    not_entered: tuple[tuple[str, str], ...] = ()
    left_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.records, ListedImages):
            object.__setattr__(self, "records", ListedImages.of(self.records, self.partition_keys))


def _hidden(relative: str) -> tuple[str, str] | None:
    """Why an entry at ``relative`` (a path below the input, ``/``-separated) is hidden, and the hidden
    entry itself, or None: the first part that starts with ``.`` decides (:data:`HIDDEN_FOLDER`, with
    that folder's path, for a folder above the entry)."""
    parts = relative.split("/")
    for i, part in enumerate(parts):
        if part.startswith("."):
            if i < len(parts) - 1:
                return HIDDEN_FOLDER, "/".join(parts[: i + 1])
            return (APPLEDOUBLE if part.startswith("._") else HIDDEN_FILE), relative
    return None


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


def check_input(uri: str, storage: StorageOptions) -> None:
    """Check that ``uri`` names an existing folder or ``s3://`` prefix, without listing it: what a run
    checks before it starts anything (the Prefect API, Ray), so that a typo costs a second, not a start-up.

    Raises:
        ListingError: the input does not exist, is a file, or cannot be read (one line naming it).
    """
    fs, root = filesystem(uri, storage)
    try:
        if not fs.exists(root):
            raise ListingError(f"input {uri} does not exist; check the path or bucket name")
        if not fs.isdir(root):
            raise ListingError(f"input {uri} is a file, not a folder or prefix; pass the folder that holds the images")
    except ListingError:
        raise
    except OSError as err:
        raise ListingError(f"input {uri} could not be listed: {type(err).__name__}: {err}") from err


def count_images(uri: str, storage: StorageOptions, *, up_to: int) -> int:
    """About how many images lie under ``uri``, counted up to ``up_to`` and no further: files with an image
    extension, outside hidden folders, not hidden themselves. A cheap estimate for a choice made before the
    listing (where the stage runs: ``--executor auto``), not the listing: the output folder, links and
    unlistable folders are not looked at. A fault while counting returns ``up_to``.
    """
    n = 0
    try:
        fs, root = filesystem(uri, storage)
        walk = os.walk(root) if not is_remote_fs(fs) else fs.walk(root)
        for _, folders, files in walk:
            folders[:] = [f for f in folders if not f.startswith(".")]  # os.walk and fsspec's walk: not entered
            n += sum(1 for f in files if not f.startswith(".") and _ext(f) in IMAGE_EXTENSIONS)
            if n >= up_to:
                return up_to
    except Exception:  # noqa: BLE001 - an estimate: the listing reports the fault
        return up_to
    return n


def list_images(
    uri: str, storage: StorageOptions, *, labels_uri: str | None = None, limit: int | None = None,
    exclude: tuple[str, ...] = (),
) -> Listing:
    """List every image under ``uri``, recursively.

    Args:
        uri: local folder or ``s3://`` prefix (``s3://anonymous@bucket/...`` for anonymous access).
        labels_uri: optional ``path,label`` manifest; ``"none"``: no labels; otherwise the label
            candidates are folder names (see the module's docstring).
        limit: keep only the first N images after sorting by path.
        exclude: folders (URIs as the run names them) to leave out where they lie under ``uri``: the
            run's own output and table, so that a run never lists what it wrote (``left_out``).

    Hidden entries follow one rule (:data:`HIDDEN_FILE`): not listed, each counted in ``n_ignored``.

    A local folder is walked by :class:`LocalWalk`: a sub-folder that cannot be listed is kept in
    ``list_failures`` (and logged as a warning naming it), symbolic links are followed, each folder
    is entered once. On S3 a prefix is listed by one paginated request: a listing error there
    (access denied, a network fault that outlasts the retries) stops the run naming the input.

    Raises:
        ListingError: the input is missing, unreadable or holds no image (naming the folders that
            could not be listed, if any); the manifest is bad; a partition key is a column name of
            the predictions, or appears twice in one path.
    """
    import pyarrow as pa

    fs, root = filesystem(uri, storage)
    remote = is_remote_fs(fs)
    try:
        check_input(uri, storage)
        own = _own_folders(root, exclude, storage)
        if remote:
            found = {p: i for p, i in fs.find(root, detail=True).items() if not any(_under(p, o) for o in own)}
            entries, walk = _drained(found), None
        else:
            walk = LocalWalk(root, skip=own)
            entries = iter(walk)
    except ListingError:
        raise
    except (OSError, PermissionError) as err:
        raise ListingError(f"input {uri} could not be listed: {type(err).__name__}: {err}") from err
    anon_in_uri = normalize_uri(uri)[1]

    def as_uri(path: str) -> str:
        # Keep the user's ``s3://anonymous@`` form so every reader of the URI knows to sign nothing.
        if not remote:
            return path
        return f"s3://anonymous@{path}" if anon_in_uri else fs.unstrip_protocol(path)

    found_images = _Columns()
    ignored: Counter[str] = Counter()
    hidden_folders: set[str] = set()
    for path, info in entries:  # the local walk yields its entries as it meets them: none is kept but an image's columns
        kind = info.get("type", "file")
        if kind == "directory":
            continue
        relative = path[len(root.rstrip("/")) + 1:]
        if kind == HIDDEN_FOLDER:  # the local walk did not enter it
            hidden_folders.add(relative)
            continue
        hidden = _hidden(relative)
        if hidden is not None:
            reason, entry = hidden
            if reason == HIDDEN_FOLDER:  # on S3, a key under a hidden folder: the folder counts once
                hidden_folders.add(entry)
            else:
                ignored[reason] += 1
            continue
        ext = _ext(path)
        if kind != "file":  # a FIFO, socket or device: reading it could block forever
            ignored[NOT_A_FILE] += 1
        elif ext in IMAGE_EXTENSIONS:
            found_images.add(path=as_uri(path), size=int(info.get("size") or 0), content_id=content_id(info))
        else:
            ignored[ext] += 1
    failures, not_entered = (walk.failures, walk.not_entered) if walk is not None else ([], [])
    for failure in failures:
        if failure.path == root:
            raise ListingError(f"input {uri} could not be listed: {failure.error}; check its permissions")
    for failure in failures:
        log.warning("could not list %s (%s): counted as one failed image; its images, if any, are not in this run",
                    failure.path, failure.error)
    for folder in own:
        log.warning("%s (the run's own output or table) is inside the input %s: left out of the listing", folder, uri)
    for path, listed_as in not_entered:
        log.warning("%s is the folder %s, already listed: not entered again (a symbolic link loop or a second "
                    "link to it)", path, listed_as)
    if not_entered:
        ignored[ALREADY_LISTED] = len(not_entered)
    if hidden_folders:
        ignored[HIDDEN_FOLDER] = len(hidden_folders)
    listed = found_images.table()
    if not listed.num_rows and failures:
        shown = "; ".join(f"{f.path} ({f.error})" for f in failures[:3]) + ("; …" if len(failures) > 3 else "")
        raise ListingError(
            f"input {uri} holds no image that could be listed; {len(failures)} folder(s) or entries could not "
            f"be listed: {shown}; check their permissions"
        )
    if not listed.num_rows:
        note = f" ({sum(ignored.values())} other files ignored)" if ignored else ""
        raise ListingError(
            f"input {uri} holds no image{note}; extensions listed: {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    listed = listed.sort_by("path")  # UTF-8's byte order is the code points' order: Python's sort of the paths
    kept = listed if limit is None else listed.slice(0, limit)

    root_uri = as_uri(root).rstrip("/")

    def folders_of(path: str) -> list[str]:
        return path[len(root_uri) + 1 :].split("/")[:-1]

    if labels_uri and labels_uri.strip().lower() == NO_LABELS:
        source = NO_LABELS

        def label_of(path: str, folders: list[str]) -> str | None:
            return None
    elif labels_uri:
        source = "manifest"
        manifest = read_manifest(labels_uri, storage)

        def label_of(path: str, folders: list[str]) -> str | None:
            return manifest.get(path) or manifest.get(path[len(root_uri) + 1 :])

        manifest_matched = sum(label_of(p, []) is not None for paths in _chunked_paths(listed) for p in paths)
        if manifest and not manifest_matched:
            example = next(iter(manifest))
            first = listed.column("path")[0].as_py()
            raise ListingError(
                f"none of the {len(manifest)} rows of label manifest {labels_uri} names an image under {uri} "
                f"(e.g. {example!r}); paths are the full URI as listed ({first!r}) or relative to the input"
            )
    else:
        source = "folders"

        def label_of(path: str, folders: list[str]) -> str | None:
            # the nearest folder above the file that is not a partition folder
            return next((f for f in reversed(folders) if not PARTITION_RE.match(f)), None)

    labels: list[pa.Array] = []
    partitions: dict[str, list[tuple[int, pa.Array]]] = {}  # key → (chunk, values) for the chunks that name it
    for chunk, paths in enumerate(_chunked_paths(kept)):
        chunk_labels, chunk_parts = [], {}
        for i, path in enumerate(paths):
            folders = folders_of(path)
            chunk_labels.append(label_of(path, folders))
            for key, value in _partitions(path, folders):
                chunk_parts.setdefault(key, [None] * len(paths))[i] = value
        labels.append(pa.array(chunk_labels, pa.string()))
        for key, values in chunk_parts.items():
            partitions.setdefault(key, []).append((chunk, pa.array(values, pa.string())))
    lengths = [len(a) for a in labels]
    table = pa.table({
        "path": kept.column("path"),
        "label": pa.chunked_array(labels, pa.string()),
        "size": kept.column("size"),
        "content_id": kept.column("content_id"),
        **{partition_column(key): _filled(chunks, lengths) for key, chunks in partitions.items()},
    })
    del listed, kept, found_images
    # The copies made while sorting and labelling are free again: give them back to the system, not keep them
    # for Arrow's next use (at a million images, 140 MB of the driver's resident memory).
    pa.default_memory_pool().release_unused()
    return Listing(
        input=uri, records=ListedImages(table), n_ignored=sum(ignored.values()), ignored_extensions=dict(ignored),
        label_source=source, partition_keys=tuple(partitions),
        manifest_rows=len(manifest) if source == "manifest" else None,
        manifest_matched=manifest_matched if source == "manifest" else None,
        list_failures=tuple(failures), not_entered=tuple(not_entered), left_out=tuple(own),
    )


#: Listed images turned into Arrow columns at a time, while listing and while labelling: bounds the Python
#: objects a listing holds at once (a million listed images as Python records weighed about 440 MB).
LIST_CHUNK = 65536


class _Columns:
    """The images found so far, as Arrow tables of :data:`LIST_CHUNK` rows and the rows of the next one."""

    def __init__(self) -> None:
        self.chunks: list[pa.Table] = []
        self.rows: tuple[list, list, list] = ([], [], [])

    def add(self, *, path: str, size: int, content_id: str) -> None:
        for column, value in zip(self.rows, (path, size, content_id), strict=True):
            column.append(value)
        if len(self.rows[0]) >= LIST_CHUNK:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        paths, sizes, contents = self.rows
        if paths:
            self.chunks.append(pa.table({"path": pa.array(paths, pa.string()), "size": pa.array(sizes, pa.int64()),
                                         "content_id": pa.array(contents, pa.string())}))
            self.rows = ([], [], [])

    def table(self) -> pa.Table:
        """Every image added, in the order added (emptied)."""
        import pyarrow as pa

        self._flush()
        chunks, self.chunks = self.chunks, []
        if not chunks:
            return pa.table({"path": pa.array([], pa.string()), "size": pa.array([], pa.int64()),
                             "content_id": pa.array([], pa.string())})
        return pa.concat_tables(chunks)


def _chunked_paths(table: pa.Table) -> Iterator[list[str]]:
    """The ``path`` column of ``table`` as lists of at most :data:`LIST_CHUNK` strings."""
    for begin in range(0, table.num_rows, LIST_CHUNK):
        yield table.column("path").slice(begin, LIST_CHUNK).to_pylist()


def _filled(chunks: list[tuple[int, pa.Array]], lengths: list[int]) -> pa.ChunkedArray:
    """One partition column from the chunks that name its key, nulls in the others."""
    import pyarrow as pa

    given = dict(chunks)
    return pa.chunked_array([given.get(i, pa.nulls(n, pa.string())) for i, n in enumerate(lengths)], pa.string())


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _own_folders(root: str, exclude: tuple[str, ...], storage: StorageOptions) -> list[str]:
    """The folders of ``exclude`` that lie under ``root`` (and are not ``root`` itself), as paths on
    ``root``'s file system (:func:`batch_classify.storage.filesystem`)."""
    own = []
    for uri in exclude:
        path = filesystem(uri, storage)[1].rstrip("/")
        if path != root.rstrip("/") and _under(path, root) and path not in own:
            own.append(path)
    return own


#: The failure of an entry whose name is not valid UTF-8 (a Latin-1 ``caf\xe9.jpg`` from an old
#: camera or a Windows share): its path cannot be stored, logged or sent as text, so it is one failed
#: image, its name shown with the bytes that are not UTF-8 escaped (``caf\xe9.jpg``).
NOT_UTF8 = (
    "name is not valid UTF-8 (shown with those bytes escaped as \\xNN); rename it to UTF-8 "
    "(e.g. convmv -f latin1 -t utf8 -r --notest FOLDER)"
)


def is_utf8(name: str) -> bool:
    """Whether a name from the file system (undecodable bytes as Python's surrogate escapes) is valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escaped_name(name: str) -> str:
    """``name`` as UTF-8 text, every byte that is not valid UTF-8 written as ``\\xNN`` (``caf\\xe9.jpg``):
    reversible for a person (the bytes are all there) and safe to store, log and send."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _one_line(err: OSError) -> str:
    """``PermissionError: Permission denied``: the type and the message, without the path (named beside it)."""
    return f"{type(err).__name__}: {err.strerror or err}".replace("\n", " ")


def _target(link: str) -> str:
    try:
        return repr(os.readlink(link))
    except OSError:
        return "(unreadable)"


class LocalWalk:
    """Every entry below the local folder ``root`` that is not a folder, following symbolic links.

    Unlike fsspec's ``find`` (whose ``walk`` leaves out, by default silently, a folder it cannot
    list, and which does not enter symbolic links to folders), nothing is left out unsaid:

    - a folder that cannot be listed (no permission, an I/O error), and an entry whose kind cannot
      be read (a broken symbolic link, a link to itself, no permission to look), is a
      :class:`ListFailure`;
    - a symbolic link is taken for what it leads to: to a file, it is that file (listed under the
      link's path; size and modification time are the file's); to a folder, the folder is entered,
      under the link's path, once every real folder met so far is listed (so a folder under the
      input is listed under its own path, not under a link's);
    - an entry whose name is not valid UTF-8 (a file or a folder) is a :class:`ListFailure` named
      by :func:`escaped_name` (:data:`NOT_UTF8`): one failed image, never read or entered;
    - a folder is entered once, by device and inode: a link back to a folder above it (a loop) or a
      second way to one folder is kept in ``not_entered``, (path met, path it was listed under);
    - a hidden folder (its name starts with ``.``) is not entered: it is yielded as an entry of type
      :data:`HIDDEN_FOLDER`; the folders in ``skip`` (the run's own) are not entered and not returned.

    Iterating yields ``(path, {"type": "file" | "other" | HIDDEN_FOLDER, "size": bytes, "mtime": seconds})``
    for every entry that is not a folder and every hidden folder, folder by folder, as they are met: the walk
    keeps nothing per entry (a million files' entries, held until the walk ended, were 300 MB of the listing's
    peak). Once iterated, ``failures`` holds the list failures sorted by path and ``not_entered`` the folders
    not entered twice.

    Raises:
        OSError: ``root`` itself cannot be looked at (``os.stat``, when made).
    """

    def __init__(self, root: str, *, skip: list[str] | tuple[str, ...] = ()) -> None:
        self.root, self.skip = root, tuple(skip)
        self.failures: list[ListFailure] = []
        self.not_entered: list[tuple[str, str]] = []
        self._top = os.stat(root)

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        root, skip, failures, not_entered = self.root, self.skip, self.failures, self.not_entered
        top = self._top
        listed_as: dict[tuple[int, int], str] = {(top.st_dev, top.st_ino): root}
        pending = [root]  # real folders to list (a stack: depth first)
        links: list[tuple[str, os.stat_result]] = []  # linked folders, entered once no real folder is left

        def enter(path: str, st: os.stat_result) -> None:
            key = (st.st_dev, st.st_ino)
            if key in listed_as:
                not_entered.append((path, listed_as[key]))
            else:
                listed_as[key] = path
                pending.append(path)

        while pending or links:
            if not pending:
                enter(*links.pop(0))
                continue
            folder = pending.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as err:
                failures.append(ListFailure(folder, _one_line(err)))
                continue
            subfolders: list[tuple[str, os.stat_result]] = []
            for entry in entries:
                path = posixpath.join(folder, entry.name)
                if not is_utf8(entry.name):
                    failures.append(ListFailure(posixpath.join(folder, escaped_name(entry.name)), NOT_UTF8))
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError as err:
                    kind = f"symbolic link to {_target(path)}: " if entry.is_symlink() else ""
                    failures.append(ListFailure(path, kind + _one_line(err)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if path in skip:
                        continue
                    if entry.name.startswith("."):
                        yield path, {"type": HIDDEN_FOLDER, "size": 0, "mtime": st.st_mtime}
                        continue
                    (links if entry.is_symlink() else subfolders).append((path, st))
                else:
                    kind = "file" if stat.S_ISREG(st.st_mode) else "other"
                    yield path, {"type": kind, "size": st.st_size, "mtime": st.st_mtime}
            for path, st in reversed(subfolders):  # popped in name order
                enter(path, st)
        failures.sort(key=lambda f: f.path)


def _drained(found: dict[str, dict]) -> Iterator[tuple[str, dict]]:
    """The entries of ``found`` (an S3 listing's), emptied as they are read: at a million files its entries
    weighed as much as the records."""
    while found:
        yield found.popitem()


def _partitions(path: str, folders: list[str]) -> tuple[tuple[str, str], ...]:
    """The ``key=value`` folders among ``folders`` (outermost first).

    Raises:
        ListingError: a key that is a column of the predictions, or a key twice in one path.
    """
    found: list[tuple[str, str]] = []
    for folder in folders:
        match = PARTITION_RE.match(folder)
        if match is None:
            continue
        key, value = match.groups()
        if key in RESERVED_COLUMNS:
            raise ListingError(
                f"partition folder {folder!r} (in {path}) is named like the predictions' column {key!r}; "
                "rename the folder's key"
            )
        if any(k == key for k, _ in found):
            raise ListingError(f"partition key {key!r} appears twice in {path}; each key may appear once per path")
        found.append((key, value))
    return tuple(found)


def read_manifest(uri: str, storage: StorageOptions) -> dict[str, str]:
    """Read a ``path,label`` manifest (CSV with a header, or Parquet).

    Returns:
        path → label; empty labels are left out.

    Raises:
        ListingError: missing file, missing columns, a column that is not text (integer or list
            labels, integer paths), or a path given two different labels.
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
    import pyarrow as pa

    for column in ("path", "label"):
        kind = table.schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
            raise ListingError(
                f"label manifest {uri}: column {column} holds {kind}, not text; write {column}s as strings "
                + ("(class names or wnids, not class indices)" if column == "label" else "(URIs or paths relative to the input)")
            )
    mapping: dict[str, str] = {}
    for path, label in zip(table.column("path").to_pylist(), table.column("label").to_pylist(), strict=True):
        if not path or label is None or label == "":
            continue
        if mapping.get(path, label) != label:
            raise ListingError(f"label manifest {uri} gives {path} two labels: {mapping[path]!r} and {label!r}")
        mapping[path] = label
    return mapping
