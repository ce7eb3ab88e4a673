"""Errors of the parallel core (subclass ValueError so CLIs can print one line)."""


class LayoutError(ValueError):
    """An impossible or unsupported parallel layout (degrees, placement, world size)."""


class BoundaryError(ValueError):
    """Two layouts that a boundary communicator cannot join, or a tensor it cannot route."""
