"""What several gateway processes share through Redis besides counters: admin overrides and
inherited actions, per account.

Why a change stream beside the hashes: every process must see the others' writes within a
tick (a second), and a campaign may leave tens of thousands of inherited accounts. Reading the
whole hashes every tick would parse all of them, every second, on the event loop that serves
requests. So each write goes to a hash (the whole state, for a process that starts or falls
behind) and to a stream (the changes, in order), in one transaction; a process reads the
hashes once, then only the stream entries it has not seen. The stream is trimmed to about
``keep`` entries; a process whose next unread entry was trimmed away reads the hashes again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from redis.exceptions import RedisError

log = logging.getLogger("distillguard.gateway")

#: what a Redis that is down, restarting or hung raises (redis-py's own, a socket's, a timeout)
REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

#: kind of state -> the Redis hash holding all of it (account, or control id for controls -> JSON)
HASHES = {"overrides": "dg:overrides", "inherited": "dg:inherited", "controls": "dg:controls"}
STREAM = "dg:changes"


class Change(NamedTuple):
    kind: str  # a key of HASHES
    account: str
    value: bytes  # the JSON the writer stored


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


class Outage:
    """Whether Redis answers, as this process last found. While it does not, the gateway serves
    from its own state (counters of this process, the overrides and inherited actions it has);
    the log says once that Redis went down and once that it is back, not once per request, and
    Redis is asked again only every ``retry_seconds``, so that a dead one costs requests nothing."""

    def __init__(self, retry_seconds: float = 1.0) -> None:
        self.retry_seconds = retry_seconds
        self.down: str | None = None  # why, while it is down
        self._retry_at = 0.0

    def worth_trying(self) -> bool:
        return self.down is None or time.monotonic() >= self._retry_at

    def failed(self, what: str, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_seconds
        if self.down is None:
            log.error("redis: %s failed (%s: %s); serving from this process's own state until Redis answers again",
                      what, type(exc).__name__, str(exc)[:200])
        self.down = f"{what}: {type(exc).__name__}"

    def answered(self) -> None:
        if self.down is not None:
            log.warning("redis: answering again; shared counters and state resumed")
            self.down = None


class SharedState:
    """Writes and reads the shared hashes and their change stream (``client``: redis.asyncio)."""

    def __init__(self, client: Any, keep: int = 100_000, batch: int = 10_000) -> None:
        self.client = client
        self.keep = keep
        self.batch = batch
        self.last_id: str | None = None  # the last stream entry applied; None: read the hashes
        self.full_reads = 0

    async def publish(self, kind: str, account: str, value: bytes) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(HASHES[kind], account, value)
            pipe.xadd(STREAM, {"kind": kind, "account": account, "value": value}, maxlen=self.keep,
                      approximate=True)
            await pipe.execute()

    async def changes(self) -> list[Change]:
        """Every change since the last call, oldest first; the whole state on the first call, and
        again when entries this process had not read were trimmed away. Applying a change twice
        must be harmless (a full read may repeat some)."""
        if self.last_id is not None and await self._fell_behind():
            self.last_id = None
        if self.last_id is None:
            return await self._full()
        out: list[Change] = []
        while True:
            reply = await self.client.xread({STREAM: self.last_id}, count=self.batch)
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                f = {_text(k): v for k, v in fields.items()}
                out.append(Change(_text(f["kind"]), _text(f["account"]), f["value"]))
                self.last_id = _text(entry_id)
            if len(entries) < self.batch:
                return out

    async def _fell_behind(self) -> bool:
        """Whether entries this process had not read may have been trimmed away: some were
        trimmed, and the oldest one left is newer than the last one read. (It can be wrong
        only the safe way: a needless full read when the trim stopped right after ours.)"""
        from redis.exceptions import ResponseError

        try:
            info = await self.client.xinfo_stream(STREAM)
        except ResponseError:  # no stream: never written, or deleted since (FLUSHDB)
            return self.last_id != "0-0"
        if int(info.get("entries-added", 0)) <= int(info.get("length", 0)):
            return False  # nothing ever trimmed
        first = info.get("recorded-first-entry-id") or (info.get("first-entry") or (None,))[0]
        return first is not None and _stream_id(first) > _stream_id(self.last_id)

    async def _full(self) -> list[Change]:
        self.full_reads += 1
        # the stream's position first: whatever is written after it is read again from the
        # stream next time, even if the hashes below already hold it
        last = await self.client.xrevrange(STREAM, count=1)
        self.last_id = _text(last[0][0]) if last else "0-0"
        out: list[Change] = []
        for kind, key in HASHES.items():
            for account, value in (await self.client.hgetall(key)).items():
                out.append(Change(kind, _text(account), value))
        return out
