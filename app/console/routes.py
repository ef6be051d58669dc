"""The console's pages, a sub-application the app factory mounts at /console.

Pages are HTML forms: no script runs in the browser. Every page but the login needs a session
cookie (else a redirect to the login page); every form post carries a CSRF token (the
session's, or before login a double-submit cookie), and a missing or wrong one is refused.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache, partial
from gettext import NullTranslations
from pathlib import Path as FilePath
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute

from app.actions.service import NextBestActionService
from app.alerts import service as alerts
from app.alerts.schemas import AcknowledgeRequest, ResolveRequest
from app.alerts.states import Outcome
from app.campaigns import service as campaigns
from app.campaigns.schemas import CampaignRequest
from app.campaigns.states import CampaignStatus
from app.casework import routing
from app.casework.routing import RoutingPolicy
from app.casework.schemas import EscalateRequest, ReassignRequest
from app.casework.states import AssignmentStatus
from app.config import Settings
from app.console import campaign_form, pages
from app.console.charts import (
    Bar,
    Series,
    Stability,
    interval_svg,
    psi_svg,
    reasons_svg,
    stacked_svg,
)
from app.console.errors import CsrfRefused, LoginFailed, LoginRequired
from app.console.i18n import Formats, Language, load_translations
from app.console.labels import COUNTED_MEASURES, MOVEMENT_CHART
from app.console.service import (
    ConsoleUser,
    LoginPolicy,
    Passwords,
    current_user,
    log_in,
    log_out,
    set_locale,
    utc_now,
)
from app.contact.service import ContactPolicy
from app.contact.states import ContactChannel, ContactPurpose
from app.customers.lifecycle import LifecycleStage
from app.customers.record import index_weights
from app.db.session import writing
from app.errors import Conflict, DatabaseUnavailable, InvalidInput, NotFound, ServiceError
from app.scoring.manifest import Task
from app.scoring.repository import TenantScope
from app.security.audit import AuditFilter, audit_page, note
from app.security.pseudonyms import Pseudonymizer
from app.security.text import is_storable_id
from app.value import service as value
from app.value.policy import TierPolicy
from app.value.prospects import ProspectPlan

PREFIX = "/console"
SESSION_COOKIE = "cvm_console"
LOGIN_CSRF_COOKIE = "cvm_console_csrf"
MAX_FORM_BYTES = 16 * 1024
HERE = FilePath(__file__).parent
# Bounded by the column's range: a larger id cannot exist (and would overflow the driver).
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
CampaignId = Annotated[int, Path(ge=1, le=2**62)]
E = TypeVar("E", bound=StrEnum)
M = TypeVar("M", bound=BaseModel)
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
AUDIT_FILTERS = ("actor", "action", "since", "until")


@dataclass(frozen=True, slots=True)
class Renderer:
    """One Jinja2 environment per language, with the formats of each."""

    environments: dict[Language, Environment]
    catalogues: dict[Language, NullTranslations]
    currency: str

    def translate(self, language: Language, message: str) -> str:
        """One message in a language (for text drawn into charts)."""
        return self.catalogues[language].gettext(message)

    @classmethod
    def build(cls, currency: str) -> Renderer:
        """Load the templates and catalogues once."""
        environments = {}
        catalogues = {language: load_translations(language) for language in Language}
        for language in Language:
            env = Environment(
                loader=FileSystemLoader(HERE / "templates"),
                autoescape=select_autoescape(["html"]),
                extensions=["jinja2.ext.i18n"],
            )
            env.install_gettext_translations(  # type: ignore[attr-defined]
                catalogues[language], newstyle=True
            )
            environments[language] = env
        return cls(environments=environments, catalogues=catalogues, currency=currency)

    def page(
        self, name: str, *, language: Language, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A rendered template."""
        template = self.environments[language].get_template(name)
        html = template.render(
            fmt=Formats(language, self.currency),
            language=language,
            languages=list(Language),
            prefix=PREFIX,
            can_see=pages.can_see,
            **context,
        )
        return HTMLResponse(html, status_code=status)


@dataclass(frozen=True, slots=True)
class Console:
    """What the pages need, built by the app factory."""

    session_factory: Callable[[], Session]
    policy: LoginPolicy
    renderer: Renderer
    reader: pages.Reader
    secure_cookies: bool
    default_language: Language
    routing: RoutingPolicy
    tier_policy: TierPolicy
    prospect_plan: ProspectPlan
    contact_policy: ContactPolicy
    audit_stored: bool
    customer_sources: pages.CustomerSources
    # Charts of stored reports, drawn once per report and language (matplotlib takes tens of
    # milliseconds a chart): keyed by what identifies the stored report.
    charts: dict[tuple[str, ...], dict[str, str | None]] = field(default_factory=dict)

    def chart(
        self, key: tuple[str, ...], draw: Callable[[], dict[str, str | None]]
    ) -> dict[str, str | None]:
        """The charts stored under ``key``, drawn on first use (at most CHART_CACHE kept)."""
        found = self.charts.get(key)
        if found is None:
            if len(self.charts) >= CHART_CACHE:
                self.charts.clear()
            found = self.charts[key] = draw()
        return found


# Stored reports whose charts are kept drawn (per process).
CHART_CACHE = 64


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _db(request: Request) -> Iterator[Session]:
    """The page's session; a form post takes SQLite's write lock when its transaction begins."""
    with _console(request).session_factory() as session:
        yield session if request.method in ("GET", "HEAD") else writing(session)


def _recording_db(request: Request) -> Iterator[Session]:
    """The session of a page that stores what it computed (a campaign's report and chart,
    prospects' segments): declared a writer like a form post, since on SQLite a read that
    turns into a write fails at once when another writer committed in between."""
    with _console(request).session_factory() as session:
        yield writing(session)


async def _form(request: Request) -> dict[str, str]:
    """A url-encoded form body (at most 16 KiB; the last value of a repeated field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("the form is too large")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidInput("the form cannot be read") from error


def _user(request: Request) -> ConsoleUser:
    """The logged-in staff member, or a redirect to the login page."""
    console = _console(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    # A unit of work of its own, declared a writer: it reads the console session, then writes
    # its idle clock (the page's own reads stay in a transaction that takes no write lock).
    with console.session_factory() as session:
        user = current_user(writing(session), token=token, policy=console.policy, now=utc_now())
    if user is None:
        raise LoginRequired("log in first")
    request.scope["state"]["principal"] = user.principal
    return user


DbDep = Annotated[Session, Depends(_db)]
RecordingDbDep = Annotated[Session, Depends(_recording_db)]
FormDep = Annotated[dict[str, str], Depends(_form)]
UserDep = Annotated[ConsoleUser, Depends(_user)]


def _checked(user: ConsoleUser, form: dict[str, str]) -> None:
    """Refuse a post without this session's CSRF token."""
    given = form.get("csrf_token", "")
    if not given or not hmac.compare_digest(given.encode(), user.csrf_token.encode()):
        raise CsrfRefused("the form's security token is missing or wrong; reload the page")


def _language(console: Console, user: ConsoleUser | None, request: Request) -> Language:
    chosen = user.locale if user is not None else request.cookies.get("cvm_console_lang")
    try:
        return Language(chosen) if chosen else console.default_language
    except ValueError:
        return console.default_language


def _page_number(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise InvalidInput(f"{name}: a page number from 1")
    return int(raw)


def _choice(request: Request, name: str, enum: type[E]) -> E | None:
    """An optional filter from the query: one of an enum's values, or none ('' or absent)."""
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    try:
        return enum(raw)
    except ValueError as error:
        raise InvalidInput(
            f"{name}: one of " + ", ".join(e.value for e in enum),
            extra={"errors": [{"field": name, "message": "unknown", "type": "enum"}]},
        ) from error


def _body(model: type[M], data: dict[str, Any]) -> M:
    """A form's fields as the API's request model, refused (422, naming each field) as the
    API refuses them."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in error.errors()
        ]
        raise InvalidInput(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), extra={"errors": errors}
        ) from error


def _month(request: Request, name: str) -> str | None:
    """An optional month filter, YYYY-MM."""
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    if not MONTH.match(raw):
        raise InvalidInput(
            f"{name}: a month as YYYY-MM",
            extra={"errors": [{"field": name, "message": "YYYY-MM", "type": "pattern"}]},
        )
    return raw


def _day(request: Request, name: str) -> datetime | None:
    """An optional date filter, YYYY-MM-DD (midnight UTC)."""
    raw = request.query_params.get(name, "")
    if not raw:
        return None
    try:
        return datetime.combine(date.fromisoformat(raw), time.min, tzinfo=UTC)
    except ValueError as error:
        raise InvalidInput(
            f"{name}: a date as YYYY-MM-DD",
            extra={"errors": [{"field": name, "message": "YYYY-MM-DD", "type": "date"}]},
        ) from error


def _text(request: Request, name: str, max_length: int) -> str | None:
    """An optional free-text filter (an exact id or route), bounded."""
    raw = request.query_params.get(name, "").strip()
    if len(raw) > max_length or "\x00" in raw:
        raise InvalidInput(
            f"{name}: at most {max_length} characters",
            extra={"errors": [{"field": name, "message": "too long", "type": "length"}]},
        )
    return raw or None


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


def _back(form: dict[str, str]) -> str:
    """Where a form returns to: one of the console's own pages, never another site."""
    back = form.get("back", "")
    if back.startswith(PREFIX + "/") and "//" not in back and "\\" not in back:
        return back
    return PREFIX + "/queue"


log = structlog.get_logger("cvm")
router = APIRouter(include_in_schema=False)


def _cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        secure=_console(request).secure_cookies,
        httponly=True,
        samesite="strict",
    )


def _login_form(request: Request, *, failed: bool) -> Response:
    """The login form, with a fresh double-submit CSRF token."""
    console = _console(request)
    token = secrets.token_urlsafe(32)
    response = console.renderer.page(
        "login.html",
        language=_language(console, None, request),
        status=401 if failed else 200,
        csrf_token=token,
        failed=failed,
        user=None,
    )
    _cookie(request, response, LOGIN_CSRF_COOKIE, token)
    return response


@router.get("/")
def home() -> RedirectResponse:
    """The console starts at the user's queue."""
    return _see_other("/queue")


@router.get("/login")
def login_page(request: Request) -> Response:
    """The login form."""
    return _login_form(request, failed=False)


def _login_fields(form: dict[str, str]) -> tuple[str | None, str]:
    """The tenant and staff id typed; an id that cannot exist becomes '' (fails as usual)."""
    tenant = form.get("tenant", "").strip() or None
    staff_id = form.get("staff_id", "").strip()
    if tenant is not None and not is_storable_id(tenant, max_length=64):
        return None, ""
    if staff_id and not is_storable_id(staff_id, max_length=64):
        return tenant, ""
    return tenant, staff_id


@router.post("/login")
def login(request: Request, session: DbDep, form: FormDep) -> Response:
    """Check the password; a new session on success, one message for every failure."""
    given = form.get("csrf_token", "")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not given or not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise CsrfRefused("the form's security token is missing or wrong; reload the page")
    console = _console(request)
    tenant, staff_id = _login_fields(form)
    try:
        token = log_in(
            session,
            tenant=tenant,
            staff_id=staff_id,
            password=form.get("password", ""),
            policy=console.policy,
            now=utc_now(),
        )
    except LoginFailed:
        request.scope["state"]["error_code"] = LoginFailed.code
        return _login_form(request, failed=True)
    response = _see_other("/queue")
    max_age = int(console.policy.max_age.total_seconds())
    _cookie(request, response, SESSION_COOKIE, token, max_age=max_age)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
def logout(request: Request, session: DbDep, user: UserDep, form: FormDep) -> Response:
    """End the session."""
    _checked(user, form)
    log_out(session, token=request.cookies.get(SESSION_COOKIE, ""))
    response = _see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.post("/language")
def language(session: DbDep, user: UserDep, form: FormDep) -> Response:
    """Switch the user's language (remembered with their password)."""
    _checked(user, form)
    try:
        chosen = Language(form.get("language", ""))
    except ValueError as error:
        raise InvalidInput(
            "language: en or zh_CN",
            extra={"errors": [{"field": "language", "message": "unknown", "type": "enum"}]},
        ) from error
    set_locale(session, user=user, locale=chosen.value, now=utc_now())
    return RedirectResponse(_back(form), status_code=303)


@router.get("/queue")
def queue(request: Request, session: DbDep, user: UserDep) -> HTMLResponse:
    """Open alerts, mine, and the complaints I may see, with their deadline clocks."""
    console = _console(request)
    found = pages.my_queue(
        session,
        user=user,
        reader=console.reader,
        alert_page=_page_number(request, "alerts_page"),
        complaint_page=_page_number(request, "complaints_page"),
    )
    routed_status = _choice(request, "routed_status", AssignmentStatus)
    routed = pages.routed_alerts(
        session, user=user, status=routed_status, page=_page_number(request, "routed_page")
    )
    return console.renderer.page(
        "queue.html",
        language=_language(console, user, request),
        user=user,
        queue=found,
        routed=routed,
        assignment_statuses=list(AssignmentStatus),
        now=utc_now(),
        outcomes=list(Outcome),
        is_open=pages.is_open,
        back=str(request.url.path),
    )


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    request: Request, alert_id: AlertId, session: DbDep, user: UserDep, form: FormDep
) -> Response:
    """Take an open alert: I own it now."""
    _checked(user, form)
    alerts.acknowledge_alert(
        session,
        alert_id=alert_id,
        request=AcknowledgeRequest(note=form.get("note", "").strip()[:1000] or None),
        actor=user.principal.client_id,
        request_id=_rid(request),
        tenant=TenantScope(user.tenant),
    )
    note(request, alert=alert_id, action="acknowledge")
    return RedirectResponse(_back(form), status_code=303)


@router.post("/alerts/{alert_id}/resolve")
def resolve(
    request: Request, alert_id: AlertId, session: DbDep, user: UserDep, form: FormDep
) -> Response:
    """Close an alert I own with its outcome."""
    _checked(user, form)
    try:
        outcome = Outcome(form.get("outcome", ""))
    except ValueError as error:
        raise InvalidInput(
            "outcome: one of " + ", ".join(o.value for o in Outcome),
            extra={"errors": [{"field": "outcome", "message": "unknown", "type": "enum"}]},
        ) from error
    alerts.resolve_alert(
        session,
        alert_id=alert_id,
        request=ResolveRequest(outcome=outcome, note=form.get("note", "").strip()[:1000] or None),
        actor=user.principal.client_id,
        request_id=_rid(request),
        tenant=TenantScope(user.tenant),
    )
    note(request, alert=alert_id, action="resolve")
    return RedirectResponse(_back(form), status_code=303)


@router.post("/routed/{alert_id}/escalate")
def escalate(
    request: Request, alert_id: AlertId, session: DbDep, user: UserDep, form: FormDep
) -> Response:
    """Send an alert not yet accepted to the assignee's supervisor, saying why."""
    _checked(user, form)
    body = _body(EscalateRequest, {"reason": form.get("reason", "").strip()})
    routing.escalate(
        session,
        act=pages.acting_as(user, session, _rid(request)),
        alert_id=alert_id,
        reason=body.reason,
        policy=_console(request).routing,
    )
    note(request, alert=alert_id, action="escalate")
    return RedirectResponse(_back(form), status_code=303)


@router.post("/routed/{alert_id}/reassign")
def reassign(
    request: Request, alert_id: AlertId, session: DbDep, user: UserDep, form: FormDep
) -> Response:
    """Hand an alert to another staff member, saying why; they accept it again."""
    _checked(user, form)
    body = _body(
        ReassignRequest,
        {"to": form.get("to", "").strip(), "reason": form.get("reason", "").strip()},
    )
    routing.reassign(
        session,
        act=pages.acting_as(user, session, _rid(request)),
        alert_id=alert_id,
        to=body.to,
        reason=body.reason,
        policy=_console(request).routing,
    )
    note(request, alert=alert_id, action="reassign")
    return RedirectResponse(_back(form), status_code=303)


@router.get("/pyramid")
def pyramid(request: Request, session: DbDep, user: UserDep) -> HTMLResponse:
    """Customers and value per tier of record, and tier movements over time."""
    pages.require_page(user, "pyramid")
    console = _console(request)
    language = _language(console, user, request)
    since, until = _month(request, "since"), _month(request, "until")
    page = _page_number(request, "page")
    found = value.pyramid(
        session, policy=console.tier_policy, tenant=user.tenant, since=since, until=until
    )
    months = found.movements
    chart = None
    if months:
        label = partial(console.renderer.translate, language)
        chart = stacked_svg(
            [m.month for m in months],
            [
                Series(label(name), [getattr(m, field) for m in months], color)
                for name, field, color in MOVEMENT_CHART
            ],
            axis_label=label("customers moved"),
        )
    note(request, view="pyramid")
    return console.renderer.page(
        "pyramid.html",
        language=language,
        user=user,
        pyramid=found,
        months=months[pages.offset(page) : pages.offset(page) + pages.PAGE_SIZE],
        paging=pages.Paging.of(page, len(months)),
        chart=chart,
        since=since or "",
        until=until or "",
        back=str(request.url.path),
    )


@router.get("/prospects")
def prospects(request: Request, session: RecordingDbDep, user: UserDep) -> HTMLResponse:
    """Prospects by segment (value band x buying power), ranked, with each segment's plan."""
    pages.require_page(user, "prospects")
    console = _console(request)
    segment = request.query_params.get("segment", "") or None
    page = _page_number(request, "page")
    found = value.prospects(
        session,
        plan=console.prospect_plan,
        tenant=user.tenant,
        segment=segment,
        limit=pages.PAGE_SIZE,
        offset=pages.offset(page),
    )
    note(request, view="prospects", segment=segment, prospects=len(found.items))
    return console.renderer.page(
        "prospects.html",
        language=_language(console, user, request),
        user=user,
        found=found,
        paging=pages.Paging.of(page, found.total),
        back=str(request.url.path),
    )


def _health_charts(health: pages.ModelHealth, label: Callable[[str], str]) -> dict[str, str | None]:
    """The drift bars (features and the score) and the backtest's AUC over months."""
    drift = health.drift
    psi = None
    if drift is not None and (drift.features or drift.score):
        rows = [Stability(f.name, f.psi, f.band) for f in drift.features]
        if drift.score is not None:
            rows.append(Stability(label("score"), drift.score.psi, drift.score.band))
        psi = psi_svg(rows, axis_label="PSI")
    auc = None
    if health.backtest is not None and health.backtest.months:
        months = health.backtest.months
        estimates = [m.metrics.get("roc_auc") for m in months]
        auc = interval_svg(
            [m.month for m in months],
            [e.value if e else None for e in estimates],
            [e.ci_low if e else None for e in estimates],
            [e.ci_high if e else None for e in estimates],
            axis_label=label("AUC"),
        )
    return {"psi": psi, "auc": auc}


@router.get("/models")
def models(request: Request, session: DbDep, user: UserDep) -> HTMLResponse:
    """A champion's drift (PSI per feature and of the score), calibration, backtest AUC over
    time and fairness: what its owner watches."""
    pages.require_page(user, "models")
    console = _console(request)
    language = _language(console, user, request)
    task = _choice(request, "task", Task) or Task.CHURN
    health = pages.model_health(session, user=user, task=task)
    note(request, view="models", task=task.value, version=health.version)
    return console.renderer.page(
        "models.html",
        language=language,
        user=user,
        health=health,
        tasks=list(Task),
        charts=console.chart(
            (
                "models",
                task.value,
                health.version or "",
                health.drift_computed_at.isoformat() if health.drift_computed_at else "",
                health.backtest_computed_at.isoformat() if health.backtest_computed_at else "",
                language.value,
            ),
            lambda: _health_charts(health, partial(console.renderer.translate, language)),
        ),
        back=str(request.url.path),
    )


@router.get("/audit")
def audit_log(request: Request, session: DbDep, user: UserDep) -> HTMLResponse:
    """The tenant's stored audit lines, newest first, filtered by actor, action and date."""
    pages.require_page(user, "audit")
    console = _console(request)
    page = _page_number(request, "page")
    since, until = _day(request, "since"), _day(request, "until")
    where = AuditFilter(
        tenant=user.tenant,
        client=_text(request, "actor", 64),
        route=_text(request, "action", 200),
        since=since,
        until=until + timedelta(days=1) if until is not None else None,  # the whole day
    )
    found = audit_page(session, where=where, limit=pages.PAGE_SIZE, offset=pages.offset(page))
    note(request, view="audit")
    keep = {
        name: request.query_params[name] for name in AUDIT_FILTERS if request.query_params.get(name)
    }
    return console.renderer.page(
        "audit.html",
        language=_language(console, user, request),
        user=user,
        rows=found.rows,
        # Beyond the counted lines there is at least one more page.
        paging=pages.Paging.of(page, found.total + (0 if found.exact else 1)),
        total=found.total,
        exact=found.exact,
        stored=console.audit_stored,
        keep=keep,
        back=str(request.url.path),
    )


@router.get("/customers/{customer_id}")
def customer(request: Request, customer_id: str, session: DbDep, user: UserDep) -> Response:
    """A customer's trail and latest scores with their reasons (every view is audited)."""
    console = _console(request)
    if not is_storable_id(customer_id, max_length=128):
        raise NotFound("no such customer")
    # The audit line names the customer as stored (a pseudonym when a secret is set).
    note(request, customer=console.reader.stored_ids(user, customer_id)[0], view="customer")
    view = pages.customer_view(
        session,
        user=user,
        reader=console.reader,
        sources=console.customer_sources,
        customer_id=customer_id,
        page=_page_number(request, "page"),
        channel=_choice(request, "channel", ContactChannel) or ContactChannel.PHONE,
        now=utc_now(),
    )
    if view.actions is not None:
        note(request, channel=view.channel.value, offered=[a.action for a in view.actions.offered])
    charts = {}
    for score in view.latest_scores:
        reasons = pages.reasons_of(score)
        if reasons:
            bars = [Bar(label, value) for label, value in reasons]
            # The figure caption names the task, translated; the chart itself carries no title.
            charts[score.task] = reasons_svg(bars, title="")
    return console.renderer.page(
        "customer.html",
        language=_language(console, user, request),
        user=user,
        view=view,
        charts=charts,
        channels=list(ContactChannel),
        counted=COUNTED_MEASURES,
        back=str(request.url.path),
    )


@router.get("/campaigns")
def campaign_list(request: Request, session: DbDep, user: UserDep) -> HTMLResponse:
    """The tenant's campaigns, newest first, filtered by status."""
    pages.require_page(user, "campaigns")
    console = _console(request)
    status = _choice(request, "status", CampaignStatus)
    page = _page_number(request, "page")
    found = campaigns.list_campaigns(
        session, tenant=user.tenant, limit=pages.PAGE_SIZE, offset=pages.offset(page), status=status
    )
    note(request, view="campaigns", campaign_status=status.value if status else None)
    return console.renderer.page(
        "campaigns.html",
        language=_language(console, user, request),
        user=user,
        found=found,
        chosen=status,
        statuses=list(CampaignStatus),
        paging=pages.Paging.of(page, found.total),
        back=str(request.url.path),
    )


def _campaign_form(
    request: Request,
    user: ConsoleUser,
    *,
    values: dict[str, str],
    error: ServiceError | None = None,
) -> HTMLResponse:
    """The create form, filled with what was typed and the refusal next to its fields."""
    console = _console(request)
    errors = campaign_form.errors_by_field(error.extra.get("errors", [])) if error else {}
    if error is not None and not errors:
        errors = {"": [error.detail]}
    return console.renderer.page(
        "campaign_new.html",
        language=_language(console, user, request),
        status=error.status if error is not None else 200,
        user=user,
        values=values,
        errors=errors,
        channels=list(ContactChannel),
        purposes=list(ContactPurpose),
        stages=list(LifecycleStage),
        tiers=console.tier_policy.names,
        tasks=list(Task),
        today=utc_now().date().isoformat(),
        back=str(request.url.path),
    )


@router.get("/campaigns/new")
def campaign_new(request: Request, user: UserDep) -> HTMLResponse:
    """The form that drafts a campaign."""
    pages.require_page(user, "campaigns")
    note(request, view="campaign_new")
    return _campaign_form(request, user, values={})


@router.post("/campaigns")
def campaign_create(request: Request, session: DbDep, user: UserDep, form: FormDep) -> Response:
    """Draft a campaign; a refusal (422 naming the field, 409 for a taken code) comes back on
    the form."""
    pages.require_page(user, "campaigns")
    _checked(user, form)
    values = {k: v for k, v in form.items() if k != "csrf_token"}
    try:
        created = campaigns.create_campaign(
            session,
            tenant=user.tenant,
            request=_body(CampaignRequest, campaign_form.request_body(form)),
            tier_names=_console(request).tier_policy.names,
            created_by=user.principal.client_id,
            now=utc_now(),
        )
    except (InvalidInput, Conflict) as error:
        request.scope["state"]["error_code"] = error.code
        return _campaign_form(request, user, values=values, error=error)
    note(request, campaign=created.id, code=created.code, action="create")
    return _see_other(f"/campaigns/{created.id}")


def _campaign_page(
    request: Request,
    session: Session,
    user: ConsoleUser,
    campaign_id: int,
    *,
    refused: ServiceError | None = None,
) -> HTMLResponse:
    console = _console(request)
    language = _language(console, user, request)
    view = pages.campaign_view(
        session,
        user=user,
        campaign_id=campaign_id,
        policy=console.contact_policy,
        now=utc_now(),
        language=language.value,
        translate=partial(console.renderer.translate, language),
    )
    return console.renderer.page(
        "campaign.html",
        language=language,
        status=refused.status if refused is not None else 200,
        user=user,
        view=view,
        chart=view.chart,
        refused=refused,
        back=str(request.url.path),
    )


@router.get("/campaigns/{campaign_id}")
def campaign_page(
    request: Request, campaign_id: CampaignId, session: RecordingDbDep, user: UserDep
) -> HTMLResponse:
    """A campaign: its definition, the pre-launch power check, or once launched its report."""
    pages.require_page(user, "campaigns")
    note(request, view="campaign", campaign=campaign_id)
    return _campaign_page(request, session, user, campaign_id)


@router.post("/campaigns/{campaign_id}/launch")
def campaign_launch(
    request: Request, campaign_id: CampaignId, session: DbDep, user: UserDep, form: FormDep
) -> Response:
    """Write the campaign's contact list once; launched already: 409, said on its page."""
    pages.require_page(user, "campaigns")
    _checked(user, form)
    note(request, campaign=campaign_id, action="launch")
    try:
        result = campaigns.launch_campaign(
            session,
            tenant=user.tenant,
            campaign_id=campaign_id,
            policy=_console(request).contact_policy,
            now=utc_now(),
        )
    except Conflict as error:
        request.scope["state"]["error_code"] = error.code
        return _campaign_page(request, session, user, campaign_id, refused=error)
    note(request, treatment=result.check.treatment, control=result.check.control)
    return _see_other(f"/campaigns/{campaign_id}")


def _rid(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid is not None else None


async def _refused(request: Request, error: Exception) -> Response:
    """A refusal as a page (a missing session as a redirect to the login page)."""
    assert isinstance(error, ServiceError)
    if isinstance(error, LoginRequired):
        return _see_other("/login")
    request.scope["state"]["error_code"] = error.code
    console = _console(request)
    return console.renderer.page(
        "error.html",
        language=_language(console, None, request),
        status=error.status,
        error=error,
        user=None,
    )


async def _database_unavailable(request: Request, error: Exception) -> Response:
    """The database is down or busy: a 503 page saying to retry, as the API answers (a use
    case commits once, so nothing of the request was saved)."""
    assert isinstance(error, OperationalError)
    route = getattr(request.scope.get("route"), "path", "unmatched")
    log.warning("database_error", error_type=type(error.orig).__name__, route=route)
    return await _refused(
        request, DatabaseUnavailable("the database is unavailable or busy; retry later")
    )


async def _invalid_path(request: Request, error: Exception) -> Response:
    """A path parameter out of range (an alert id): that page does not exist."""
    return await _refused(request, NotFound("no such page"))


@cache
def console_routes() -> tuple[BaseRoute, ...]:
    """The pages' routes, built once per process and shared by every console it makes (as
    the API's routes: building one costs milliseconds, and it holds nothing of its app)."""
    pages_router = APIRouter()
    pages_router.include_router(router)
    return tuple(pages_router.routes)


def build_console(
    settings: Settings,
    *,
    session_factory: Callable[[], Session],
    pseudonymizer: Pseudonymizer | None,
    tier_policy: TierPolicy,
    prospect_plan: ProspectPlan,
    contact_policy: ContactPolicy,
    next_best_actions: NextBestActionService,
) -> FastAPI:
    """The console application (its pages are not part of the API's OpenAPI document)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.console = Console(
        session_factory=session_factory,
        policy=LoginPolicy(
            passwords=Passwords.from_settings(settings),
            max_failures=settings.console_max_failures,
            lockout=timedelta(seconds=settings.console_lockout_s),
            idle=timedelta(seconds=settings.console_session_idle_s),
            max_age=timedelta(seconds=settings.console_session_max_s),
        ),
        renderer=Renderer.build(settings.console_currency),
        reader=pages.Reader(pseudonymizer),
        secure_cookies=settings.console_cookie_secure,
        default_language=Language(settings.console_default_locale),
        routing=RoutingPolicy.from_settings(settings),
        tier_policy=tier_policy,
        prospect_plan=prospect_plan,
        contact_policy=contact_policy,
        audit_stored=settings.audit_store,
        customer_sources=pages.CustomerSources(
            index_weights=index_weights(settings),
            tier_policy=tier_policy,
            next_best_actions=next_best_actions,
        ),
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.router.routes.extend(console_routes())
    app.add_exception_handler(ServiceError, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_path)
    app.add_exception_handler(OperationalError, _database_unavailable)
    return app
