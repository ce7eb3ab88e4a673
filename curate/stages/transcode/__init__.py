"""Transcode: every kept clip re-encoded, frame-accurately, as H.264 (libx264 through dataload.h264, or
NVENC through the ffmpeg program)."""
