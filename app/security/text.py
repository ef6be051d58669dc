"""What text may hold before it is stored or looked up.

PostgreSQL's text types cannot hold NUL: a NUL in an id that reaches a query fails it (the
driver raises, the caller would see 500). Ids take no control characters at all; free text
(notes) keeps its line breaks and tabs but no NUL.
"""

from __future__ import annotations

# One or more characters, none of them a control character (C0 or DEL).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# Anything but NUL.
TEXT_PATTERN = r"^[^\x00]*$"


def is_storable_id(value: str, *, max_length: int) -> bool:
    """Whether ``value`` may be stored as an id: 1 to ``max_length`` characters, no control ones."""
    return 0 < len(value) <= max_length and value.isprintable()
