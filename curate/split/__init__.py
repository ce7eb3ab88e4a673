"""Shot splitting: find scenes (content detector, TransNetV2, fixed stride) and plan candidate clips."""

from curate.split.api import SceneDetector, detect_scenes, fixed_cuts, plan_clips, resolve_splitter
from curate.split.config import SPLITTERS, SceneResult, SplitConfig, scenes_from_cuts

__all__ = ["SPLITTERS", "SceneDetector", "SceneResult", "SplitConfig", "detect_scenes", "fixed_cuts", "plan_clips",
           "resolve_splitter", "scenes_from_cuts"]
