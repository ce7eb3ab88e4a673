"""Video I/O (probe, decode), the shard format and the training loaders.

Imports nothing else of this project: it is the contract between curation (writer) and training (reader).
"""
