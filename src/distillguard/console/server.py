"""The analyst console: an aiohttp application of server-rendered pages over the store.

Every page but ``/login`` and ``/static/`` needs a session (a cookie set by logging in with an
analyst token). Pages read the store through pages.py; actions go to the override store
through act.py, only from operators, only with the session's CSRF token. Every answer carries
a strict Content-Security-Policy: no inline script or style, nothing from another origin.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import orjson
from aiohttp import web

from distillguard.console import act, pages, plots
from distillguard.console.auth import (
    Analyst,
    Analysts,
    LoginLimiter,
    Session,
    Sessions,
    csrf_ok,
)
from distillguard.gateway.headers import ROUTE_ID
from distillguard.report import FORMATS, svg, write_report
from distillguard.report.redact import Redactor
from distillguard.store import Store
from distillguard.store.verdicts import SEVERITY

log = logging.getLogger("distillguard.console")

HERE = Path(__file__).parent
COOKIE = "dg_console"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: report formats the campaign page links to, and the media type each is served as (as a download)
REPORTS = {"html": "text/html", "pdf": "application/pdf", "stix": "application/json", "json": "application/json"}
CONSOLE = web.AppKey("console", object)
SESSION = "session"


@dataclass
class Console:
    """The running console's state; ``app()`` builds the aiohttp application around it."""

    db: str
    analysts: Analysts
    overrides: act.LocalOverrides | act.GatewayOverrides
    redactor: Redactor = field(default_factory=Redactor)
    sessions: Sessions = field(default_factory=Sessions)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters["num"] = _num
        self.env.filters["when"] = pages.when
        self.env.globals["strip"] = plots.population_strip

    # --- application ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_headers, self._authenticate], client_max_size=64 * 1024)
        app[CONSOLE] = self
        r = app.router
        r.add_get("/login", self.login_page)
        r.add_post("/login", self.login)
        r.add_post("/logout", self.logout)
        r.add_get("/", self.home)
        r.add_get("/campaigns", self.campaigns)
        r.add_get(f"/campaigns/{{campaign_id:{ROUTE_ID}}}", self.campaign)
        r.add_get(f"/campaigns/{{campaign_id:{ROUTE_ID}}}/graph.json", self.graph)
        r.add_get(f"/campaigns/{{campaign_id:{ROUTE_ID}}}/report.{{fmt}}", self.report)
        r.add_get(f"/accounts/{{account_id:{ROUTE_ID}}}", self.account)
        r.add_get("/act", self.confirm)
        r.add_post("/act", self.act)
        r.add_get("/audit", self.audit)
        r.add_static("/static/", HERE / "static", show_index=False, follow_symlinks=False)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
        if request.path == "/login" or request.path.startswith("/static/"):
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None and self.analysts.role_of(session.analyst.name) != session.analyst.role:
            self.sessions.close(request.cookies.get(COOKIE))  # removed, or given another role: log in again
            session = None
        if session is None:
            if request.method == "GET" and not request.path.endswith(".json"):
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="log in first")
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not csrf_ok(session, form.get("csrf") if isinstance(form.get("csrf"), str) else None):
                log.warning("console: %s from %s without a valid CSRF token (analyst %s)", request.path,
                            request.remote, session.analyst.name)
                return self._page("error.html.j2", request, status=403, title="Refused",
                                  message="The form's security token is missing or stale: reload the page and "
                                          "try again.")
        return await handler(request)

    def _page(self, template: str, request: web.Request, status: int = 200, **context: Any) -> web.Response:
        session: Session | None = request.get(SESSION)
        html = self.env.get_template(template).render(analyst=session.analyst if session else None,
                                                      csrf=session.csrf if session else "", **context)
        return web.Response(text=html, status=status, content_type="text/html")

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(con, *args)`` on a short-lived read-only connection, off the event loop."""
        def run() -> Any:
            with pages.reading(self.db) as con:
                return fn(con, *args)
        try:
            return await asyncio.to_thread(run)
        except pages.StoreBusy:
            raise web.HTTPServiceUnavailable(text="The store is busy (a scan or the gateway's loader is writing it); "
                                                  "try again in a few seconds.", headers={"Retry-After": "5"})

    # --- login --------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        return self._page("login.html.j2", request, title="Log in", error=None)

    async def login(self, request: web.Request) -> web.Response:
        remote = request.remote or "?"
        wait = self.limiter.blocked(remote)
        if wait > 0:
            log.warning("console: login from %s refused: too many failed attempts", remote)
            response = self._page("login.html.j2", request, status=429, title="Log in",
                                  error=f"Too many failed attempts; try again in {math.ceil(wait)} s.")
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        form = await request.post()
        token = form.get("token")
        analyst = self.analysts.verify(token.strip()) if isinstance(token, str) else None
        if analyst is None:
            self.limiter.failed(remote)
            log.warning("console: failed login from %s", remote)
            return self._page("login.html.j2", request, status=401, title="Log in", error="That token is not valid.")
        sid, _ = self.sessions.open(analyst)
        log.info("console: %s (%s) logged in from %s", analyst.name, analyst.role, remote)
        response = web.HTTPSeeOther("/campaigns")
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/", secure=_behind_tls(request),
                            max_age=int(self.sessions.ttl_seconds))
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.close(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- pages --------------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/campaigns")

    async def campaigns(self, request: web.Request) -> web.Response:
        q = request.query
        query, action = q.get("q", "").strip()[:200], q.get("action", "")
        sort = q.get("sort", "score") if q.get("sort") in pages.SORTS else "score"
        descending = q.get("dir", "desc") != "asc"
        page = _int(q.get("page"), 1)
        if action and action not in SEVERITY:
            action = ""

        def read(con: Any) -> tuple[dict, list, int]:
            summary = pages.store_summary(con)
            if summary["scan_id"] is None:
                return summary, [], 0
            rows, total = pages.campaigns(con, summary["scan_id"], query, action, sort, descending, page)
            return summary, rows, total

        summary, rows, total = await self._read(read)
        held = await self._in_force()
        for row in rows:
            row["override"] = held.get(act.key_of("campaign", row["campaign_id"]))
        pages_total = max(1, math.ceil(total / pages.PER_PAGE))

        def link(**change: Any) -> str:
            params = {"q": query, "action": action, "sort": sort, "dir": "desc" if descending else "asc",
                      "page": page} | change
            return "/campaigns?" + urlencode({k: v for k, v in params.items() if v not in ("", None)})

        return self._page("campaigns.html.j2", request, title="Campaigns", summary=summary, rows=rows,
                          total=total, page=page, pages_total=pages_total, query=query, action=action, sort=sort,
                          descending=descending, link=link, actions=list(SEVERITY))

    async def campaign(self, request: web.Request) -> web.Response:
        campaign_id = request.match_info["campaign_id"]

        def read(con: Any) -> dict | None:
            scan_id = pages.latest_scan(con)
            return pages.campaign(con, scan_id, campaign_id) if scan_id else None

        data = await self._read(read)
        if data is None:
            return self._page("error.html.j2", request, status=404, title="Not found",
                              message=f"No campaign {campaign_id} in the latest scan.")
        s = data["sections"]
        timeline = s["timeline"]["rows"]
        caps = s["capabilities"]
        charts = {"timeline": svg.timeline([r[0] for r in timeline], [r[1] for r in timeline], [r[3] for r in timeline]),
                  "capabilities": _capability_chart(caps)}
        held = (await self._in_force()).get(act.key_of("campaign", campaign_id))
        return self._page("campaign.html.j2", request, title=campaign_id, campaign_id=campaign_id, d=data,
                          s=s, charts=charts, override=held, reports=list(REPORTS),
                          actions=act.ACTIONS)

    async def graph(self, request: web.Request) -> web.Response:
        campaign_id = request.match_info["campaign_id"]

        def read(con: Any) -> dict:
            scan_id = pages.latest_scan(con)
            return pages.graph(con, scan_id, campaign_id) if scan_id else {"nodes": [], "edges": []}

        return web.Response(body=orjson.dumps(await self._read(read)), content_type="application/json")

    async def report(self, request: web.Request) -> web.Response:
        campaign_id, fmt = request.match_info["campaign_id"], request.match_info["fmt"]
        if fmt not in REPORTS or fmt not in FORMATS:
            raise web.HTTPNotFound(text="unknown report format")

        def write() -> tuple[bytes, str]:
            with tempfile.TemporaryDirectory(prefix="dg-console-") as tmp:
                name = {"stix": "bundle.stix.json"}.get(fmt, f"report.{fmt}")
                with Store(self.db, read_only=True) as store:
                    written = write_report(store, Path(tmp) / name, fmt, campaign_id, None, self.redactor)
                return written[0].read_bytes(), written[0].name

        try:
            body, name = await asyncio.to_thread(write)
        except Exception as exc:  # noqa: BLE001 - the analyst sees why (a PDF needs Chromium), the log has it
            log.warning("console: %s report of %s failed: %s", fmt, campaign_id, exc)
            return self._page("error.html.j2", request, status=500, title="Report failed",
                              message=f"The {fmt} report could not be written: {exc}")
        # served as a download: the report's own page never runs under the console's origin
        return web.Response(body=body, content_type=REPORTS[fmt], headers={
            "Content-Disposition": f'attachment; filename="{campaign_id}-{name}"'})

    async def account(self, request: web.Request) -> web.Response:
        account_id = request.match_info["account_id"]

        def read(con: Any) -> dict | None:
            return pages.account(con, pages.latest_scan(con), account_id, self.redactor)

        data = await self._read(read)
        if data is None:
            return self._page("error.html.j2", request, status=404, title="Not found",
                              message=f"No account {account_id} in the store.")
        held = await self._in_force()
        campaign_id = data["verdicts"][-1]["campaign_id"] if data["verdicts"] else None
        return self._page("account.html.j2", request, title=account_id, a=data,
                          override=held.get(act.key_of("account", account_id)) if not account_id.startswith(
                              act.CAMPAIGN_KEY_PREFIX) else None,
                          campaign_override=held.get(act.key_of("campaign", campaign_id)) if campaign_id else None,
                          campaign_id=campaign_id, actions=act.ACTIONS)

    async def audit(self, request: web.Request) -> web.Response:
        rows = list(reversed(await self._audit_rows()))
        for row in rows:
            row["kind"], row["target"] = act.target_of(row["account_id"])
        return self._page("audit.html.j2", request, title="Audit", rows=rows[:1000], total=len(rows))

    # --- actions ------------------------------------------------------------------------------

    def _operator(self, request: web.Request) -> Analyst | web.Response:
        analyst = request[SESSION].analyst
        if not analyst.can_act:
            log.warning("console: %s (viewer) tried to act from %s", analyst.name, request.remote)
            return self._page("error.html.j2", request, status=403, title="Refused",
                              message=f"{analyst.name} is a viewer: only operators can act.")
        return analyst

    async def confirm(self, request: web.Request) -> web.Response:
        analyst = self._operator(request)
        if isinstance(analyst, web.Response):
            return analyst
        kind, target, action = (request.query.get(k, "") for k in ("kind", "target", "action"))
        try:
            key = act.key_of(kind, target)
        except act.ActionRefused as exc:
            return self._page("error.html.j2", request, status=400, title="Refused", message=str(exc))
        if action not in act.ACTIONS:
            action = "block"
        impact = await self._read(lambda con: pages.impact(con, pages.latest_scan(con), kind, target))
        held = (await self._in_force()).get(key)
        return self._page("act.html.j2", request, title=f"{action} {target}", kind=kind, target=target,
                          action=action, impact=impact, override=held, actions=act.ACTIONS, error=None,
                          reason="", expires_hours="")

    async def act(self, request: web.Request) -> web.Response:
        analyst = self._operator(request)
        if isinstance(analyst, web.Response):
            return analyst
        form = await request.post()
        kind, target, action = (str(form.get(k, "")) for k in ("kind", "target", "action"))
        reason, hours = str(form.get("reason", "")), str(form.get("expires_hours", "")).strip()
        try:
            key = act.key_of(kind, target)
            expires_at = None
            if hours:
                try:
                    value = float(hours)
                except ValueError:
                    raise act.ActionRefused("the expiry must be a number of hours") from None
                if not (0 < value <= 24 * 366) or math.isnan(value):
                    raise act.ActionRefused("the expiry must be between 0 and 8784 hours")
                expires_at = datetime.now(UTC) + timedelta(hours=value)
            event = await self.overrides.change(key, action, reason, analyst.name, request.remote, expires_at)
        except act.ActionRefused as exc:
            impact = await self._read(lambda con: pages.impact(con, pages.latest_scan(con), kind, target)) \
                if kind in act.KINDS else {}
            return self._page("act.html.j2", request, status=400, title="Refused", kind=kind, target=target,
                              action=action if action in act.ACTIONS else "block", impact=impact, override=None,
                              actions=act.ACTIONS, error=str(exc), reason=reason, expires_hours=hours)
        log.warning("console: %s %s %s %s: %s", analyst.name, action, kind, target, event["reason"])
        raise web.HTTPSeeOther(f"/audit#{event['event_id']}")

    async def _in_force(self) -> dict[str, dict[str, Any]]:
        try:
            return await self.overrides.in_force()
        except act.ActionRefused as exc:
            raise web.HTTPBadGateway(text=str(exc))

    async def _audit_rows(self) -> list[dict[str, Any]]:
        try:
            return await self.overrides.audit()
        except act.ActionRefused as exc:
            raise web.HTTPBadGateway(text=str(exc))


@web.middleware
async def _headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    """The security headers on every answer; a POST from another origin refused before any handler."""
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin and origin not in _own_origins(request):
        log.warning("console: POST %s from origin %s refused", request.path, origin)
        exc = web.HTTPForbidden(text="cross-origin form posts are refused")
        _secure(exc.headers, request)
        raise exc
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc.headers, request)
        raise
    _secure(response.headers, request)
    return response


def _own_origins(request: web.Request) -> set[str]:
    host = request.host
    return {f"http://{host}", f"https://{host}"}


def _secure(h: Any, request: web.Request) -> None:
    h["Content-Security-Policy"] = CSP
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "same-origin"  # no-referrer would make the browser send Origin: null on our own forms
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        h["Cache-Control"] = "no-store"


def _behind_tls(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _int(value: str | None, default: int) -> int:
    try:
        return max(1, min(int(value or default), 10**6))
    except ValueError:
        return default


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _capability_chart(section: dict) -> Any:
    rows = {r[0]: r for r in section["rows"]}
    areas = section["columns"][2:]
    if "campaign" not in rows:
        return ""
    organic = rows.get("organic", [None, None] + [0.0] * len(areas))
    return svg.capability_bars(areas, rows["campaign"][2:], organic[2:])


def serve(console: Console, host: str, port: int) -> None:
    """Run the console until interrupted."""
    log.info("console on http://%s:%d/ (store %s)", host, port, console.db)
    web.run_app(console.app(), host=host, port=port, print=None, access_log=None)
