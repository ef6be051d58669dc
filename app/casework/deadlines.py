"""Complaint deadlines: jurisdiction profiles on a business-day calendar, pure (no I/O).

A period runs from the local day a complaint is received (that day not counted) to the end
of its last day in the profile's time zone: 23:59:59 local, then stored in UTC, so a due date
across a daylight-saving change is still the end of that local day. Business days skip
weekends and the calendar's holidays; a complaint received on one counts from the next
business day.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

END_OF_DAY = time(23, 59, 59)
# Saturday and Sunday (date.weekday()).
WEEKEND = frozenset({5, 6})


class Unit(StrEnum):
    """How a period counts its days."""

    CALENDAR_DAYS = "calendar_days"
    BUSINESS_DAYS = "business_days"


@dataclass(frozen=True, slots=True)
class Period:
    """A number of days of one kind."""

    days: int
    unit: Unit = Unit.CALENDAR_DAYS


def weeks(count: int) -> Period:
    """``count`` weeks, as calendar days."""
    return Period(7 * count)


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Weekends and holidays: the days that are not business days."""

    holidays: frozenset[date] = frozenset()

    def is_business_day(self, day: date) -> bool:
        """Whether ``day`` is neither a weekend day nor a holiday."""
        return day.weekday() not in WEEKEND and day not in self.holidays

    def add(self, day: date, period: Period) -> date:
        """The last day of ``period`` counted from the day after ``day``."""
        if period.unit is Unit.CALENDAR_DAYS:
            return day + timedelta(days=period.days)
        current, left = day, period.days
        while left > 0:
            current += timedelta(days=1)
            if self.is_business_day(current):
                left -= 1
        return current


@dataclass(frozen=True, slots=True)
class JurisdictionProfile:
    """A regulator's clock: the response due, a longer one for a complex case, extensions
    only with a head-office approver's event, a ceiling no deadline may pass, and dates that
    are only reported (milestones)."""

    name: str
    timezone: str
    calendar: str
    response: Period
    ceiling: Period
    complex: Period | None = None
    extension: Period | None = None
    max_extensions: int = 0
    milestones: tuple[tuple[str, Period], ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        """The profile's time zone."""
        return ZoneInfo(self.timezone)


PROFILES: dict[str, JurisdictionProfile] = {
    # China, 2020 complaint-handling measures for banks and insurers: a decision within 15
    # days, 30 for a complex case, one more 30 with head-office approval, 60 at most.
    "cn": JurisdictionProfile(
        name="cn",
        timezone="Asia/Shanghai",
        calendar="china",
        response=Period(15),
        complex=Period(30),
        extension=Period(30),
        max_extensions=1,
        ceiling=Period(60),
    ),
    # UK DISP 1.6: a final response within 8 weeks; a summary-resolution letter for a
    # complaint closed by the end of the 3rd business day after its receipt.
    "uk_disp": JurisdictionProfile(
        name="uk_disp",
        timezone="Europe/London",
        calendar="england-and-wales",
        response=weeks(8),
        ceiling=weeks(8),
        milestones=(("summary_resolution", Period(3, Unit.BUSINESS_DAYS)),),
    ),
    # UK payment services (DISP 1.6.2A): 15 business days, 35 in exceptional circumstances.
    "uk_payment_services": JurisdictionProfile(
        name="uk_payment_services",
        timezone="Europe/London",
        calendar="england-and-wales",
        response=Period(15, Unit.BUSINESS_DAYS),
        complex=Period(35, Unit.BUSINESS_DAYS),
        ceiling=Period(35, Unit.BUSINESS_DAYS),
    ),
    # CFPB referrals: a response within 15 days, the complaint closed within 60.
    "cfpb": JurisdictionProfile(
        name="cfpb",
        timezone="America/New_York",
        calendar="united-states-federal",
        response=Period(15),
        complex=Period(60),
        ceiling=Period(60),
        milestones=(("closure", Period(60)),),
    ),
}


def load_calendars(path: Path) -> dict[str, BusinessCalendar]:
    """Holiday calendars from a JSON file: ``{"name": ["2026-12-25", ...]}``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: BusinessCalendar(frozenset(date.fromisoformat(day) for day in days))
        for name, days in data.items()
    }


@dataclass(frozen=True, slots=True)
class DeadlineClock:
    """One profile on its calendar: every due date a complaint's clock needs."""

    profile: JurisdictionProfile
    calendar: BusinessCalendar

    def end_of(self, start: datetime, period: Period) -> datetime:
        """The end (local 23:59:59, in UTC) of ``period``'s last day from ``start``."""
        zone = self.profile.zone
        last = self.calendar.add(start.astimezone(zone).date(), period)
        return datetime.combine(last, END_OF_DAY, tzinfo=zone).astimezone(UTC)

    def due(self, start: datetime, *, complex_case: bool, extensions: int) -> datetime:
        """The response due from ``start``: the complex period when so classed, then each
        approved extension counted on from the previous due date."""
        profile = self.profile
        period = profile.complex if complex_case and profile.complex else profile.response
        zone = profile.zone
        last = self.calendar.add(start.astimezone(zone).date(), period)
        for _ in range(extensions):
            if profile.extension is not None:
                last = self.calendar.add(last, profile.extension)
        return datetime.combine(last, END_OF_DAY, tzinfo=zone).astimezone(UTC)

    def ceiling(self, start: datetime) -> datetime:
        """The latest a deadline may ever be for a clock started at ``start``."""
        return self.end_of(start, self.profile.ceiling)

    def milestones(self, start: datetime) -> dict[str, datetime]:
        """The profile's reported dates for a clock started at ``start``."""
        return {name: self.end_of(start, period) for name, period in self.profile.milestones}


def elapsed_share(*, now: datetime, started: datetime, due: datetime, paused_s: float) -> float:
    """The share of the running time used by ``now`` (time paused not counted)."""
    total = (due - started).total_seconds() - paused_s
    used = (now - started).total_seconds() - paused_s
    return used / total if total > 0 else 1.0
