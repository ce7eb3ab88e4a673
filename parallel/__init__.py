"""The heterogeneous-parallel core: layouts, context-parallel attention, boundary communicators, schedules.

Imports nothing else of this project; the backend (gloo, NCCL) is always a parameter.
"""
