"""Online sliding-window counters: per account, per /24 (or /48) subnet, per card.

A scan runs every few hours; a burst (a fresh account firing thousands of requests, a subnet
of new accounts all at once) must be met within seconds. These counters are the immediate
triggers, with the rules (scope, window, ceiling, action) in the policy's ``gateway.limits``.

Two backends with one interface, ``hit(scope, key, window_seconds, now) -> count``:
``MemoryCounters`` for one process, and ``RedisCounters`` for several gateway processes
sharing counts. Both count in buckets of a twelfth of the window, so a window slides in
steps of ~8% of its length: exact enough for a ceiling, and a fixed small number of Redis
keys per check.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from distillguard.gateway.shared import REDIS_DOWN, Outage

BUCKETS = 12


class Counters(Protocol):
    async def hit(self, scope: str, key: str, window_seconds: float, now: float) -> int:
        """Count one request at ``now`` (epoch seconds) and return the window's count, this one included."""


class MemoryCounters:
    """Per process: a deque of (bucket, count) per key, kept in step with a running total."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, float], tuple[deque, list[int]]] = {}
        self._hits = 0

    async def hit(self, scope: str, key: str, window_seconds: float, now: float) -> int:
        return self.hit_now(scope, key, window_seconds, now)

    def hit_now(self, scope: str, key: str, window_seconds: float, now: float) -> int:
        width = window_seconds / BUCKETS
        bucket = int(now // width)
        entry = self._windows.get((scope, key, window_seconds))
        if entry is None:
            entry = self._windows[(scope, key, window_seconds)] = (deque(), [0])
        buckets, total = entry
        oldest = bucket - BUCKETS + 1
        while buckets and buckets[0][0] < oldest:
            total[0] -= buckets.popleft()[1]
        if buckets and buckets[-1][0] == bucket:
            buckets[-1][1] += 1
        else:
            buckets.append([bucket, 1])
        total[0] += 1
        self._hits += 1
        if self._hits % 100_000 == 0:
            self._sweep(now)
        return total[0]

    def _sweep(self, now: float) -> None:
        """Forget keys whose window has emptied (an idle account costs nothing)."""
        for k in [k for k, (b, _) in self._windows.items() if not b or b[-1][0] < int(now // (k[2] / BUCKETS)) - BUCKETS]:
            del self._windows[k]

    def __len__(self) -> int:
        return len(self._windows)


class RedisCounters:
    """Shared by every gateway process on one Redis: one INCR and one MGET per check, in one
    round trip; bucket keys expire by themselves.

    While Redis is down (``outage``) the limits count this process's requests only: each
    request is also counted in a MemoryCounters, which answers in Redis's place, so that an
    outage weakens the limits for its duration but never fails a request."""

    def __init__(self, client, prefix: str = "dg:win", outage: Outage | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.outage = outage or Outage()
        self.local = MemoryCounters()

    async def hit(self, scope: str, key: str, window_seconds: float, now: float) -> int:
        local = self.local.hit_now(scope, key, window_seconds, now)
        if not self.outage.worth_trying():
            return local
        try:
            count = await self._shared_hit(scope, key, window_seconds, now)
        except REDIS_DOWN as exc:
            self.outage.failed("shared counters", exc)
            return local
        self.outage.answered()
        return count

    async def _shared_hit(self, scope: str, key: str, window_seconds: float, now: float) -> int:
        width = window_seconds / BUCKETS
        bucket = int(now // width)
        base = f"{self.prefix}:{scope}:{window_seconds:g}:{key}:"
        names = [base + str(b) for b in range(bucket - BUCKETS + 1, bucket + 1)]
        pipe = self.client.pipeline(transaction=False)
        pipe.incr(names[-1])
        pipe.expire(names[-1], int(window_seconds + width) + 1)
        pipe.mget(names[:-1])
        current, _, earlier = await pipe.execute()
        return int(current) + sum(int(v) for v in earlier if v is not None)
