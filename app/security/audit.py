"""The audit trail: one structured line per guarded request, on the `cvm.audit` logger.

Who (client id, tenant, how it authenticated), what (method, route template, and what the
handler adds: task, customer count, pseudonymised customer), when (the line's timestamp) and
the result status. Never the path itself (it may hold a raw customer id), bodies or secrets.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request


def note(request: Request, **fields: Any) -> None:
    """Add what a handler did to this request's audit line (ids must already be pseudonymised)."""
    request.scope["state"].setdefault("audit", {}).update(fields)
