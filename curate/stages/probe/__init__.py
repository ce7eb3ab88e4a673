"""Probe: open a source, decode it once (its facts, its frame times and the small luma analysis track the
splitter reads), and apply the whole-video rules."""
