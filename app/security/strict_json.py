"""Duplicate keys and excessive nesting in a JSON body, found cheaply.

pydantic-core (like orjson and the json module) keeps the last of duplicate keys silently, so
``{"age": 30, "age": 70}`` would be scored as 70 while a gateway that logs or checks the first
value sees 30. The fast path parses with orjson, writes the result back, and compares the
number of colons in both texts. In a body without a backslash, string contents are written the
same way in both, and every other colon ends a key; so equal counts mean no key was dropped.
A body with a backslash (rare in scoring calls) takes the exact, slower check.

Nesting is bounded before any parser sees the body: orjson writes at most 254 levels back
(and reads 1,024), Python's json module recurses, and no CVM body needs more than 4 levels.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Every byte but quotes and brackets, deleted by ``bytes.translate``.
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'"[]{}')
_OPENERS = b"[{"
_NOT_OPENERS = bytes(range(256)).translate(None, _OPENERS)


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether arrays and objects in ``body`` nest deeper than ``limit`` levels.

    Byte operations only, no parsing: escaped quotes and backslashes are dropped, then everything
    but quotes and brackets, then the strings (whose brackets are text), leaving the structure;
    each pass then removes the innermost pairs. Invalid JSON may be judged either way: its
    parser refuses it anyway.
    """
    if len(body.translate(None, _NOT_OPENERS)) <= limit:
        return False  # fewer openers than levels allowed: the common, small body
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    reduced = body.translate(None, _NOT_STRUCTURE)
    # Strings without brackets reduce to '""'. If removing those pairs leaves no quote, every
    # pair removed was one string (a string holding a bracket would leave its quotes behind).
    structure = reduced.replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(reduced.split(b'"')[::2])
    for _ in range(limit):
        if not structure:
            return False
        # A placeholder keeps '[{}]' from losing two levels in one pass.
        structure = structure.replace(b"{}", b"0").replace(b"[]", b"0").replace(b"0", b"")
    return bool(structure)


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
            try:
                written = orjson.dumps(parsed)
            except orjson.JSONEncodeError:
                pass  # nested beyond what orjson writes: the exact check decides
            else:
                if body.count(b":") == written.count(b":"):
                    return None
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _Duplicate as duplicate:
        return duplicate.key
    except (ValueError, RecursionError):
        return None  # not JSON: the endpoint's own parser answers 422
    return None
