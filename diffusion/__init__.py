"""Video diffusion: DiT, VAE and text-encoder wrappers, objective, samplers, trainer, generation.

Imports `dataload` and `parallel`, never `curate`.
"""
