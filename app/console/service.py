"""Console use cases: passwords, logins with lockout, sessions, and who may see which customer.

Staff records come from the casework package's service; this package stores only what the
console adds (a password hash, a session, a language).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.casework.staff import find_staff
from app.casework.states import CROSS_BRANCH_ROLES, StaffRole
from app.config import Settings
from app.console.errors import LoginFailed, WeakPassword
from app.console.tables import ConsoleSession, StaffCredential
from app.errors import NotFound
from app.scoring.repository import TenantScope
from app.security.principal import MAX_CLIENT_ID_LENGTH, Principal, Scope

if TYPE_CHECKING:
    from app.casework.tables import Staff

MIN_PASSWORD = 12
MAX_PASSWORD = 256
LOGIN_FAILED = "Unknown staff id or wrong password."

ROLE_SCOPES: dict[StaffRole, frozenset[Scope]] = {
    StaffRole.RELATIONSHIP_MANAGER: frozenset(
        {Scope.ALERTS_READ, Scope.ALERTS_WRITE, Scope.CUSTOMERS_READ, Scope.SCORES_READ}
    ),
    StaffRole.BRANCH_SUPERVISOR: frozenset(
        {Scope.ALERTS_READ, Scope.ALERTS_WRITE, Scope.CUSTOMERS_READ, Scope.SCORES_READ}
    ),
    StaffRole.COMPLAINTS_TEAM: frozenset({Scope.CASEWORK_READ, Scope.CASEWORK_WRITE}),
    StaffRole.HEAD_OFFICE_APPROVER: frozenset({Scope.CASEWORK_READ, Scope.CASEWORK_WRITE}),
    StaffRole.ADMINISTRATOR: frozenset(Scope),
    StaffRole.MODEL_OWNER: frozenset({Scope.MODELS_READ}),
}


class Passwords:
    """Argon2id hashing at the configured cost."""

    def __init__(self, *, time_cost: int, memory_kib: int) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Checked when the staff id is unknown: an unknown id costs as long as a wrong password.
        self.dummy_hash = self.hasher.hash("cvm-console-no-such-staff-member")

    @classmethod
    def from_settings(cls, settings: Settings) -> Passwords:
        """The cost the settings name."""
        return cls(
            time_cost=settings.console_argon2_time_cost,
            memory_kib=settings.console_argon2_memory_kib,
        )

    def hash(self, password: str) -> str:
        """A new salted hash."""
        return self.hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches (against a dummy hash when nothing is stored)."""
        try:
            return self.hasher.verify(stored or self.dummy_hash, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A logged-in staff member: who, their roles, branch, session and language."""

    tenant: str | None
    staff_id: str
    name: str
    roles: frozenset[StaffRole]
    branch: str
    principal: Principal
    csrf_token: str
    locale: str | None

    def sees_every_branch(self) -> bool:
        """Whether the roles reach customers and cases of every branch of the tenant."""
        return bool(self.roles & CROSS_BRANCH_ROLES)


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)


def token_digest(token: str) -> str:
    """What is stored of a session cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def principal_for(staff: Staff) -> Principal:
    """The principal the console acts as: the staff record's API principal when it has one, so
    that an alert acknowledged here is owned by the same id as through the API."""
    client_id = staff.principal or f"staff:{staff.staff_id}"
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        client_id = "staff:" + hashlib.sha256(staff.staff_id.encode()).hexdigest()[:32]
    scopes: set[str] = set()
    for role in staff.roles:
        scopes.update(s.value for s in ROLE_SCOPES.get(StaffRole(role), frozenset()))
    return Principal(
        client_id=client_id,
        name=staff.name,
        scopes=frozenset(scopes),
        tenant=staff.tenant,
        method="console",
    )


def _credential(session: Session, tenant: str | None, staff_id: str) -> StaffCredential | None:
    return session.scalars(
        select(StaffCredential).where(
            TenantScope(tenant).condition(StaffCredential.tenant),
            StaffCredential.staff_id == staff_id,
        )
    ).one_or_none()


def set_password(
    session: Session,
    *,
    passwords: Passwords,
    tenant: str | None,
    staff_id: str,
    password: str,
    now: datetime,
) -> None:
    """Store a new password for an existing staff member (and lift any lockout)."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise WeakPassword(
            f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters",
            extra={"errors": [{"field": "password", "message": "length", "type": "length"}]},
        )
    if find_staff(session, tenant=tenant, staff_id=staff_id) is None:
        raise NotFound(f"no staff member {staff_id!r}")
    credential = _credential(session, tenant, staff_id)
    if credential is None:
        credential = StaffCredential(tenant=tenant, staff_id=staff_id)
        session.add(credential)
    credential.password_hash = passwords.hash(password)
    credential.failed_attempts = 0
    credential.locked_until = None
    credential.updated_at = now
    # Every session of the old password ends.
    session.execute(
        delete(ConsoleSession).where(
            TenantScope(tenant).condition(ConsoleSession.tenant),
            ConsoleSession.staff_id == staff_id,
        )
    )
    session.commit()


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """How passwords are hashed, how many failures lock an account, for how long, and how long
    sessions last."""

    passwords: Passwords
    max_failures: int
    lockout: timedelta
    idle: timedelta
    max_age: timedelta


def log_in(
    session: Session,
    *,
    tenant: str | None,
    staff_id: str,
    password: str,
    policy: LoginPolicy,
    now: datetime,
) -> str:
    """A new session's cookie value, or LoginFailed (one message whatever went wrong)."""
    credential = _credential(session, tenant, staff_id) if staff_id else None
    staff = find_staff(session, tenant=tenant, staff_id=staff_id) if credential else None
    locked = bool(credential and credential.locked_until and credential.locked_until > now)
    # The hash is checked even when locked or unknown: every refusal takes as long.
    passwords = policy.passwords
    verified = passwords.verify(credential.password_hash if credential else None, password)
    if credential is None or staff is None or not staff.active or locked or not verified:
        if credential is not None and not locked and not verified:
            credential.failed_attempts += 1
            if credential.failed_attempts >= policy.max_failures:
                credential.locked_until = now + policy.lockout
                credential.failed_attempts = 0
            session.commit()
        raise LoginFailed(LOGIN_FAILED)
    credential.failed_attempts = 0
    credential.locked_until = None
    if passwords.hasher.check_needs_rehash(credential.password_hash):
        credential.password_hash = passwords.hash(password)
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_digest=token_digest(token),
            tenant=tenant,
            staff_id=staff_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + policy.max_age,
        )
    )
    # Expired sessions of anyone go with each login.
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    session.commit()
    return token


def current_user(
    session: Session, *, token: str, policy: LoginPolicy, now: datetime
) -> ConsoleUser | None:
    """The staff member of a live session (its idle clock restarted), or None."""
    if not token or len(token) > 128:
        return None
    row = session.scalars(
        select(ConsoleSession).where(ConsoleSession.token_digest == token_digest(token))
    ).one_or_none()
    if row is None:
        return None
    staff = find_staff(session, tenant=row.tenant, staff_id=row.staff_id)
    if row.expires_at <= now or row.last_seen_at + policy.idle <= now or staff is None:
        session.delete(row)
        session.commit()
        return None
    if not staff.active:
        return None
    credential = _credential(session, row.tenant, row.staff_id)
    row.last_seen_at = now
    session.commit()
    return ConsoleUser(
        tenant=staff.tenant,
        staff_id=staff.staff_id,
        name=staff.name,
        roles=frozenset(StaffRole(r) for r in staff.roles),
        branch=staff.branch,
        principal=principal_for(staff),
        csrf_token=row.csrf_token,
        locale=credential.locale if credential else None,
    )


def log_out(session: Session, *, token: str) -> None:
    """End the session of this cookie (nothing when there is none)."""
    digest = token_digest(token)
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_digest == digest))
    session.commit()


def set_locale(session: Session, *, user: ConsoleUser, locale: str, now: datetime) -> None:
    """Remember the language a staff member chose."""
    credential = _credential(session, user.tenant, user.staff_id)
    if credential is not None:
        credential.locale = locale
        credential.updated_at = now
        session.commit()


def acting_record(session: Session, *, user: ConsoleUser) -> Staff:
    """The user's staff record (casework acts on it)."""
    staff = find_staff(session, tenant=user.tenant, staff_id=user.staff_id)
    if staff is None:
        raise NotFound("no such staff member")
    return staff
