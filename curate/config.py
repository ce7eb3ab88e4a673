"""The config of a curation run: one typed section per stage (each defined in its stage's folder), YAML
files and `--set a.b=value` overrides.

Every key is checked against its type and range (curate.typed_config): an unknown key or a bad value is a
CurateError (exit 2). The full config is written to OUT/config.yaml; a rerun into OUT must carry the same.

Clip reject reasons (clips.parquet `reject_reason`) form a fixed set, defined with the clip record
(dataload.clip_record.REJECT_REASONS); the rules behind them are small classes checked in order, first
wins: the split stage's ScenePieceTooShort, the filter stage's rules (curate/stages/filters/rules.py, with
their thresholds in filters/config.py), LowAesthetic of the CLIP scores stage, and dedup's duplicate_of.
Source reasons (sources.parquet `reason`) for `skipped`: video_too_short, video_too_small; for `failed`:
the stage name and the error's one-line message (e.g. `ingest: not found (listed in LIST)` for a list
file's missing entry, `probe: PATH: video is a FIFO (named pipe), not a regular file`, `probe: frame size
WxH declared by the file is over probe.max_pixels (N)`, `caption: PATH: caption file is over the cap of N
bytes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curate.errors import CurateError
from curate.stages.caption.config import CaptionConfig
from curate.stages.caption_enhance.config import CaptionEnhanceConfig
from curate.stages.clip_scores.config import AestheticConfig, ClipModelConfig, EmbeddingConfig
from curate.stages.dedup.config import DedupConfig
from curate.stages.filters.config import FilterConfig
from curate.stages.ingest.config import IngestConfig
from curate.stages.probe.config import ProbeConfig
from curate.stages.split.config import SplitConfig
from curate.stages.transcode.config import TranscodeConfig
from curate.stages.vlm_caption.config import VLMConfig
from curate.stages.write.config import WriteConfig
from curate.typed_config import apply
from dataload.files import describe_os_error, read_regular

MAX_CONFIG_BYTES = 1 << 20  # a config file is a page of YAML


@dataclass
class ModelsConfig:
    """Model stages and dedup, all off by default (the default run needs no weights)."""

    clip: ClipModelConfig = field(default_factory=ClipModelConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    caption_enhance: CaptionEnhanceConfig = field(default_factory=CaptionEnhanceConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def check(self) -> None:
        if self.aesthetic.enabled and not self.aesthetic.head:
            raise CurateError("models.aesthetic.enabled needs models.aesthetic.head (a safetensors file)")
        if self.dedup.enabled and self.dedup.semantic and not self.embedding.enabled:
            raise CurateError("models.dedup.semantic needs models.embedding.enabled (or set models.dedup.semantic=false)")


@dataclass
class CurateConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    captions: CaptionConfig = field(default_factory=CaptionConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)

    def to_dict(self) -> dict[str, object]:
        return _plain(dataclasses.asdict(self))  # type: ignore[return-value]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def check(self) -> None:
        """What the field types cannot say alone: the sections' own cross-key rules."""
        for section in (self.split, self.filters, self.models):
            section.check()


def _plain(value: object) -> object:
    """YAML-safe plain values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_config() -> CurateConfig:
    """The embedded defaults (CPU laptop)."""
    return CurateConfig()


def read_config_file(path: str | Path) -> object:
    """The YAML of a config file (a regular file of at most MAX_CONFIG_BYTES), or CurateError."""
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
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CurateError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CurateConfig:
    """Defaults, then the YAML file, then each `a.b=value` (values parsed as YAML scalars), then the checks."""
    cfg = default_config()
    if path is not None:
        apply(cfg, read_config_file(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CurateError(f"--set needs key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        nested: object = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        apply(cfg, nested)
    cfg.check()
    return cfg
