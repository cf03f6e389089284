"""Cron schedules for retraining policies: the five standard fields, in UTC.

``minute hour day-of-month month day-of-week``, each ``*``, a number, a range ``a-b``, a list
``a,b`` or a step ``*/n`` / ``a-b/n``; day-of-week 0-6 from Sunday (7 is Sunday too). As in cron,
when both day fields are restricted a day matching either is due. A schedule missed while the
platform was down is due once (:func:`due_tick` gives the latest tick missed, never one per tick).
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from aiplatform.errors import InvalidArgument

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
SEARCH_DAYS = 366 * 5
"""How far ahead (and back) a tick is looked for: a schedule like ``0 0 30 2 *`` never comes."""


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the allowed values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches_day(self, year: int, month: int, day: int) -> bool:
        if month not in self.months:
            return False
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # Python: Monday 0; cron: Sunday 0
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return weekday in self.weekdays
        if self.any_weekday:
            return day in self.days
        return day in self.days or weekday in self.weekdays

    def next_after(self, at: float) -> float:
        """The first tick strictly after ``at`` (unix seconds)."""
        start = int(at) // 60 * 60 + 60
        day_start = start - start % 86400
        for offset in range(SEARCH_DAYS):
            day = day_start + offset * 86400
            t = time.gmtime(day)
            if not self.matches_day(t.tm_year, t.tm_mon, t.tm_mday):
                continue
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    tick = day + hour * 3600 + minute * 60
                    if tick >= start:
                        return float(tick)
        raise InvalidArgument(f"Cron schedule {self.expression!r} has no tick in the next {SEARCH_DAYS} days")

    def last_at_or_before(self, at: float) -> float | None:
        """The latest tick at or before ``at``; None when there is none in the search window."""
        end = int(at) // 60 * 60
        day_start = end - end % 86400
        for offset in range(SEARCH_DAYS):
            day = day_start - offset * 86400
            t = time.gmtime(day)
            if not self.matches_day(t.tm_year, t.tm_mon, t.tm_mday):
                continue
            for hour in sorted(self.hours, reverse=True):
                for minute in sorted(self.minutes, reverse=True):
                    tick = day + hour * 3600 + minute * 60
                    if tick <= end:
                        return float(tick)
        return None


def parse_cron(expression: str) -> Cron:
    """A cron expression, or :class:`InvalidArgument` naming the field that does not parse."""
    parts = expression.split()
    if len(parts) != len(FIELDS):
        raise InvalidArgument(
            f"Cron schedule {expression!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}"
        )
    values = [_field(part, name, low, high, expression) for part, (name, low, high) in zip(parts, FIELDS)]
    weekdays = frozenset(0 if d == 7 else d for d in values[4])
    return Cron(
        expression=" ".join(parts),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )


def _field(text: str, name: str, low: int, high: int, expression: str) -> frozenset[int]:
    found: set[int] = set()
    for item in text.split(","):
        spec, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if spec == "*":
                start, end = low, high
            elif "-" in spec:
                a, b = spec.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(spec)
                if step_text:
                    end = high
        except ValueError:
            raise InvalidArgument(f"Cron schedule {expression!r}: the {name} field {text!r} does not parse") from None
        if step < 1 or not low <= start <= end <= high:
            raise InvalidArgument(
                f"Cron schedule {expression!r}: the {name} field {text!r} is out of range {low}-{high}"
            )
        found.update(range(start, end + 1, step))
    return frozenset(found)


def due_tick(cron: Cron, last_tick: float | None, now: float) -> float | None:
    """The tick a schedule owes at ``now``: the latest tick after ``last_tick`` (the one last run
    or skipped) up to ``now``, however many were missed; None when none is due. A schedule never
    run before owes nothing: its first tick is the next one."""
    if last_tick is None:
        return None
    latest = cron.last_at_or_before(now)
    if latest is None or latest <= last_tick:
        return None
    return latest
