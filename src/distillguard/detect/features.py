"""Per-account features: pure Ibis expressions over the canonical exchanges.

Written once, run on DuckDB or Spark. Engine traps avoided on purpose: times are integer
seconds (``floor`` before the cast, since DuckDB keeps fractions and Spark truncates), distinct
counts are exact, and no engine hash function is used (fingerprints come from enrich.py).

Inputs are the exchanges already cut to the scan window and the IP lookup table from enrich.py
(ip, subnet, infra_category). Prompt-text features (capability shares, prompt repeats) are not
computed here, over every row, but from a bounded per-account sample (:func:`prompt_sample`,
enrich.prompt_fingerprints): regular expressions over tens of millions of prompts would cost
more than the rest of the scan together.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from distillguard.store.engine import exact_sum

#: User agents that SDKs send when the caller sets none: scripts keep them, browsers and most
#: products replace them. Matched as prefixes, lower case.
SDK_AGENT_PREFIXES = ("openai/python", "openai/js", "anthropic/python", "anthropic/js", "python-httpx",
                      "python-requests", "python-urllib", "aiohttp", "go-http-client", "okhttp", "axios",
                      "node-fetch", "curl/", "undici")

#: max_tokens at or above this counts as "asks for the model's longest answers"
LONG_MAX_TOKENS = 8192


def window(exchanges: ir.Table, as_of: datetime | None, lookback_days: float | None) -> ir.Table:
    """Exchanges strictly before ``as_of`` and within ``lookback_days`` of it."""
    out = exchanges
    if as_of is not None:
        out = out.filter(out.timestamp < ibis.literal(as_of))
        if lookback_days:
            start = ibis.literal(as_of) - ibis.interval(seconds=int(lookback_days * 86400))
            out = out.filter(out.timestamp >= start)
    return out


def account_events(events: ir.Table, as_of: datetime, lookback_days: float | None) -> ir.Table:
    """The sign-up and payment events (schema.ACCOUNT_EVENT_COLUMNS, ``ingest --kind accounts``)
    that :func:`window` would keep of exchanges at the same times: the scan reads them beside the
    exchanges, so that an account counts from its sign-up on, before its first request."""
    return window(events, as_of, lookback_days)


def _with_sign_ups(base: ir.Table, events: ir.Table) -> ir.Table:
    """:func:`feature_parts`' ``base`` with the accounts' sign-up events unioned in.

    An account with exchanges takes its creation time from its ``account_created`` event where
    its exchanges carry none. An account with events and no exchanges yet gets a row of its own:
    no exchanges, seen from its first event to its last, created at its ``account_created`` event
    (else its first), its organization and e-mail domain as its events give them; the signals
    judge nothing of it (each needs exchanges), linkage and the tests judge what it shares.
    """
    signed = events.filter(events.event == "account_created").group_by("account_id").aggregate(
        signed_up=events.timestamp.min())
    known = base.left_join(signed, "account_id")
    known = known.mutate(created_at=known.created_at.fill_null(known.signed_up)).select(*base.columns)
    quiet = events.anti_join(base.select("account_id"), "account_id")
    first = quiet.timestamp.min()
    per = quiet.group_by("account_id").aggregate(
        first_seen=first, last_seen=quiet.timestamp.max(),
        created_at=ibis.ifelse(quiet.event == "account_created", quiet.timestamp, ibis.null()).min(),
        organization_id=quiet.organization_id.max(), email_domain=quiet.email_domain.lower().max())
    per = per.mutate(created_at=per.created_at.fill_null(per.first_seen), exchanges=0)
    types = base.schema()
    quiet_rows = per.select(*(per[c].cast(types[c]).name(c) if c in per.columns
                              else ibis.null().cast(types[c]).name(c) for c in base.columns))
    return known.union(quiet_rows)


def with_seconds(exchanges: ir.Table) -> ir.Table:
    """Exchanges with integer epoch seconds (``ts_s``): the same value on every engine."""
    return exchanges.mutate(ts_s=exchanges.timestamp.epoch_seconds().floor().cast("int64"))


def ip_pairs(ex: ir.Table) -> ir.Table:
    """(account_id, client_ip, n): each account's addresses and how often it used them.

    IP labels are joined on these pairs, not on every exchange: the pairs are far fewer,
    except for proxy rotation, where they are still a narrow table.
    """
    live = ex.filter(ex.client_ip.notnull())
    return live.group_by(["account_id", "client_ip"]).aggregate(n=live.count())


def label_ips(pairs: ir.Table, ips: ir.Table) -> ir.Table:
    """:func:`ip_pairs` with subnet and infra_category from enrich.ip_table."""
    return pairs.left_join(ips, pairs.client_ip == ips.ip).select(
        "account_id", "client_ip", "n", "subnet", "infra_category")


_DRAW_RANGE = 10_007  # a prime: the draw below is spread evenly over it


def prompt_sample(ex: ir.Table, per_account: int) -> ir.Table:
    """Up to ``per_account`` prompts of each account: a deterministic pseudo-random draw.

    The draw is integer arithmetic on the exchange's second (the same on every engine, and
    unrelated to content). Rows are first thinned to about twice the target per account, so
    that only those are ranked; ranking every exchange with its prompt attached dominated
    the whole scan at full scale. The sample covers the whole window, bounded by accounts
    rather than by exchanges.
    """
    counts = ex.group_by("account_id").aggregate(_n=ex.count())
    counts = counts.mutate(_cut=ibis.least(_DRAW_RANGE, (_DRAW_RANGE * 2 * per_account) // counts._n + 1))
    draw = ((ex.ts_s % 1_000_003) * 7_919 + ex.turn_index.fill_null(0) * 104_729) % _DRAW_RANGE
    rows = ex.select("account_id", "prompt", "exchange_id", _draw=draw).join(counts, "account_id")
    rows = rows.filter(rows._draw < rows._cut)
    w = ibis.window(group_by=rows.account_id, order_by=[rows._draw, rows.exchange_id])
    rows = rows.mutate(_rank=ibis.row_number().over(w))
    return rows.filter(rows._rank < per_account).select("account_id", "prompt")


def _entropies(ex: ir.Table) -> ir.Table:
    """Shannon entropy (bits) of each account's activity over hours of the day and weekdays.

    One pass: counts per (account, hour, weekday), at most 168 cells an account, and both
    entropies from those cells.
    """
    cells = ex.group_by([ex.account_id, ex.timestamp.hour().name("_hour"),
                         ex.timestamp.day_of_week.index().name("_day")]).aggregate(n=ex.count())
    out = None
    for part, name in (("_hour", "hour_entropy"), ("_day", "weekday_entropy")):
        counts = cells.group_by(["account_id", part]).aggregate(n=cells.n.sum())
        totals = counts.group_by("account_id").aggregate(total=counts.n.sum())
        joined = counts.join(totals, "account_id")
        p = joined.n.cast("float64") / joined.total.cast("float64")
        # exact_sum: a float sum over cells in thread order differed in the last bits between scans
        entropy = joined.group_by("account_id").aggregate(**{name: exact_sum(-(p * p.log2()))})
        out = entropy if out is None else out.join(entropy, "account_id")
    return out


def _gaps(ex: ir.Table) -> ir.Table:
    """Regularity of inter-arrival times: coefficient of variation of the gaps (scripts ~ low)."""
    w = ibis.window(group_by=ex.account_id, order_by=[ex.ts_s, ex.exchange_id])
    gaps = ex.mutate(gap=ex.ts_s - ex.ts_s.lag().over(w))
    gaps = gaps.filter(gaps.gap.notnull())
    # from exact integer sums of whole seconds (a square sum is at most the window squared): an
    # engine's streaming standard deviation depends on the order its threads meet the rows
    sums = gaps.group_by("account_id").aggregate(gap_n=gaps.count(), gap_sum=gaps.gap.sum(),
                                                 gap_sq=(gaps.gap * gaps.gap).sum())
    n = sums.gap_n.cast("float64")
    mean = sums.gap_sum.cast("float64") / n
    std = ibis.greatest(sums.gap_sq.cast("float64") / n - mean * mean, 0.0).sqrt()
    return sums.mutate(gap_cv=ibis.ifelse(mean > 0, std / mean, 0.0)).select("account_id", "gap_cv", "gap_n")


#: a model first seen this long after the window opens was released inside the window
NEW_MODEL_AFTER_S = 2 * 86400


def _model_pivot(ex: ir.Table) -> ir.Table:
    """Per account: how soon it moved to a model released inside the window, and how far.

    A model's release is its first sighting in the data, counted only when that is at least
    NEW_MODEL_AFTER_S after the window opens (older models merely predate the window).
    ``pivot_hours`` is the least delay from a release to the account's first use of that
    model; ``new_model_share`` the share of its exchanges on such models. A harvesting
    operation re-points its whole fleet at a new model within hours (Anthropic 2026).
    """
    opened = ex.aggregate(opened=ex.ts_s.min())
    models = ex.filter(ex.model.notnull())
    per_model = models.group_by(["account_id", "model"]).aggregate(first_use=models.ts_s.min(), n=models.count())
    firsts = per_model.group_by("model").aggregate(released=per_model.first_use.min()).cross_join(opened)
    new = firsts.filter(firsts.released >= firsts.opened + NEW_MODEL_AFTER_S).select("model", "released")
    uses = per_model.join(new, "model")
    return uses.group_by("account_id").aggregate(
        pivot_hours=((uses.first_use - uses.released).cast("float64") / 3600.0).min(),
        new_model_exchanges=uses.n.sum())


def account_features(ex: ir.Table, ips: ir.Table, as_of: datetime) -> ir.Table:
    """One row per account: the quantities the signals judge (one query; see feature_parts)."""
    return combine_features(feature_parts(ex, ips), as_of)


def feature_parts(ex: ir.Table, ips: ir.Table, events: ir.Table | None = None, judge_at: int | None = None
                  ) -> dict[str, ir.Table]:
    """The per-account parts of :func:`account_features`, each one pass over the exchanges.

    ``ex`` comes from :func:`with_seconds`, ``ips`` from :func:`label_ips`, ``events`` (sign-up
    and payment events, :func:`account_events`) add the accounts that have no exchanges yet and
    creation times the exchanges lack (:func:`_with_sign_ups`). Run as one query,
    the joined parts cost more than twice their sum at full scale (the planner re-reads and
    spills the exchanges across the joins), so the scan computes each part on its own and
    joins the small results (:func:`combine_features`). With ``judge_at``, the part ``judged``
    says when each account sent its ``judge_at``-th exchange (``judged_at``; null before it).
    """
    g = ex.group_by("account_id")
    base = g.aggregate(
        exchanges=ex.count(),
        first_seen=ex.timestamp.min(),
        last_seen=ex.timestamp.max(),
        created_at=ex.account_created_at.min(),
        input_tokens=ex.input_tokens.sum(),
        output_tokens=ex.output_tokens.sum(),
        first_turn_share=(ex.turn_index.fill_null(0) == 0).cast("float64").mean(),
        long_max_tokens_share=(ex.max_tokens.fill_null(0) >= LONG_MAX_TOKENS).cast("float64").mean(),
        tools_per_request=ex.tool_count.fill_null(0).cast("float64").mean(),
        sdk_agent_share=_sdk_agent(ex.user_agent).cast("float64").mean(),
        organization_id=ex.organization_id.max(),
        email_domain=ex.email_domain.max(),
    )
    if events is not None:
        base = _with_sign_ups(base, events)
    dates = ex.group_by([ex.account_id, ex.timestamp.date().name("_date")]).aggregate()
    days = dates.group_by("account_id").aggregate(active_days=dates.count())
    network = ips.group_by("account_id").aggregate(
        distinct_ips=ips.count(),  # the pairs are distinct already
        distinct_subnets=ips.subnet.nunique(),
        hosted_exchanges=ips.infra_category.notnull().ifelse(ips.n, 0).sum())
    parts = {"base": base, "days": days, "network": network, "entropies": _entropies(ex),
             "model_pivot": _model_pivot(ex), "gaps": _gaps(ex)}
    if judge_at is not None:
        parts["judged"] = _judged(ex, judge_at)
    return parts


def _judged(ex: ir.Table, count: int) -> ir.Table:
    """Per account with at least ``count`` exchanges: when its ``count``-th arrived (judged_at)."""
    ranked = ex.select("account_id", "timestamp",
                       _n=ibis.row_number().over(group_by="account_id", order_by="timestamp"))
    nth = ranked.filter(ranked._n == count - 1)
    return nth.group_by("account_id").aggregate(judged_at=nth.timestamp.min())


def combine_features(parts: dict[str, ir.Table], as_of: datetime) -> ir.Table:
    """:func:`feature_parts` joined on the account, with the derived ratios."""
    out = parts["base"]
    for name in ("days", "network", "entropies", "model_pivot", "gaps", "judged"):
        if name in parts:
            out = out.left_join(parts[name], "account_id").drop("account_id_right")
    age_days = (ibis.literal(as_of).epoch_seconds() - out.created_at.epoch_seconds()) / 86400.0
    # greatest(.., 1): an account with sign-up events and no exchanges yet has shares of 0, not NaN
    per_exchange = ibis.greatest(out.exchanges, 1).cast("float64")
    return out.mutate(
        exchanges_per_active_day=out.exchanges.cast("float64") / out.active_days.cast("float64"),
        output_tokens_per_active_day=out.output_tokens.fill_null(0).cast("float64") / out.active_days.cast("float64"),
        output_input_ratio=out.output_tokens.fill_null(0).cast("float64")
        / ibis.greatest(out.input_tokens.fill_null(0), 1).cast("float64"),
        # conversations counted by their opening turn (first_turn_share x exchanges): a distinct
        # count of tens of millions of conversation ids costs more than all the other features
        conversations=(out.first_turn_share * out.exchanges).round().cast("int64"),
        conversation_depth=1.0 / ibis.greatest(out.first_turn_share, 1.0 / per_exchange),
        account_age_days=age_days,
        distinct_ips=out.distinct_ips.fill_null(0),
        distinct_subnets=out.distinct_subnets.fill_null(0),
        hosted_share=out.hosted_exchanges.fill_null(0).cast("float64") / per_exchange,
        new_model_share=out.new_model_exchanges.fill_null(0).cast("float64") / per_exchange,
    ).drop("new_model_exchanges", "hosted_exchanges")


def _sdk_agent(user_agent: ir.StringValue) -> ir.BooleanValue:
    lowered = user_agent.lower()
    test = ibis.literal(False)
    for prefix in SDK_AGENT_PREFIXES:
        test = test | lowered.startswith(prefix)
    return test.fill_null(False)


#: what :func:`activity_digest` reads of each account: facts of its traffic, none of its name
DIGESTED = ("exchanges", "first_seen", "last_seen", "created_at", "input_tokens", "output_tokens")


def activity_digest(feats: pa.Table) -> dict[str, str]:
    """account -> a digest of what it did (its DIGESTED features): an order of the accounts
    that is pseudo-random, the same on every engine and in every scan of one store, and
    unchanged when the accounts are renamed. Accounts with equal digests did the same to the
    microsecond; only between those does an order have to fall back on names.
    """
    def text(value: object) -> str:
        return "" if value is None else value.isoformat() if isinstance(value, datetime) else str(value)

    columns = [feats.column(c).to_pylist() for c in DIGESTED]
    return {account: hashlib.blake2b("|".join(map(text, values)).encode(), digest_size=8).hexdigest()
            for account, *values in zip(feats.column("account_id").to_pylist(), *columns)}
