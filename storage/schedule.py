"""Quiet hours: when the service may not speak first. Pure arithmetic on zoneinfo, no database.

Between ``SURVEYBOT_QUIET_HOURS_START`` and ``_END`` (local times in
``SURVEYBOT_QUIET_HOURS_TIMEZONE``; 21:00-07:00 Asia/Ho_Chi_Minh by default) no invitation and no
reminder goes out: one created inside them is queued due at their end (``outbox.enqueue``'s
``not_before``). Replies inside a conversation the citizen is having are not held. A window
whose start is after its end runs over midnight; empty or equal times switch it off.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from settings import Settings


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: dt.time
    end: dt.time
    zone: ZoneInfo

    def until(self, at: dt.datetime) -> dt.datetime | None:
        """The (UTC) end of the quiet hours ``at`` falls in, or None when ``at`` is outside."""
        local = at.astimezone(self.zone)
        now = local.time()
        day = local.date()
        if self.start < self.end:  # inside one day, e.g. 12:00-13:30
            if not self.start <= now < self.end:
                return None
        elif now >= self.start:  # over midnight, in the evening: ends tomorrow
            day += dt.timedelta(days=1)
        elif now >= self.end:  # over midnight, in the day between end and start
            return None
        return dt.datetime.combine(day, self.end, tzinfo=self.zone).astimezone(dt.UTC)


def parse_time(value: str) -> dt.time:
    """``HH:MM`` on a 24-hour clock (ValueError otherwise)."""
    hours, sep, minutes = value.strip().partition(":")
    if not sep or len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(f"{value!r} is not HH:MM")
    return dt.time(int(hours), int(minutes))


@functools.lru_cache(maxsize=16)
def quiet_hours(start: str, end: str, zone: str) -> QuietHours | None:
    """The window the settings describe; None when it is off (a time empty, or both equal)."""
    if not start.strip() or not end.strip():
        return None
    first, last = parse_time(start), parse_time(end)
    if first == last:
        return None
    return QuietHours(first, last, ZoneInfo(zone))


def quiet_until(settings: Settings, at: dt.datetime) -> dt.datetime | None:
    """When a message the service sends on its own initiative, created at ``at``, may go."""
    window = quiet_hours(
        settings.quiet_hours_start, settings.quiet_hours_end, settings.quiet_hours_timezone
    )
    return window.until(at) if window is not None else None
