"""Model-backed curation: VLM and OpenAI-HTTP captions, CLIP aesthetics and embeddings, and their stages.

Every model loads from a local path or a hub id, runs on CUDA when present (``device: auto``) and on the CPU
otherwise. Nothing here is imported unless a model stage is enabled in the config.
"""
