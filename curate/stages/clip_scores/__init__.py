"""CLIP scores: one CLIP forward pass over frames sampled per clip gives the aesthetic score (an MLP head,
`low_aesthetic` below its threshold) and the clip embedding (for dedup)."""
