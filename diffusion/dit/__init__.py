"""The Wan2.1 video DiT: config presets, model, diffusers converter, parallel plan."""

from diffusion.dit.config import DiTConfig, tiny_dit, wan_1_3b_dit, wan_14b_dit
from diffusion.dit.model import VideoDiT

__all__ = ["DiTConfig", "VideoDiT", "tiny_dit", "wan_1_3b_dit", "wan_14b_dit"]
