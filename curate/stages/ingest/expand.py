"""Ingest: expand the command line's inputs into an ordered list of sources, before any work starts.

Inputs may be video or image files, folders (searched recursively for video and image extensions), globs, text files that
list one input per line, and fsspec URLs (`s3://...`, `memory://...`, `file://...`). An input named on the
command line that does not exist, is not a regular file or folder (a FIFO, socket, device, symbolic link
loop), or holds no videos (a folder, glob or list file that expands to nothing) stops the run here
(CurateError, exit 2). An entry of a list file that cannot be expanded does not stop the run: it becomes a
source that fails with the reason (`ingest: not found (listed in LIST)`). Files found in a folder or
matched by a glob are sources by their names alone; one that is not a regular file fails in the probe
stage with its kind named. Folders are walked without following symbolic links to folders (as `find`
does: no loops, no file found twice under two names); name a linked folder on the command line to
include it. A `.srt`/`.vtt` with the video's name beside it attaches as its timed text; a `.txt` with an
image's name beside it is the image's caption (an image is curated as a one-frame clip).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from curate.errors import CurateError
from curate.stages.ingest.config import IngestConfig
from dataload.files import describe_os_error, file_kind, read_regular

LIST_EXTENSIONS = (".txt", ".list", ".lst")
MAX_LIST_BYTES = 64 << 20  # a list file is read whole: refuse anything larger than a text list can be
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceInput:
    source: str  # as the user gave it (or as found under a folder/glob they gave)
    local_path: str | None  # None for remote URLs (fetched by the probe stage)
    caption_path: str | None  # local path or URL of the timed text
    error: str | None = None  # set when the source cannot even be found: it is recorded failed, no work done


class _BadInput(CurateError):
    """An input that cannot be expanded: `short` is the reason without the input's name."""

    def __init__(self, item: str, short: str, message: str) -> None:
        super().__init__(message)
        self.item = item
        self.short = short


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _has_ext(name: str, exts: list[str] | tuple[str, ...]) -> bool:
    return os.path.splitext(name)[1].lower() in {e.lower() for e in exts}


def _caption_exts(path: str, cfg: IngestConfig) -> list[str]:
    """Caption files that attach to `path`: plain text beside an image, timed text beside a video."""
    return cfg.image_caption_extensions if _has_ext(path, cfg.image_extensions) else cfg.caption_extensions


def _local_caption(video: str, cfg: IngestConfig) -> str | None:
    """The caption file beside `video` (.srt/.vtt; .txt for an image). Anything by that name but a folder
    attaches (the caption stage reads regular files only, so a FIFO or a dangling link there fails the
    source with the reason)."""
    stem = os.path.splitext(video)[0]
    for ext in _caption_exts(video, cfg):
        for cand in (stem + ext, stem + ext.upper()):
            if os.path.lexists(cand) and not os.path.isdir(cand):
                return cand
    return None


def _video(path: str, cfg: IngestConfig) -> SourceInput:
    return SourceInput(path, path, _local_caption(path, cfg))


def _expand_local(item: str, cfg: IngestConfig, depth: int) -> list[SourceInput]:
    path = item[len("file://"):] if item.startswith("file://") else item
    if any(c in path for c in _GLOB_CHARS) and not os.path.lexists(path):  # an existing name is taken as is
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise _BadInput(item, "not found (the pattern matches nothing)",
                            f"input not found: {item} (the pattern matches nothing)")
        out: list[SourceInput] = []
        for m in matches:
            if os.path.isdir(m):
                out.extend(_expand_dir(m, cfg))
            elif _has_ext(m, cfg.media_extensions):
                out.append(_video(m, cfg))
        if not out:
            raise _BadInput(item, "no videos found", f"no videos found in {item}")
        return out
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _BadInput(item, "not found", f"input not found: {item}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _BadInput(item, "is a symbolic link loop", f"input {item} is a symbolic link loop") from None
        if exc.errno == errno.ENOTDIR:
            raise _BadInput(item, "not found", f"input not found: {item}") from None
        cause = exc.strerror or type(exc).__name__
        raise _BadInput(item, f"cannot be read ({cause})", f"input {item} cannot be read: {cause}") from None
    if stat.S_ISDIR(st.st_mode):
        out = _expand_dir(path, cfg)
        if not out:
            raise _BadInput(item, "no videos found", f"no videos found in {item}")
        return out
    if not stat.S_ISREG(st.st_mode):
        kind = file_kind(st.st_mode)
        raise _BadInput(item, f"is a {kind}, not a regular file or folder",
                        f"input {item} is a {kind}, not a regular file or folder")
    if _has_ext(path, LIST_EXTENSIONS):
        return _expand_list(path, cfg, depth)
    return [_video(path, cfg)]


def _expand_dir(folder: str, cfg: IngestConfig) -> list[SourceInput]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if _has_ext(name, cfg.media_extensions):
                out.append(_video(os.path.join(root, name), cfg))
    return out


def _expand_list(list_file: str, cfg: IngestConfig, depth: int) -> list[SourceInput]:
    """One input per line (blank lines and `#` comments skipped; relative entries are relative to the list
    file). Lines are file names as bytes: a name that is not UTF-8 is found as it is on disk."""
    if depth > 2:
        raise _BadInput(list_file, "list files nest too deeply", f"list files nest too deeply at {list_file}")
    try:
        data = read_regular(list_file, "list file", MAX_LIST_BYTES)
    except OSError as exc:
        msg = describe_os_error(exc, "cannot read")
        raise _BadInput(list_file, msg, msg) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    base = Path(list_file).parent
    out: list[SourceInput] = []
    for raw in data.splitlines():
        line = os.fsdecode(raw.strip())
        if not line or line.startswith("#"):
            continue
        if not _is_url(line) and not os.path.isabs(line) and not line.startswith("file://"):
            line = str(base / line)  # relative entries are relative to the list file
        try:
            out.extend(_expand_one(line, cfg, depth + 1))
        except _BadInput as exc:
            out.append(SourceInput(line, None, None, error=f"ingest: {exc.short} (listed in {list_file})"))
        except CurateError as exc:
            out.append(SourceInput(line, None, None, error=f"ingest: {exc} (listed in {list_file})"))
    if not out:
        raise _BadInput(list_file, "no videos found", f"no videos found in {list_file}")
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
        for ext in _caption_exts(p, cfg):
            if fs.exists(stem + ext):
                return full(stem + ext)
        return None

    if any(c in path for c in _GLOB_CHARS):
        found = sorted(fs.glob(path))
    elif fs.isdir(path):
        found = sorted(p for p in fs.find(path) if _has_ext(p, cfg.media_extensions))
    elif fs.exists(path):
        return [SourceInput(url, None, caption_for(path))]
    else:
        raise _BadInput(url, "not found", f"input not found: {url}")
    videos = [p for p in found if _has_ext(p, cfg.media_extensions)]
    if not videos:
        raise _BadInput(url, "no videos found", f"no videos found in {url}")
    return [SourceInput(full(p), None, caption_for(p)) for p in videos]


def _expand_one(item: str, cfg: IngestConfig, depth: int = 0) -> list[SourceInput]:
    return _expand_url(item, cfg) if _is_url(item) else _expand_local(item, cfg, depth)


def expand_inputs(inputs: list[str], cfg: IngestConfig) -> list[SourceInput]:
    """All sources in command-line order, each once; raises CurateError naming the first input that is
    missing, not a regular file or folder, or holds no videos."""
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
