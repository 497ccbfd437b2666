"""The gateway's online limits, per request: our sliding-window counters (gateway/limits.py)
against the ``limits`` library's async strategies, memory storage and (with ``--redis``) a Redis.

Each request checks the three rules of the default policy (account, subnet, card), keys spread
over 1,000 accounts, ceilings never reached (as in benchmarks/gateway.py). ``limits`` counts
with a ceiling (``hit`` -> allowed or not); ours returns the window's count. Prints the median
microseconds per request of three runs each. Needs ``pip install limits``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from distillguard.gateway.limits import MemoryCounters, RedisCounters

SCOPES = ("account", "subnet", "payment")
KEYS = [f"acct-{i:05d}" for i in range(1000)]


async def _ours(make, requests: int) -> float:
    counters = make()
    t0 = time.perf_counter()
    for i in range(requests):
        now = time.time()
        for scope in SCOPES:
            await counters.hit(scope, KEYS[i % len(KEYS)], 60, now)
    return (time.perf_counter() - t0) / requests * 1e6


async def _library(strategy, make_storage, requests: int) -> float:
    limiter = strategy(make_storage())
    item = RateLimitItemPerSecond(100_000_000, 60)
    t0 = time.perf_counter()
    for i in range(requests):
        for scope in SCOPES:
            await limiter.hit(item, scope, KEYS[i % len(KEYS)])
    return (time.perf_counter() - t0) / requests * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=60_000)
    p.add_argument("--redis", help="a Redis URL to compare the shared counters too, e.g. redis://127.0.0.1:6379/0")
    args = p.parse_args()
    cases = {
        "ours, memory": lambda: _ours(MemoryCounters, args.requests),
        "limits moving-window, memory": lambda: _library(MovingWindowRateLimiter, MemoryStorage, args.requests),
        "limits sliding-window-counter, memory":
            lambda: _library(SlidingWindowCounterRateLimiter, MemoryStorage, args.requests),
    }
    if args.redis:
        import redis.asyncio as redis_asyncio

        url, n = args.redis, args.requests // 10
        cases |= {
            "ours, redis": lambda: _ours(lambda: RedisCounters(redis_asyncio.from_url(url)), n),
            "limits moving-window, redis": lambda: _library(
                MovingWindowRateLimiter, lambda: RedisStorage("async+" + url, implementation="redispy"), n),
            "limits sliding-window-counter, redis": lambda: _library(
                SlidingWindowCounterRateLimiter, lambda: RedisStorage("async+" + url, implementation="redispy"), n),
        }
    for name, case in cases.items():
        runs = [asyncio.run(case()) for _ in range(3)]
        print(f"{name}: {statistics.median(runs):.1f} us per request (3 checks); runs "
              f"{', '.join(f'{r:.1f}' for r in runs)}")


if __name__ == "__main__":
    main()
