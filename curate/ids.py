"""Deterministic ids: sources and clips are named by UUID5 of what the user gave, so any executor, any
resume and any machine produces the same names."""

from __future__ import annotations

import uuid

# Fixed namespace of this project's ids (a UUID5 of its name under the URL namespace).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "vfm-pipeline/curate")


def source_key(source: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"source:{source}"))


def clip_id(source: str, start_frame: int, end_frame: int) -> str:
    """UUID5 of the source's path as given and the clip's half-open frame span."""
    return str(uuid.uuid5(NAMESPACE, f"{source}#{int(start_frame)}-{int(end_frame)}"))
