"""A read-only TAXII 2.1 server of the STIX objects of a store's scans: ``distillguard taxii``.

Another provider's threat-intelligence platform (OpenCTI, MISP, a SIEM's TAXII feed) polls it
instead of waiting for a file: one collection, ``campaigns``, holds the objects the STIX export
would write for every scan kept in the store (stix.bundle_objects: the campaigns the policy
throttles or stops), each added when its scan was stored (``scans.scanned_at``). Ids are derived
from the campaign, so a campaign seen by two scans is one object in two versions (``modified`` is
the scan's ``as_of``) and ``match[version]`` chooses between them, as the specification means.

Implemented (TAXII 2.1, OASIS Committee Specification 01): server discovery (``/taxii2/``), the
API root, collections, a collection, get objects (``added_after``, ``limit``, ``next``,
``match[id|type|version|spec_version]``; ``more``, ``next`` and the X-TAXII-Date-Added-First/Last
headers), get an object, object versions and the manifest. Nothing can be written. Every answer
is ``application/taxii+json;version=2.1``; a bad query parameter is a 400 with a TAXII error
message, never a 500. With a token, every endpoint asks ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import duckdb
from aiohttp import web

from distillguard.errors import UserError
from distillguard.intel import actors as intel_actors
from distillguard.intel import indicators as intel_indicators
from distillguard.report import document, stix
from distillguard.report.redact import NONE, Redactor
from distillguard.store import Store

TAXII_MEDIA = "application/taxii+json;version=2.1"
STIX_MEDIA = "application/stix+json;version=2.1"
API_ROOT = "distillguard"
COLLECTION_ID = "6f3b0c2e-9a41-4d7c-8b5e-2c1d0e9f4a37"
#: the most objects one page holds, whatever ``limit`` asks (the spec lets a server lower it)
MAX_PAGE = 1000
DEFAULT_PAGE = 100
#: the largest request body the API root accepts: none is read (the server is read-only)
MAX_CONTENT_LENGTH = 0

_COLLECTION = {
    "id": COLLECTION_ID, "title": "distillguard campaigns",
    "description": ("Indicators, infrastructure and campaigns of LLM distillation operations that the "
                    "producer's policy throttles or stops, one version per scan (docs/reports.md)."),
    "alias": "campaigns", "can_read": True, "can_write": False, "media_types": [STIX_MEDIA],
}
_LOG = logging.getLogger("distillguard.taxii")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z")


class TaxiiError(Exception):
    """An answer other than 200, carried as a TAXII error message."""

    def __init__(self, status: int, title: str, description: str = "") -> None:
        super().__init__(title)
        self.status, self.title, self.description = status, title, description


@dataclass(frozen=True)
class Entry:
    """One version of one object, as the collection holds it."""

    id: str
    type: str
    version: str  # the object's modified, else created, else its date_added (an SCO has neither)
    date_added: str  # STIX timestamp, microseconds, UTC
    spec_version: str
    obj: dict


def stix_timestamp(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_timestamp(value: str, name: str) -> str:
    """A STIX timestamp of a query parameter, normalised to microseconds (comparable as text)."""
    if not _TIMESTAMP.fullmatch(value):
        raise TaxiiError(400, f"{name} is not a timestamp", f"{name} must look like 2026-01-31T12:00:00.000Z")
    try:
        parsed = datetime.fromisoformat(value[:-1][:26]).replace(tzinfo=timezone.utc)
    except ValueError as e:
        raise TaxiiError(400, f"{name} is not a timestamp", str(e)) from None
    return stix_timestamp(parsed)


def _version_of(obj: dict, date_added: str) -> str:
    stamp = obj.get("modified") or obj.get("created")
    return stix_timestamp(datetime.fromisoformat(stamp.replace("Z", "+00:00"))) if stamp else date_added


def entries_of_scans(scans: Iterable[tuple[datetime, list]]) -> list[Entry]:
    """The collection's entries from (scanned_at, STIX objects) per scan, oldest scan first: a
    version already added by an earlier scan keeps its first date_added."""
    seen: set[tuple[str, str]] = set()
    out = []
    for scanned_at, objects in scans:
        added = stix_timestamp(scanned_at)
        for obj in objects:
            data = json.loads(obj.serialize()) if hasattr(obj, "serialize") else obj
            entry = Entry(data["id"], data["type"], _version_of(data, added), added,
                          data.get("spec_version", "2.1"), data)
            if (entry.id, entry.version) not in seen:
                seen.add((entry.id, entry.version))
                out.append(entry)
    return sorted(out, key=lambda e: (e.date_added, e.id, e.version))


def load_entries(db: str, producer: str = "distillguard", tlp: str = stix.DEFAULT_TLP,
                 valid_days: int = stix.DEFAULT_VALID_DAYS, redactor: Redactor = NONE) -> list[Entry]:
    """The collection of the store ``db``: every kept scan's STIX objects (stix.bundle_objects)."""
    with Store(db, read_only=True) as store:
        con = store.con
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'scans'").fetchone()[0]:
            return []
        scans = con.execute("SELECT scan_id, scanned_at FROM scans ORDER BY scanned_at, scan_id").fetchall()
        per_scan = []
        # nothing imported goes out beyond its TLP; actors as the store last linked them
        withheld, actors = intel_indicators.withheld(con, tlp), intel_actors.stored(con)
        for scan_id, scanned_at in scans:
            doc = document.build(con, None, scan_id, redactor, store_name=store.path)
            per_scan.append((scanned_at, stix.bundle_objects(doc, producer, False, tlp, valid_days, withheld,
                                                             actors)))
    return entries_of_scans(per_scan)


def scans_fingerprint(db: str) -> tuple:
    """What changes when a scan is added to or removed from the store, indicators are imported
    (their TLP may withhold a served value) or actors relinked."""
    with Store(db, read_only=True) as store:
        if not store.con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'scans'").fetchone()[0]:
            return ()
        return (*store.con.execute("SELECT scan_id, scanned_at FROM scans ORDER BY scan_id").fetchall(),
                intel_indicators.revision(store.con))


# --- the query: untrusted parameters in, a validated filter out --------------------------------

@dataclass(frozen=True)
class Query:
    """A validated get-objects query."""

    added_after: str | None = None
    limit: int = DEFAULT_PAGE
    after: tuple[str, str, str] | None = None  # the (date_added, id, version) the page starts after
    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    versions: tuple[str, ...] = ("last",)
    spec_versions: frozenset[str] = frozenset()


def encode_cursor(entry: Entry) -> str:
    raw = json.dumps([entry.date_added, entry.id, entry.version], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[str, str, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TaxiiError(400, "next is not a cursor this server gave") from None
    if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts)):
        raise TaxiiError(400, "next is not a cursor this server gave")
    return parts[0], parts[1], parts[2]


def _values(params: Mapping[str, str], name: str) -> list[str]:
    raw = params.get(name)
    return [] if raw is None else [v.strip() for v in raw.split(",") if v.strip()]


def parse_query(params: Mapping[str, str]) -> Query:
    """The query of a get-objects or manifest request; a bad parameter is a TaxiiError(400)."""
    added_after = params.get("added_after")
    limit = DEFAULT_PAGE
    if params.get("limit") is not None:
        text = params["limit"].strip()
        if not text.isascii() or not text.isdigit() or len(text) > 9 or int(text) < 1:
            raise TaxiiError(400, "limit must be a positive integer")
        limit = min(int(text), MAX_PAGE)
    versions = tuple(_values(params, "match[version]")) or ("last",)
    versions = tuple(v if v in ("first", "last", "all") else _parse_timestamp(v, "match[version]") for v in versions)
    return Query(
        added_after=None if added_after is None else _parse_timestamp(added_after.strip(), "added_after"),
        limit=limit,
        after=None if params.get("next") is None else _decode_cursor(params["next"].strip()),
        ids=frozenset(_values(params, "match[id]")),
        types=frozenset(_values(params, "match[type]")),
        versions=versions,
        spec_versions=frozenset(_values(params, "match[spec_version]")),
    )


def select(entries: list[Entry], query: Query) -> tuple[list[Entry], bool]:
    """The page of ``entries`` (sorted by date_added, id, version) that ``query`` asks for, and
    whether more follow."""
    chosen = [e for e in entries if (not query.ids or e.id in query.ids) and (not query.types or e.type in query.types)
              and (not query.spec_versions or e.spec_version in query.spec_versions)]
    if "all" not in query.versions:
        by_id: dict[str, list[Entry]] = {}
        for e in chosen:
            by_id.setdefault(e.id, []).append(e)
        keep: set[tuple[str, str]] = set()
        for versions in by_id.values():
            ordered = sorted(versions, key=lambda e: e.version)
            for wanted in query.versions:
                if wanted == "first":
                    keep.add((ordered[0].id, ordered[0].version))
                elif wanted == "last":
                    keep.add((ordered[-1].id, ordered[-1].version))
                else:
                    keep.update((e.id, e.version) for e in ordered if e.version == wanted)
        chosen = [e for e in chosen if (e.id, e.version) in keep]
    if query.added_after is not None:
        chosen = [e for e in chosen if e.date_added > query.added_after]
    if query.after is not None:
        chosen = [e for e in chosen if (e.date_added, e.id, e.version) > query.after]
    return chosen[:query.limit], len(chosen) > query.limit


# --- the HTTP layer -----------------------------------------------------------------------------

def _answer(body: dict, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        headers={"Content-Type": TAXII_MEDIA, **(headers or {})})


def _accepts_taxii(accept: str | None) -> bool:
    if not accept:
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", "application/taxii+json"):
            version = re.search(r"version\s*=\s*([0-9.]+)", part)
            if version is None or version.group(1) == "2.1":
                return True
    return False


class Source:
    """The collection's entries, reloaded from the store when its scans change (checked at most
    every ``refresh_seconds``; a store locked by a running scan keeps the entries already served)."""

    def __init__(self, load: Callable[[], list[Entry]], fingerprint: Callable[[], tuple],
                 refresh_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.load, self.fingerprint, self.refresh_seconds, self.clock = load, fingerprint, refresh_seconds, clock
        self.entries_: list[Entry] = []
        self.fingerprint_: tuple | None = None
        self.checked_at_: float | None = None
        self._lock = asyncio.Lock()

    async def entries(self) -> list[Entry]:
        now = self.clock()
        if self.checked_at_ is not None and now - self.checked_at_ < self.refresh_seconds:
            return self.entries_
        async with self._lock:
            if self.checked_at_ is None or self.clock() - self.checked_at_ >= self.refresh_seconds:
                loop = asyncio.get_running_loop()
                try:
                    current = await loop.run_in_executor(None, self.fingerprint)
                    if current != self.fingerprint_:
                        self.entries_ = await loop.run_in_executor(None, self.load)
                        self.fingerprint_ = current
                except duckdb.Error as e:  # a scan writing the store holds its lock
                    if self.fingerprint_ is None:
                        raise
                    _LOG.warning("store not readable now (%s); serving the scans loaded before", e)
                self.checked_at_ = self.clock()
        return self.entries_


def make_app(source: Source, token: str | None = None, title: str = "distillguard") -> web.Application:
    """The TAXII 2.1 application over ``source``; ``token``: the bearer token every request must carry."""

    @web.middleware
    async def guard(request: web.Request, handler):
        try:
            if token is not None:
                given = request.headers.get("Authorization", "")
                scheme, _, value = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                    raise TaxiiError(401, "a bearer token is required")
            if not _accepts_taxii(request.headers.get("Accept")):
                raise TaxiiError(406, "this server answers application/taxii+json;version=2.1 only")
            return await handler(request)
        except TaxiiError as e:
            headers = {"WWW-Authenticate": 'Bearer realm="distillguard-taxii"'} if e.status == 401 else None
            return _answer({"title": e.title, "description": e.description, "http_status": str(e.status)},
                           e.status, headers)
        except web.HTTPException as e:  # aiohttp's own 404 and 405, as TAXII error messages
            return _answer({"title": e.reason, "http_status": str(e.status)}, e.status)

    def base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    async def discovery(request: web.Request) -> web.Response:
        root = f"{base(request)}/{API_ROOT}/"
        return _answer({"title": f"{title} TAXII server", "description": "Read-only threat intelligence of "
                        "LLM distillation campaigns (distillguard).", "default": root, "api_roots": [root]})

    async def api_root(request: web.Request) -> web.Response:
        return _answer({"title": f"{title} campaigns", "versions": [TAXII_MEDIA],
                        "max_content_length": MAX_CONTENT_LENGTH})

    async def collections(request: web.Request) -> web.Response:
        return _answer({"collections": [_COLLECTION]})

    def collection_of(request: web.Request) -> None:
        if request.match_info["collection"] not in (COLLECTION_ID, _COLLECTION["alias"]):
            raise TaxiiError(404, "no such collection", f"the one collection is {COLLECTION_ID}")

    async def collection(request: web.Request) -> web.Response:
        collection_of(request)
        return _answer(_COLLECTION)

    async def page(request: web.Request, query: Query) -> tuple[list[Entry], bool, dict]:
        entries, more = select(await source.entries(), query)
        headers = ({"X-TAXII-Date-Added-First": entries[0].date_added, "X-TAXII-Date-Added-Last": entries[-1].date_added}
                   if entries else {})
        return entries, more, headers

    def envelope(entries: list[Entry], more: bool, key: str, shape: Callable[[Entry], dict]) -> dict:
        body: dict[str, Any] = {"more": more}
        if more:
            body["next"] = encode_cursor(entries[-1])
        if entries:
            body[key] = [shape(e) for e in entries]
        return body

    async def objects(request: web.Request) -> web.Response:
        collection_of(request)
        entries, more, headers = await page(request, parse_query(request.query))
        return _answer(envelope(entries, more, "objects", lambda e: e.obj), headers=headers)

    async def manifest(request: web.Request) -> web.Response:
        collection_of(request)
        entries, more, headers = await page(request, parse_query(request.query))
        return _answer(envelope(entries, more, "objects", lambda e: {
            "id": e.id, "date_added": e.date_added, "version": e.version, "media_type": STIX_MEDIA}), headers=headers)

    def object_query(request: web.Request, all_versions: bool) -> Query:
        params = {k: v for k, v in request.query.items() if k not in ("match[id]", "match[type]")}
        if all_versions:
            params["match[version]"] = "all"
        return dataclasses.replace(parse_query(params), ids=frozenset([request.match_info["object"]]))

    async def one_object(request: web.Request) -> web.Response:
        collection_of(request)
        query = object_query(request, all_versions=False)
        entries, more, headers = await page(request, query)
        if not entries and not any(e.id in query.ids for e in await source.entries()):
            raise TaxiiError(404, "no such object in the collection")
        return _answer(envelope(entries, more, "objects", lambda e: e.obj), headers=headers)

    async def versions(request: web.Request) -> web.Response:
        collection_of(request)
        entries, more, headers = await page(request, object_query(request, all_versions=True))
        if not entries and request.query.get("next") is None:
            raise TaxiiError(404, "no such object in the collection")
        return _answer(envelope(entries, more, "versions", lambda e: e.version), headers=headers)

    app = web.Application(middlewares=[guard])
    objects_path = f"/{API_ROOT}/collections/{{collection}}/objects/"
    app.router.add_get("/taxii2/", discovery)
    app.router.add_get(f"/{API_ROOT}/", api_root)
    app.router.add_get(f"/{API_ROOT}/collections/", collections)
    app.router.add_get(f"/{API_ROOT}/collections/{{collection}}/", collection)
    app.router.add_get(objects_path, objects)
    app.router.add_get(f"/{API_ROOT}/collections/{{collection}}/manifest/", manifest)
    app.router.add_get(objects_path + "{object}/", one_object)
    app.router.add_get(objects_path + "{object}/versions/", versions)

    async def warm(app: web.Application) -> None:
        await source.entries()

    app.on_startup.append(warm)
    return app


def serve(db: str, host: str, port: int, token: str | None = None, producer: str = "distillguard",
          tlp: str = stix.DEFAULT_TLP, valid_days: int = stix.DEFAULT_VALID_DAYS, redactor: Redactor = NONE,
          refresh_seconds: float = 30.0) -> None:
    """Serve the store ``db`` until SIGINT or SIGTERM."""
    stix.tlp_marking(tlp)  # a bad level is the user's error before the port opens
    if valid_days < 1:
        raise UserError(f"--valid-days must be at least 1, got {valid_days}")
    source = Source(lambda: load_entries(db, producer, tlp, valid_days, redactor), lambda: scans_fingerprint(db),
                    refresh_seconds)
    web.run_app(make_app(source, token, producer), host=host, port=port, access_log=None,
                print=lambda _: print(f"TAXII 2.1 on http://{host}:{port}/taxii2/ (store {Path(db).name})",
                                      flush=True))


__all__ = ["COLLECTION_ID", "STIX_MEDIA", "TAXII_MEDIA", "Entry", "Query", "TaxiiError", "make_app", "parse_query",
           "select", "serve"]
