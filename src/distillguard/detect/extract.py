"""How each evidence kind's keys are read: from a scan's exchanges, and from one gateway request.

One function per kind, named after it; detect/evidence.py declares which kind uses which. A scan
extractor takes the :class:`Sources` of one scan and returns (account_id, kind, key); a request
extractor takes one :class:`RequestFacts` and returns that request's keys of the kind, computed
as the scan computes them, so an indicator exported by a scan matches the gateway's request.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from distillguard.ingest import enrich

#: a model first used this long after the window opens was released inside it (features.NEW_MODEL_AFTER_S)
_NEW_MODEL_AFTER_S = 2 * 86400
#: width of a sign-up window token, seconds
SIGNUP_WINDOW_S = 600


@dataclass
class Sources:
    """What a scan extractor reads: ``ex`` is features.with_seconds; ``ips`` features.label_ips
    (each account's addresses); ``scaffold`` (account_id, key) each account's habitual scaffold
    n-grams; ``params`` the linkage's tunables (linkage.LinkageParams)."""

    ex: ir.Table
    ips: ir.Table | None = None
    scaffold: ir.Table | None = None
    params: Any = None
    intel: ir.Table | None = None  # imported indicators in force: (indicator_id, type, value), outside_rows
    #: sign-up and payment events in the scan's window (features.account_events), or None
    events: ir.Table | None = None

    @cached_property
    def combos(self) -> ir.Table:
        """Distinct account attributes: one pass over the exchanges for every account-level kind,
        unioned with those the account events show (an account_created event's time is the
        account's creation), so that a card or a sign-up burst counts before any traffic."""
        combos = self.ex.select("account_id", "payment_fingerprint", "user_agent", "email_domain",
                                "account_created_at").distinct()
        if self.events is None:
            return combos
        ev, types = self.events, combos.schema()
        created = ibis.ifelse(ev.event == "account_created", ev.timestamp, ibis.null())
        signed = ev.select(account_id=ev.account_id.cast(types["account_id"]),
                           payment_fingerprint=ev.payment_fingerprint.cast(types["payment_fingerprint"]),
                           user_agent=ev.user_agent.cast(types["user_agent"]),
                           email_domain=ev.email_domain.cast(types["email_domain"]),
                           account_created_at=created.cast(types["account_created_at"]))
        return ibis.union(combos, signed, distinct=True)

    def signed_up(self, column: str) -> ir.Table | None:
        """(account_id, ``column``) of the account events where it is known, or None without events."""
        if self.events is None:
            return None
        ev = self.events
        return ev.filter(ev[column].notnull()).select("account_id", column).distinct()


@dataclass(frozen=True)
class RequestFacts:
    """What a request extractor reads of one request (None: unknown)."""

    payment_fingerprint: str | None = None
    client_ip: str | None = None
    system_prompt: str | None = None
    prompt: str | None = None
    email_domain: str | None = None
    account_created_at: datetime | None = None


def _column(table: ir.Table, kind: str, column: str) -> ir.Table:
    part = table.filter(table[column].notnull())
    return part.select("account_id", kind=ibis.literal(kind), key=part[column])


def _with_sign_ups(part: ir.Table, src: Sources, column: str, kind: str) -> ir.Table:
    """``part`` unioned with the key of ``kind`` the account events show in ``column`` (text)."""
    signed = src.signed_up(column)
    if signed is None:
        return part
    keys = signed.select("account_id", kind=ibis.literal(kind), key=signed[column].cast("string"))
    return ibis.union(part, keys.cast(part.schema()), distinct=True)


def ip(src: Sources) -> ir.Table:
    # the address an account signed up or added its card from counts as one it used
    return _with_sign_ups(_column(src.ips, "ip", "client_ip"), src, "client_ip", "ip")


def subnet(src: Sources) -> ir.Table:
    part = _column(src.ips, "subnet", "subnet")
    signed = src.signed_up("client_ip")
    if signed is None:
        return part
    # the /24 of an IPv4 sign-up address, written as enrich.subnet_of writes it; an IPv6 one's /48
    # needs address arithmetic no engine shares, so it counts by its address (ip) only
    net = signed.client_ip.re_extract(r"^([0-9]+\.[0-9]+\.[0-9]+)\.[0-9]+$", 1)
    keys = signed.filter(net != "").select("account_id", kind=ibis.literal("subnet"), key=net + ".0/24")
    return ibis.union(part, keys.cast(part.schema()), distinct=True)


def payment(src: Sources) -> ir.Table:
    return _column(src.combos, "payment", "payment_fingerprint")


def user_agent(src: Sources) -> ir.Table:
    return _column(src.combos, "user_agent", "user_agent")


def signup_burst(src: Sources) -> ir.Table:
    combos = src.combos
    signup = combos.filter(combos.account_created_at.notnull() & combos.email_domain.notnull())
    return signup.select("account_id", kind=ibis.literal("signup_burst"),
                         key=signup.email_domain.lower() + "@"
                         # written out, not cast: the same text on every engine and in
                         # signup_burst_key, which the gateway computes per request
                         + signup.account_created_at.truncate("h").strftime("%Y-%m-%d %H"))


def scaffold(src: Sources) -> ir.Table:
    # habitual scaffold n-grams, found in each account's prompt sample (enrich.prompt_fingerprints)
    return src.scaffold.select("account_id", kind=ibis.literal("scaffold"), key=src.scaffold.key)


def system_prompt(src: Sources) -> ir.Table:
    # habitual system prompts (normalised text): an operation's scripts carry its own
    # (counted per raw text first, so the normalising regex runs once per distinct text)
    ex, params = src.ex, src.params
    raw = ex.filter(ex.system_prompt.notnull())
    raw = raw.group_by(["account_id", "system_prompt"]).aggregate(uses=raw.count())
    raw = raw.mutate(sp=raw.system_prompt.lower().re_replace(r"[^a-z0-9]+", " ").strip())
    totals = ex.group_by("account_id").aggregate(n_requests=ex.count())
    system = raw.group_by(["account_id", "sp"]).aggregate(uses=raw.uses.sum()).join(totals, "account_id")
    system = system.filter((system.uses >= params.scaffold_min_uses)
                           & (system.uses >= params.system_prompt_min_share * system.n_requests))
    return system.select("account_id", kind=ibis.literal("system_prompt"), key=system.sp)


def sync(src: Sources) -> ir.Table:
    # session starts (first request after a quiet gap), bucketed in slots
    ex, params = src.ex, src.params
    w = ibis.window(group_by=ex.account_id, order_by=[ex.ts_s, ex.exchange_id])
    lagged = ex.select("account_id", "ts_s", "exchange_id").mutate(prev=ex.ts_s.lag().over(w))
    starts = lagged.filter(lagged.prev.isnull() | ((lagged.ts_s - lagged.prev) > params.session_gap_s))
    return starts.select("account_id", kind=ibis.literal("sync"), key=(starts.ts_s // params.slot_s).cast("string"))


#: imported indicator type (intel/indicators.py) -> the canonical column its value is matched against
OUTSIDE_COLUMNS = {"network": "client_ip", "autonomous-system": "client_asn", "email-domain": "email_domain",
                   "user-agent": "user_agent", "payment-fingerprint": "payment_fingerprint",
                   "email-fingerprint": "email_fingerprint"}


def intel_match(src: Sources) -> ir.Table:
    # an account holds an imported indicator's id when one of its exchanges shows the value
    ex = src.ex
    if src.intel is None:
        return ex.filter(ibis.literal(False)).select("account_id", kind=ibis.literal("intel_match"),
                                                     key=ex.account_id)
    parts = []
    for kind, column in OUTSIDE_COLUMNS.items():
        wanted = src.intel.filter(src.intel.type == kind).select("indicator_id", "value")
        value = ex[column].cast("string")
        held = ex.filter(ex[column].notnull()).select(
            "account_id", value=value.lower() if kind == "email-domain" else value).distinct()
        hit = held.join(wanted, "value")
        parts.append(hit.select("account_id", kind=ibis.literal("intel_match"), key=hit.indicator_id))
    return ibis.union(*parts, distinct=True)


def outside_rows(intel: pa.Table, addresses: list[str], as_of: datetime) -> pa.Table:
    """(indicator_id, type, value) of the indicators of ``intel`` (intel.indicators.SCHEMA) valid
    at ``as_of``, each address range replaced by the ``addresses`` inside it: containment is
    tested here, once per distinct address and prefix length, so every engine joins on equality."""
    valid = [r for r in intel.select(["indicator_id", "type", "value", "valid_from", "valid_until"]).to_pylist()
             if (r["valid_from"] is None or r["valid_from"] <= as_of)
             and (r["valid_until"] is None or r["valid_until"] > as_of)]
    rows = [r for r in valid if r["type"] != "network" or "/" not in r["value"]]
    ranges: dict[tuple[int, int], dict[str, list[str]]] = {}
    for r in valid:
        if r["type"] == "network" and "/" in r["value"]:
            net = ipaddress.ip_network(r["value"])
            ranges.setdefault((net.version, net.prefixlen), {}).setdefault(str(net), []).append(r["indicator_id"])
    for address in addresses if ranges else ():
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        for (version, prefix), nets in ranges.items():
            if ip.version == version:
                for indicator_id in nets.get(str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False)), ()):
                    rows.append({"indicator_id": indicator_id, "type": "network", "value": address})
    return pa.table({k: pa.array([r[k] for r in rows], pa.string()) for k in ("indicator_id", "type", "value")})


def asn(src: Sources) -> ir.Table:
    ex = src.ex
    return _with_sign_ups(ex.filter(ex.client_asn.notnull()).select(
        "account_id", kind=ibis.literal("asn"), key=ex.client_asn.cast("string")).distinct(), src, "client_asn", "asn")


def signup_window(src: Sources) -> ir.Table:
    # from combos: the creation times of the exchanges and of the account_created events
    combos = src.combos
    created = combos.filter(combos.account_created_at.notnull()).select("account_id", "account_created_at").distinct()
    return created.select("account_id", kind=ibis.literal("signup_window"),
                          key=(created.account_created_at.epoch_seconds() // SIGNUP_WINDOW_S).cast("string"))


def pivot(src: Sources) -> ir.Table:
    ex = src.ex
    opened = ex.aggregate(opened=ex.ts_s.min())
    models = ex.filter(ex.model.notnull())
    first = models.group_by(["account_id", "model"]).aggregate(first_use=models.ts_s.min())
    released = first.group_by("model").aggregate(released=first.first_use.min()).cross_join(opened)
    new = released.filter(released.released >= released.opened + _NEW_MODEL_AFTER_S).select("model")
    uses = first.join(new, "model")
    return uses.select("account_id", kind=ibis.literal("pivot"),
                       key=uses.model + "@" + (uses.first_use // 3600).cast("int64").cast("string")).distinct()


# per request ------------------------------------------------------------------------------------

def system_prompt_key(text: str | None) -> str | None:
    """The system-prompt key of one request, as :func:`system_prompt` normalises it."""
    if not text:
        return None
    key = re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()
    return key or None


def signup_burst_key(email_domain: str | None, account_created_at: datetime | None) -> str | None:
    """The sign-up burst key of an account, as :func:`signup_burst` writes it."""
    if not email_domain or account_created_at is None:
        return None
    if account_created_at.tzinfo is not None:
        account_created_at = account_created_at.astimezone(UTC)
    return f"{email_domain.lower()}@{account_created_at:%Y-%m-%d %H}"


def payment_of_request(r: RequestFacts) -> list[str]:
    return [r.payment_fingerprint] if r.payment_fingerprint else []


def signup_burst_of_request(r: RequestFacts) -> list[str]:
    burst = signup_burst_key(r.email_domain, r.account_created_at)
    return [burst] if burst else []


def ip_of_request(r: RequestFacts) -> list[str]:
    return [r.client_ip] if r.client_ip else []


def subnet_of_request(r: RequestFacts) -> list[str]:
    net = enrich.subnet_of(r.client_ip) if r.client_ip else None
    return [net] if net else []


def system_prompt_of_request(r: RequestFacts) -> list[str]:
    sp = system_prompt_key(r.system_prompt)
    return [sp] if sp else []


def scaffold_of_request(r: RequestFacts) -> list[str]:
    return list(enrich.scaffold_keys(r.prompt)) if r.prompt else []
