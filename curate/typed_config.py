"""Typed config sections: dataclasses whose field types say what a value may be, checked when a value is
set from YAML or `--set a.b=value`.

Types understood: bool, int, float, str, `Literal[...]` (a fixed set of words), `list[X]`, `tuple[X, ...]`,
`X | None`, nested sections (dataclasses), and `Annotated[int | float, Range(...)]` for bounds. Every
problem is a CurateError naming the key: an unknown key, a value of the wrong type, a float that is not
finite, a number out of its range, a word outside its set. Floats take numbers as users write them
(`1e-4`, which YAML 1.1 reads as a string; `2` as 2.0).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from curate.errors import CurateError

__all__ = ["Range", "apply", "check_defaults", "coerce"]


@dataclass(frozen=True)
class Range:
    """Bounds of a number: `lo <= v <= hi`, and `v > above` (strict) where given."""

    lo: float | None = None
    hi: float | None = None
    above: float | None = None

    def check(self, value: float, where: str) -> None:
        if self.above is not None and not value > self.above:
            raise CurateError(f"config key '{where}' must be above {self.above:g}, got {value!r}")
        if self.lo is not None and value < self.lo:
            raise CurateError(f"config key '{where}' must be at least {self.lo:g}, got {value!r}")
        if self.hi is not None and value > self.hi:
            raise CurateError(f"config key '{where}' must be at most {self.hi:g}, got {value!r}")


def _words(options: tuple[object, ...]) -> str:
    names = [str(o) for o in options]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _float(value: object, where: str) -> float:
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise CurateError(f"config key '{where}' needs a number, got {value!r}")
    if not math.isfinite(number):
        raise CurateError(f"config key '{where}' needs a finite number, got {value!r}")
    return number


def coerce(value: object, hint: object, where: str) -> object:
    """`value` (from YAML) as the type `hint` says, or CurateError."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        out = coerce(value, base, where)
        for extra in extras:
            if isinstance(extra, Range) and out is not None:
                extra.check(out, where)  # type: ignore[arg-type]
        return out
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except CurateError as exc:
                errors.append(str(exc))
        raise CurateError(errors[0] if errors else f"config key '{where}' has a bad value {value!r}")
    if origin is Literal:
        options = typing.get_args(hint)
        if value not in options or isinstance(value, bool):
            raise CurateError(f"config key '{where}' must be {_words(options)}, got {value!r}")
        return value
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise CurateError(f"config key '{where}' needs a list, got {value!r}")
        items = [coerce(v, args[0], where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise CurateError(f"config key '{where}' needs true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():  # an item of "2,3,5"
            return int(value.strip())
        raise CurateError(f"config key '{where}' needs an integer, got {value!r}")
    if hint is float:
        return _float(value, where)
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise CurateError(f"config key '{where}' needs a string, got {value!r}")
    raise TypeError(f"config key '{where}': unsupported type {hint!r}")  # a programming error, not the user's


def apply(section: object, data: object, prefix: str = "") -> None:
    """Set the keys of `data` (a mapping, nested for subsections) on the dataclass `section`."""
    if not isinstance(data, dict):
        raise CurateError(f"config section '{prefix.rstrip('.') or '(top)'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(section), include_extras=True)
    names = {f.name for f in dataclasses.fields(section)}  # type: ignore[arg-type]
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise CurateError(f"unknown config key '{where}' (known here: {', '.join(sorted(names))})")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            apply(current, value, where + ".")
        else:
            setattr(section, key, coerce(value, hints[key], where))


def check_defaults(section: object, prefix: str = "") -> None:
    """Every default of a section (and its subsections) passes its own type: a guard for developers."""
    hints = typing.get_type_hints(type(section), include_extras=True)
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_defaults(value, f"{prefix}{f.name}.")
        else:
            coerce(value, hints[f.name], prefix + f.name)
