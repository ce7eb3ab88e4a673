"""Shot splitting: find scenes (content detector, TransNetV2, fixed stride) and plan candidate clips.

The config and result types import light; the detectors (which need the video reader and torch) load on
first use, so `vfm-curate --help` and config checks stay fast."""

from curate.split.config import SPLITTERS, SceneResult, SplitConfig, scenes_from_cuts

_API = ("SceneDetector", "detect_scenes", "fixed_cuts", "plan_clips", "resolve_splitter")


def __getattr__(name: str):
    if name in _API:
        from curate.split import api

        return getattr(api, name)
    raise AttributeError(f"module 'curate.split' has no attribute {name!r}")


__all__ = ["SPLITTERS", "SceneDetector", "SceneResult", "SplitConfig", "detect_scenes", "fixed_cuts", "plan_clips",
           "resolve_splitter", "scenes_from_cuts"]
