"""Ingest: the command line's inputs expanded into an ordered list of sources, before any work starts."""
