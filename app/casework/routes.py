"""The staff directory over HTTP: list, read, create or replace, record an absence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.casework import staff as directory
from app.casework.schemas import AbsenceRequest, StaffOut, StaffPage, StaffRequest
from app.casework.states import StaffRole
from app.customers.schemas import Code
from app.http.deps import CaseworkReader, SessionDep, StaffAdmin

staff_router = APIRouter(prefix="/v1/staff", tags=["casework"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such staff member in the caller's tenant", **PROBLEM}
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"description": "The principal already acts as another staff member", **PROBLEM},
    422: {"description": "Invalid body, unknown supervisor or a loop of supervisors", **PROBLEM},
}
StaffIdPath = Annotated[
    str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]*$")
]


@staff_router.get("", response_model=StaffPage)
def list_staff(
    session: SessionDep,
    caller: CaseworkReader,
    branch: Annotated[Code | None, Query(description="Only this branch.")] = None,
    role: Annotated[StaffRole | None, Query(description="Only staff holding this role.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> StaffPage:
    """The caller's tenant's staff, by id, one page at a time."""
    return directory.list_staff(
        session, tenant=caller.tenant, branch=branch, role=role, limit=limit, offset=offset
    )


@staff_router.get("/{staff_id}", response_model=StaffOut, responses=NOT_FOUND)
def get_staff(session: SessionDep, caller: CaseworkReader, staff_id: StaffIdPath) -> StaffOut:
    """One staff member with their absences."""
    return directory.get_staff(session, tenant=caller.tenant, staff_id=staff_id)


@staff_router.put("/{staff_id}", response_model=StaffOut, responses=WRITE_ERRORS)
def put_staff(
    session: SessionDep, caller: StaffAdmin, staff_id: StaffIdPath, body: StaffRequest
) -> StaffOut:
    """Create a staff member, or replace their record (absences are kept)."""
    return directory.put_staff(
        session, tenant=caller.tenant, staff_id=staff_id, request=body, now=datetime.now(UTC)
    )


@staff_router.post(
    "/{staff_id}/absences",
    response_model=StaffOut,
    responses={**NOT_FOUND, 422: {"description": "Invalid period", **PROBLEM}},
)
def add_absence(
    session: SessionDep, caller: StaffAdmin, staff_id: StaffIdPath, body: AbsenceRequest
) -> StaffOut:
    """Record a period away: nothing is assigned or escalated to the person then."""
    return directory.add_absence(
        session, tenant=caller.tenant, staff_id=staff_id, request=body, now=datetime.now(UTC)
    )
