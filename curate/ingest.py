"""Ingest: expand the command line's inputs into an ordered list of sources, before any work starts.

Inputs may be video files, folders (searched recursively for video extensions), globs, text files that
list one input per line, and fsspec URLs (`s3://...`, `memory://...`, `file://...`). An input that does
not exist stops the run here (CurateError, exit 2). A `.srt`/`.vtt` with the video's name beside it
attaches as its timed text.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from curate.config import IngestConfig
from curate.errors import CurateError

LIST_EXTENSIONS = (".txt", ".list", ".lst")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceInput:
    source: str  # as the user gave it (or as found under a folder/glob they gave)
    local_path: str | None  # None for remote URLs (fetched by the probe stage)
    caption_path: str | None  # local path or URL of the timed text


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _has_ext(name: str, exts: list[str]) -> bool:
    return os.path.splitext(name)[1].lower() in {e.lower() for e in exts}


def _local_caption(video: str, cfg: IngestConfig) -> str | None:
    stem = os.path.splitext(video)[0]
    for ext in cfg.caption_extensions:
        for cand in (stem + ext, stem + ext.upper()):
            if os.path.isfile(cand):
                return cand
    return None


def _expand_local(item: str, cfg: IngestConfig, depth: int) -> list[SourceInput]:
    path = item[len("file://"):] if item.startswith("file://") else item
    if any(c in path for c in _GLOB_CHARS):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise CurateError(f"input not found: {item} (the pattern matches nothing)")
        out: list[SourceInput] = []
        for m in matches:
            if os.path.isdir(m):
                out.extend(_expand_dir(m, cfg))
            elif _has_ext(m, cfg.video_extensions):
                out.append(SourceInput(m, m, _local_caption(m, cfg)))
        return out
    if os.path.isdir(path):
        return _expand_dir(path, cfg)
    if not os.path.exists(path):
        raise CurateError(f"input not found: {item}")
    if _has_ext(path, list(LIST_EXTENSIONS)):
        return _expand_list(path, cfg, depth)
    return [SourceInput(path, path, _local_caption(path, cfg))]


def _expand_dir(folder: str, cfg: IngestConfig) -> list[SourceInput]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if _has_ext(name, cfg.video_extensions):
                p = os.path.join(root, name)
                out.append(SourceInput(p, p, _local_caption(p, cfg)))
    return out


def _expand_list(list_file: str, cfg: IngestConfig, depth: int) -> list[SourceInput]:
    if depth > 2:
        raise CurateError(f"list files nest too deeply at {list_file}")
    base = Path(list_file).parent
    out: list[SourceInput] = []
    for raw in Path(list_file).read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not _is_url(line) and not os.path.isabs(line) and not line.startswith("file://"):
            line = str(base / line)  # relative entries are relative to the list file
        out.extend(_expand_one(line, cfg, depth + 1))
    return out


def _expand_url(url: str, cfg: IngestConfig) -> list[SourceInput]:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise CurateError(f"cannot open {url}: {exc}") from None
    proto = url.split("://", 1)[0]

    def full(p: str) -> str:
        return p if "://" in p else f"{proto}://{p.lstrip('/') if proto != 'memory' else p}"

    def caption_for(p: str) -> str | None:
        stem = os.path.splitext(p)[0]
        for ext in cfg.caption_extensions:
            if fs.exists(stem + ext):
                return full(stem + ext)
        return None

    if any(c in path for c in _GLOB_CHARS):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        found = sorted(p for p in fs.find(path) if _has_ext(p, cfg.video_extensions))
    elif fs.exists(path):
        return [SourceInput(url, None, caption_for(path))]
    else:
        raise CurateError(f"input not found: {url}")
    videos = [p for p in found if _has_ext(p, cfg.video_extensions)]
    if not videos:
        raise CurateError(f"input not found: {url} (no video files there)")
    return [SourceInput(full(p), None, caption_for(p)) for p in videos]


def _expand_one(item: str, cfg: IngestConfig, depth: int = 0) -> list[SourceInput]:
    return _expand_url(item, cfg) if _is_url(item) else _expand_local(item, cfg, depth)


def expand_inputs(inputs: list[str], cfg: IngestConfig) -> list[SourceInput]:
    """All sources in command-line order, each once; raises CurateError naming the first missing input."""
    if not inputs:
        raise CurateError("no inputs given")
    seen: set[str] = set()
    out: list[SourceInput] = []
    for item in inputs:
        for src in _expand_one(item, cfg):
            if src.source not in seen:
                seen.add(src.source)
                out.append(src)
    return out
