"""Retry delays shared by the inbox and the outbox.

Exponential with jitter: half of each step is fixed, half random, so the retries of many rows
that failed together (the database or a channel was down) spread out instead of all coming back
in the same second and failing together again.
"""

from __future__ import annotations

import datetime as dt
import random


def backoff(attempts: int, *, base: float = 2.0, cap: float = 600.0) -> dt.timedelta:
    """The delay before attempt ``attempts + 1``: ``base * 2**(attempts-1)``, at most ``cap``."""
    step = min(cap, base * 2 ** max(attempts - 1, 0))
    return dt.timedelta(seconds=step / 2 + random.uniform(0, step / 2))
