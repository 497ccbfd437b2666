"""Per-account features: pure Ibis expressions over the canonical exchanges.

Written once, run on DuckDB or Spark. Engine traps avoided on purpose: times are integer
seconds (``floor`` before the cast, since DuckDB keeps fractions and Spark truncates), distinct
counts are exact, and no engine hash function is used (fingerprints come from enrich.py).

Inputs are the exchanges already cut to the scan window and two lookup tables from enrich.py
(``ips``: ip, subnet, infra_category; ``prompts``: prompt, skeleton, cap_* flags).
"""

from __future__ import annotations

from datetime import datetime

import ibis
import ibis.expr.types as ir

from distillguard.enrich import CAPABILITIES

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


def enriched(exchanges: ir.Table, ips: ir.Table, prompts: ir.Table) -> ir.Table:
    """Exchanges with subnet, infrastructure label, skeleton and capability flags joined on."""
    ex = exchanges.mutate(ts_s=exchanges.timestamp.epoch_seconds().floor().cast("int64"))
    ex = ex.left_join(ips, ex.client_ip == ips.ip).drop("ip")
    ex = ex.left_join(prompts, ex.prompt == prompts.prompt)
    return ex.drop([c for c in ex.columns if c.endswith("_right")])


def _entropy(ex: ir.Table, part: ir.Value, name: str) -> ir.Table:
    """Shannon entropy (bits) of an account's activity over the values of ``part``."""
    counts = ex.group_by([ex.account_id, part.name("_part")]).aggregate(n=ex.count())
    totals = counts.group_by("account_id").aggregate(total=counts.n.sum())
    joined = counts.join(totals, "account_id")
    p = joined.n.cast("float64") / joined.total.cast("float64")
    return joined.group_by("account_id").aggregate(**{name: (-(p * p.log2())).sum()})


def _gaps(ex: ir.Table) -> ir.Table:
    """Regularity of inter-arrival times: coefficient of variation of the gaps (scripts ~ low)."""
    w = ibis.window(group_by=ex.account_id, order_by=[ex.ts_s, ex.exchange_id])
    gaps = ex.mutate(gap=(ex.ts_s - ex.ts_s.lag().over(w)).cast("float64"))
    gaps = gaps.filter(gaps.gap.notnull())
    stats = gaps.group_by("account_id").aggregate(gap_mean=gaps.gap.mean(), gap_std=gaps.gap.std(how="pop"),
                                                  gap_n=gaps.count())
    return stats.mutate(gap_cv=ibis.ifelse(stats.gap_mean > 0, stats.gap_std / stats.gap_mean, 0.0)).select(
        "account_id", "gap_cv", "gap_n")


def account_features(ex: ir.Table, as_of: datetime) -> ir.Table:
    """One row per account: the quantities the signals judge. ``ex`` comes from :func:`enriched`."""
    g = ex.group_by("account_id")
    base = g.aggregate(
        exchanges=ex.count(),
        first_seen=ex.timestamp.min(),
        last_seen=ex.timestamp.max(),
        created_at=ex.account_created_at.min(),
        active_days=ex.timestamp.date().nunique(),
        conversations=ex.conversation_id.nunique(),
        input_tokens=ex.input_tokens.sum(),
        output_tokens=ex.output_tokens.sum(),
        first_turn_share=(ex.turn_index.fill_null(0) == 0).cast("float64").mean(),
        long_max_tokens_share=(ex.max_tokens.fill_null(0) >= LONG_MAX_TOKENS).cast("float64").mean(),
        tools_per_request=ex.tool_count.fill_null(0).cast("float64").mean(),
        distinct_ips=ex.client_ip.nunique(),
        distinct_subnets=ex.subnet.nunique(),
        hosted_share=ex.infra_category.notnull().cast("float64").mean(),
        sdk_agent_share=_sdk_agent(ex.user_agent).cast("float64").mean(),
        distinct_prompts=ex.prompt.nunique(),
        distinct_skeletons=ex.skeleton.nunique(),
        organization_id=ex.organization_id.max(),
        email_domain=ex.email_domain.max(),
        targeted_share=(ex.cap_software_engineering.fill_null(False) | ex.cap_agentic_tool_use.fill_null(False))
        .cast("float64").mean(),
        **{f"{name}_share": ex[f"cap_{name}"].fill_null(False).cast("float64").mean() for name in CAPABILITIES},
    )
    hours = _entropy(ex, ex.timestamp.hour(), "hour_entropy")
    days = _entropy(ex, ex.timestamp.day_of_week.index(), "weekday_entropy")
    gaps = _gaps(ex)
    out = base.left_join(hours, "account_id").drop("account_id_right")
    out = out.left_join(days, "account_id").drop("account_id_right")
    out = out.left_join(gaps, "account_id").drop("account_id_right")
    age_days = (ibis.literal(as_of).epoch_seconds() - out.created_at.epoch_seconds()) / 86400.0
    return out.mutate(
        exchanges_per_active_day=out.exchanges.cast("float64") / out.active_days.cast("float64"),
        output_tokens_per_active_day=out.output_tokens.fill_null(0).cast("float64") / out.active_days.cast("float64"),
        output_input_ratio=out.output_tokens.fill_null(0).cast("float64")
        / ibis.greatest(out.input_tokens.fill_null(0), 1).cast("float64"),
        conversation_depth=out.exchanges.cast("float64") / ibis.greatest(out.conversations, 1).cast("float64"),
        account_age_days=age_days,
        prompt_repeat_share=1.0 - out.distinct_prompts.cast("float64") / out.exchanges.cast("float64"),
    )


def _sdk_agent(user_agent: ir.StringValue) -> ir.BooleanValue:
    lowered = user_agent.lower()
    test = ibis.literal(False)
    for prefix in SDK_AGENT_PREFIXES:
        test = test | lowered.startswith(prefix)
    return test.fill_null(False)
