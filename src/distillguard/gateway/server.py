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
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
from aiohttp import web

from distillguard.gateway import keys as keytable
from distillguard.gateway import overrides as overrides_mod
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.enforce import ALLOW, Decision, Enforcer, Override, Request, ScanOutputs, refusal
from distillguard.gateway.journal import STORE_LOCK, Journal, JournalError, Loader
from distillguard.gateway.limits import MemoryCounters, RedisCounters
from distillguard.gateway.metrics import Metrics
from distillguard.gateway.protocol import (ROUTES, Client, StreamUsage, error_body, exchange_row, new_exchange_id,
                                           request_facts, usage)
from distillguard.gateway.shared import SharedState
from distillguard.policy import Policy, load_policy
from distillguard.store import Store
from distillguard.verdicts import SEVERITY

log = logging.getLogger("distillguard.gateway")

#: request headers never passed upstream: hop-by-hop, the client's credentials, our own
_DROP_UP = frozenset({"host", "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                      "trailer", "transfer-encoding", "upgrade", "content-length", "authorization", "x-api-key",
                      "x-forwarded-for", "accept-encoding"})
#: response headers never passed back
_DROP_DOWN = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                        "server", "date"})

GATEWAY = web.AppKey("gateway", object)


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
        counters = RedisCounters(redis_client) if redis_client is not None else MemoryCounters()
        self.scan = ScanOutputs(config.verdicts)
        self.enforcer = Enforcer(self.policy, self.scan, counters)
        self.journal = Journal(config.journal_dir, config.fsync_seconds)
        self.overrides = overrides_mod.OverrideLog(config.journal_dir)
        self.loader = Loader(self.journal, config.db, config.load_every_seconds, config.segment_seconds,
                             on_loaded=self._after_load)
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
        self.session: aiohttp.ClientSession | None = None
        self.log_broken: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.load_keys()
        self._load_state()
        self.metrics.gauge("distillguard_log_rows_appended", "Exchanges appended to the log by this process.",
                           lambda: self.journal.appended)
        self.metrics.gauge("distillguard_log_rows_loaded", "Exchanges loaded into the store by this process.",
                           lambda: self.loader.loaded_rows)
        self.metrics.gauge("distillguard_log_failures", "Exchanges that could not be logged.",
                           lambda: self.journal.failures)
        self.metrics.gauge("distillguard_verdicts_loaded", "Non-allow verdicts of the latest scan.",
                           lambda: len(self.scan.verdicts))

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
        """Overrides (store and the gateway's own file) and first-seen times of known accounts."""
        entries = []
        try:
            with STORE_LOCK, Store(self.config.db) as store:
                entries = overrides_mod.from_store(store.con)
                first = store.con.execute(
                    'SELECT account_id, min("timestamp") FROM exchanges GROUP BY account_id').fetchall()
                self.enforcer.first_seen.update(dict(first))
        except Exception as exc:  # noqa: BLE001
            log.warning("start-up: cannot read overrides and first-seen times from the store (%s)", exc)
        self.enforcer.overrides.update(overrides_mod.latest(entries + self.overrides.entries()))

    def _after_load(self, rows: int) -> None:
        pending = self.overrides.entries()
        if pending:
            try:
                with Store(self.config.db) as store:  # called by the loader, which holds STORE_LOCK
                    overrides_mod.to_store(store.con, pending)
            except Exception as exc:  # noqa: BLE001 - next round
                log.warning("overrides: cannot copy into the store now (%s)", exc)

    async def _background(self) -> None:
        """Hot reload of verdicts and keys, and shared state from Redis, every tick."""
        tick = 0
        while True:
            await asyncio.sleep(self.config.reload_every_seconds)
            tick += 1
            try:
                self.enforcer.refresh()
                if tick % 30 == 0:
                    await asyncio.to_thread(self.load_keys)
                if self.redis is not None:
                    await self._pull_shared()
            except Exception:  # noqa: BLE001 - never let the reloader die
                log.exception("background reload failed")

    async def _pull_shared(self) -> None:
        for change in await self.shared.changes():
            r = orjson.loads(change.value)
            if change.kind == "overrides":
                o = Override(r["action"], r["reason"], r["actor"], datetime.fromisoformat(r["at"]))
                known = self.enforcer.overrides.get(change.account)
                if known is None or known.at < o.at:
                    self.enforcer.overrides[change.account] = o
            elif change.account not in self.enforcer.inherited and change.account not in self.scan.judged:
                self.enforcer.inherited[change.account] = Decision(r["action"], "inherited", tuple(r["reasons"]),
                                                                   r["campaign_id"])

    # --- lifecycle --------------------------------------------------------------------------

    async def _startup(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(
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
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[GATEWAY] = self
        for path, api in ROUTES.items():
            app.router.add_post(path, self._proxy_handler(api, path))
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_get("/admin/verdicts", self.admin_verdicts)
        app.router.add_get("/admin/verdicts/{account_id}", self.admin_verdict)
        app.router.add_post("/admin/accounts/{account_id}/action", self.admin_action)
        app.router.add_post("/admin/policy/reload", self.admin_reload)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

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
                return hop
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
        auth = request.headers.get("Authorization", "")
        secret = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
        return self.keys.lookup(secret) if secret else None

    def _upstream_headers(self, request: web.Request, api: str) -> dict[str, str]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_UP}
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
        if self.log_broken and self.config.on_log_failure == "closed":
            self.metrics.request(path, 503, "none", time.perf_counter() - t0)
            return self._error(503, "The gateway cannot log requests right now and refuses them (fail closed).",
                               "server_error", "log_unavailable")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.metrics.request(path, 400, "none", time.perf_counter() - t0)
            return self._error(400, f"The request body is not valid JSON ({exc}).", "invalid_request_error",
                               "invalid_json")
        facts = request_facts(api, body, record.account_id)
        ip = self.client_ip(request)
        client = Client(ip, request.headers.get("User-Agent"), self.client_asn(request))
        inherited_before = record.account_id in self.enforcer.inherited
        decision = await self.enforcer.decide(Request(
            record.account_id, record.organization_id, record.payment_fingerprint, record.email_domain,
            record.account_created_at, ip, facts.system_prompt, facts.prompt, started))
        # shared once, when this request made the account inherit: its later requests (and an
        # inheritance learnt from another gateway) add nothing to the stream every gateway reads
        if (self.shared is not None and decision.source == "inherited" and decision.campaign_id
                and not inherited_before and record.account_id in self.enforcer.inherited):
            await self.shared.publish("inherited", record.account_id, orjson.dumps(
                {"action": decision.action, "reasons": list(decision.reasons), "campaign_id": decision.campaign_id}))
        exchange_id = new_exchange_id("gw-", started)
        refused = refusal(decision, self.config.fallback_model, self.policy.gateway.throttle_retry_after_seconds)
        if refused is not None:
            self._log(exchange_row(exchange_id, started, record, client, facts, refused.status, (None, 0),
                                   (time.perf_counter() - t0) * 1000))
            self.metrics.request(path, refused.status, refused.headers["x-distillguard-action"],
                                 time.perf_counter() - t0)
            return self._error(refused.status, refused.message, refused.kind, refused.code, refused.headers)
        out_headers = {"x-distillguard-exchange-id": exchange_id}
        if decision.action == "fallback" and isinstance(body, dict):
            body["model"] = self.config.fallback_model
            raw = orjson.dumps(body)
            out_headers["x-distillguard-action"] = "fallback"
            out_headers["x-distillguard-fallback-model"] = self.config.fallback_model
        url = self.config.upstream + path
        try:
            upstream = await self.session.post(url, data=raw, headers=self._upstream_headers(request, api))
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return self._upstream_failed(504, "The upstream model API did not answer in time.", "upstream_timeout",
                                         exchange_id, started, record, client, facts, path, decision, t0)
        except aiohttp.ClientError as exc:
            return self._upstream_failed(502, f"The upstream model API cannot be reached ({type(exc).__name__}).",
                                         "upstream_unreachable", exchange_id, started, record, client, facts,
                                         path, decision, t0)
        try:
            down = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_DOWN}
            down.update(out_headers)
            is_stream = upstream.content_type == "text/event-stream"
            if is_stream:
                return await self._stream(request, upstream, down, exchange_id, started, record, client, facts,
                                          path, decision, t0)
            try:
                data = await upstream.read()
            except (asyncio.TimeoutError, aiohttp.ClientError):
                return self._upstream_failed(504, "The upstream model API did not finish its answer in time.",
                                             "upstream_timeout", exchange_id, started, record, client, facts, path,
                                             decision, t0)
            tokens = (None, None)
            if upstream.content_type == "application/json":
                try:
                    tokens = usage(orjson.loads(data))
                except orjson.JSONDecodeError:
                    pass
            entry = exchange_row(exchange_id, started, record, client, facts, upstream.status, tokens,
                                 (time.perf_counter() - t0) * 1000)
            if not self._log(entry):
                self.metrics.request(path, 503, decision.action, time.perf_counter() - t0)
                return self._error(503, "The gateway cannot log requests right now and refuses them (fail closed).",
                                   "server_error", "log_unavailable")
            self.metrics.request(path, upstream.status, decision.action, time.perf_counter() - t0)
            return web.Response(status=upstream.status, body=data, headers=down)
        finally:
            upstream.release()

    async def _stream(self, request: web.Request, upstream: aiohttp.ClientResponse, headers: dict[str, str],
                      exchange_id: str, started: datetime, record, client, facts, path: str, decision: Decision,
                      t0: float) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        meter = StreamUsage()
        status = upstream.status
        try:
            async for chunk in upstream.content.iter_any():
                meter.feed(chunk)
                await response.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            status = 499  # the client went away; what was sent is logged
        except (asyncio.TimeoutError, aiohttp.ClientError):
            status = 504  # the upstream stalled or broke off mid-stream
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
        return self._error(status, message, "server_error", code)

    # --- other routes -----------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        if self._account(request) is None:
            return self._error(401, "Incorrect or revoked API key provided.", "invalid_request_error",
                               "invalid_api_key")
        try:
            async with self.session.get(self.config.upstream + "/v1/models",
                                        headers=self._upstream_headers(request, "models")) as upstream:
                data = await upstream.read()
                down = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_DOWN}
                self.metrics.request("/v1/models", upstream.status, "allow", time.perf_counter() - t0)
                return web.Response(status=upstream.status, body=data, headers=down)
        except (asyncio.TimeoutError, aiohttp.ClientError):
            return self._error(502, "The upstream model API cannot be reached.", "server_error",
                               "upstream_unreachable")

    async def not_found(self, request: web.Request) -> web.Response:
        return self._error(404, f"Unknown request URL: {request.method} {request.path}.", "invalid_request_error",
                           "unknown_url")

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    # --- admin ------------------------------------------------------------------------------

    def _admin_denied(self, request: web.Request) -> web.Response | None:
        token = self.config.admin_token
        if not token:
            return self._error(404, "The admin API is off (no admin token configured).", "invalid_request_error",
                               "unknown_url")
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return self._error(401, "Admin token missing or wrong.", "invalid_request_error", "invalid_admin_token")
        return None

    def standing(self, account_id: str) -> dict[str, Any]:
        """What holds for an account now, before the online limits: the admin API's view."""
        e = self.enforcer
        o = e.overrides.get(account_id)
        d = o.decision() if o else (self.scan.verdicts.get(account_id) or e.inherited.get(account_id) or ALLOW)
        return {"account_id": account_id, "action": d.action, "source": d.source, "campaign_id": d.campaign_id,
                "reasons": list(d.reasons), "scan_as_of": self.scan.as_of,
                "override": None if o is None else {"action": o.action, "reason": o.reason, "actor": o.actor,
                                                    "at": o.at.isoformat()}}

    async def admin_verdict(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        return web.json_response(self.standing(request.match_info["account_id"]), dumps=_dumps)

    async def admin_verdicts(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        e = self.enforcer
        accounts = sorted(set(self.scan.verdicts) | set(e.inherited) | set(e.overrides))
        rows = [self.standing(a) for a in accounts]
        wanted = request.query.get("action")
        if wanted:
            rows = [r for r in rows if r["action"] == wanted]
        return web.json_response({"scan_as_of": self.scan.as_of, "count": len(rows), "verdicts": rows},
                                 dumps=_dumps)

    async def admin_action(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        try:
            body = await request.json(loads=orjson.loads)
        except (orjson.JSONDecodeError, ValueError):
            return self._error(400, "Body must be JSON: {\"action\": ..., \"reason\": ...}.", "invalid_request_error",
                               "invalid_json")
        action = body.get("action") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        if action not in SEVERITY:
            return self._error(400, f"action must be one of {', '.join(SEVERITY)}.", "invalid_request_error",
                               "invalid_action")
        if not isinstance(reason, str) or not reason.strip():
            return self._error(400, "reason is required: say why, for whoever reviews this later.",
                               "invalid_request_error", "missing_reason")
        actor = body.get("actor") if isinstance(body.get("actor"), str) and body.get("actor") else "admin"
        account = request.match_info["account_id"]
        override = Override(action, reason.strip(), f"{actor} from {request.remote}", _now())
        await asyncio.to_thread(self.overrides.append, account, override)
        self.enforcer.overrides[account] = override
        if self.redis is not None:
            await self.shared.publish("overrides", account, orjson.dumps(
                {"action": action, "reason": override.reason, "actor": override.actor, "at": override.at.isoformat()}))
        log.warning("override: %s set to %s by %s: %s", account, action, override.actor, override.reason)
        return web.json_response(self.standing(account), dumps=_dumps)

    async def admin_reload(self, request: web.Request) -> web.Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        try:
            policy = load_policy(self.config.policy)
        except Exception as exc:  # noqa: BLE001 - UserError carries the file and field
            return self._error(400, f"policy not reloaded: {exc}", "invalid_request_error", "invalid_policy")
        self.policy = policy
        self.enforcer.set_policy(policy)
        return web.json_response({"reloaded": True, "policy": self.config.policy})

    async def openapi(self, request: web.Request) -> web.Response:
        """The gateway's OpenAPI 3 description (openapi.yaml beside this module), as JSON: it
        names no secret, so it needs no token."""
        return web.Response(body=_openapi_json(), content_type="application/json")


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

        redis_client = redis_asyncio.from_url(config.state)
    return Gateway(config, redis_client=redis_client)


def serve(config: GatewayConfig, host: str, port: int) -> None:
    """Run until interrupted (SIGINT/SIGTERM drain the log into the store before exiting)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    gateway = build(config)
    # the modules and tables loaded at start-up (hundreds of thousands of objects) are there for
    # good: kept out of the collector, whose full passes over them would otherwise pause every
    # request in flight for tens of milliseconds
    gc.collect()
    gc.freeze()
    web.run_app(gateway.app(), host=host, port=port, access_log=None, print=lambda msg: log.info(msg))
