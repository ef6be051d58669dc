"""Domain errors carry their HTTP status and a stable code; one handler renders them all."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base of every error a client may see, rendered as RFC 9457 problem details."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The problem-details body."""
        body: dict[str, Any] = {
            "type": f"https://cvm.example/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class InvalidInput(ServiceError):
    """The request body does not match the model's schema."""

    status = 422
    code = "invalid_input"
    title = "Invalid input"


class BatchTooLarge(ServiceError):
    """More customers in one call than the configured limit."""

    status = 413
    code = "batch_too_large"
    title = "Batch too large"


class NotFound(ServiceError):
    """The addressed resource does not exist."""

    status = 404
    code = "not_found"
    title = "Not found"


class ModelUnavailable(ServiceError):
    """No model is loaded for the task asked for."""

    status = 503
    code = "model_unavailable"
    title = "Model unavailable"


class DatabaseUnavailable(ServiceError):
    """The database could not take the write; the detail says whether anything was saved."""

    status = 503
    code = "database_unavailable"
    title = "Database unavailable"


class Conflict(ServiceError):
    """The request does not fit the resource's current state (e.g. an illegal transition)."""

    status = 409
    code = "conflict"
    title = "Conflict"
