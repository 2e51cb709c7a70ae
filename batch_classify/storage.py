"""Storage access through fsspec: local folders and S3 (s3fs) alike.

``s3://anonymous@bucket/key`` (the form Ray's examples use) means anonymous
access to ``s3://bucket/key``. Credentials otherwise come from the standard AWS
chain, which botocore reads itself.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.core import split_protocol

ANON_PREFIX = "anonymous@"


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


def filesystem(uri: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path within it.

    Returns:
        (filesystem, path as that filesystem names it: ``bucket/key`` for S3, absolute for local).
    """
    uri, anon_in_uri = normalize_uri(uri)
    protocol, _ = split_protocol(uri)
    if protocol in ("s3", "s3a"):
        kwargs: dict = {"anon": options.anon or anon_in_uri}
        if options.endpoint_url:
            kwargs["endpoint_url"] = options.endpoint_url
        # skip_instance_cache: each call gets a client bound to the running event loop/thread.
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **kwargs)
    else:
        fs = fsspec.filesystem(protocol or "file")
        return fs, posixpath.normpath(fs._strip_protocol(uri))
    return fs, fs._strip_protocol(uri)


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
