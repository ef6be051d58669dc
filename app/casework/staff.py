"""The staff directory: records, absences, and the staff member a credential acts as.

Every read and write is limited to the caller's tenant: a staff id is unique within one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import ColumnElement, String, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.casework.errors import NotStaff, UnknownStaff
from app.casework.schemas import (
    AbsenceOut,
    AbsenceRequest,
    ImportResult,
    StaffOut,
    StaffPage,
    StaffRequest,
)
from app.casework.states import StaffRole
from app.casework.tables import Staff, StaffAbsence
from app.errors import Conflict, InvalidInput, NotFound
from app.scoring.repository import TenantScope
from app.security.principal import Principal

STAFF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}")
# Longest supervisor chain followed when looking for a loop.
MAX_CHAIN = 64


@dataclass(frozen=True, slots=True)
class StaffRow:
    """One record to store, and where it came from (a file's line, for errors)."""

    staff_id: str
    request: StaffRequest
    source: str = "body"


def _in_tenant(tenant: str | None) -> ColumnElement[bool]:
    return TenantScope(tenant).condition(Staff.tenant)


def find_staff(session: Session, *, tenant: str | None, staff_id: str) -> Staff | None:
    """The staff member with this id in the tenant, if any."""
    return session.scalars(
        select(Staff).where(_in_tenant(tenant), Staff.staff_id == staff_id)
    ).one_or_none()


def require_staff(session: Session, *, tenant: str | None, staff_id: str, field: str) -> Staff:
    """The staff member with this id, or a 422 naming the body's field."""
    staff = find_staff(session, tenant=tenant, staff_id=staff_id)
    if staff is None:
        raise UnknownStaff(
            f"{field}: no staff member {staff_id!r}",
            extra={"errors": [{"field": field, "message": "unknown staff", "type": "unknown"}]},
        )
    return staff


def acting_staff(session: Session, *, principal: Principal) -> Staff:
    """The active staff member the credential acts as (403 when none)."""
    staff = session.scalars(
        select(Staff).where(
            Staff.principal == principal.client_id,
            _in_tenant(principal.tenant),
        )
    ).one_or_none()
    if staff is None or not staff.active:
        raise NotStaff(
            "this credential acts as no active staff member; an administrator links it "
            "with the staff record's 'principal'"
        )
    return staff


def absences_of(session: Session, staff: Staff) -> list[StaffAbsence]:
    """A staff member's absences, earliest first."""
    return list(
        session.scalars(
            select(StaffAbsence)
            .where(StaffAbsence.staff_pk == staff.id)
            .order_by(StaffAbsence.starts_on, StaffAbsence.id)
        )
    )


def is_absent(session: Session, staff: Staff, on: date) -> bool:
    """Whether the staff member is away on ``on``."""
    found = session.scalar(
        select(func.count())
        .select_from(StaffAbsence)
        .where(
            StaffAbsence.staff_pk == staff.id,
            StaffAbsence.starts_on <= on,
            StaffAbsence.ends_on >= on,
        )
    )
    return bool(found)


def staff_out(session: Session, staff: Staff) -> StaffOut:
    """A stored staff member in the wire shape."""
    return StaffOut(
        staff_id=staff.staff_id,
        name=staff.name,
        email=staff.email,
        roles=[StaffRole(role) for role in staff.roles],
        branch=staff.branch,
        supervisor=staff.supervisor_id,
        backups=list(staff.backups),
        max_severity=staff.max_severity,
        max_amount=staff.max_amount,
        principal=staff.principal,
        active=staff.active,
        created_at=staff.created_at,
        updated_at=staff.updated_at,
        absences=[AbsenceOut.model_validate(a) for a in absences_of(session, staff)],
    )


def _store(session: Session, *, tenant: str | None, row: StaffRow, now: datetime) -> bool:
    """Insert or replace one record (flushed, not committed); whether it was new."""
    request = row.request
    staff = find_staff(session, tenant=tenant, staff_id=row.staff_id)
    created = staff is None
    if staff is None:
        staff = Staff(tenant=tenant, staff_id=row.staff_id, created_at=now)
        session.add(staff)
    staff.name = request.name
    staff.email = request.email
    staff.roles = [role.value for role in request.roles]
    staff.branch = request.branch
    staff.supervisor_id = request.supervisor
    staff.backups = list(request.backups)
    staff.max_severity = request.max_severity.value
    staff.max_amount = request.max_amount
    staff.principal = request.principal
    staff.active = request.active
    staff.updated_at = now
    return created


def _check_supervisors(session: Session, *, tenant: str | None, rows: Sequence[StaffRow]) -> None:
    """Every supervisor and backup named exists in the tenant, and no chain of supervisors
    loops (422 naming the row)."""
    for row in rows:
        for backup in row.request.backups:
            field = f"{row.source}.backups"
            if backup == row.staff_id:
                raise InvalidInput(
                    f"{field}: {backup!r} cannot back up themselves",
                    extra={"errors": [{"field": field, "message": "self", "type": "loop"}]},
                )
            require_staff(session, tenant=tenant, staff_id=backup, field=field)
        supervisor = row.request.supervisor
        if supervisor is None:
            continue
        field = f"{row.source}.supervisor"
        seen = {row.staff_id}
        current: str | None = supervisor
        for _ in range(MAX_CHAIN):
            if current is None:
                break
            if current in seen:
                raise InvalidInput(
                    f"{field}: {supervisor!r} makes a loop of supervisors",
                    extra={"errors": [{"field": field, "message": "loop", "type": "loop"}]},
                )
            seen.add(current)
            current = require_staff(
                session, tenant=tenant, staff_id=current, field=field
            ).supervisor_id


def store_staff(
    session: Session, *, tenant: str | None, rows: Sequence[StaffRow], now: datetime
) -> ImportResult:
    """Create or replace staff records in one transaction: all of them, or none."""
    created = 0
    try:
        for row in rows:
            created += _store(session, tenant=tenant, row=row, now=now)
            session.flush()
        _check_supervisors(session, tenant=tenant, rows=rows)
        session.commit()
    except IntegrityError as error:
        session.rollback()
        raise Conflict(
            "principal: that credential already acts as another staff member",
            extra={"errors": [{"field": "principal", "message": "taken", "type": "unique"}]},
        ) from error
    except Exception:
        session.rollback()
        raise
    return ImportResult(created=created, updated=len(rows) - created)


def put_staff(
    session: Session,
    *,
    tenant: str | None,
    staff_id: str,
    request: StaffRequest,
    now: datetime,
) -> StaffOut:
    """Create or replace one staff member."""
    store_staff(session, tenant=tenant, rows=[StaffRow(staff_id, request)], now=now)
    return get_staff(session, tenant=tenant, staff_id=staff_id)


def get_staff(session: Session, *, tenant: str | None, staff_id: str) -> StaffOut:
    """One staff member with their absences (404 when not in the tenant)."""
    staff = find_staff(session, tenant=tenant, staff_id=staff_id)
    if staff is None:
        raise NotFound(f"no staff member {staff_id!r}")
    return staff_out(session, staff)


def list_staff(
    session: Session,
    *,
    tenant: str | None,
    branch: str | None,
    role: StaffRole | None,
    limit: int,
    offset: int,
) -> StaffPage:
    """A page of the tenant's staff by id, of one branch or role when asked."""
    conditions = [_in_tenant(tenant)]
    if branch is not None:
        conditions.append(Staff.branch == branch)
    if role is not None:  # the JSON list as text holds each role quoted
        conditions.append(cast(Staff.roles, String).like(f'%"{role.value}"%'))
    total = session.scalar(select(func.count()).select_from(Staff).where(*conditions))
    found = session.scalars(
        select(Staff).where(*conditions).order_by(Staff.staff_id).limit(limit).offset(offset)
    )
    return StaffPage(
        total=total or 0,
        limit=limit,
        offset=offset,
        items=[staff_out(session, staff) for staff in found],
    )


def add_absence(
    session: Session,
    *,
    tenant: str | None,
    staff_id: str,
    request: AbsenceRequest,
    now: datetime,
) -> StaffOut:
    """Record a period away for a staff member (404 when not in the tenant)."""
    staff = find_staff(session, tenant=tenant, staff_id=staff_id)
    if staff is None:
        raise NotFound(f"no staff member {staff_id!r}")
    session.add(
        StaffAbsence(
            staff_pk=staff.id,
            starts_on=request.starts_on,
            ends_on=request.ends_on,
            reason=request.reason,
            created_at=now,
        )
    )
    session.commit()
    return staff_out(session, staff)


def read_staff_csv(text: str) -> list[StaffRow]:
    """The rows of a staff CSV file, each validated; a ValueError naming every bad line."""
    import csv
    import io

    from pydantic import ValidationError

    reader = csv.DictReader(io.StringIO(text))
    missing = {"staff_id", "name", "email", "roles", "branch", "max_severity", "max_amount"} - set(
        reader.fieldnames or ()
    )
    if missing:
        raise ValueError(f"missing column(s): {', '.join(sorted(missing))}")
    rows: list[StaffRow] = []
    problems: list[str] = []
    seen: set[str] = set()
    for line, record in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        staff_id = values.pop("staff_id", "")
        fields: dict[str, object] = {k: v for k, v in values.items() if v != ""}
        fields["roles"] = str(fields.get("roles", "")).replace(";", " ").split()
        fields["backups"] = str(fields.get("backups", "")).replace(";", " ").split()
        if not STAFF_ID.fullmatch(staff_id):
            problems.append(f"line {line}, staff_id: not a staff id")
            continue
        if staff_id in seen:
            problems.append(f"line {line}, staff_id: {staff_id!r} repeated")
            continue
        seen.add(staff_id)
        try:
            request = StaffRequest.model_validate(fields)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            problems.append(f"line {line}, {where}: {first['msg']}")
            continue
        rows.append(StaffRow(staff_id, request, source=f"line {line}"))
    if problems:
        raise ValueError("; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else ""))
    return rows
