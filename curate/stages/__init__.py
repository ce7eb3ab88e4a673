"""The per-source stages of the standard pipeline (see curate.pipeline.build_pipeline)."""
