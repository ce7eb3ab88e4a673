"""The typed config of a curation run: dataclass sections, YAML files and `--set a.b=value` overrides.

Every key is checked: an unknown key or a value of the wrong type is a `CurateError` (exit 2). The full
config is written to OUT/config.yaml; a rerun into OUT must carry the same config.

Clip reject reasons (clips.parquet `reject_reason`) form a fixed set, checked in this order, first wins:
  too_short   clip shorter than split.min_clip_s (a short scene piece) or filters.min_clip_s
  too_long    clip longer than filters.max_clip_s
  too_small   frame smaller than filters.min_width x filters.min_height
  dark        mean luma below filters.min_brightness (black or nearly black)
  bright      mean luma above filters.max_brightness (washed out)
  static      median optical-flow magnitude below filters.min_motion (a still picture)
  jittery     frame-to-frame change of the global motion above filters.max_jitter (camera shake)
  blurry      variance of the Laplacian below filters.min_sharpness
  low_aesthetic          aesthetic score below the model stage's threshold (model stages)
  duplicate_of:<clip_id> a near-duplicate of a kept clip (dataset-level dedup)
Source reasons (sources.parquet `reason`) for `skipped`: video_too_short, video_too_small; for `failed`:
the stage name and the error's one-line message (e.g. `ingest: not found (listed in LIST)` for a list
file's missing entry, `probe: PATH: video is a FIFO (named pipe), not a regular file`, `probe: frame size
WxH declared by the file is over probe.max_pixels (N)`, `caption: PATH: caption file is over the cap of N
bytes`). Values are checked on load: a float key takes numbers as users write them (`1e-4`) and refuses
non-finite ones (`.inf`, `nan`, `1e400`).

Default thresholds, and why (measured on single-shot synthetic videos of dataload.synthetic at 160x96
and 640x360, and on the real videos in ../shared/data/videos; tests/curate/test_filters.py keeps the
synthetic side honest):
- Motion, jitter and brightness are computed on luma frames resized to `analysis_height` rows (aspect
  kept), sharpness on `sharpness_height` rows, so scores do not depend on the source resolution.
- motion = 90th percentile of the DIS flow magnitude, px/frame at 96 rows. min_motion 0.1: a still
  shot measures 0.00, a still shot with film grain (synthetic "texture") <= 0.06; the slowest synthetic
  pan (0.5 px/frame at 360 rows) 0.15, small moving objects 0.27, the real clips with a moving subject
  0.11-0.39 and handheld/driving footage > 1.
- jitter = mean change of the global (median) flow between consecutive frame pairs. max_jitter 1.5:
  steady pans and zooms measure < 0.05 and pure noise 0.8; synthetic camera shake 2.5 (640x360) to 8.9
  (160x96) and the real heavy-shake fire2.mp4 1.9.
- sharpness = variance of the Laplacian / variance of the luma (contrast-free). min_sharpness 0.3:
  Gaussian blur sigma >= 2 px gives <= 0.21, sharp synthetic shots >= 0.72, dim but sharp ones 1.3; the
  real videos 0.16 (a motion-blurred handheld stretch) to 2.1.
- min_brightness 0.08 / max_brightness 0.92 (mean luma, 0..1): black and nearly black clips (brightness
  0.05, the dark NASA footage) measure < 0.06, dim real scenes >= 0.11; washed-out/white clips > 0.95.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curate.errors import CurateError
from dataload.files import describe_os_error, read_regular

REJECT_REASONS = ("too_short", "too_long", "too_small", "dark", "bright", "static", "jittery", "blurry",
                  "low_aesthetic", "duplicate_of:<clip_id>")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts",
                    ".mts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m")
CAPTION_EXTENSIONS = (".srt", ".vtt")
MAX_CONFIG_BYTES = 1 << 20  # a config file is a page of YAML


@dataclass
class IngestConfig:
    video_extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    caption_extensions: list[str] = field(default_factory=lambda: list(CAPTION_EXTENSIONS))


@dataclass
class ProbeConfig:
    """Whole-video rules: a source outside them is `skipped` (not failed), with the reason."""

    min_duration_s: float = 0.5
    min_width: int = 64
    min_height: int = 64
    backend: str = "pyav"
    # A source whose pictures are larger than this fails before any decoding (a tiny file can declare
    # 30000x30000): 8192x8192 admits every real format up to 8K and bounds one RGB frame to 200 MB.
    max_pixels: int = 8192 * 8192


@dataclass
class FilterConfig:
    min_clip_s: float = 1.0
    max_clip_s: float = 60.0
    min_width: int = 64
    min_height: int = 64
    analysis_height: int = 96  # rows of the luma frames motion, jitter and brightness use
    sharpness_height: int = 240  # rows for the Laplacian (blur vanishes when frames are made too small)
    motion_pairs: int = 8  # frame pairs (and triplets for jitter) sampled evenly over the clip
    sharpness_frames: int = 3
    min_motion: float = 0.1
    max_jitter: float = 1.5
    min_sharpness: float = 0.3
    min_brightness: float = 0.08
    max_brightness: float = 0.92


@dataclass
class CaptionConfig:
    timed_text: bool = True  # captions from an .srt/.vtt beside the video
    joiner: str = " "


@dataclass
class TranscodeConfig:
    encoder: str = "libx264"  # libx264 (PyAV, CPU) | nvenc (ffmpeg CLI h264_nvenc, only when present)
    crf: int = 20
    preset: str = "veryfast"
    threads: int = 1  # pinned: the same bytes on every machine and executor
    max_height: int | None = None  # downscale taller clips (aspect kept, even dimensions); None keeps size


@dataclass
class WriteConfig:
    max_clips_per_shard: int = 100


def _models_default() -> Any:
    from curate.models.config import ModelsConfig  # model stages and dedup (all off by default)

    return ModelsConfig()


def _split_default() -> Any:
    from curate.split import SplitConfig

    return SplitConfig()


def _models_default() -> Any:
    from curate.models.config import ModelsConfig

    return ModelsConfig()


@dataclass
class CurateConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: Any = field(default_factory=_split_default)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    models: Any = field(default_factory=_models_default)  # model stages and dedup, all off by default

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    """YAML-safe plain values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_config() -> CurateConfig:
    """The embedded defaults (CPU laptop)."""
    return CurateConfig()


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except CurateError as exc:
                errors.append(str(exc))
        raise CurateError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis] or [Any]
        return tuple(_coerce(list(value) if isinstance(value, tuple) else value, list[args[0]], where))
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise CurateError(f"config key '{where}' needs a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise CurateError(f"config key '{where}' needs true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise CurateError(f"config key '{where}' needs an integer, got {value!r}")
    if hint is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
        elif isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string: take numbers as users write them
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None:
            raise CurateError(f"config key '{where}' needs a number, got {value!r}")
        if not math.isfinite(number):
            raise CurateError(f"config key '{where}' needs a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise CurateError(f"config key '{where}' needs a string, got {value!r}")
    return value


def _apply(obj: Any, data: dict[str, Any], prefix: str) -> None:
    if not isinstance(data, dict):
        raise CurateError(f"config section '{prefix.rstrip('.') or '(top)'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise CurateError(f"unknown config key '{where}' (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where + ".")
        else:
            hint = hints.get(key, Any)
            if hint is Any and current is not None:
                hint = type(current)
            setattr(obj, key, _coerce(value, hint, where))


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CurateConfig:
    """Defaults, then the YAML file, then each `a.b=value` (values parsed as YAML scalars)."""
    cfg = default_config()
    if path is not None:
        p = Path(path)
        try:
            text = read_regular(p, "config file", MAX_CONFIG_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise CurateError(f"config file not found: {p}") from None
        except UnicodeDecodeError:
            raise CurateError(f"config file {p} is not UTF-8 text") from None
        except OSError as exc:
            raise CurateError(describe_os_error(exc, "cannot read config file")) from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CurateError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from None
        _apply(cfg, data, "")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CurateError(f"--set needs key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        _apply(cfg, nested, "")
    validate(cfg)
    return cfg


def validate(cfg: CurateConfig) -> None:
    for f in dataclasses.fields(cfg):  # re-run each section's own checks (__post_init__) on final values
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section):
            try:
                type(section)(**{g.name: getattr(section, g.name) for g in dataclasses.fields(section)})
            except (TypeError, ValueError) as exc:
                raise CurateError(f"config section '{f.name}': {exc}") from None
    from curate.models.config import validate_models

    validate_models(cfg.models)
    if cfg.probe.max_pixels < 1:
        raise CurateError("probe.max_pixels must be at least 1")
    if cfg.write.max_clips_per_shard < 1:
        raise CurateError("write.max_clips_per_shard must be at least 1")
    if cfg.transcode.encoder not in ("libx264", "nvenc"):
        raise CurateError(f"transcode.encoder must be libx264 or nvenc, got {cfg.transcode.encoder!r}")
    if cfg.transcode.threads < 1:
        raise CurateError("transcode.threads must be at least 1")
    if cfg.filters.analysis_height < 16:
        raise CurateError("filters.analysis_height must be at least 16")
    if cfg.filters.motion_pairs < 1 or cfg.filters.sharpness_frames < 1:
        raise CurateError("filters.motion_pairs and filters.sharpness_frames must be at least 1")
