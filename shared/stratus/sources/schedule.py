"""rate(...) and cron(...) schedules of sources (EventBridge syntax), evaluated in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}
_DOW = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], start=1
    )
}
# (low, high) of minute, hour, day of month, month, day of week (1 = Sunday), year.
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199))


def _field(text: str, index: int) -> set[int] | None:
    """The values a cron field allows; None for '?' or '*' (anything)."""
    low, high = _RANGES[index]
    if text in ("*", "?"):
        return None
    names = _MONTHS if index == 3 else _DOW if index == 4 else {}
    allowed: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, _, step_text = part.partition("/")
            step = int(step_text)
            if step < 1:
                raise ValueError(f"cron step must be positive: {text!r}")
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            start, end = int(names.get(a.upper(), a)), int(names.get(b.upper(), b))
        else:
            start = int(names.get(part.upper(), part))
            end = high if step > 1 else start
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"cron field {text!r} outside {low}-{high}")
        allowed.update(range(start, end + 1, step))
    return allowed


def parse_cron(expression: str) -> list[set[int] | None]:
    """The six fields of cron(min hour day-of-month month day-of-week year); ValueError if malformed."""
    inner = expression.strip()[len("cron(") : -1].split()
    if len(inner) != 6:
        raise ValueError("cron(...) takes six fields: minutes hours day-of-month month day-of-week year")
    try:
        return [_field(text, i) for i, text in enumerate(inner)]
    except ValueError as error:
        raise ValueError(f"cron: {error}") from error


def next_run(expression: str, after: float) -> float:
    """The first time (epoch s) strictly after `after` that the schedule fires."""
    match = _RATE.match(expression.strip())
    if match:
        return after + int(match.group(1)) * _UNIT_S[match.group(2).rstrip("s")]
    fields = parse_cron(expression)
    moment = datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    limit = moment + timedelta(days=366 * 5)

    def ok(allowed: set[int] | None, value: int) -> bool:
        return allowed is None or value in allowed

    while moment < limit:
        dow = (moment.isoweekday() % 7) + 1  # Sunday = 1
        if not (ok(fields[5], moment.year) and ok(fields[3], moment.month)):
            moment = (moment.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            continue
        if not (ok(fields[2], moment.day) and ok(fields[4], dow)):
            moment = moment.replace(hour=0, minute=0) + timedelta(days=1)
            continue
        if not ok(fields[1], moment.hour):
            moment = moment.replace(minute=0) + timedelta(hours=1)
            continue
        if ok(fields[0], moment.minute):
            return moment.timestamp()
        moment += timedelta(minutes=1)
    raise ValueError(f"{expression} never fires within five years")
