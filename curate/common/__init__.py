"""Helpers several stages share: the compute device, and sampling frames of clips for models."""
