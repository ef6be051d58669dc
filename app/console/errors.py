"""The console's refusals: domain errors with their status and a stable code."""

from __future__ import annotations

from app.errors import InvalidInput, ServiceError


class LoginRequired(ServiceError):
    """No session, or an expired one: the console answers with a redirect to its login page."""

    status = 401
    code = "login_required"
    title = "Login required"


class LoginFailed(ServiceError):
    """Unknown staff id, wrong password, inactive or locked out: one message for all of them."""

    status = 401
    code = "login_failed"
    title = "Login failed"


class CsrfRefused(ServiceError):
    """A form post without this session's CSRF token (forged, stale or empty)."""

    status = 403
    code = "csrf_refused"
    title = "Form refused"


class WeakPassword(InvalidInput):
    """A new password outside the accepted length."""

    code = "weak_password"
    title = "Password not accepted"
