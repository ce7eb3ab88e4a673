"""Executors run a pipeline's stages over source tasks: `local` (processes here) and `ray`."""
