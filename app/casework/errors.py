"""Casework's refusals: domain errors with their status and a stable code."""

from __future__ import annotations

from app.errors import Conflict, InvalidInput, ServiceError


class NotStaff(ServiceError):
    """The credential is valid but acts as no (active) staff member of its tenant."""

    status = 403
    code = "not_staff"
    title = "Not a staff member"


class NotAllowed(ServiceError):
    """The staff member may not do this: another branch's case, or a role they lack."""

    status = 403
    code = "not_allowed"
    title = "Not allowed"


class UnknownStaff(InvalidInput):
    """A staff id named in the body is not in the caller's tenant's directory."""

    code = "unknown_staff"
    title = "Unknown staff"


class TransitionNotAllowed(Conflict):
    """The action is not allowed from the complaint's current status."""

    code = "transition_not_allowed"
    title = "Transition not allowed"


class AssignmentRefused(Conflict):
    """The staff member cannot take the case: implicated in it, absent, or without authority."""

    code = "assignment_refused"
    title = "Assignment refused"


class DeadlineRefused(Conflict):
    """The deadline cannot move that way: past the profile's ceiling, or not provided for."""

    code = "deadline_refused"
    title = "Deadline refused"
