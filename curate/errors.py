"""Errors that a command reports as one clear line (exit 2: the run could not start)."""


class CurateError(Exception):
    """A problem with the user's input or config, reported without a traceback."""
