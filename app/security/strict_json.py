"""Duplicate keys in a JSON body, found cheaply.

pydantic-core (like orjson and the json module) keeps the last of duplicate keys silently, so
``{"age": 30, "age": 70}`` would be scored as 70 while a gateway that logs or checks the first
value sees 30. The fast path parses with orjson, writes the result back, and compares the
number of colons in both texts. In a body without a backslash, string contents are written the
same way in both, and every other colon ends a key; so equal counts mean no key was dropped.
A body with a backslash (rare in scoring calls) takes the exact, slower check.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return result


def duplicate_key(body: bytes) -> str | None:
    """The first key repeated within one object of ``body``, or None (also for invalid JSON)."""
    if b"\\" not in body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # NaN or an integer beyond 64 bits, say: the exact check decides
        else:
            if body.count(b":") == orjson.dumps(parsed).count(b":"):
                return None
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _Duplicate as duplicate:
        return duplicate.key
    except (ValueError, RecursionError):
        return None  # not JSON: the endpoint's own parser answers 422
    return None
