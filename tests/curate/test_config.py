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


def _leaves(section, prefix=""):
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(section), include_extras=True)
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, hints[f.name]


def test_every_integer_key_has_bounds():
    """An integer a user sets reaches allocations and loops (analysis_height=10**9): each one is bounded."""
    import typing

    from curate.typed_config import Range

    def bounded_ints(hint):  # (is an int, has an upper bound) through Annotated, X | None and tuples
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            base, *extras = typing.get_args(hint)
            if base is int:
                return True, any(isinstance(e, Range) and e.hi is not None for e in extras)
            return bounded_ints(base)
        if origin is not None:
            found = [bounded_ints(a) for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
            found = [f for f in found if f[0]]
            return (bool(found), all(b for _, b in found))
        return hint is int, False

    unbounded = [k for k, h in _leaves(load_config()) if bounded_ints(h) == (True, False)]
    assert unbounded == []
    assert len([k for k, h in _leaves(load_config()) if bounded_ints(h)[0]]) >= 25


@pytest.mark.parametrize("override, message", [
    (["filters.analysis_height=1000000000"], "filters.analysis_height' must be at most 4320"),
    (["filters.motion_pairs=0"], "must be at least 1"),
    (["split.dissolve_halfwidths=2,0"], "split.dissolve_halfwidths' must be at least 1"),
    (["split.max_clip_s=0"], "must be above 0"),
    (["transcode.crf=99"], "at most 51"),
    (["transcode.preset=warp"], "veryfast"),
    (["models.dedup.cosine_threshold=2"], "at most 1"),
    (["models.aesthetic.reduce=max"], "mean or min"),
    (["filters.min_brightness=1.5"], "at most 1"),
    (["filters.min_clip_s=9", "filters.max_clip_s=3"], "must not exceed"),
])
def test_values_out_of_range(override, message):
    with pytest.raises(CurateError, match=message.replace(".", r"\.")):
        load_config(None, override)


def test_the_defaults_pass_their_own_types():
    from curate.typed_config import check_defaults

    check_defaults(load_config())
