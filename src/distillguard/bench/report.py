"""The benchmark as Markdown: every table of a run for its ``--out`` folder, and a compact block
of it for docs/benchmarks.md, written between markers so a new run replaces the old figures and
leaves the rest of the page alone. The docs keep only each run's headline table, so that the page
stays a short reference however many tables a run produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN = "<!-- detection:begin -->"
END = "<!-- detection:end -->"

#: the real campaign the default scenario is modelled on (alibaba-2026.yaml)
REAL_ALIBABA_EXCHANGES = 28_800_000


def pct(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return "0%" if value == 0 else f"{100 * value:.{digits}f}%"


def _count(value: float | None) -> str:
    if value is None:
        return "–"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _num(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def markdown(results: dict[str, Any], name: str = "detection") -> str:
    """Every table of the run: accounts, campaigns and leakage, cost, floors. A replay's run puts
    campaigns and leakage first, since leakage is what a replay measures (``headline`` keeps it)."""
    run = results["run"]
    machine = run["machine"]
    lines = [
        "## Detection benchmark" + ("" if name == "detection" else f": {name}"),
        "",
        f"`{run['command']}`  ",
        f"{run['date']} · {machine['cpus']} CPUs, {machine['memory_gib']:.0f} GiB, {machine['platform']} · "
        f"distillguard {run['version']}  ",
        f"Scale {run['scale']:g}, seed {run['seed']}; detectors fitted on `baseline` (organic only) simulated with "
        f"seed {run['reference_seed']}; replay every {run['replay_every_hours']:g} simulated hours"
        + (f"; every store without {', '.join(run['withheld'])}." if run.get("withheld") else "."),
        "",
        "*throttle+* = throttle, fallback or block; *monitor+* adds monitor. FPR = share of organic accounts flagged. "
        "Leakage = a campaign's own exchanges sent before its accounts were throttled in the replay "
        f"(the real Alibaba campaign obtained {_count(REAL_ALIBABA_EXCHANGES)}); *at full scale* divides by the scale. "
        "The scan's replay also models the gateway between scans: a new account showing a throttled campaign's "
        "indicators inherits its action at that request (docs/signals.md, inheritance); *scans alone* leaves that out.",
    ]
    head = len(lines)
    lines += [
        "",
        "### Accounts",
        "",
        "| scenario | detector | recall throttle+ | precision throttle+ | organic FPR throttle+ | worst persona throttle+ "
        "| recall monitor+ | organic FPR monitor+ |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for scenario, outcome in results["scenarios"].items():
        for detector, r in outcome["detectors"].items():
            t, m = r["accounts"]["throttle"], r["accounts"]["monitor"]
            worst = f"{t['worst_persona']} {pct(t['worst_persona_fpr'], 2)}" if t["worst_persona"] else "none"
            lines.append(f"| {scenario} | {detector} | {pct(t['recall'])} | {pct(t['precision'])} | "
                         f"{pct(t['organic_fpr'], 3)} | {worst} | {pct(m['recall'])} | {pct(m['organic_fpr'], 2)} |")
    lost = {name: o["quarantined_exchanges"] for name, o in
            [("baseline (reference)", results["reference"]), *results["scenarios"].items()] if o["quarantined_exchanges"]}
    if lost:
        lines += ["", "Simulated exchanges the ingest quarantined (left out of every figure): " + "; ".join(
            f"{name}: " + ", ".join(f"{n:,} {reason}" for reason, n in reasons.items())
            for name, reasons in lost.items()) + "."]
    accounts_end = len(lines)
    lines += [
        "",
        "### Campaigns and leakage",
        "",
        "| scenario | campaign | detector | accounts caught | exchanges caught | one campaign | first detection "
        "| leaked exchanges | leaked, scans alone | leaked at full scale | stopped by inheritance (campaign / organic) "
        "| organic ever throttled in replay |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, outcome in results["scenarios"].items():
        for detector, r in outcome["detectors"].items():
            replay = r.get("replay") or {}
            harmed = (replay.get("organic_flagged") or {}).get("throttle", {})
            inherited = replay.get("inherited")
            inherited = f"{inherited['campaign']} / {inherited['organic']}" if inherited else "–"
            for campaign, c in r["campaigns"].items():
                t = c["throttle"]
                leak = (replay.get("campaigns") or {}).get(campaign, {})
                ttd = leak.get("ttd_throttle_hours")
                lines.append(
                    f"| {scenario} | {campaign} | {detector} | {pct(t['accounts_caught_share'])} | "
                    f"{pct(t['exchanges_caught_share'])} | {pct(t['one_campaign_share'])} | "
                    f"{'never' if leak and ttd is None else _num(ttd) + ' h' if ttd is not None else '–'} | "
                    f"{pct(leak.get('leaked_exchanges_share'))} | "
                    f"{pct(leak.get('leaked_exchanges_share_scans_only'))} | "
                    f"{_count(leak.get('leaked_exchanges_full_scale'))} | {inherited} | "
                    f"{harmed.get('accounts', '–')} ({pct(harmed.get('fpr'), 3)}) |")
    if run["replay_every_hours"]:
        lines = lines[:head] + lines[accounts_end:] + lines[head:accounts_end]
    lines += [
        "",
        "### Cost",
        "",
        "| scenario | detector | exchanges | fit s | detect s | detect peak RSS MiB | replay mode | replay steps "
        "| replay s | replay peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for scenario, outcome in results["scenarios"].items():
        for detector, r in outcome["detectors"].items():
            fit, detect, replay = results["fit"][detector], r["cost"]["detect"], r.get("replay") or {}
            rc = replay.get("cost") or {}
            lines.append(
                f"| {scenario} | {detector} | {_count(outcome['exchanges'])} | {_num(fit['seconds'])} | "
                f"{_num(detect['seconds'])} | {_num(detect['peak_rss_mb'], '.0f')} | {replay.get('mode', '–')} | "
                f"{replay.get('steps', '–')} | {_num(rc.get('seconds'))} | {_num(rc.get('peak_rss_mb'), '.0f')} |")
    lines += _oracle(results)
    lines += _floors(results)
    return "\n".join(lines) + "\n"


def _oracle(results: dict[str, Any]) -> list[str]:
    """The one-feature oracle beside the detectors' recall (bench.oracle)."""
    scenarios = {s: o["oracle"] for s, o in results["scenarios"].items() if o.get("oracle")}
    if not scenarios:
        return []
    lines = ["", "### One-feature oracle", "",
             "Best single threshold per scenario, tuned with the labels (either direction) so that at most the "
             "ceiling's share of organic accounts is flagged; the sharing rules flag accounts sharing a card or "
             "a subnet with at least K others (best K). *Easy*: one feature alone catches half the campaign "
             "accounts at the 0.01% ceiling.", "",
             "| scenario | best feature at 0.01% | recall | best feature at 0.1% | recall | sharing rule at 0.01% "
             "| recall | easy | detectors' throttle+ recall |",
             "|---|---|---:|---|---:|---|---:|---|---|"]
    for scenario, o in scenarios.items():
        cells = []
        for ceiling, key in (("0.0001", "best_feature"), ("0.001", "best_feature"), ("0.0001", "best_sharing_rule")):
            best = (o["ceilings"].get(ceiling) or {}).get(key)
            if best is None:
                cells += ["–", "–"]
                continue
            op = ">" if best["direction"] == "above" else "<"
            threshold = "any" if best["threshold"] is None else f"{best['threshold']:.4g}"
            cells += [f"`{best['feature']}` {op} {threshold}", pct(best["recall"])]
        detectors = ", ".join(f"{d} {pct(r['accounts']['throttle']['recall'])}"
                              for d, r in results["scenarios"][scenario]["detectors"].items())
        easy = {True: "yes", False: "no", None: "–"}[o.get("easy")]
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {easy} | {detectors} |")
    return lines


def _floors(results: dict[str, Any]) -> list[str]:
    rows = results.get("floors") or []
    if not rows:
        return []
    names = list(dict.fromkeys(r["floor"] for r in rows))
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        mark = {True: "✓", False: "✗", None: "?"}[r["passed"]]
        value = r["value"]
        shown = " never" if value is None and r["passed"] is False else "" if value is None else (f" {_num(value)} h" if r["floor"].endswith("hours")
                                          else f" {pct(value, 3 if value < 0.01 else 1)}")
        cells.setdefault((r["scenario"], r["detector"]), {})[r["floor"]] = mark + shown
    targets = {r["floor"]: r for r in rows}
    header = [n if targets[n]["target"] is None
              else f"{n} ({targets[n]['comparison']} {_target(n, targets[n]['target'])})" for n in names]
    scale_note = "" if rows[0]["scale_ok"] else " **This run's scale is below 0.05, where the floors are stated.**"
    out = ["", "### Floors", "",
           f"✓ met, ✗ missed, ? not measured; blank: does not apply to the scenario.{scale_note}", "",
           "| scenario | detector | " + " | ".join(header) + " |",
           "|---|---|" + "---|" * len(names)]
    for (scenario, detector), got in cells.items():
        out.append(f"| {scenario} | {detector} | " + " | ".join(got.get(n, "") for n in names) + " |")
    return out


def _target(name: str, target: float) -> str:
    return f"{target:g} h" if name.endswith("hours") else pct(target, 2 if target < 0.01 else 0)


def markers(name: str = "detection") -> tuple[str, str]:
    """The begin and end markers of a docs block (``detection`` is BEGIN, END)."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def headline(section: str) -> str:
    """``section`` cut after its first table (its heading, command, date and main figures), with a
    line saying where the other tables are: what docs/benchmarks.md keeps of a run."""
    lines = section.rstrip("\n").split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first is None:
        return section
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    if end == len(lines):
        return section
    kept = lines[:end] + ["", "The other tables of this run are in `results.md` in its `--out` folder."]
    return "\n".join(kept) + "\n"


def write_docs(section: str, path: str | Path, name: str = "detection", compact: bool = False) -> Path:
    """Put ``section`` between the ``name`` markers of ``path`` (appended with markers if absent;
    the file is created if missing). Everything outside the markers is kept as it is, so runs
    of different scenario sets (one with the slow replay, say) each keep their own block.
    ``compact`` keeps only the section's ``headline``."""
    path = Path(path)
    if compact:
        section = headline(section)
    begin, end = markers(name)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if begin in text and end in text and text.index(begin) < text.index(end):
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
