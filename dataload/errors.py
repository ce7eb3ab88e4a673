"""Errors of video I/O and the shard format. Their messages are meant to be shown to users as one line."""


class VideoError(Exception):
    """A video cannot be opened or read (missing, empty, not a video, unsupported)."""


class CorruptVideoError(VideoError):
    """Strict decoding met a corrupt packet or frame."""


class ShardError(Exception):
    """A shard is truncated, corrupt, hostile (unsafe member names) or misses required members/keys."""


class LoaderWarning(UserWarning):
    """Samples or shards were skipped (corrupt, hostile, truncated, not a regular file, too short); the
    message names them with their reasons, on one line. Re-exported by `dataload.loader`."""
