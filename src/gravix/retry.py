"""How Gravix's own senders wait before sending again.

Shared by ``gravix loadgen``, ``gravix import-logs`` / ``tail-logs`` and
:mod:`gravix.client`; standard library only, so the client stays light to
import.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime


def retry_after_seconds(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    ``default`` when the header is missing or unreadable; never less than
    0.05 s (a date in the past) nor more than ``cap``.
    """
    if not value:
        return min(default, cap)
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = default
    if math.isnan(seconds):
        seconds = default
    return min(max(seconds, 0.05), cap)
