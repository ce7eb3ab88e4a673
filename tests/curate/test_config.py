"""Config: defaults, YAML, --set overrides with types, unknown keys and bad values as CurateError."""

from __future__ import annotations

import pytest
import yaml

from curate.config import CurateConfig, load_config
from curate.errors import CurateError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = load_config()
    assert isinstance(cfg, CurateConfig)
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).to_dict() == cfg.to_dict()


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"filters": {"min_motion": 0.5}, "write": {"max_clips_per_shard": 7}}))
    cfg = load_config(path, ["filters.min_motion=1", "transcode.max_height=360", "ingest.video_extensions=.mp4,.mkv"])
    assert cfg.filters.min_motion == 1.0 and isinstance(cfg.filters.min_motion, float)
    assert cfg.write.max_clips_per_shard == 7
    assert cfg.transcode.max_height == 360
    assert cfg.ingest.video_extensions == [".mp4", ".mkv"]
    assert load_config(None, ["transcode.max_height=null"]).transcode.max_height is None


@pytest.mark.parametrize("override, message", [
    (["filters.no_such_key=1"], "unknown config key 'filters.no_such_key'"),
    (["nosection.a=1"], "unknown config key 'nosection'"),
    (["filters.min_motion=fast"], "needs a number"),
    (["write.max_clips_per_shard=1.5"], "needs an integer"),
    (["write.max_clips_per_shard=0"], "at least 1"),
    (["filters=3"], "must be a mapping"),
    (["novalue"], "key=value"),
    (["transcode.encoder=h265"], "libx264 or nvenc"),
])
def test_bad_overrides(override, message):
    with pytest.raises(CurateError, match=message):
        load_config(None, override)


def test_bad_files(tmp_path):
    with pytest.raises(CurateError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("filters: [unclosed")
    with pytest.raises(CurateError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("filters:\n  sharpnes: 3\n")
    with pytest.raises(CurateError, match="filters.sharpnes"):
        load_config(unknown)
