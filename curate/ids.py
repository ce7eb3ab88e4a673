"""Deterministic ids: sources and clips are named by UUID5 of what the user gave, so any executor, any
resume and any machine produces the same names.

Ids hash the path's bytes, not its text: a file name need not be UTF-8 on Linux (Python hands such a
name around as a str with surrogate escapes, which `uuid.uuid5` cannot encode). For every UTF-8 path the
bytes are its UTF-8 encoding, so the ids are exactly those of `uuid.uuid5(NAMESPACE, text)`.

Where a name must be text (parquet, JSON in shards, report.md, messages), `path_text` gives its one
well-defined string form: the name decoded as UTF-8, each byte that is not valid UTF-8 written as a
backslash escape (b"caf\\xe9.mp4" -> "caf\\\\xe9.mp4", i.e. the six characters `caf\\xe9` then `.mp4`).
"""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace of this project's ids (a UUID5 of its name under the URL namespace).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "vfm-pipeline/curate")


def path_bytes(text: str | bytes) -> bytes:
    """The bytes a path stands for: UTF-8, with surrogate escapes (undecodable bytes of a file name,
    as `os.fsdecode` makes them) turned back into their bytes."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to: keep it, deterministically
        return text.encode("utf-8", "surrogatepass")


def path_text(text: str | bytes | None) -> str | None:
    """A path (or any text holding one) as valid UTF-8 text: bytes that are not UTF-8 become `\\xNN`."""
    if text is None:
        return None
    return path_bytes(text).decode("utf-8", "backslashreplace")


def uuid5_bytes(namespace: uuid.UUID, name: bytes) -> uuid.UUID:
    """RFC 4122 UUID version 5 of a byte string (uuid.uuid5 takes text and encodes it as UTF-8)."""
    digest = hashlib.sha1(namespace.bytes + name, usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def source_key(source: str) -> str:
    return str(uuid5_bytes(NAMESPACE, b"source:" + path_bytes(source)))


def clip_id(source: str, start_frame: int, end_frame: int) -> str:
    """UUID5 of the source's path as given (its bytes) and the clip's half-open frame span."""
    return str(uuid5_bytes(NAMESPACE, path_bytes(source) + f"#{int(start_frame)}-{int(end_frame)}".encode()))
