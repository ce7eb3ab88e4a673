"""Worked examples of the parallel core (a tiny multimodal LLM)."""
