"""Entity controls and step-up verification: what an operator reaches for between allow and block.

An entity control switches a model off (404 ``model_not_found``, and left out of ``/v1/models``)
or refuses an organisation, country, autonomous system or e-mail domain (403, the generic
wording of a block), for everyone or only for the organisations and countries of its scope,
until it is removed or reaches its ``expires_at``. Controls come from the admin API
(``POST /admin/controls``) or the policy file (``controls:``, read-only through the API). Each
change through the API is one event, kept as overrides are (overrides.py): an fsynced line of
``controls.jsonl`` in the gateway's state directory before the API answers, shared through
Redis with ``--state``, replayed at start; the newest event per control wins.

Countries come from a MaxMind database the operator supplies (``--geoip``); without one a
country control is accepted and listed, but inert, and ``GET /admin/controls`` says so.

Step-up verification (action ``verify``) refuses an account with 403 ``verification_required``
and a verification reference until an operator lifts it (``{"action": "allow"}``). An operator
sets it as any override; the policy's ``verify`` section sends a new account there instead of
a throttle when a calibrated test is among its verdict's reasons (:func:`step_up`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from distillguard.detect.evidence import BICM, BINOMIAL_WINDOW, INDEPENDENT_TIES, ONE_OWNER, SHARED_WORDING
from distillguard.detect.policy import EntityControl, Policy
from distillguard.errors import UserError
from distillguard.gateway.enforce import Decision, Refusal, campaign_key
from distillguard.gateway.headers import ROUTE_ID
from distillguard.gateway.overrides import OverrideFile, supersedes

log = logging.getLogger("distillguard.gateway")

FILE_NAME = "controls.jsonl"
#: the fields POST /admin/controls takes: an EntityControl's, and who acts
BODY_FIELDS = frozenset(EntityControl.model_fields) | {"actor"}
#: the beginnings of a verdict's reasons that the calibrated tests wrote (detect/verdicts.py):
#: "<test> (<null> null): ..."
_TEST_REASONS = (f"block ({BICM.name} null):", f"cohort ({BINOMIAL_WINDOW.name} null):",
                 f"wording ({SHARED_WORDING.name} null):", f"owner ({ONE_OWNER.name} null):",
                 f"associate ({INDEPENDENT_TIES.name} null):")
_INERT = ("inert: no GeoIP database (gateway --geoip), so country controls and country scopes are accepted and "
          "listed but match no request")


class BodyRefused(ValueError):
    """An admin request body that cannot be taken as it is: one line saying which field and why."""


def parse_body(body: Any, now: datetime) -> tuple[EntityControl, str]:
    """The control a ``POST /admin/controls`` body asks for, and its actor; BodyRefused with one
    line (field and reason) for anything else. The client controls the body entirely, so any
    JSON value must end here or in BodyRefused."""
    if not isinstance(body, dict):
        raise BodyRefused('Body must be a JSON object: {"kind": ..., "value": ..., "action": ..., "reason": ...}.')
    unknown = sorted(str(k) for k in set(body) - BODY_FIELDS)
    if unknown:
        raise BodyRefused(f"Unknown field(s) {', '.join(map(repr, unknown))[:200]}; allowed: "
                          f"{', '.join(sorted(BODY_FIELDS))}.")
    try:
        control = EntityControl.model_validate({k: v for k, v in body.items() if k != "actor"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BodyRefused(f"{where}: {first['msg'].removeprefix('Value error, ')}"[:300]) from None
    actor = body.get("actor") or "admin"
    reason = control.reason
    if not reason.strip():
        raise BodyRefused("reason: required: say why, for whoever reviews this later.")
    if not isinstance(actor, str) or len(actor) > 200 or len(reason) > 4000:
        raise BodyRefused("actor must be a string of at most 200 characters, reason at most 4000.")
    if control.expires_at is not None and control.expires_at <= now:
        raise BodyRefused("expires_at: not in the future")
    control.reason = reason.strip()
    return control, actor


@dataclass(frozen=True)
class Control:
    """One control in force (or once in force): what it is, who set it, when, and from where."""

    control_id: str
    spec: EntityControl
    actor: str
    at: datetime
    source: str = "api"  # api | policy

    def expired(self, now: datetime) -> bool:
        return self.spec.expires_at is not None and now >= self.spec.expires_at

    def covers(self, organization: str | None, country: str | None) -> bool:
        """Whether a request of this organisation and country is in the control's scope."""
        scope = self.spec.scope
        if not scope.organizations and not scope.countries:
            return True
        return organization in scope.organizations or country in scope.countries

    def same_target(self, spec: EntityControl) -> bool:
        s = self.spec
        return (s.kind, s.value, s.action, sorted(s.scope.organizations), sorted(s.scope.countries)) == (
            spec.kind, spec.value, spec.action, sorted(spec.scope.organizations), sorted(spec.scope.countries))

    def view(self, geoip: bool) -> dict[str, Any]:
        """The admin API's view (JSON-ready)."""
        spec = self.spec.model_dump(mode="json")
        inert = not geoip and (self.spec.kind == "country" or bool(self.spec.scope.countries))
        return {"control_id": self.control_id, **spec, "actor": self.actor, "at": self.at.isoformat(),
                "source": self.source, "read_only": self.source == "policy", "inert": inert}

    def to_json(self) -> dict[str, Any]:
        return {"control_id": self.control_id, "spec": self.spec.model_dump(mode="json"), "actor": self.actor,
                "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, d: Any) -> Control:
        return cls(str(d["control_id"]), EntityControl.model_validate(d["spec"]), str(d["actor"]),
                   _aware(d["at"]))


def _aware(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    if t.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return t


SET, REMOVE = "set", "remove"


@dataclass(frozen=True)
class Event:
    """One change of one control: an audit row (``previous``: what it replaced or removed)."""

    event_id: str
    control_id: str
    op: str  # SET | REMOVE
    reason: str
    actor: str
    at: datetime
    remote: str | None
    control: Control | None  # what holds after a SET
    previous: Control | None

    def to_json(self) -> bytes:
        return orjson.dumps({"event_id": self.event_id, "control_id": self.control_id, "op": self.op,
                             "reason": self.reason, "actor": self.actor, "at": self.at.isoformat(),
                             "remote": self.remote,
                             "control": self.control.to_json() if self.control else None,
                             "previous": self.previous.to_json() if self.previous else None})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Raises ValueError on anything that is not an event this module wrote."""
        try:
            r = orjson.loads(raw)
            if r["op"] not in (SET, REMOVE):
                raise ValueError(f"unknown op {r['op']!r}")
            control = Control.from_json(r["control"]) if r.get("control") else None
            if (control is None) != (r["op"] == REMOVE):
                raise ValueError("a set names its control, a remove none")
            return cls(str(r["event_id"]), str(r["control_id"]), r["op"], str(r["reason"]), str(r["actor"]),
                       _aware(r["at"]), r.get("remote"), control,
                       Control.from_json(r["previous"]) if r.get("previous") else None)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ValueError(f"not a control event ({str(exc).splitlines()[0][:200]})") from None

    def audit_row(self, geoip: bool) -> dict[str, Any]:
        return {"event_id": self.event_id, "control_id": self.control_id, "op": self.op, "reason": self.reason,
                "actor": self.actor, "remote": self.remote, "at": self.at.isoformat(),
                "control": self.control.view(geoip) if self.control else None,
                "previous": self.previous.view(geoip) if self.previous else None}


class Countries:
    """Client address -> ISO country code, from a MaxMind database (GeoIP2/GeoLite2 Country or City).

    The file is the operator's, its bytes unchecked: it is read into memory with the pure-Python
    reader, whose errors are Python exceptions; a file that does not open is a UserError (one line
    at start), a lookup that fails on damaged data is no country (said once in the log)."""

    _LOOKUPS = (("Country", "country"), ("City", "city"), ("Enterprise", "enterprise"))

    def __init__(self, path: str | Path) -> None:
        try:
            import geoip2.database
            import geoip2.errors
            import maxminddb
        except ImportError:
            raise UserError("--geoip needs the geoip2 package: pip install 'distillguard[geoip]'") from None

        self.path = Path(path)
        try:
            self._reader = geoip2.database.Reader(str(self.path), mode=maxminddb.MODE_MEMORY)
            kind = self._reader.metadata().database_type
        except Exception as exc:  # noqa: BLE001 - any failure to read the operator's file is one line
            raise UserError(f"{self.path}: --geoip: not a MaxMind database ({type(exc).__name__}: "
                            f"{str(exc)[:200]})") from None
        method = next((m for name, m in self._LOOKUPS if name in kind), None)
        if method is None:
            raise UserError(f"{self.path}: --geoip: a {kind[:100]} database has no countries (use a GeoIP2 or "
                            "GeoLite2 Country or City database)")
        self._lookup = getattr(self._reader, method)
        self._not_found = geoip2.errors.AddressNotFoundError
        self._damaged = False

    def country(self, ip: str | None) -> str | None:
        if not ip:
            return None
        try:
            code = self._lookup(ip).country.iso_code
        except Exception as exc:  # noqa: BLE001 - an unknown address, or damaged data: no country
            if not isinstance(exc, (ValueError, self._not_found)) and not self._damaged:
                self._damaged = True
                log.error("geoip: %s cannot be read at %s (%s): such addresses have no country", self.path, ip,
                          type(exc).__name__)
            return None
        return code if isinstance(code, str) else None


class Book:
    """The controls in force: the API's (newest event per control wins) and the policy's."""

    def __init__(self, policy_controls: list[EntityControl] = ()) -> None:
        self.latest: dict[str, Event] = {}
        self.history: dict[str, Event] = {}
        self.api: dict[str, Control] = {}
        self.policy: dict[str, Control] = {}
        self.index: dict[tuple[str, str], list[Control]] = {}
        self.countries_needed = False
        self.set_policy(policy_controls)

    def set_policy(self, specs: list[EntityControl], at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        self.policy = {}
        for spec in specs:
            cid = "policy-" + hashlib.blake2b(spec.model_dump_json().encode(), digest_size=6).hexdigest()
            self.policy[cid] = Control(cid, spec, "policy file", at, "policy")
        self._reindex()

    def apply(self, e: Event) -> bool:
        self.history.setdefault(e.event_id, e)
        if not supersedes(self.latest.get(e.control_id), e):
            return False
        self.latest[e.control_id] = e
        if e.control is None:
            self.api.pop(e.control_id, None)
        else:
            self.api[e.control_id] = e.control
        self._reindex()
        return True

    def replay(self, events: list[Event]) -> None:
        for e in sorted(events, key=lambda e: (e.at, e.event_id)):
            self.apply(e)

    def _reindex(self) -> None:
        index: dict[tuple[str, str], list[Control]] = {}
        for c in [*self.policy.values(), *self.api.values()]:
            index.setdefault((c.spec.kind, c.spec.value), []).append(c)
        self.index = index
        self.countries_needed = any(c.spec.kind == "country" or c.spec.scope.countries
                                    for cs in index.values() for c in cs)

    def in_force(self, now: datetime) -> list[Control]:
        return sorted((c for c in [*self.policy.values(), *self.api.values()] if not c.expired(now)),
                      key=lambda c: (c.source, c.at, c.control_id))

    def get(self, control_id: str) -> Control | None:
        return self.api.get(control_id) or self.policy.get(control_id)

    def find(self, spec: EntityControl) -> Control | None:
        """The API's control in force with the same kind, value, action and scope, if any."""
        return next((c for c in self.api.values() if c.same_target(spec)), None)

    def matching(self, kind: str, value: str | None, organization: str | None, country: str | None,
                 now: datetime) -> Control | None:
        for c in self.index.get((kind, value), ()) if value is not None else ():
            if not c.expired(now) and c.covers(organization, country):
                return c
        return None


def _domains(domain: str | None) -> list[str]:
    """An e-mail domain and its parents (a.b.example.com -> a.b.example.com, b.example.com,
    example.com, com): a control of a domain covers its subdomains."""
    if not domain:
        return []
    parts = domain.strip().lower().removeprefix("@").split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


class Controls:
    """The gateway's entity controls: the book, its durable file, the optional GeoIP database."""

    def __init__(self, state_dir: str | Path, policy: Policy, geoip: str | None = None) -> None:
        self.file = OverrideFile(state_dir, FILE_NAME, Event.from_json)
        self.countries = Countries(geoip) if geoip else None
        self.book = Book(policy.controls)
        self.book.replay(self.file.events())

    @property
    def geoip(self) -> bool:
        return self.countries is not None

    def country(self, ip: str | None) -> str | None:
        """The client's country, looked up only while some control needs one."""
        return self.countries.country(ip) if self.countries is not None and self.book.countries_needed else None

    def refusal(self, organization: str | None, email_domain: str | None, ip: str | None, asn: int | None,
                model: str | None, now: datetime, reference: str | None = None) -> Refusal | None:
        """The answer to a request a control refuses; None to go on. A block's wording is a blocked
        account's (enforce.refusal): the control and its reason are never sent."""
        book = self.book
        if not book.index:
            return None
        country = self.country(ip)
        keys = [("organization", organization), ("asn", None if asn is None else str(asn)), ("country", country),
                *(("email_domain", d) for d in _domains(email_domain))]
        for kind, value in keys:
            if book.matching(kind, value, organization, country, now) is not None:
                quote = f" and quote reference {reference}" if reference else ""
                return Refusal(403, "permission_error", "account_blocked", "This account cannot use the API. If you "
                               f"believe this is a mistake, contact support{quote}.", {"x-should-retry": "false"},
                               "block")
        if model is not None and book.matching("model", model, organization, country, now) is not None:
            return model_not_found(model)
        return None

    def disabled_models(self, organization: str | None, ip: str | None, now: datetime) -> set[str]:
        """The models disabled for a client of this organisation at this address."""
        country = self.country(ip)
        return {c.spec.value for c in self.book.in_force(now)
                if c.spec.kind == "model" and c.covers(organization, country)}

    def listing(self, body: bytes, organization: str | None, ip: str | None, now: datetime) -> bytes:
        """An upstream's ``/v1/models`` answer without the models disabled for this client."""
        if not self.book.index:
            return body
        hidden = self.disabled_models(organization, ip, now)
        if not hidden:
            return body
        try:
            listed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(listed, dict) or not isinstance(listed.get("data"), list):
            return body
        listed["data"] = [m for m in listed["data"] if not (isinstance(m, dict) and m.get("id") in hidden)]
        return orjson.dumps(listed)

    def change(self, control_id: str | None, control: Control | None, reason: str, actor: str,
               remote: str | None, now: datetime) -> Event:
        """A new event: set ``control`` (replacing what held under its id) or remove ``control_id``."""
        cid = control.control_id if control is not None else control_id
        return Event(uuid.uuid4().hex, cid, SET if control is not None else REMOVE, reason, actor, now, remote,
                     control, self.book.api.get(cid))

    def new_control(self, spec: EntityControl, actor: str, now: datetime) -> Control:
        """A control for ``spec``: under the id of the API's control of the same target, if one is in
        force (it is replaced), else a new id."""
        same = self.book.find(spec)
        return Control(same.control_id if same else "ctl-" + uuid.uuid4().hex[:16], spec, actor, now)

    def view(self, now: datetime) -> dict[str, Any]:
        rows = [c.view(self.geoip) for c in self.book.in_force(now)]
        geoip = ({"loaded": True, "file": str(self.countries.path)} if self.countries is not None
                 else {"loaded": False, "detail": _INERT})
        return {"count": len(rows), "controls": rows, "geoip": geoip}

    def audit(self) -> list[dict[str, Any]]:
        return [e.audit_row(self.geoip) for e in sorted(self.book.history.values(), key=lambda e: (e.at, e.event_id))]


def model_not_found(model: str) -> Refusal:
    """OpenAI's answer for a model that does not exist or that the key may not use."""
    return Refusal(404, "invalid_request_error", "model_not_found",
                   f"The model `{model[:200]}` does not exist or you do not have access to it.", {}, "disable")


# --- step-up verification -------------------------------------------------------------------

def statistical(reasons: tuple[str, ...] | list[str]) -> bool:
    """Whether a calibrated test (block, cohort, wording or a card's owner) is among a verdict's reasons."""
    return any(r.startswith(_TEST_REASONS) for r in reasons)


def step_up(decision: Decision, account_created_at: datetime | None, now: datetime, policy: Policy) -> Decision:
    """``decision``, or ``verify`` in its place where the policy's ``verify`` rule sends a new
    account with a scan verdict resting on a calibrated test there (StepUp.applies). Overrides,
    inherited actions and the online limits are left as they are."""
    rule = policy.verify
    if not rule.enabled or decision.source != "verdict":
        return decision
    age = None if account_created_at is None else (now - account_created_at).total_seconds() / 86400
    if not rule.applies(decision.action, statistical(decision.reasons), age):
        return decision
    return replace(decision, action="verify", retry_after=None, reasons=(
        *decision.reasons, (f"new account ({age:.1f} days old, <= verify.new_account_days "
                            f"{rule.new_account_days:g}): {decision.action} raised to verify by the policy")))


def verification_reference(account_id: str, decision: Decision, overrides: Any, scan_as_of: str | None) -> str:
    """The reference a client asked to verify quotes to support: the same for every request of
    the account until the override (or the scan) that asks for verification changes, and
    derived from nothing it could learn from (a digest of the account and when that was set)."""
    held = overrides.get(account_id)
    if held is None and decision.campaign_id:
        held = overrides.get(campaign_key(decision.campaign_id))
    stamp = held.at.isoformat() if held is not None else f"scan {scan_as_of}"
    return "vr-" + hashlib.blake2b(f"{account_id}\x00{stamp}".encode(), digest_size=6).hexdigest()


# --- admin routes -----------------------------------------------------------------------------

class AdminRoutes:
    """``/admin/controls``: list, set, remove, audit. ``gateway`` is server.Gateway (its admin
    token check, error shape, Redis and the controls)."""

    def __init__(self, gateway: Any) -> None:
        self.gw = gateway

    def add(self, app: Any) -> None:
        app.router.add_get("/admin/controls", self.listed)
        app.router.add_post("/admin/controls", self.set)
        app.router.add_get("/admin/controls/audit", self.audit)
        app.router.add_delete(f"/admin/controls/{{control_id:{ROUTE_ID}}}", self.remove)

    def _bad(self, message: str, code: str = "invalid_body") -> Any:
        return self.gw._error(400, message, "invalid_request_error", code)

    async def listed(self, request: Any) -> Any:
        from aiohttp import web

        if (denied := self.gw._admin_denied(request)) is not None:
            return denied
        return web.json_response(self.gw.controls.view(datetime.now(UTC)), dumps=_dumps)

    async def audit(self, request: Any) -> Any:
        """Every change of a control this gateway knows of, oldest first."""
        from aiohttp import web

        if (denied := self.gw._admin_denied(request)) is not None:
            return denied
        rows = self.gw.controls.audit()
        return web.json_response({"count": len(rows), "events": rows}, dumps=_dumps)

    async def set(self, request: Any) -> Any:
        if (denied := self.gw._admin_denied(request)) is not None:
            return denied
        now = datetime.now(UTC)
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError:
            return self._bad("Body must be a JSON object: {\"kind\": ..., \"value\": ..., \"action\": ..., "
                             "\"reason\": ...}.")
        try:
            spec, actor = parse_body(body, now)
        except BodyRefused as exc:
            return self._bad(str(exc))
        controls = self.gw.controls
        control = controls.new_control(spec, actor, now)
        return await self._record(request, controls.change(None, control, spec.reason, actor, request.remote, now))

    async def remove(self, request: Any) -> Any:
        if (denied := self.gw._admin_denied(request)) is not None:
            return denied
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return self._bad('Body must be a JSON object: {"reason": ..., "actor": ...} (or ?reason=...).')
        body = {k: v for k, v in request.query.items() if k in ("reason", "actor")} | body
        if unknown := sorted(set(body) - {"reason", "actor"}):
            return self._bad(f"Unknown field(s) {', '.join(map(repr, unknown))[:200]}; allowed: actor, reason.")
        reason, actor = body.get("reason"), body.get("actor") or "admin"
        if not isinstance(reason, str) or not reason.strip():
            return self._bad("reason: required, a string: say why, for whoever reviews this later.",
                             "missing_reason")
        if not isinstance(actor, str) or len(actor) > 200 or len(reason) > 4000:
            return self._bad("actor must be a string of at most 200 characters, reason at most 4000.")
        cid = request.match_info["control_id"]
        controls, now = self.gw.controls, datetime.now(UTC)
        if cid in controls.book.policy:
            return self.gw._error(409, "This control is declared in the policy file: remove it there and reload "
                                  "the policy (POST /admin/policy/reload).", "invalid_request_error", "read_only")
        held = controls.book.api.get(cid)
        if held is None or held.expired(now):
            return self.gw._error(404, f"No control {cid[:100]!r} in force.", "invalid_request_error", "no_control")
        return await self._record(request, controls.change(cid, None, reason.strip(), actor, request.remote, now))

    async def _record(self, request: Any, event: Event) -> Any:
        """Durable first, then applied and shared (as overrides are): the answer comes only once a
        crash can no longer lose the change."""
        import asyncio

        from aiohttp import web

        controls = self.gw.controls
        try:
            await asyncio.to_thread(controls.file.append, event)
        except OSError as exc:
            log.error("control %s NOT recorded: cannot write %s (%s)", event.control_id, controls.file.path,
                      exc.strerror)
            return self.gw._error(503, "The control could not be recorded durably and was not applied; retry.",
                                  "server_error", "control_not_recorded")
        controls.book.apply(event)
        c = event.control or event.previous
        log.warning("control: %s %s %s=%s by %s from %s: %s", event.control_id,
                    "set" if event.control else "removed", c.spec.kind if c else "?", c.spec.value if c else "?",
                    event.actor, event.remote, event.reason)
        if self.gw.shared is not None:
            try:
                await self.gw.shared.publish("controls", event.control_id, event.to_json())
            except Exception as exc:  # noqa: BLE001 - Redis down: said to the operator, not hidden
                log.error("control %s not shared with the other gateways: %s", event.control_id, exc)
                return self.gw._error(503, "The control is recorded and in force on this gateway, but could not be "
                                      "shared with the other gateways (Redis unavailable); repeat the request.",
                                      "server_error", "control_not_shared")
        return web.json_response({"control": event.control.view(controls.geoip) if event.control else None,
                                  "event": event.audit_row(controls.geoip)}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
