"""The sharded multimodal loader: plan (metadata only) -> workers decode -> batches; see loader.py."""

from dataload.loader.config import Bucket, LoaderConfig, tiny_preset, wan_480p_preset
from dataload.loader.loader import LoaderWarning, VideoLoader, build_loader
from dataload.loader.sources import SourceIndex, index_source, resolve_source

__all__ = [
    "Bucket", "LoaderConfig", "LoaderWarning", "SourceIndex", "VideoLoader", "build_loader", "index_source",
    "resolve_source", "tiny_preset", "wan_480p_preset",
]
