"""Storage access through fsspec: local folders and S3 (s3fs) alike.

``s3://anonymous@bucket/key`` (the form Ray's examples use) means anonymous
access to ``s3://bucket/key``. Credentials otherwise come from the standard AWS
chain, which botocore reads itself.
"""

from __future__ import annotations

import errno
import os
import posixpath
import socket
from dataclasses import dataclass
from urllib.parse import quote

import fsspec
from fsspec.core import split_protocol

from batch_classify.errors import PermanentError

ANON_PREFIX = "anonymous@"

#: Default of ``RunSettings.read_timeout``: seconds one image's read may take, first request to last
#: byte, retries included, before the image is recorded as a read failure. A photo is read from S3 in
#: 0.05-0.5 s and a 100 MB TIFF in about 8 s at 100 Mbit/s; botocore's backoff between its 3
#: attempts adds at most 3 s and s3fs's own retries of throttling (``SlowDown``) about 1.3 s. 60 s
#: leaves a wide margin for a slow but working store while a stalled read (a hung NFS server, an S3
#: connection that accepted the request and never answers) costs one minute, not hours.
DEFAULT_READ_TIMEOUT = 60.0
#: Seconds to open a TCP connection to an S3 endpoint for an image read (s3fs's own default, 5 s;
#: lower when the read timeout is): a connection takes milliseconds when the endpoint is up.
CONNECT_TIMEOUT = 5.0
#: Attempts per S3 request of an image read, the first included: botocore's "standard" retry mode with
#: its default of 3 (the AWS SDKs' standard; at most 1 + 2 s of backoff), instead of the legacy mode's
#: 5 attempts with up to 15 s of backoff, which made each read of a dead endpoint take seconds.
READ_ATTEMPTS = 3
#: Image reads in flight at once per reading task on S3: botocore's default connection pool size
#: (``max_pool_connections``), also set on the reading client so the two agree.
READ_CONCURRENCY = 10


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage; small and picklable, so Ray workers get a copy.

    Attributes:
        anon: unsigned S3 requests (public buckets).
        endpoint_url: an S3-compatible endpoint such as ``http://127.0.0.1:9000``; None: AWS.
    """

    anon: bool = False
    endpoint_url: str | None = None


def normalize_uri(uri: str) -> tuple[str, bool]:
    """Strip ``anonymous@`` from an S3 URI.

    Returns:
        (uri without ``anonymous@``, whether it asked for anonymous access).
    """
    protocol, rest = split_protocol(uri)
    if protocol in ("s3", "s3a") and rest.startswith(ANON_PREFIX):
        return f"s3://{rest[len(ANON_PREFIX):]}", True
    return uri, False


def absolute_uri(uri: str) -> str:
    """``uri`` as an absolute, normalised URI: what a run stores as its input and output, so that
    the same folder is named the same way from any working directory or machine.

    - S3 (``s3://``, ``s3a://``): ``s3://bucket/key``, ``anonymous@`` kept (it says how to read), no
      trailing ``/``, no empty or ``.`` parts.
    - A local path or ``file://`` URI: the absolute path (``~`` expanded, ``.`` and ``..`` resolved
      against the working directory; symbolic links kept), no trailing ``/``.

    >>> absolute_uri("s3a://bucket//images/./day/")
    's3://bucket/images/day'
    """
    protocol, rest = split_protocol(uri.strip())
    if protocol in ("s3", "s3a"):
        parts = [p for p in rest.split("/") if p not in ("", ".")]
        return "s3://" + "/".join(parts)
    if protocol in (None, "file", "local"):
        return os.path.abspath(os.path.expanduser(rest if protocol else uri.strip()))
    return uri.rstrip("/")


def dataset_key(uri: str) -> str:
    """The identity of a dataset URI: :func:`absolute_uri` without ``anonymous@`` (the same objects
    read signed or unsigned are the same dataset)."""
    return normalize_uri(absolute_uri(uri))[0]


def filesystem(
    uri: str, options: StorageOptions, *, read_timeout: float | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path within it.

    Args:
        read_timeout: for image reads (seconds): an S3 client whose socket reads give up after this
            long without data, whose connects give up after ``min(CONNECT_TIMEOUT, read_timeout)``,
            with ``READ_ATTEMPTS`` attempts per request (standard retry mode) and a pool of
            ``READ_CONCURRENCY`` connections. None: s3fs's defaults (listing, model files, output).
            No effect on local files.

    Returns:
        (filesystem, path as that filesystem names it: ``bucket/key`` for S3, absolute for local).
    """
    uri, anon_in_uri = normalize_uri(uri)
    protocol, _ = split_protocol(uri)
    if protocol in ("s3", "s3a"):
        kwargs: dict = {"anon": options.anon or anon_in_uri}
        if options.endpoint_url:
            kwargs["endpoint_url"] = options.endpoint_url
        if read_timeout is not None:
            kwargs["config_kwargs"] = {
                "connect_timeout": min(CONNECT_TIMEOUT, read_timeout),
                "read_timeout": read_timeout,
                "retries": {"total_max_attempts": READ_ATTEMPTS, "mode": "standard"},
                "max_pool_connections": READ_CONCURRENCY,
            }
        # skip_instance_cache: each call gets a client bound to the running event loop/thread.
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **kwargs)
    else:
        fs = fsspec.filesystem(protocol or "file")
        return fs, posixpath.normpath(fs._strip_protocol(uri))
    return fs, fs._strip_protocol(uri)


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` says the storage could not be reached at all (connection refused, endpoint
    unreachable, DNS name unknown, connect timed out, connection dropped), as opposed to an answer
    about one file (missing, access denied) or a fault of its content.
    """
    from botocore.exceptions import ConnectionClosedError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    kinds: tuple[type[BaseException], ...] = (BotoConnectionError, ConnectionClosedError, ConnectionError, socket.gaierror)
    try:
        from aiohttp import ClientConnectionError

        kinds += (ClientConnectionError,)
    except ImportError:  # pragma: no cover - aiohttp comes with s3fs
        pass
    return isinstance(err, kinds)


def describe_endpoint(uri: str, options: StorageOptions) -> str:
    """Name where ``uri`` is read from, for a message: ``S3 endpoint http://host:port`` (the configured
    one, else AWS's for the bucket) or ``the file system holding FOLDER``."""
    uri, _ = normalize_uri(uri)
    protocol, rest = split_protocol(uri)
    if protocol in ("s3", "s3a"):
        bucket = rest.split("/", 1)[0]
        return f"S3 endpoint {options.endpoint_url}" if options.endpoint_url else f"the AWS S3 endpoint of bucket {bucket}"
    return f"the file system holding {posixpath.dirname(rest if protocol else uri)}"


#: The AWS console's page of an S3 folder (the console picks the bucket's region itself).
S3_CONSOLE = "https://s3.console.aws.amazon.com/s3/buckets/{bucket}?prefix={prefix}"


def browser_url(uri: str, options: StorageOptions) -> str | None:
    """An address a browser opens for the folder ``uri``, or None where none can be derived.

    - ``s3://bucket/key`` on AWS (no ``endpoint_url``): the AWS console's page of the folder;
    - ``http(s)://``: the URI itself;
    - a local path, or S3 behind another endpoint (MinIO, moto: their consoles differ): None; show
      the path as text (browsers refuse ``file://`` links from a web page, the Prefect UI's included).
    """
    uri, _ = normalize_uri(uri.strip())
    protocol, rest = split_protocol(uri)
    if protocol in ("http", "https"):
        return uri
    if protocol in ("s3", "s3a") and not options.endpoint_url:
        bucket, _, key = rest.partition("/")
        prefix = key.strip("/")
        return S3_CONSOLE.format(bucket=quote(bucket, safe=""), prefix=quote(f"{prefix}/" if prefix else "", safe="/"))
    return None


def is_remote_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return not ({"file", "local"} & set(protocols))


def join(uri: str, *parts: str) -> str:
    """Join URI parts with ``/``; the parts must not escape the base (no ``..``, no absolute part)."""
    for part in parts:
        if part.startswith("/") or ".." in part.split("/"):
            raise ValueError(f"path part {part!r} would leave {uri!r}")
    return posixpath.join(uri.rstrip("/"), *parts)


def read_bytes(uri: str, options: StorageOptions) -> bytes:
    fs, path = filesystem(uri, options)
    return fs.cat_file(path)


def write_bytes(uri: str, data: bytes, options: StorageOptions) -> None:
    fs, path = filesystem(uri, options)
    parent = posixpath.dirname(path)
    if parent and not is_remote_fs(fs):
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def write_parquet(uri: str, table, options: StorageOptions) -> None:
    """Write the ``pyarrow.Table`` ``table`` as one Parquet file at ``uri`` (:func:`write_bytes`)."""
    import pyarrow as pa  # here, not at import: the command line's start-up imports this module
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_bytes(uri, buf.getvalue().to_pybytes(), options)


def read_parquet(uri: str, options: StorageOptions):
    """The ``pyarrow.Table`` of the Parquet file at ``uri`` (:func:`read_bytes`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(read_bytes(uri, options)))


#: The errors that mean the storage is full or a limit was hit, and how a one-line message names each.
NO_SPACE = {
    errno.ENOSPC: "no space left on the device (ENOSPC)",
    errno.EFBIG: "a file size limit was hit (EFBIG: ulimit -f, or the file system's largest file)",
    errno.EDQUOT: "a disk quota was hit (EDQUOT)",
}


class StorageFull(PermanentError, OSError):
    """A write failed because the storage is full or a limit was hit (:data:`NO_SPACE`): a retry in
    seconds cannot fix it. The message names what was being written and what to do."""


def no_space(err: BaseException | None) -> str | None:
    """Which of :data:`NO_SPACE` ``err`` (or an error it was raised from) is, or None. pyarrow's write
    errors carry no ``errno``, only its text (``[Errno 28] Error writing bytes to file``), read too."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            if err.errno in NO_SPACE:
                return NO_SPACE[err.errno]
            text = str(err).lower()
            for code, words in NO_SPACE.items():
                if f"errno {code}]" in text or os.strerror(code).lower() in text:
                    return words
        err = err.__cause__ or err.__context__
    return None
