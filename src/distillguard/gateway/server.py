"""The gateway: an OpenAI-compatible reverse proxy that logs every exchange and enforces verdicts.

One aiohttp application. Per proxied request: identify the account from its API key, decide
(enforce.py), then refuse (429 throttle, 403 block, both in the OpenAI error shape), or send
it upstream (with the fallback model for ``fallback``), pass the answer back (server-sent
events chunk by chunk, as they arrive), and append the exchange to the log (journal.py)
before the answer's last byte goes out.

Why aiohttp rather than an ASGI framework: the floors are about the gateway's own added
latency (p50 <= 1 ms), and one library for both the server and the pooled upstream client,
with streaming in both directions, keeps the request path short.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hmac
import ipaddress
import logging
import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from distillguard.errors import UserError
from distillguard.gateway import controls as controls_mod
from distillguard.gateway import headers as wire
from distillguard.gateway import keys as keytable
from distillguard.gateway import live as live_mod
from distillguard.gateway import overrides as overrides_mod
from distillguard.gateway import resellers as resellers_mod
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.enforce import (ALLOW, CAMPAIGN_KEY_PREFIX, Decision, Enforcer, Override, Request,
                                          ScanOutputs, campaign_key, refusal)
from distillguard.gateway.journal import STORE_LOCK, Journal, JournalError, Loader
from distillguard.gateway.limits import MemoryCounters, RedisCounters
from distillguard.gateway.metrics import CONTENT_TYPE, Metrics
from distillguard.gateway.protocol import (ROUTES, Client, ModelRewriter, StreamUsage, error_body, exchange_row,
                                           new_exchange_id, request_facts, stream_error, usage)
from distillguard.gateway.shared import REDIS_DOWN, Outage, SharedState
from distillguard.detect.policy import Policy, load_policy
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY

log = logging.getLogger("distillguard.gateway")

_LOG_UNAVAILABLE = "The gateway cannot log requests right now and refuses them (fail closed)."
#: while the log cannot be written (failing closed), how often a request asks whether it can again
_LOG_RETRY_SECONDS = 0.5

GATEWAY = web.AppKey("gateway", object)


class _OneLinePerMalformedRequest(logging.Filter):
    """aiohttp answers a request its HTTP parser refuses (a control character in a header, a
    line too long) with a 400 before any handler runs, and logs it at ERROR with a traceback:
    any client could fill the gateway's log with them. Such a record becomes one WARNING line
    (the peer and the parser's reason); every other error keeps its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            reason = (str(exc.message).strip().splitlines() or ["malformed request"])[0].rstrip(":")
            record.msg, record.args = "%d to %s: malformed HTTP request (%s)", (exc.code, peer, reason[:200])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: the logger the gateway's HTTP server (aiohttp's request handler) logs its errors to
_HTTP_LOG = logging.getLogger("distillguard.gateway.http")
_HTTP_LOG.addFilter(_OneLinePerMalformedRequest())


def _now() -> datetime:
    return datetime.now(UTC)


class Gateway:
    """The running gateway's state; ``app()`` builds the aiohttp application around it."""

    def __init__(self, config: GatewayConfig, policy: Policy | None = None, redis_client: Any = None) -> None:
        self.config = config
        self.policy = policy or load_policy(config.policy)
        self.metrics = Metrics()
        self.keys = keytable.KeyTable()
        self.redis = redis_client
        self.shared = SharedState(redis_client) if redis_client is not None else None
        self.redis_outage = Outage()
        counters = (RedisCounters(redis_client, outage=self.redis_outage) if redis_client is not None
                    else MemoryCounters())
        self.scan = ScanOutputs(config.verdicts)
        self.enforcer = Enforcer(self.policy, self.scan, counters)
        self.resellers = resellers_mod.Resellers()
        self.resellers.refresh(config.db, self.scan.as_of, time.monotonic())
        self.journal = Journal(config.journal_dir, config.fsync_seconds)
        self.override_file = overrides_mod.OverrideFile(config.overrides_dir)
        self.book = overrides_mod.Book()
        self.enforcer.overrides = self.book.active
        self.controls = controls_mod.Controls(config.overrides_dir, self.policy, config.geoip)
        self.loader = Loader(self.journal, config.db, config.load_every_seconds, config.segment_seconds,
                             sync=overrides_mod.CopyToStore(config.overrides_dir))
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
        self.session: aiohttp.ClientSession | None = None
        self.log_broken: str | None = None
        self._log_retry_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self.load_keys()
        self._load_state()
        self.live = live_mod.LiveRouter(self.policy, config.live_reference, config.fallback_model, self.metrics)
        self.live.refresh(config.db, self.scan)
        if not len(self.keys):
            log.warning("no API keys (--keys, or the store's api_keys table: distillguard keys add): every request "
                        "will be refused with 401")
        m = self.metrics
        m.counter("distillguard_log_rows_appended_total", "Exchanges appended to the log by this process.",
                  lambda: self.journal.appended)
        m.counter("distillguard_log_rows_loaded_total", "Exchanges loaded into the store by this process.",
                  lambda: self.loader.loaded_rows)
        m.counter("distillguard_log_failures_total", "Exchanges that could not be logged.",
                  lambda: self.journal.failures)
        m.gauge("distillguard_verdicts_loaded", "Non-allow verdicts of the latest scan.",
                lambda: len(self.scan.verdicts))
        m.gauge("distillguard_overrides_in_force", "Operators' overrides in force now.",
                lambda: len(self.book.in_force(_now())))

    # --- state ------------------------------------------------------------------------------

    def load_keys(self) -> None:
        records = keytable.load_file(self.config.keys) if self.config.keys else []
        try:
            # a bare read-only connection: the store's view over its segments is not needed here
            with STORE_LOCK, duckdb.connect(self.config.db, read_only=True) as con:
                con.execute("SET TimeZone='UTC'")
                records += keytable.load_db(con)
        except Exception as exc:  # noqa: BLE001 - a busy store: keep the keys already loaded
            if len(self.keys):
                return
            if Path(self.config.db).exists():
                log.warning("keys: cannot read the store's key table now (%s)", exc)
        self.keys = keytable.KeyTable(records)

    def _load_state(self) -> None:
        """Overrides (the gateway's own file, and the store, which holds those of every gateway
        on it) and first-seen times of known accounts."""
        overrides_mod.migrate_legacy(self.config.journal_dir, self.override_file)
        events = []
        if Path(self.config.db).exists():
            try:
                with STORE_LOCK, Store(self.config.db, read_only=True) as store:
                    events = overrides_mod.from_store(store.con)
                    first = store.con.execute(
                        'SELECT account_id, min("timestamp") FROM exchanges GROUP BY account_id').fetchall()
                    self.enforcer.first_seen.update(dict(first))
            except Exception as exc:  # noqa: BLE001 - the gateway's own file has its overrides
                log.warning("start-up: cannot read overrides and first-seen times from the store (%s)", exc)
        self.book.replay(events + self.override_file.events())
        self._override_stamp = self.override_file.stamp()

    def _pick_up_override_file(self) -> None:
        """Events another process appended to the override file (the analyst console): applied
        within a reload tick. Applying an event twice changes nothing (Book.apply)."""
        stamp = self.override_file.stamp()
        if stamp == self._override_stamp:
            return
        self._override_stamp = stamp
        for event in self.override_file.events():
            if event.event_id not in self.book.history and self.book.apply(event):
                log.warning("override: %s %s by %s (from %s)", event.account_id, event.action, event.actor,
                            self.override_file.path)

    async def _background(self) -> None:
        """Hot reload of verdicts and keys, and shared state from Redis, every tick."""
        tick = 0
        while True:
            await asyncio.sleep(self.config.reload_every_seconds)
            tick += 1
            try:
                self.enforcer.refresh()
                await asyncio.to_thread(self.resellers.refresh, self.config.db, self.scan.as_of, time.monotonic())
                await asyncio.to_thread(self._pick_up_override_file)
                await asyncio.to_thread(self.live.refresh, self.config.db, self.scan)
                if tick % 30 == 0:
                    await asyncio.to_thread(self.load_keys)
                if self.redis is not None and self.redis_outage.worth_trying():
                    try:
                        await self._pull_shared()
                    except REDIS_DOWN as exc:
                        self.redis_outage.failed("reading shared overrides and inherited actions", exc)
                    else:
                        self.redis_outage.answered()
            except Exception:  # noqa: BLE001 - never let the reloader die
                log.exception("background reload failed")

    async def _pull_shared(self) -> None:
        for change in await self.shared.changes():
            if change.kind == "controls":
                try:
                    self.controls.book.apply(controls_mod.Event.from_json(change.value))
                except ValueError as exc:
                    log.warning("controls: a shared change of %s ignored: %s", change.account, exc)
                continue
            if change.kind == "overrides":
                try:
                    self.book.apply(overrides_mod.Event.from_json(change.value))
                except ValueError as exc:
                    log.warning("overrides: a shared change for %s ignored: %s", change.account, exc)
                continue
            r = orjson.loads(change.value)
            if change.account not in self.enforcer.inherited and change.account not in self.scan.judged:
                self.enforcer.inherited[change.account] = Decision(r["action"], "inherited", tuple(r["reasons"]),
                                                                   r["campaign_id"])

    # --- lifecycle --------------------------------------------------------------------------

    async def _startup(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        # every client's requests go up through this one session: a cookie jar would keep a cookie
        # the provider set in one client's answer and send it with every other client's requests
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(
            total=self.config.upstream_timeout_seconds, sock_connect=self.config.connect_timeout_seconds))
        self.loader.start()
        self._tasks.append(asyncio.create_task(self._background()))

    async def _cleanup(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        if self.session is not None:
            await self.session.close()
        await asyncio.to_thread(self.loader.stop)
        self.journal.close()
        if self.redis is not None:
            await self.redis.aclose()

    def app(self) -> web.Application:
        """The main listener's application; with ``admin_port`` the admin routes and /metrics
        are not on it but on ``admin_app()``'s."""
        app = web.Application(client_max_size=self.config.max_request_bytes)
        app[GATEWAY] = self
        for path, api in ROUTES.items():
            app.router.add_post(path, self._proxy_handler(api, path))
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/openapi.json", self.openapi)
        if self.config.admin_port is None:
            self._admin_routes(app)
        app.router.add_route("*", wire.ANY_PATH, self.not_found)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    def admin_app(self) -> web.Application:
        """The admin listener's application (``admin_port``): /admin/*, /metrics, /health, /ready."""
        app = web.Application(client_max_size=1 << 20)
        app[GATEWAY] = self
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        self._admin_routes(app)
        app.router.add_route("*", wire.ANY_PATH, self.not_found)
        return app

    def _admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/admin/verdicts", self.admin_verdicts)
        app.router.add_get(f"/admin/verdicts/{{account_id:{wire.ROUTE_ID}}}", self.admin_verdict)
        app.router.add_post(f"/admin/accounts/{{account_id:{wire.ROUTE_ID}}}/action", self.admin_action)
        app.router.add_get("/admin/overrides", self.admin_overrides)
        app.router.add_get("/admin/overrides/audit", self.admin_audit)
        app.router.add_delete(f"/admin/overrides/{{account_id:{wire.ROUTE_ID}}}", self.admin_lift)
        app.router.add_post(f"/admin/campaigns/{{campaign_id:{wire.ROUTE_ID}}}/action", self.admin_action)
        app.router.add_delete(f"/admin/campaigns/{{campaign_id:{wire.ROUTE_ID}}}/override", self.admin_lift)
        app.router.add_post("/admin/policy/reload", self.admin_reload)
        controls_mod.AdminRoutes(self).add(app)

    # --- helpers ----------------------------------------------------------------------------

    def _error(self, status: int, message: str, kind: str, code: str | None,
               headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, body=error_body(message, kind, code), content_type="application/json",
                            headers=headers)

    def client_ip(self, request: web.Request) -> str | None:
        peer = request.remote
        forwarded = request.headers.get("X-Forwarded-For")
        if not forwarded or not self._trusted(peer):
            return peer
        # walk from the right: the first address not one of our proxies is the client
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._trusted(hop):
                return wire.text(hop)  # logged: a proxy passes on whatever bytes the client put there
        return peer

    def client_asn(self, request: web.Request) -> int | None:
        """The client's ASN from ``asn_header``, believed only from a trusted proxy (like X-Forwarded-For)."""
        name = self.config.asn_header
        if not name or not self._trusted(request.remote):
            return None
        value = request.headers.get(name, "").strip().upper().removeprefix("AS")
        return int(value) if value.isdigit() and len(value) <= 10 else None

    def _trusted(self, address: str | None) -> bool:
        if not address or not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def _account(self, request: web.Request) -> keytable.KeyRecord | None:
        secret = wire.api_key(request.headers)
        if secret is None:
            if wire.undecodable(request.headers):
                log.warning("401 to %s: its API key header holds bytes that are not ASCII", request.remote)
            return None
        return self.keys.lookup(secret)

    def _upstream_headers(self, request: web.Request, api: str) -> dict[str, str]:
        """The client's headers that the upstream may see (headers.UPSTREAM_REQUEST) and the
        gateway's own upstream credential."""
        headers = wire.upstream_request(request.headers)
        key = self.config.upstream_api_key
        if key:
            if api == "messages":
                headers["x-api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def _log(self, entry: dict[str, Any]) -> bool:
        """Append one exchange; False when it could not be logged and the gateway fails closed."""
        try:
            self.journal.append(entry)
            if self.log_broken:
                log.warning("exchange log: writing again")
                self.log_broken = None
            return True
        except JournalError as exc:
            if self.log_broken != str(exc):
                log.error("%s; failing %s (on_log_failure)", exc, self.config.on_log_failure)
            self.log_broken = str(exc)
            return self.config.on_log_failure == "open"
        except TypeError as exc:  # orjson.JSONEncodeError: a field the request path failed to clean (a bug)
            log.error("exchange %s cannot be encoded for the log (%s); failing %s (on_log_failure)",
                      entry.get("exchange_id"), exc, self.config.on_log_failure)
            return self.config.on_log_failure == "open"

    def _log_may_work(self) -> bool:
        """Whether the broken log may be written again (a full disk that has room again, a new
        segment that opens), asked at most every _LOG_RETRY_SECONDS: a request it lets through is
        served only if its own append succeeds, which is what clears ``log_broken``."""
        now = time.monotonic()
        if now < self._log_retry_at:
            return False
        self._log_retry_at = now + _LOG_RETRY_SECONDS
        return self.journal.writable() is None

    # --- the proxy --------------------------------------------------------------------------

    def _proxy_handler(self, api: str, path: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.proxy(request, api, path)
        return handler

    async def proxy(self, request: web.Request, api: str, path: str) -> web.StreamResponse:
        t0 = time.perf_counter()
        started = _now()
        record = self._account(request)
        if record is None:
            self.metrics.request(path, 401, "none", time.perf_counter() - t0)
            return self._error(401, "Incorrect or revoked API key provided.", "invalid_request_error",
                               "invalid_api_key")
        if self.log_broken and self.config.on_log_failure == "closed" and not self._log_may_work():
            self.metrics.request(path, 503, "none", time.perf_counter() - t0)
            return self._error(503, _LOG_UNAVAILABLE, "server_error", "log_unavailable")
        ip = self.client_ip(request)
        client = Client(ip, wire.text(request.headers.get("User-Agent")), self.client_asn(request))
        exchange_id = new_exchange_id("gw-", started)
        raw = await self._body(request, api, path, exchange_id, started, record, client, t0)
        if isinstance(raw, web.Response):
            return raw
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.metrics.request(path, 400, "none", time.perf_counter() - t0)
            return self._error(400, f"The request body is not valid JSON ({exc}).", "invalid_request_error",
                               "invalid_json")
        facts = request_facts(api, body, record.account_id)
        # a recognised reseller's request naming an end user is decided as that end user (gateway/resellers.py)
        relay = self.resellers.relay(record.key_id, record.account_id, facts.end_user)
        if relay is not None and relay.end_user is None and self.policy.resellers.require_end_user:
            self._log(exchange_row(exchange_id, started, record, client, facts, 400, (None, 0),
                                   (time.perf_counter() - t0) * 1000))
            self.metrics.request(path, 400, "none", time.perf_counter() - t0)
            return self._error(400, *resellers_mod.END_USER_REQUIRED, {"x-distillguard-exchange-id": exchange_id})
        who = relay.entity if relay is not None else record.account_id
        inherited_before = who in self.enforcer.inherited
        decision = await self.enforcer.decide(Request(
            record.account_id, record.organization_id, record.payment_fingerprint, record.email_domain,
            record.account_created_at, ip, facts.system_prompt, facts.prompt, started,
            entity=who if who != record.account_id else None))
        # an end user's creation time is not known (the key's is the reseller's)
        decision = controls_mod.step_up(decision, record.account_created_at if who == record.account_id else None,
                                        started, self.policy)
        # shared once, when this request made the account inherit: its later requests (and an
        # inheritance learnt from another gateway) add nothing to the stream every gateway reads
        if (self.shared is not None and decision.source == "inherited" and decision.campaign_id
                and not inherited_before and who in self.enforcer.inherited):
            try:
                await self.shared.publish("inherited", who, orjson.dumps(
                    {"action": decision.action, "reasons": list(decision.reasons),
                     "campaign_id": decision.campaign_id}))
            except REDIS_DOWN as exc:  # enforced here all the same; the other gateways learn it by themselves
                self.redis_outage.failed("sharing an inherited action", exc)
        # only adds: allow/monitor -> fallback, in the session of the entity decided (an end user's)
        decision = self.live.route(decision, record, client, facts, started, entity=who)
        out_headers = {"x-distillguard-exchange-id": exchange_id}
        # an entity control first (a blocked organisation, a disabled model), then the account's decision
        refused = self.controls.refusal(record.organization_id, record.email_domain, ip, client.asn, facts.model,
                                        started, exchange_id) or refusal(
            decision, self.config.fallback_model, self.policy.gateway.throttle_retry_after_seconds, exchange_id,
            controls_mod.verification_reference(who, decision, self.enforcer.overrides,
                                                self.scan.as_of) if decision.action == "verify" else None)
        if refused is not None:
            self._log(exchange_row(exchange_id, started, record, client, facts, refused.status, (None, 0),
                                   (time.perf_counter() - t0) * 1000))
            self.metrics.request(path, refused.status, refused.action, time.perf_counter() - t0)
            return self._error(refused.status, refused.message, refused.kind, refused.code,
                               refused.headers | out_headers)
        # a fallback is served as if by the model asked for: nothing in the answer says otherwise
        # (the account would learn that it is suspected), but its own words and token counts
        rewriter = None
        if decision.action == "fallback" and isinstance(body, dict):
            body["model"] = self.config.fallback_model
            raw = orjson.dumps(body)
            if facts.model is not None:
                rewriter = ModelRewriter(facts.model)
        url = self.config.upstream + path
        try:
            # auto_decompress: the upstream may answer in any coding the client library offered it
            # (headers.DECODED); the gateway reads usage from the answer and the client gets it decoded
            upstream = await self.session.post(url, data=raw, headers=self._upstream_headers(request, api),
                                               auto_decompress=True)
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return self._upstream_failed(504, "The upstream model API did not answer in time.", "upstream_timeout",
                                         exchange_id, started, record, client, facts, path, decision, t0)
        except aiohttp.ClientError as exc:
            return self._upstream_failed(502, f"The upstream model API cannot be reached ({type(exc).__name__}).",
                                         "upstream_unreachable", exchange_id, started, record, client, facts,
                                         path, decision, t0)
        try:
            down = wire.downstream_response(upstream.headers.items())
            down.update(out_headers)
            if upstream.content_type == "text/event-stream":
                return await self._stream(request, api, upstream, down, exchange_id, started, record, client,
                                          facts, path, decision, rewriter, t0)
            try:
                data = await upstream.read()
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                return self._upstream_failed(504, "The upstream model API did not finish its answer in time.",
                                             "upstream_timeout", exchange_id, started, record, client, facts, path,
                                             decision, t0)
            except aiohttp.ClientError as exc:
                return self._upstream_failed(502, f"The upstream model API broke off its answer "
                                             f"({type(exc).__name__}).", "upstream_incomplete", exchange_id, started,
                                             record, client, facts, path, decision, t0)
            tokens = (None, None)
            if upstream.content_type == "application/json":
                try:
                    tokens = usage(orjson.loads(data))
                except orjson.JSONDecodeError:
                    pass
                if rewriter is not None:
                    data = rewriter.body(data)
            entry = exchange_row(exchange_id, started, record, client, facts, upstream.status, tokens,
                                 (time.perf_counter() - t0) * 1000)
            if not self._log(entry):
                self.metrics.request(path, 503, decision.action, time.perf_counter() - t0)
                return self._error(503, _LOG_UNAVAILABLE, "server_error", "log_unavailable")
            self.metrics.request(path, upstream.status, decision.action, time.perf_counter() - t0)
            return web.Response(status=upstream.status, body=data, headers=down)
        finally:
            upstream.release()

    async def _body(self, request: web.Request, api: str, path: str, exchange_id: str, started: datetime, record,
                    client: Client, t0: float) -> bytes | web.Response:
        """The request's body, or the answer to a client that sends too much (413) or stalls
        mid-body (408, connection closed: it may be holding connections open on purpose);
        either is logged as an exchange of its account, with what little is known of it."""
        limit = self.config.max_request_bytes
        if request.content_length is None or request.content_length <= limit:
            try:
                if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
                    return await request.read()
                async with asyncio.timeout(self.config.client_read_timeout_seconds):
                    return await request.read()
            except web.HTTPRequestEntityTooLarge:
                pass
            except TimeoutError:
                return await self._refuse_body(
                    request, 408, f"The request body did not arrive within "
                    f"{self.config.client_read_timeout_seconds:g} s.", "request_timeout", api, path, exchange_id,
                    started, record, client, t0)
        return await self._refuse_body(request, 413, f"The request body is larger than the {limit} bytes this API "
                                       "accepts.", "request_too_large", api, path, exchange_id, started, record,
                                       client, t0)

    async def _refuse_body(self, request: web.Request, status: int, message: str, code: str, api: str, path: str,
                           exchange_id: str, started: datetime, record, client: Client, t0: float) -> web.Response:
        """Answers, then closes the connection: the rest of the body is not worth reading (aiohttp
        would otherwise keep reading it for up to its lingering time)."""
        facts = request_facts(api, None, record.account_id)
        self._log(exchange_row(exchange_id, started, record, client, facts, status, (None, None),
                               (time.perf_counter() - t0) * 1000))
        self.metrics.request(path, status, "none", time.perf_counter() - t0)
        response = self._error(status, message, "invalid_request_error", code,
                               {"x-distillguard-exchange-id": exchange_id})
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        if request.transport is not None:
            request.transport.close()  # sends what is buffered first
        return response

    async def _stream(self, request: web.Request, api: str, upstream: aiohttp.ClientResponse,
                      headers: dict[str, str], exchange_id: str, started: datetime, record, client, facts, path: str,
                      decision: Decision, rewriter: ModelRewriter | None, t0: float) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        meter = StreamUsage()
        status = upstream.status
        broken = None  # why the upstream's stream ended early: the client is told in the stream's last event
        try:
            async for chunk in upstream.content.iter_any():
                meter.feed(chunk)
                if rewriter is not None:
                    chunk = rewriter.feed(chunk)
                    if not chunk:
                        continue
                await response.write(chunk)
            if rewriter is not None and (tail := rewriter.flush()):
                await response.write(tail)
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away; what was sent is logged
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            status, broken = 504, ("The upstream model API stalled mid-answer; the answer is incomplete.",
                                   "upstream_timeout")
        except aiohttp.ClientError as exc:
            status, broken = 502, (f"The upstream model API broke off its answer ({type(exc).__name__}); the "
                                   "answer is incomplete.", "upstream_incomplete")
        if broken is not None:
            log.warning("exchange %s: %s logged as %d (incomplete)", exchange_id, broken[0], status)
            try:
                await response.write(stream_error(api, *broken))
            except (ConnectionResetError, asyncio.CancelledError):
                status = 499
        entry = exchange_row(exchange_id, started, record, client, facts, status,
                             (meter.input_tokens, meter.output_tokens), (time.perf_counter() - t0) * 1000)
        logged = self._log(entry)
        self.metrics.request(path, status, decision.action, time.perf_counter() - t0)
        if status == 499:
            return response
        if not logged:  # fail closed: cut the stream short rather than finish an unlogged answer
            request.transport.close() if request.transport else None
            return response
        await response.write_eof()
        return response

    def _upstream_failed(self, status: int, message: str, code: str, exchange_id: str, started: datetime,
                         record, client, facts, path: str, decision: Decision, t0: float) -> web.Response:
        self._log(exchange_row(exchange_id, started, record, client, facts, status, (None, None),
                               (time.perf_counter() - t0) * 1000))
        self.metrics.request(path, status, decision.action, time.perf_counter() - t0)
        return self._error(status, message, "server_error", code, {"x-distillguard-exchange-id": exchange_id})

    # --- other routes -----------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        if (record := self._account(request)) is None:
            self.metrics.request("/v1/models", 401, "none", time.perf_counter() - t0)
            return self._error(401, "Incorrect or revoked API key provided.", "invalid_request_error",
                               "invalid_api_key")
        try:
            async with self.session.get(self.config.upstream + "/v1/models", auto_decompress=True,
                                        headers=self._upstream_headers(request, "models")) as upstream:
                data = await upstream.read()
                if upstream.status == 200:  # without the models disabled for this client
                    data = self.controls.listing(data, record.organization_id, self.client_ip(request), _now())
                down = wire.downstream_response(upstream.headers.items())
                self.metrics.request("/v1/models", upstream.status, "allow", time.perf_counter() - t0)
                return web.Response(status=upstream.status, body=data, headers=down)
        except (asyncio.TimeoutError, aiohttp.ClientError):
            self.metrics.request("/v1/models", 502, "none", time.perf_counter() - t0)
            return self._error(502, "The upstream model API cannot be reached.", "server_error",
                               "upstream_unreachable")

    async def not_found(self, request: web.Request) -> web.Response:
        return self._error(404, f"Unknown request URL: {request.method} {wire.text(request.path)}.",
                           "invalid_request_error", "unknown_url")

    async def metrics_page(self, request: web.Request) -> web.Response:
        # on the main port (no admin listener) the counters are the operator's, not the public's
        if self.config.admin_port is None and (denied := self._admin_denied(request)) is not None:
            return denied
        return web.Response(body=self.metrics.render().encode(), headers={
            "Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})

    # --- health -----------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """Liveness: the event loop answers."""
        return web.json_response({"status": "ok"})

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness, per component: 200 when every one is ok, else 503."""
        checks = {"store": await asyncio.to_thread(self._store_ready), "log": self._log_ready(),
                  "upstream": await self._upstream_ready()}
        if self.redis is not None:
            checks["redis"] = await self._redis_ready()
        ok = all(c["ok"] for c in checks.values())
        return web.json_response({"status": "ready" if ok else "not ready", "components": checks},
                                 status=200 if ok else 503, dumps=_dumps)

    def _store_ready(self) -> dict[str, Any]:
        """The store file can be read (a DuckDB connection would conflict with the loader's
        write lock, so the file itself is read); before the first load, its folder writable."""
        db = Path(self.config.db)
        try:
            with db.open("rb") as f:
                f.read(4096)
            return {"ok": True}
        except FileNotFoundError:
            folder = db.parent if str(db.parent) else Path(".")
            if os.access(folder, os.W_OK):
                return {"ok": True, "detail": "no store yet; the loader creates it"}
            return {"ok": False, "detail": f"no store and {folder} is not writable"}
        except OSError as exc:
            return {"ok": False, "detail": f"cannot read {db}: {exc.strerror}"}

    def _log_ready(self) -> dict[str, Any]:
        if self.log_broken:
            return {"ok": False, "detail": self.log_broken}
        return {"ok": True}

    async def _upstream_ready(self) -> dict[str, Any]:
        """Any HTTP answer of the upstream (a 401 too) means it is reachable."""
        key = self.config.upstream_api_key
        try:
            async with self.session.get(self.config.upstream + "/v1/models",
                                        headers={"Authorization": f"Bearer {key}"} if key else {},
                                        timeout=aiohttp.ClientTimeout(total=2.0)) as reply:
                return {"ok": reply.status < 500, "status": reply.status}
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            return {"ok": False, "detail": f"{type(exc).__name__}"}

    async def _redis_ready(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.redis.ping(), 2.0)
            return {"ok": True}
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready", with its name
            return {"ok": False, "detail": type(exc).__name__}

    # --- admin ------------------------------------------------------------------------------

    def _admin_denied(self, request: web.Request) -> web.Response | None:
        token = self.config.admin_token
        if not token:
            return self._error(404, "The admin API is off (no admin token configured).", "invalid_request_error",
                               "unknown_url")
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        try:
            given_bytes = given.encode("utf-8", "surrogateescape")  # the header's bytes as sent
        except UnicodeEncodeError:
            given_bytes = b""
        if not hmac.compare_digest(given_bytes, token.encode()):
            log.warning("admin: 401 to %s (token missing or wrong)", request.remote)
            return self._error(401, "Admin token missing or wrong.", "invalid_request_error", "invalid_admin_token")
        return None

    def standing(self, account_id: str) -> dict[str, Any]:
        """What holds for an account now, before the online limits: the admin API's view."""
        e = self.enforcer
        owner = account_id.partition(resellers_mod.ENTITY_SEPARATOR)[0]  # an end user's reseller account
        o = e.overrides.get(account_id) or (e.overrides.get(owner) if owner != account_id else None)
        d = o.decision() if o else (e.verdict(account_id, owner) or e.inherited.get(account_id) or ALLOW)
        if o is None and d.campaign_id and (o := e.overrides.get(campaign_key(d.campaign_id))) is not None:
            d = Decision(o.action, "override", o.decision().reasons, d.campaign_id)
        return {"account_id": account_id, "action": d.action, "source": d.source, "campaign_id": d.campaign_id,
                "reasons": list(d.reasons), "scan_as_of": self.scan.as_of,
                "override": None if o is None else _held(o)}

    async def admin_verdict(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        return web.json_response(self.standing(request.match_info["account_id"]), dumps=_dumps)

    async def admin_verdicts(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        e = self.enforcer
        accounts = sorted(set(self.scan.verdicts) | set(e.inherited) | set(self.book.in_force(_now())))
        rows = [self.standing(a) for a in accounts]
        wanted = request.query.get("action")
        if wanted:
            rows = [r for r in rows if r["action"] == wanted]
        return web.json_response({"scan_as_of": self.scan.as_of, "count": len(rows), "verdicts": rows},
                                 dumps=_dumps)

    async def admin_overrides(self, request: web.Request) -> web.Response:
        """The overrides in force (``?history=1``: the audit trail, as /admin/overrides/audit)."""
        if request.query.get("history") in ("1", "true"):
            return await self.admin_audit(request)
        if (denied := self._admin_denied(request)) is not None:
            return denied
        rows = [{"account_id": a} | _held(h) for a, h in sorted(self.book.in_force(_now()).items())]
        return web.json_response({"count": len(rows), "overrides": rows}, dumps=_dumps)

    async def admin_audit(self, request: web.Request) -> web.Response:
        """Every override change this gateway knows of (its own, those other gateways shared
        through Redis, and those in the store at start-up), oldest first; ``?account=``."""
        if (denied := self._admin_denied(request)) is not None:
            return denied
        account = request.query.get("account")
        rows = [e.audit_row() for e in sorted(self.book.history.values(), key=lambda e: (e.at, e.event_id))
                if account is None or e.account_id == account]
        return web.json_response({"count": len(rows), "events": rows}, dumps=_dumps)

    async def admin_action(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if (refused := self._target_refused(request)) is not None:
            return refused
        body, problem = await _admin_body(request, {"action", "reason", "actor", "expires_at"})
        if problem is not None:
            return self._error(400, problem, "invalid_request_error", "invalid_body")
        action = body.get("action")
        if not isinstance(action, str) or action not in SEVERITY:
            return self._error(400, f"action must be one of {', '.join(SEVERITY)} (to lift an override: "
                               "DELETE /admin/overrides/{account_id}).", "invalid_request_error", "invalid_action")
        expires_at = None
        if body.get("expires_at") is not None:
            try:
                expires_at = _future_time(body["expires_at"])
            except ValueError as exc:
                return self._error(400, f"expires_at: {exc}", "invalid_request_error", "invalid_expires_at")
        return await self._change(request, action, body, expires_at)

    async def admin_lift(self, request: web.Request) -> web.Response:
        """Lift an account's override: the scan's verdicts hold for it again."""
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if (refused := self._target_refused(request)) is not None:
            return refused
        body, problem = await _admin_body(request, {"reason", "actor"}, optional=True)
        if problem is not None:
            return self._error(400, problem, "invalid_request_error", "invalid_body")
        key = _target(request)
        if self.enforcer.overrides.get(key) is None:
            return self._error(404, f"No override in force for {key}.", "invalid_request_error", "no_override")
        return await self._change(request, overrides_mod.LIFT, body, None)

    async def _change(self, request: web.Request, action: str, body: dict[str, Any],
                      expires_at: datetime | None) -> web.Response:
        """Record one override event durably, then apply it (and share it): the answer comes
        only once a crash can no longer lose it."""
        reason, actor = body.get("reason"), body.get("actor") or "admin"
        if not isinstance(reason, str) or not reason.strip():
            return self._error(400, "reason is required: say why, for whoever reviews this later.",
                               "invalid_request_error", "missing_reason")
        if not isinstance(actor, str) or len(actor) > 200 or len(reason) > 4000:
            return self._error(400, "actor must be a string of at most 200 characters, reason at most 4000.",
                               "invalid_request_error", "invalid_body")
        account = _target(request)
        event = overrides_mod.Event.new(account, action, reason.strip(), actor, request.remote, expires_at,
                                        self.enforcer.overrides.get(account), _now())
        try:
            await asyncio.to_thread(self.override_file.append, event)
        except OSError as exc:
            log.error("override of %s NOT recorded: cannot write %s (%s)", account, self.override_file.path,
                      exc.strerror)
            return self._error(503, "The override could not be recorded durably and was not applied; retry.",
                               "server_error", "override_not_recorded")
        self.book.apply(event)
        log.warning("override: %s %s by %s from %s%s: %s", account,
                    "lifted" if action == overrides_mod.LIFT else f"set to {action}", actor, request.remote,
                    f" until {expires_at.isoformat()}" if expires_at else "", event.reason)
        if self.shared is not None:
            try:
                await self.shared.publish("overrides", account, event.to_json())
            except Exception as exc:  # noqa: BLE001 - Redis down: said to the operator, not hidden
                log.error("override of %s not shared with the other gateways: %s", account, exc)
                return self._error(503, "The override is recorded and in force on this gateway, but could not be "
                                   "shared with the other gateways (Redis unavailable); repeat the request.",
                                   "server_error", "override_not_shared")
        extra = {"event": event.audit_row()}
        if action == "verify":  # what the account's client is told to quote
            extra["verification_reference"] = controls_mod.verification_reference(
                account, Decision("verify", "override"), self.enforcer.overrides, self.scan.as_of)
        return web.json_response(self.standing(account) | extra, dumps=_dumps)

    def _target_refused(self, request: web.Request) -> web.Response | None:
        """An account route for an id that reads as a campaign's override key: refused, so that an
        account's override and a campaign's never share a key."""
        if request.match_info.get("account_id", "").startswith(CAMPAIGN_KEY_PREFIX):
            return self._error(400, f"account ids starting with {CAMPAIGN_KEY_PREFIX!r} are campaign override "
                               "keys: use /admin/campaigns/{campaign_id}/...", "invalid_request_error",
                               "invalid_account")
        return None

    async def admin_reload(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        try:
            policy = load_policy(self.config.policy)
        except Exception as exc:  # noqa: BLE001 - UserError carries the file and field
            return self._error(400, f"policy not reloaded: {exc}", "invalid_request_error", "invalid_policy")
        self.policy = policy
        self.live.set_policy(policy)
        self.enforcer.set_policy(policy)
        self.controls.book.set_policy(policy.controls)
        return web.json_response({"reloaded": True, "policy": self.config.policy})

    async def openapi(self, request: web.Request) -> web.Response:
        """The gateway's OpenAPI 3 description (openapi.yaml beside this module), as JSON: it
        names no secret, so it needs no token."""
        return web.Response(body=_openapi_json(), content_type="application/json")


def _target(request: web.Request) -> str:
    """The override key an admin route acts on: the account id, or a campaign's key."""
    if "campaign_id" in request.match_info:
        return campaign_key(request.match_info["campaign_id"])
    return request.match_info["account_id"]


def _held(h: overrides_mod.Held | Override) -> dict[str, Any]:
    expires = getattr(h, "expires_at", None)
    return {"action": h.action, "reason": h.reason, "actor": h.actor, "at": h.at.isoformat(),
            "expires_at": expires.isoformat() if expires else None}


async def _admin_body(request: web.Request, allowed: set[str],
                      optional: bool = False) -> tuple[dict[str, Any], str | None]:
    """The admin request's JSON object (query parameters too, for a DELETE without a body);
    an unknown field is refused rather than ignored (a mistyped ``expires_at`` would make a
    temporary block permanent)."""
    raw = await request.read()
    body: Any = {}
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}, 'Body must be a JSON object: {"action": ..., "reason": ...}.'
    elif not optional:
        return {}, 'Body must be a JSON object: {"action": ..., "reason": ...}.'
    if not isinstance(body, dict):
        return {}, "Body must be a JSON object."
    body = {k: v for k, v in request.query.items() if k in allowed} | body
    unknown = sorted(set(body) - allowed)
    if unknown:
        return {}, f"Unknown field(s) {', '.join(map(repr, unknown))[:200]}; allowed: {', '.join(sorted(allowed))}."
    return body, None


def _future_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 time with a UTC offset, e.g. 2030-01-31T12:00:00Z")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise ValueError(f"{value[:64]!r} has no UTC offset (add Z or +00:00)")
    if t <= _now():
        raise ValueError(f"{value[:64]!r} is not in the future")
    return t.astimezone(UTC)


@functools.cache
def _openapi_json() -> bytes:
    import yaml

    return orjson.dumps(yaml.safe_load(Path(__file__).with_name("openapi.yaml").read_text()))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def build(config: GatewayConfig) -> Gateway:
    redis_client = None
    if config.state:
        import redis.asyncio as redis_asyncio

        # bounded waits: a hung Redis must cost a request a few seconds once, not hold it for ever
        redis_client = redis_asyncio.from_url(config.state, socket_connect_timeout=2.0, socket_timeout=2.0)
    return Gateway(config, redis_client=redis_client)


def _listen(host: str, port: int, what: str) -> socket.socket:
    """A socket bound before anything else starts, so that a busy port is one clear line; it
    listens (accepts connections) only once the gateway is ready (SockSite)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return sock
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UserError(f"{what}: cannot listen on {host}:{port}: {reason}") from None


def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Run until SIGINT or SIGTERM; then stop accepting, let the requests in flight finish (up
    to ``shutdown_timeout_seconds``), drain the log into the store, and exit."""
    sockets = [_listen(host, port, "--port")]
    if config.admin_port is not None:
        sockets.append(_listen(config.admin_host, config.admin_port, "--admin-port"))
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    import prometheus_client

    prometheus_client.disable_created_metrics()  # a _created series per counter: noise to a scraper
    gateway = build(config)
    # the modules and tables loaded at start-up (hundreds of thousands of objects) are there for
    # good: kept out of the collector, whose full passes over them would otherwise pause every
    # request in flight for tens of milliseconds
    gc.collect()
    gc.freeze()
    asyncio.run(_run(gateway, sockets))


async def _run(gateway: Gateway, sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timeout = gateway.config.shutdown_timeout_seconds
    apps = [gateway.app()] + ([gateway.admin_app()] if len(sockets) > 1 else [])
    # keepalive_timeout is aiohttp's only bound on a connection waiting for a request's headers
    # (from connecting, or from the previous answer): without it a client that sends part of its
    # headers, or nothing, holds a connection for aiohttp's default of 3630 s
    runners = [web.AppRunner(app, access_log=None, shutdown_timeout=timeout, logger=_HTTP_LOG,
                             keepalive_timeout=gateway.config.header_read_timeout_seconds) for app in apps]
    try:
        for runner, sock, what in zip(runners, sockets, ("gateway", "admin API and /metrics")):
            await runner.setup()
            await web.SockSite(runner, sock).start()
            host, port = sock.getsockname()[:2]
            log.info("%s listening on http://%s:%d", what, host, port)
        await stop.wait()
        log.info("stopping: no new connections; requests in flight get up to %g s", timeout)
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
    log.info("stopped")
