"""Curation: stages, pipeline, executors (local, Ray) and the `vfm-curate` command. Imports `dataload`."""
