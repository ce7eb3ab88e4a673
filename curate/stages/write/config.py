"""Config section `write`: how the shards are cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from curate.typed_config import Range


@dataclass
class WriteConfig:
    max_clips_per_shard: Annotated[int, Range(1, 1_000_000)] = 100
