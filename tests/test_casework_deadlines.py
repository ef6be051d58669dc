"""Complaint deadlines: every profile's due dates over weekends, public holidays and
daylight-saving changes, computed from the configured holiday calendars."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from app.casework.deadlines import (
    PROFILES,
    BusinessCalendar,
    DeadlineClock,
    Period,
    Unit,
    load_calendars,
)
from app.config import PROJECT_ROOT

CALENDARS = load_calendars(PROJECT_ROOT / "app" / "resources" / "holidays.json")


def clock(profile: str) -> DeadlineClock:
    chosen = PROFILES[profile]
    return DeadlineClock(chosen, CALENDARS[chosen.calendar])


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (profile, received, which date, expected end of its last day in UTC)
FIXTURE = [
    # Friday before the UK clocks go forward (Sun 29 March); Good Friday 3 April and Easter
    # Monday 6 April are bank holidays.
    ("uk_disp", "2026-03-27T10:00Z", "summary_resolution", "2026-04-01T22:59:59Z"),
    ("uk_disp", "2026-03-27T10:00Z", "due", "2026-05-22T22:59:59Z"),
    ("uk_payment_services", "2026-03-27T10:00Z", "due", "2026-04-21T22:59:59Z"),
    ("uk_payment_services", "2026-03-27T10:00Z", "complex", "2026-05-20T22:59:59Z"),
    # A Saturday in BST, the day before the clocks go back: counting starts on Monday and
    # the due date is in GMT.
    ("uk_disp", "2026-10-24T12:00Z", "summary_resolution", "2026-10-28T23:59:59Z"),
    ("uk_disp", "2026-10-24T12:00Z", "due", "2026-12-19T23:59:59Z"),
    # Christmas, the substitute Boxing Day (28 December) and New Year are skipped.
    ("uk_disp", "2026-12-23T09:00Z", "summary_resolution", "2026-12-30T23:59:59Z"),
    ("uk_payment_services", "2026-12-23T09:00Z", "due", "2027-01-18T23:59:59Z"),
    # 23:30 UTC on 30 June is already 1 July in London: that is the day of receipt.
    ("uk_disp", "2026-06-30T23:30Z", "summary_resolution", "2026-07-06T22:59:59Z"),
    # China: calendar days in Shanghai time (20:00 UTC is the next morning there).
    ("cn", "2026-03-27T20:00Z", "due", "2026-04-12T15:59:59Z"),
    ("cn", "2026-03-27T20:00Z", "complex", "2026-04-27T15:59:59Z"),
    ("cn", "2026-03-27T20:00Z", "extended", "2026-05-27T15:59:59Z"),
    ("cn", "2026-03-27T20:00Z", "ceiling", "2026-05-27T15:59:59Z"),
    # CFPB: the US clocks go forward on 8 March, inside the 15 days.
    ("cfpb", "2026-03-06T15:00Z", "due", "2026-03-22T03:59:59Z"),
    ("cfpb", "2026-03-06T15:00Z", "closure", "2026-05-06T03:59:59Z"),
]


@pytest.mark.parametrize(("profile", "received", "which", "expected"), FIXTURE)
def test_every_due_date_of_the_fixture(
    profile: str, received: str, which: str, expected: str
) -> None:
    chosen = clock(profile)
    start = at(received)
    computed = {
        "due": chosen.due(start, complex_case=False, extensions=0),
        "complex": chosen.due(start, complex_case=True, extensions=0),
        "extended": chosen.due(start, complex_case=True, extensions=1),
        "ceiling": chosen.ceiling(start),
        **chosen.milestones(start),
    }[which]
    assert computed == at(expected)


def test_business_days_skip_weekends_and_holidays_only() -> None:
    calendar = BusinessCalendar(frozenset({date(2026, 12, 25), date(2026, 12, 28)}))
    assert calendar.add(date(2026, 12, 23), Period(3, Unit.BUSINESS_DAYS)) == date(2026, 12, 30)
    assert BusinessCalendar().add(date(2026, 12, 23), Period(3, Unit.BUSINESS_DAYS)) == date(
        2026, 12, 28
    )
    assert calendar.add(date(2026, 12, 23), Period(3)) == date(2026, 12, 26)
    assert not calendar.is_business_day(date(2026, 12, 26))  # a Saturday


def test_a_profile_naming_a_missing_calendar_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    from app.casework.service import Casework
    from app.config import Settings

    empty = Path(str(tmp_path)) / "holidays.json"
    empty.write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="england-and-wales"):
        Casework.from_settings(Settings(casework_holidays_file=empty))
