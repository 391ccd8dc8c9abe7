"""How many transfers to run at once on each link, in the spirit of FTS3's optimizer (pure decisions).

Every ``window`` seconds each busy link is judged on what finished in that window: if the success rate fell
below ``min_success`` the link backs off (halved); if throughput grew by more than ``gain`` since the last step
up, it gets one more slot; if it shrank, the last step is undone. Limits stay within [``low``, ``high``]. Each
link keeps its last ``TRACE`` decisions, which ``/metrics`` shows (how a link's limit converged).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

TRACE = 24  # decisions kept per link


@dataclass(frozen=True)
class Settings:
    start: int = 4
    low: int = 1
    high: int = 32
    window: float = 5.0  # seconds between decisions
    min_success: float = 0.9
    gain: float = 0.05  # relative throughput increase that earns one more slot


@dataclass
class Link:
    limit: int
    done: int = 0
    failed: int = 0
    bytes: int = 0
    last_throughput: float | None = None  # bytes/s in the window before the last change
    # (when, limit, throughput in bytes/s) of its last TRACE decisions
    history: deque[tuple[float, int, float]] = field(default_factory=lambda: deque(maxlen=TRACE))

    def record(self, ok: bool, size: int) -> None:
        if ok:
            self.done += 1
            self.bytes += size
        else:
            self.failed += 1


def decide(link: Link, elapsed: float, s: Settings, now: float = 0.0) -> int:
    """The link's next limit from its window's results (the window ended at ``now``); resets the window."""
    total = link.done + link.failed
    if total == 0:
        return link.limit
    success = link.done / total
    throughput = link.bytes / max(elapsed, 1e-6)
    limit = link.limit
    if success < s.min_success:
        limit = max(s.low, limit // 2)
    elif link.last_throughput is None or throughput > link.last_throughput * (1 + s.gain):
        limit = min(s.high, limit + 1)
    elif throughput < link.last_throughput * (1 - s.gain):
        limit = max(s.low, limit - 1)
    link.history.append((now, link.limit, throughput))
    link.last_throughput = throughput
    link.limit = limit
    link.done = link.failed = link.bytes = 0
    return limit
