"""Where the console's actions go: the gateway's durable override store, never the scan's tables.

Two ways, one interface. :class:`LocalOverrides` appends events to ``<state_dir>/overrides.jsonl``
(the file every gateway on the store reads at start and a running one picks up within a
reload tick). :class:`GatewayOverrides` goes through a gateway's admin API (``--gateway-admin``),
which records the event in that gateway's file, applies it at once and shares it through
Redis with the other gateways. Either way each action is one audit event with the analyst as
its actor and what held before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from distillguard.gateway import overrides as overrides_mod
from distillguard.gateway.enforce import CAMPAIGN_KEY_PREFIX, campaign_key
from distillguard.store.verdicts import SEVERITY

#: what an analyst may do to an account or a campaign: a verdict action, or lift the override
ACTIONS = ("block", "verify", "throttle", "fallback", "allow", overrides_mod.LIFT)
KINDS = ("account", "campaign")


class ActionRefused(Exception):
    """The action cannot be taken as asked (said to the analyst, nothing recorded)."""


def key_of(kind: str, target: str) -> str:
    if kind not in KINDS:
        raise ActionRefused(f"unknown target kind {kind!r}")
    if kind == "account" and target.startswith(CAMPAIGN_KEY_PREFIX):
        raise ActionRefused(f"account ids starting with {CAMPAIGN_KEY_PREFIX!r} name campaigns")
    return campaign_key(target) if kind == "campaign" else target


def target_of(key: str) -> tuple[str, str]:
    """(kind, id) of an override key."""
    if key.startswith(CAMPAIGN_KEY_PREFIX):
        return "campaign", key[len(CAMPAIGN_KEY_PREFIX):]
    return "account", key


def _check(action: str, reason: str, expires_at: datetime | None) -> None:
    if action not in ACTIONS:
        raise ActionRefused(f"action must be one of {', '.join(ACTIONS)}")
    if not reason.strip():
        raise ActionRefused("a reason is required: say why, for whoever reviews this later")
    if len(reason) > 4000:
        raise ActionRefused("the reason is longer than 4000 characters")
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise ActionRefused("the expiry must be in the future")


def _held(h: overrides_mod.Held) -> dict[str, Any]:
    return {"action": h.action, "reason": h.reason, "actor": h.actor, "at": h.at.isoformat(),
            "expires_at": h.expires_at.isoformat() if h.expires_at else None}


class LocalOverrides:
    """The override file in the gateway's state directory."""

    def __init__(self, state_dir: str) -> None:
        self.file = overrides_mod.OverrideFile(state_dir)

    def _book(self) -> overrides_mod.Book:
        book = overrides_mod.Book()
        book.replay(self.file.events())
        return book

    async def audit(self) -> list[dict[str, Any]]:
        return [e.audit_row() for e in sorted(self.file.events(), key=lambda e: (e.at, e.event_id))]

    async def in_force(self) -> dict[str, dict[str, Any]]:
        now = datetime.now(UTC)
        return {k: _held(h) for k, h in self._book().in_force(now).items()}

    async def change(self, key: str, action: str, reason: str, actor: str, remote: str | None,
                     expires_at: datetime | None) -> dict[str, Any]:
        _check(action, reason, expires_at)
        now = datetime.now(UTC)
        previous = self._book().in_force(now).get(key)
        if action == overrides_mod.LIFT and previous is None:
            raise ActionRefused(f"no override in force for {key}")
        event = overrides_mod.Event.new(key, action, reason.strip(), actor, remote,
                                        None if action == overrides_mod.LIFT else expires_at, previous, now)
        self.file.append(event)
        return event.audit_row()


class GatewayOverrides:
    """A running gateway's admin API (its admin token as the bearer)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, \
                    s.request(method, self.url + path, json=body, headers=headers) as r:
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ActionRefused(f"the gateway's admin API at {self.url} did not answer ({type(exc).__name__})") from None
        if r.status != 200:
            message = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
            raise ActionRefused(f"the gateway refused it ({r.status}): {message or 'no reason given'}")
        return data

    async def audit(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/admin/overrides/audit"))["events"]

    async def in_force(self) -> dict[str, dict[str, Any]]:
        rows = (await self._call("GET", "/admin/overrides"))["overrides"]
        return {r["account_id"]: {k: v for k, v in r.items() if k != "account_id"} for r in rows}

    async def change(self, key: str, action: str, reason: str, actor: str, remote: str | None,
                     expires_at: datetime | None) -> dict[str, Any]:
        _check(action, reason, expires_at)
        kind, target = target_of(key)
        base = f"/admin/campaigns/{quote(target, safe='')}" if kind == "campaign" else \
            f"/admin/accounts/{quote(target, safe='')}"
        if action == overrides_mod.LIFT:
            path = base + "/override" if kind == "campaign" else f"/admin/overrides/{quote(target, safe='')}"
            data = await self._call("DELETE", path, {"reason": reason.strip(), "actor": actor})
        else:
            body: dict[str, Any] = {"action": action, "reason": reason.strip(), "actor": actor}
            if expires_at is not None:
                body["expires_at"] = expires_at.isoformat()
            data = await self._call("POST", base + "/action", body)
        return data["event"]


assert all(a in SEVERITY for a in ACTIONS if a != overrides_mod.LIFT)
