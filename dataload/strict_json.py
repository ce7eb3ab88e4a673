"""JSON read strictly: no NaN, no Infinity, no number that overflows to infinity. Every JSON the project
reads from data (clip records, dataset.json, safetensors headers, latent state) goes through here, so a
non-finite number never reaches a planner, a decoder or a model."""

from __future__ import annotations

import json
import math
from typing import Any

from dataload.errors import ShardError


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _all_finite(obj: Any) -> bool:
    """No inf anywhere in parsed JSON (NaN and Infinity literals are refused while parsing; only a number
    that overflows, like 1e400, parses to inf). Lists of numbers are checked at C speed."""
    t = type(obj)
    if t is float:
        return math.isfinite(obj)
    if t is list:
        try:
            return all(map(math.isfinite, obj))
        except (TypeError, OverflowError):  # not all numbers (or an int too big for a float): one by one
            return all(map(_all_finite, obj))
    if t is dict:
        return all(map(_all_finite, obj.values()))
    return True


def loads_strict(data: bytes | str) -> Any:
    """json.loads that refuses NaN, Infinity, -Infinity and numbers that overflow to infinity (1e400).
    Raises ValueError (JSONDecodeError is one) or RecursionError (absurd nesting)."""
    value = json.loads(data, parse_constant=_refuse_constant)
    if not _all_finite(value):
        raise ValueError("a number overflows to infinity")
    return value


def parse_json_member(data: bytes, where: str = "") -> dict[str, Any]:
    """A JSON member as a dict; ShardError (one line, prefixed by `where`) for invalid JSON, non-finite
    numbers, absurd nesting or a value that is not an object."""
    at = f"{where}: " if where else ""
    try:
        meta = loads_strict(data)
    except json.JSONDecodeError as e:
        raise ShardError(f"{at}JSON member is not valid JSON ({e.msg} at char {e.pos})") from None
    except UnicodeDecodeError:
        raise ShardError(f"{at}JSON member is not valid UTF-8") from None
    except ValueError as e:  # a refused constant, an overflowing float, an integer with too many digits
        raise ShardError(f"{at}JSON member is not valid JSON ({_first_line(str(e))})") from None
    except RecursionError:
        raise ShardError(f"{at}JSON member is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ShardError(f"{at}JSON member is not an object")
    return meta


def _first_line(text: str, limit: int = 120) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def show(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters: one line whatever the value holds."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."
