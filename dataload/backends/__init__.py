"""Decoding backends behind `dataload.reader.VideoReader`: PyAV (default, every codec), decord (fast
random access for H.264/HEVC/MPEG-4), DALI (GPU decode, optional)."""
