"""The security contract in the OpenAPI document: schemes, who needs what, refusal shapes.

Refusals come from the middleware and dependencies rather than each route, so they are added
here once: every guarded operation lists 401, 403, 429, 431, 503 and 504; every POST also 400,
409, 413, 415 and 422 and its optional Idempotency-Key header. Every error body is a
problem-details object.
"""

from __future__ import annotations

from typing import Any

from app.security.idempotency import MAX_KEY_LENGTH
from app.security.setup import ALWAYS_PUBLIC

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some problems add fields (errors, limit, ...).",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "code", "detail"],
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
_GUARDED: dict[str, dict[str, Any]] = {
    "401": {
        "description": "No valid credential",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "403": {"description": "The credential lacks the scope this operation needs"},
    "429": {"description": "Rate limit exceeded", "headers": _RETRY_AFTER},
    "431": {"description": "Request headers larger than the configured limit"},
    "503": {"description": "A dependency (database) is unavailable; nothing was done"},
    "504": {"description": "The request took longer than the configured timeout"},
}
_POST: dict[str, dict[str, Any]] = {
    "400": {"description": "JSON body nested deeper than the configured limit"},
    "409": {
        "description": "A request with the same Idempotency-Key is in progress",
        "headers": _RETRY_AFTER,
    },
    "413": {"description": "Body (or batch) larger than the configured limit"},
    "415": {"description": "Body not declared as JSON (Content-Type: application/json)"},
    "422": {"description": "Invalid body, duplicate JSON key, or Idempotency-Key reused"},
}
IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body returns the first response and writes "
    "nothing new; the same key with another body is refused (422).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}


def document_security(spec: dict[str, Any]) -> None:
    """Add schemes, requirements, refusals and the problem schema to ``spec`` in place."""
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "Bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (cvm_...) or an OAuth2 access token (JWT).",
        },
    }
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            if path in ALWAYS_PUBLIC:
                continue
            responses = operation.setdefault("responses", {})
            operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            _add(responses, _GUARDED)
            if method == "post":
                _add(responses, _POST)
                operation.setdefault("parameters", []).append(IDEMPOTENCY_HEADER)
            for status, response in responses.items():
                if status[0] in "45":
                    # One error shape, whatever FastAPI or a router declared.
                    response["content"] = {"application/problem+json": {"schema": PROBLEM_REF}}


def _add(responses: dict[str, Any], extra: dict[str, dict[str, Any]]) -> None:
    for status, response in extra.items():
        responses.setdefault(status, dict(response))
