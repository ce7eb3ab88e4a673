"""Commit: the last per-source stage; makes the source's result durable in OUT/_state (curate.state)."""
