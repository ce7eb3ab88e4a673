"""Dedup: near-duplicate clips across the whole run (within a video and across videos), a barrier step."""
