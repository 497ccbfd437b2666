"""What is in a store: a summary an engineer reads before trusting any detection."""

from __future__ import annotations

from typing import Any

from distillguard.store.database import Store, has_table


def store_stats(store: Store, top: int = 10) -> dict[str, Any]:
    """Rows, accounts, time span, exchanges per day, top models, quarantine by reason, account events."""
    con = store.con
    rows, accounts, first, last = con.execute(
        "SELECT count(*), count(DISTINCT account_id), "
        "strftime(min(timestamp), '%Y-%m-%dT%H:%M:%SZ'), strftime(max(timestamp), '%Y-%m-%dT%H:%M:%SZ') "
        "FROM exchanges").fetchone()
    per_day = con.execute(
        "SELECT strftime(date_trunc('day', timestamp), '%Y-%m-%d') AS day, count(*) "
        "FROM exchanges GROUP BY 1 ORDER BY 1").fetchall()
    models = con.execute(
        "SELECT coalesce(model, '(none)'), count(*) AS n FROM exchanges GROUP BY 1 "
        "ORDER BY n DESC, 1 LIMIT ?", [top]).fetchall()
    quarantine = con.execute(
        "SELECT reason_code, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY n DESC, 1").fetchall()
    files = con.execute("SELECT count(*), coalesce(sum(rows_in), 0) FROM ingests").fetchone()
    # sign-up and payment events (ingest --kind accounts); a store written before them has no table
    events = con.execute("SELECT count(*), count(DISTINCT account_id) FROM account_events").fetchone() \
        if has_table(con, "account_events") else (0, 0)
    return {
        "rows": rows,
        "accounts": accounts,
        "first_seen": first,
        "last_seen": last,
        "exchanges_per_day": [{"day": d, "exchanges": n} for d, n in per_day],
        "top_models": [{"model": m, "exchanges": n} for m, n in models],
        "quarantined": sum(n for _, n in quarantine),
        "quarantine_by_reason": [{"reason": r, "rows": n} for r, n in quarantine],
        "files_ingested": files[0],
        "rows_read": int(files[1]),
        "account_events": events[0],
        "accounts_with_events": events[1],
    }
