"""``distillguard bench-strategies``: a detector against randomized campaign strategies.

Each strategy drawn from the simulator's family (simulate.strategies) is simulated with its own
jittered organic population, ingested (bench.prepare's cache), judged by a registered detector
(bench.registry: fitted once on an organic-only draw, then ``detect`` over the whole store),
and scored against the labels (bench.metrics). The report gives campaign-account recall at
throttle or stronger as a distribution over strategies (median, p10, worst, the worst named),
recall per knob level, the share of a campaign under one campaign id, and organic false
positives per persona pooled over every strategy and seed, with exact (Clopper–Pearson) upper
bounds, since "0 flagged of 300" bounds a rate at 1%, not at 0.

The protocol (docs/benchmarks.md): develop on ``--split dev``. ``--split heldout`` runs only
when HEAD carries a ``detector-*`` tag and the detector's code is committed, and once per tag
(benchmarks/heldout-runs.jsonl records it, before the first strategy is simulated): a change
made after seeing held-out figures moves those strategies into development, and the next
held-out report needs a new tag and a fresh salt (benchmarks/heldout.salt).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from scipy.stats import beta

from distillguard import __version__
from distillguard.bench import metrics, reach
from distillguard.bench.prepare import prepare, withheld, withheld_name, withholdable
from distillguard.bench.registry import build
from distillguard.bench.detectors import DistillguardDetector
from distillguard.bench.report import headline, write_docs
from distillguard.bench.run import _checked, _machine
from distillguard.errors import UserError
from distillguard.simulate.strategies import (
    KNOBS,
    Split,
    Strategy,
    draw_strategies,
    organic_scenario,
    strategy_scenario,
)

#: where the split's salt and the held-out run log live, relative to the repository root
SALT_FILE = Path("benchmarks/heldout.salt")
HELDOUT_LOG = Path("benchmarks/heldout-runs.jsonl")
#: the detector's code: clean and tagged before a held-out run
DETECTOR_PATHS = ("src/distillguard/detect",)
TAG_PATTERN = "detector-*"
#: the level recall is measured at, and the confidence of the false-positive upper bounds
LEVEL = "throttle"
CONFIDENCE = 0.95
#: the fitted reference is simulated with seed + REFERENCE_SEED_OFFSET, never a scored seed
REFERENCE_SEED_OFFSET = 100_000

Progress = Callable[[str], None]


# --- statistics ---------------------------------------------------------------------------------

def clopper_pearson_upper(flagged: int, accounts: int, confidence: float = CONFIDENCE) -> float | None:
    """One-sided exact upper bound on a rate seen as ``flagged`` of ``accounts``: the largest p
    with P(Binomial(accounts, p) <= flagged) >= 1 - confidence, i.e. the ``confidence`` quantile
    of Beta(flagged + 1, accounts - flagged) (Clopper & Pearson 1934). 1.0 when every account was
    flagged; None with no accounts. 0 of n gives 1 - (1 - confidence) ** (1 / n) (about 3/n)."""
    if accounts <= 0:
        return None
    if not 0 <= flagged <= accounts:
        raise ValueError(f"flagged must lie in [0, {accounts}], got {flagged}")
    if flagged == accounts:
        return 1.0
    return float(beta.ppf(confidence, flagged + 1, accounts - flagged))


def recall_distribution(recalls: dict[str, float]) -> dict[str, Any]:
    """Median, 10th percentile (numpy's linear interpolation) and worst of per-strategy recall,
    with the worst strategy named (the first in name order among ties)."""
    if not recalls:
        return {"strategies": 0, "median": None, "p10": None, "worst": None, "worst_strategy": None}
    values = np.array(list(recalls.values()), dtype=float)
    worst = min(sorted(recalls), key=lambda name: recalls[name])
    return {"strategies": len(values), "median": float(np.median(values)),
            "p10": float(np.quantile(values, 0.10)), "worst": float(values.min()), "worst_strategy": worst}


def per_knob(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Recall per knob level: strategies with the level, the mean of their recalls, and the
    pooled recall (accounts caught over accounts). ``rows``: one per strategy, with
    ``levels`` (knob -> level), ``recall``, ``accounts`` and ``caught``. Levels no strategy drew
    are listed with 0 strategies and None."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for knob in KNOBS:
        out[knob.name] = {}
        for level in knob.levels:
            mine = [r for r in rows if r["levels"][knob.name] == level.name]
            accounts = sum(r["accounts"] for r in mine)
            recalls = [r["recall"] for r in mine if r["recall"] is not None]
            out[knob.name][level.name] = {
                "strategies": len(mine),
                "mean_recall": float(np.mean(recalls)) if recalls else None,
                "pooled_recall": metrics.share(sum(r["caught"] for r in mine), accounts),
            }
    return out


def persona_false_positives(counts: dict[str, tuple[int, int]],
                            confidence: float = CONFIDENCE) -> dict[str, dict[str, Any]]:
    """Per persona, from pooled (accounts, flagged): the observed rate and its exact upper bound;
    ``(all)`` pools every persona."""
    out = {}
    total_n = sum(n for n, _ in counts.values())
    total_k = sum(k for _, k in counts.values())
    for name, (n, k) in [*sorted(counts.items()), ("(all)", (total_n, total_k))]:
        out[name] = {"accounts": n, "flagged": k, "rate": metrics.share(k, n),
                     "upper_bound": clopper_pearson_upper(k, n, confidence)}
    return out


# --- the held-out protocol ----------------------------------------------------------------------

def read_salt(path: Path) -> str:
    """The split's salt: the file's text, stripped. Raises UserError if missing or empty."""
    try:
        salt = Path(path).read_text().strip()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the split's salt ({exc.strerror})") from None
    if not salt:
        raise UserError(f"{path}: the split's salt is empty")
    return salt


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UserError(f"a held-out run needs the git repository at {repo}: git {' '.join(args)} failed "
                        f"({getattr(exc, 'stderr', '') or exc})".strip()) from None
    return done.stdout.strip()


def detector_tag(repo: Path) -> tuple[str, str]:
    """(tag, commit) of the detector a held-out run measures.

    Raises:
        UserError: HEAD carries no ``detector-*`` tag, or the detector's code (DETECTOR_PATHS)
            has uncommitted or untracked changes.
    """
    commit = _git(repo, "rev-parse", "HEAD")
    tags = sorted(t for t in _git(repo, "tag", "--points-at", "HEAD", "--list", TAG_PATTERN).splitlines() if t)
    if not tags:
        raise UserError(f"a held-out run measures a tagged detector: tag HEAD ({commit[:12]}) "
                        f"'{TAG_PATTERN}' first (git tag detector-NAME), then run it once")
    dirty = _git(repo, "status", "--porcelain", "--", *DETECTOR_PATHS)
    if dirty:
        raise UserError("a held-out run measures the tagged detector, but its code has changes: "
                        + "; ".join(dirty.splitlines()[:5]))
    return tags[-1], commit


def heldout_runs(log: Path, tag: str, organic_scale: float = 1.0,
                 withhold: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Earlier held-out runs recorded for ``tag`` at ``organic_scale`` (a run recorded without
    one was at 1) with ``withhold`` missing (recorded without: none). The same detector seen on
    a larger organic population, or without some fields, is another benchmark of the same set,
    not a change made after seeing it: one run per tag, organic scale and withheld columns."""
    if not log.exists():
        return []
    runs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in runs if r.get("tag") == tag and float(r.get("organic_scale", 1.0)) == organic_scale
            and sorted(r.get("withheld", [])) == sorted(withhold)]


def record_heldout_run(log: Path, entry: dict[str, Any]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


# --- the run ------------------------------------------------------------------------------------

def _scenario_file(strategy: Strategy, seed: int, directory: Path, organic_scale: float = 1.0) -> Path:
    """The strategy's scenario as a YAML file (bench.prepare caches stores by file and digest)."""
    scenario = strategy_scenario(strategy, seed, organic_scale)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{scenario.name}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    return path


def _organic_file(seed: int, directory: Path, organic_scale: float = 1.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    scenario = organic_scenario(seed, organic_scale)
    path = directory / f"{scenario.name}-seed{seed}.yaml"
    path.write_text(yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False))
    return path


def score_strategy(judged: pa.Table) -> dict[str, Any]:
    """Campaign figures of one judged scenario at LEVEL: accounts, caught, recall, the share of
    caught accounts under the detector's most common campaign id, and that id's share of all
    the campaign's accounts; plus per persona (accounts, flagged) of the organic accounts."""
    campaigns = metrics.campaign_metrics(judged, LEVEL)
    accounts = sum(c["accounts"] for c in campaigns.values())
    caught = sum(c["accounts_caught"] for c in campaigns.values())
    under_top = sum(round((c["one_campaign_share"] or 0) * c["accounts_caught"]) for c in campaigns.values())
    organic = metrics.account_metrics(judged, LEVEL)["personas"]
    harvesters, harvested = _harvesting(judged)
    return {
        "accounts": accounts, "caught": caught, "recall": metrics.share(caught, accounts),
        "harvesters": harvesters, "harvesters_caught": harvested,
        "under_one_id": under_top,
        "one_campaign_share": metrics.share(under_top, caught),
        "campaign_under_one_id": metrics.share(under_top, accounts),
        "personas": {name: [p["accounts"], p["flagged"]] for name, p in organic.items()},
    }


def _harvesting(judged: pa.Table) -> tuple[int, int]:
    """The campaign accounts that harvest (every one but the decoys, which send only the traffic
    of the persona they copy), and how many of them are caught at LEVEL."""
    campaign = judged["campaign_id"].is_valid().to_numpy(zero_copy_only=False)
    decoy = np.asarray(judged["role"].to_pylist(), dtype=object) == "decoy"
    caught = judged["severity"].to_numpy() >= metrics.SEVERITY[LEVEL]
    harvest = campaign & ~decoy
    return int(harvest.sum()), int((harvest & caught).sum())


def summarize(per_strategy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The report's figures from per-strategy results (each pooled over its seeds)."""
    recalls = {name: r["recall"] for name, r in per_strategy.items() if r["recall"] is not None}
    pooled: dict[str, list[int]] = {}
    for r in per_strategy.values():
        for persona, (n, k) in r["personas"].items():
            pooled.setdefault(persona, [0, 0])
            pooled[persona][0] += n
            pooled[persona][1] += k
    caught = sum(r["caught"] for r in per_strategy.values())
    one = [r["campaign_under_one_id"] for r in per_strategy.values() if r["campaign_under_one_id"] is not None]
    harvest = {name: r.get("harvest_recall") for name, r in per_strategy.items()}
    return {
        "recall": recall_distribution(recalls),
        "harvest_recall": recall_distribution({k: v for k, v in harvest.items() if v is not None}),
        "pooled_recall": metrics.share(caught, sum(r["accounts"] for r in per_strategy.values())),
        "one_campaign_share": metrics.share(sum(r["under_one_id"] for r in per_strategy.values()), caught),
        "campaign_under_one_id": {"median": float(np.median(one)) if one else None,
                                  "worst": float(min(one)) if one else None},
        "per_knob": per_knob(list(per_strategy.values())),
        "organic_false_positives": persona_false_positives({p: (n, k) for p, (n, k) in pooled.items()}),
    }


def run_strategies(
    split: Split,
    n: int,
    seed: int,
    out_dir: str | Path,
    *,
    detector: str = "distillguard",
    seeds: int = 1,
    repo: str | Path = ".",
    salt_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
    docs: str | Path | None = None,
    force: bool = False,
    command: str | None = None,
    progress: Progress | None = None,
    throttle_budgets: Sequence[float] = (),
    organic_scale: float = 1.0,
    withhold: Sequence[str] = (),
) -> dict[str, Any]:
    """Score ``detector`` on ``n`` strategies of ``split`` drawn with ``seed``, each simulated
    with ``seeds`` seeds (seed, seed + 1, ...), and write results.json and results.md to
    ``out_dir`` (and, with ``docs``, the ``strategies-SPLIT`` block of that file).

    ``throttle_budgets``: further throttle budgets (expected false throttles per organic entity)
    the distillguard detector is also scored at on the same stores, everything else of its policy
    unchanged: the operating curve, what each error budget buys (:func:`operating_curve`).

    ``organic_scale``: every organic persona with this many times the template's accounts, the
    campaign unchanged (simulate.strategies.strategy_scenario): a campaign is then a smaller share
    of the accounts, as a real one is of a provider's customers, and each persona's false-positive
    bound rests on more accounts.

    ``withhold``: optional exchange columns every store (the reference's too) is scored without
    (bench.prepare.withheld), as logs that do not carry them would be ingested: what detection
    rests on, and what it keeps where another source lacks a field. A held-out run without some
    columns is a run of its own at a tag.

    Raises:
        UserError: an unknown detector or split, a bad count, an unreadable salt, a throttle
            budget outside (0, 1] or given for another detector, a column that cannot be
            withheld, or a held-out run that the
            protocol refuses (untagged or changed detector; a second run at a tag without ``force``).
    """
    say = progress or (lambda _message: None)
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if not organic_scale > 0:
        raise UserError(f"--organic-scale must be positive, got {organic_scale:g}")
    withhold = withholdable(withhold)
    budgets = sorted(set(float(b) for b in throttle_budgets))
    if any(not 0.0 < b <= 1.0 for b in budgets):
        raise UserError(f"a throttle budget must lie in (0, 1], got {', '.join(f'{b:g}' for b in budgets)}")
    if budgets and detector != "distillguard":
        raise UserError(f"--throttle-budgets sets the distillguard policy's error budget; {detector!r} has none")
    repo = Path(repo)
    salt_path = Path(salt_file) if salt_file is not None else repo / SALT_FILE
    salt = read_salt(salt_path)
    (chosen,) = build([detector])
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    run: dict[str, Any] = {
        "command": command or f"distillguard bench-strategies --split {split} --n {n} --seed {seed} "
                              f"--seeds {seeds} --detector {detector} --organic-scale {organic_scale:g} --out {out}"
                              + (f" --withhold {','.join(withhold)}" if withhold else ""),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
        "machine": _machine(), "split": split, "n": n, "seed": seed, "seeds": seeds, "detector": detector,
        "organic_scale": organic_scale, "withheld": list(withhold),
        "salt_sha256": hashlib.sha256(salt.encode()).hexdigest()[:16], "level": LEVEL, "confidence": CONFIDENCE,
        "commit": _git_or_none(repo, "rev-parse", "HEAD"),
        "tags": _git_or_none(repo, "tag", "--points-at", "HEAD", "--list", TAG_PATTERN),
    }
    # drawn first: a draw that cannot be made (n too large) must not count as a held-out look
    strategies = draw_strategies(seed, n, split, salt=salt)
    if split == "heldout":
        tag, commit = detector_tag(repo)
        log = repo / HELDOUT_LOG
        earlier = heldout_runs(log, tag, organic_scale, withhold)
        if earlier:
            without = f"without {', '.join(withhold)} " if withhold else ""
            warning = (f"warning: the held-out set was already run for {tag} at organic scale {organic_scale:g} "
                       f"{without}({len(earlier)} time(s), first "
                       f"{earlier[0].get('date')}); figures seen once are no longer held out")
            say(warning)
            if not force:
                raise UserError(warning.removeprefix("warning: ") + "; pass --force to run it again anyway")
        run["tag"] = tag
        run["repeat_of_tag"] = bool(earlier)
        # recorded before any strategy is seen: a run stopped half-way still used the set
        record_heldout_run(log, {"tag": tag, "commit": commit, "date": run["date"], "n": n, "seed": seed,
                                 "seeds": seeds, "detector": detector, "salt_sha256": run["salt_sha256"],
                                 "organic_scale": organic_scale, **({"withheld": list(withhold)} if withhold else {}),
                                 "out": str(out), "forced": bool(earlier)})

    say(f"fitting {detector} on an organic-only draw (seed {seed + REFERENCE_SEED_OFFSET})")
    reference = prepare(str(_organic_file(seed + REFERENCE_SEED_OFFSET, cache / "scenarios", organic_scale)), 1.0,
                        seed + REFERENCE_SEED_OFFSET, cache, say)
    reference = withheld(reference, withhold, say)
    at_budget = {b: _budget_detector(b) for b in budgets}
    with reference.open(read_only=True) as store:
        chosen.fit(store)
        for other in at_budget.values():
            other.fit(store)

    per_strategy: dict[str, dict[str, Any]] = {}
    curve_rows: dict[float, dict[str, dict[str, Any]]] = {b: {} for b in budgets}
    for i, strategy in enumerate(strategies, start=1):
        totals = {"key": strategy.key, **_totals(strategy), "seeds": {}}
        for sim_seed in range(seed, seed + seeds):
            say(f"[{i}/{len(strategies)}] {strategy.name} seed {sim_seed}")
            prepared = prepare(str(_scenario_file(strategy, sim_seed, cache / "scenarios", organic_scale)), 1.0, sim_seed,
                               cache, say)
            prepared = withheld(prepared, withhold, say)
            with prepared.open(read_only=True) as store:
                verdicts = _checked(chosen.detect(store, None), detector)
                for b, other in at_budget.items():
                    _add(curve_rows[b].setdefault(strategy.name, _totals(strategy)),
                         score_strategy(metrics.judge(_checked(other.detect(store, None), detector), prepared.labels)))
                if _has_decoys(prepared.labels):
                    totals.setdefault("reaches", []).append(reach.store_reach(store, prepared.labels))
            scored = score_strategy(metrics.judge(verdicts, prepared.labels))
            totals["seeds"][str(sim_seed)] = {
                **{k: scored[k] for k in ("accounts", "caught", "recall", "campaign_under_one_id")},
                # where an organic account was flagged, and the store to look at it in
                "organic_flagged": {persona: flagged for persona, (_, flagged) in scored["personas"].items() if flagged},
                "store": str(prepared.directory)}
            _add(totals, scored)
        if "reaches" in totals:
            totals["reach"] = reach.total(totals.pop("reaches"))
        per_strategy[strategy.name] = {**totals, **_shares(totals)}
        say(f"[{i}/{len(strategies)}] recall at {LEVEL}+: {_pct(per_strategy[strategy.name]['recall'])}")

    results = {"run": run, "strategies": per_strategy, "summary": summarize(per_strategy)}
    if budgets:
        curve_rows = {b: {name: {**row, **_shares(row)} for name, row in rows.items()} for b, rows in curve_rows.items()}
        default = DistillguardDetector().policy.statistics.budget.throttle
        results["operating_curve"] = operating_curve({default: per_strategy, **curve_rows}, default)
    out.mkdir(parents=True, exist_ok=True)
    section = markdown(results)
    files = {"json": out / "results.json", "markdown": out / "results.md"}
    files["markdown"].write_text(section)
    if docs is not None:
        compact = headline(section)
        if budgets:
            compact = compact.rstrip("\n") + "\n\n" + curve_markdown(results) + "\n"
        files["docs"] = write_docs(compact, docs, docs_block(split, organic_scale, withhold))
    results["files"] = {k: str(v) for k, v in files.items()}
    files["json"].write_text(json.dumps(results, indent=1, default=str) + "\n")
    say(f"wrote {', '.join(results['files'].values())}")
    return results


def docs_block(split: str, organic_scale: float = 1.0, withhold: Sequence[str] = ()) -> str:
    """The docs block a run writes: ``strategies-SPLIT``, with ``-organicF`` at another organic
    scale and ``-without-COLUMN+...`` where columns were withheld."""
    return (f"strategies-{split}" + (f"-organic{organic_scale:g}" if organic_scale != 1.0 else "")
            + (f"-{withheld_name(withhold)}" if withhold else ""))


def _budget_detector(throttle: float) -> DistillguardDetector:
    """The distillguard detector with its policy's throttle budget set to ``throttle``."""
    base = DistillguardDetector().policy
    statistics = base.statistics.model_copy(
        update={"budget": base.statistics.budget.model_copy(update={"throttle": throttle})})
    return DistillguardDetector(base.model_copy(update={"statistics": statistics}))


def _totals(strategy: Strategy) -> dict[str, Any]:
    """A strategy's running totals over its seeds, before the first."""
    return {"levels": dict(strategy.levels), "accounts": 0, "caught": 0, "under_one_id": 0, "harvesters": 0,
            "harvesters_caught": 0, "personas": {}}


def _shares(totals: dict[str, Any]) -> dict[str, float | None]:
    """A strategy's recall and campaign-id shares from its totals, and, where it has decoys, its
    ceiling: every harvester and the decoys tied to them in two families, of its accounts
    (bench.reach)."""
    out = {"recall": metrics.share(totals["caught"], totals["accounts"]),
           "one_campaign_share": metrics.share(totals["under_one_id"], totals["caught"]),
           "campaign_under_one_id": metrics.share(totals["under_one_id"], totals["accounts"]),
           "harvest_recall": metrics.share(totals["harvesters_caught"], totals["harvesters"])}
    if "reach" in totals:
        out["ceiling"] = metrics.share(totals["harvesters"] + totals["reach"]["decoys_two"], totals["accounts"])
    return out


def _has_decoys(labels: pa.Table) -> bool:
    return bool(pc.any(pc.equal(labels.column("role"), "decoy")).as_py())


def _add(row: dict[str, Any], scored: dict[str, Any]) -> None:
    """Add one seed's scored figures to a strategy's running totals."""
    for key in ("accounts", "caught", "under_one_id", "harvesters", "harvesters_caught"):
        row[key] += scored[key]
    for persona, (pn, pk) in scored["personas"].items():
        acc = row["personas"].setdefault(persona, [0, 0])
        acc[0] += pn
        acc[1] += pk


def operating_curve(per_budget: dict[float, dict[str, dict[str, Any]]], default: float) -> list[dict[str, Any]]:
    """Per throttle budget, from its per-strategy results (as :func:`summarize` takes them): the
    recall distribution, the pooled recall, the organic accounts flagged with their upper bound,
    and the persona whose upper bound is highest; ``default`` marks the policy's own budget. In
    increasing order of the budget: what each error budget buys, and what it costs."""
    out = []
    for budget in sorted(per_budget):
        summary = summarize(per_budget[budget])
        personas = summary["organic_false_positives"]
        named = {k: v for k, v in personas.items() if k != "(all)"}
        worst = max(sorted(named), key=lambda k: named[k]["upper_bound"]) if named else None
        out.append({"throttle": budget, "default": budget == default, "recall": summary["recall"],
                    "pooled_recall": summary["pooled_recall"], "organic": personas.get("(all)"),
                    "highest_persona": None if worst is None else {"persona": worst, **named[worst]}})
    return out


def curve_markdown(results: dict[str, Any]) -> str:
    """The operating curve as a Markdown table (empty without one)."""
    curve = results.get("operating_curve") or []
    if not curve:
        return ""
    run = results["run"]
    level = int(run["confidence"] * 100)
    lines = ["### Operating curve: the throttle budget against what it buys", "",
             f"Campaign accounts and organic accounts at {run['level']} or stronger, the same stores scored with "
             f"the policy's throttle budget set to each value (expected false throttles per organic entity); "
             f"everything else of the policy as shipped.", "",
             f"| throttle budget | median | p10 | worst | pooled | organic flagged | {level}% upper bound "
             f"| highest persona bound |",
             "|---|---|---|---|---|---|---|---|"]
    for row in curve:
        organic, persona, dist = row["organic"] or {}, row["highest_persona"], row["recall"]
        worst = "n/a" if persona is None else (f"{persona['persona']}, {persona['flagged']} of {persona['accounts']:,} "
                                               f"({_pct(persona['upper_bound'], 3)})")
        lines.append(f"| {row['throttle']:g}{' (policy)' if row['default'] else ''} | {_pct(dist['median'])} "
                     f"| {_pct(dist['p10'])} | {_pct(dist['worst'])} | {_pct(row['pooled_recall'])} "
                     f"| {organic.get('flagged', 0):,} of {organic.get('accounts', 0):,} "
                     f"| {_pct(organic.get('upper_bound'), 3)} | {worst} |")
    return "\n".join(lines) + "\n"


def _git_or_none(repo: Path, *args: str) -> str | None:
    try:
        return _git(repo, *args) or None
    except UserError:
        return None


# --- the report ---------------------------------------------------------------------------------

def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _organic_line(run: dict[str, Any], personas: dict[str, dict[str, Any]]) -> str:
    """One sentence of the organic false positives, all personas pooled, with the persona whose
    upper bound is highest: what a compact docs block keeps of the persona table."""
    pooled = personas.get("(all)", {"accounts": 0, "flagged": 0, "rate": None, "upper_bound": 1.0})
    named = {k: v for k, v in personas.items() if k != "(all)"}
    worst = max(sorted(named), key=lambda k: named[k]["upper_bound"]) if named else None
    level = int(run["confidence"] * 100)
    tail = (f"; highest persona bound: {worst}, {named[worst]['flagged']} of {named[worst]['accounts']:,} "
            f"(upper bound {_pct(named[worst]['upper_bound'], 3)})") if worst else ""
    return (f"Organic accounts at {run['level']} or stronger, all personas pooled: {pooled['flagged']:,} of "
            f"{pooled['accounts']:,} ({_pct(pooled['rate'], 3)}, {level}% upper bound "
            f"{_pct(pooled['upper_bound'], 3)}){tail}.")


def _harvest_line(summary: dict[str, Any]) -> list[str]:
    """The recall distribution over the accounts that harvest, where it differs from the
    campaign accounts' (decoys drawn): what a strategy's decoys, which behave like the persona
    they copy, leave of its recall."""
    harvest, every = summary.get("harvest_recall") or {}, summary["recall"]
    if not harvest.get("strategies") or (harvest["median"], harvest["p10"], harvest["worst"]) == (
            every["median"], every["p10"], every["worst"]):
        return []
    return [f"The harvesting accounts alone (a campaign's decoys, which send only the traffic of the persona they "
            f"copy, left out): median {_pct(harvest['median'])}, p10 {_pct(harvest['p10'])}, worst "
            f"{_pct(harvest['worst'])} ({harvest['worst_strategy']}). Every campaign account:", ""]


def markdown(results: dict[str, Any]) -> str:
    """The report's Markdown: how it was run, the recall distribution, recall per knob level,
    organic false positives per persona, and every strategy's figures."""
    run, summary = results["run"], results["summary"]
    machine = run["machine"]
    dist = summary["recall"]
    lines = [
        f"## Strategy benchmark: {run['split']}"
        + (f", organic x{run['organic_scale']:g}" if run.get("organic_scale", 1.0) != 1.0 else "")
        + (f", without {', '.join(run['withheld'])}" if run.get("withheld") else ""),
        "",
        f"`{run['command']}`",
        "",
        f"{run['date']}, distillguard {run['version']}, commit {(run.get('commit') or 'unknown')[:12]}"
        f"{', tag ' + run['tag'] if run.get('tag') else ''}; {machine['cpu']}, {machine['cpus']} CPUs, "
        f"{machine['memory_gib']} GiB; detector `{run['detector']}`; {dist['strategies']} strategies x "
        f"{run['seeds']} seed(s); organic personas x{run.get('organic_scale', 1.0):g}; salt sha256 {run['salt_sha256']}.",
        "",
        _organic_line(run, summary["organic_false_positives"]),
        "",
        f"### Campaign accounts at {run['level']} or stronger",
        "",
        *_harvest_line(summary),
        *_reach_line(results["strategies"]),
        "| median | p10 | worst | worst strategy | pooled | caught under one campaign id | campaign under one id (median, worst) |",
        "|---|---|---|---|---|---|---|",
        f"| {_pct(dist['median'])} | {_pct(dist['p10'])} | {_pct(dist['worst'])} | {dist['worst_strategy'] or 'n/a'} "
        f"| {_pct(summary['pooled_recall'])} | {_pct(summary['one_campaign_share'])} "
        f"| {_pct(summary['campaign_under_one_id']['median'])}, {_pct(summary['campaign_under_one_id']['worst'])} |",
        "",
        "### Recall per knob level",
        "",
        "| knob | level | strategies | mean recall | pooled recall |",
        "|---|---|---|---|---|",
    ]
    for knob, levels in summary["per_knob"].items():
        for level, fig in levels.items():
            lines.append(f"| {knob} | {level} | {fig['strategies']} | {_pct(fig['mean_recall'])} "
                         f"| {_pct(fig['pooled_recall'])} |")
    lines += [
        "",
        f"### Organic accounts at {run['level']} or stronger, pooled over strategies and seeds",
        "",
        f"| persona | accounts | flagged | rate | {int(run['confidence'] * 100)}% upper bound (Clopper–Pearson) |",
        "|---|---|---|---|---|",
    ]
    for persona, fig in summary["organic_false_positives"].items():
        lines.append(f"| {persona} | {fig['accounts']:,} | {fig['flagged']:,} | {_pct(fig['rate'], 3)} "
                     f"| {_pct(fig['upper_bound'], 3)} |")
    flagged_stores = [(name, seed, fig) for name, r in sorted(results["strategies"].items())
                      for seed, fig in sorted(r.get("seeds", {}).items()) if fig.get("organic_flagged")]
    if flagged_stores:
        lines += ["", "Stores with organic accounts flagged:", ""]
        lines += [f"- {name}, seed {seed}: "
                  + ", ".join(f"{persona} {count}" for persona, count in sorted(fig["organic_flagged"].items()))
                  + f" (`{fig['store']}`)" for name, seed, fig in flagged_stores]
    lines += ["", "### Strategies", "",
              "| strategy (" + " / ".join(k.name for k in KNOBS) + ") | accounts | recall | under one id "
              "| harvesting accounts (decoys left out) |",
              "|---|---|---|---|---|"]
    for name, r in sorted(results["strategies"].items(), key=lambda kv: (kv[1]["recall"] or 0, kv[0])):
        lines.append(f"| {name} | {r['accounts']} | {_pct(r['recall'])} | {_pct(r['campaign_under_one_id'])} "
                     f"| {r.get('harvesters_caught', 'n/a')} of {r.get('harvesters', 'n/a')} "
                     f"({_pct(r.get('harvest_recall'))}) |")
    lines += _reach_table(results["strategies"])
    curve = curve_markdown(results)
    if curve:
        lines += ["", curve.rstrip("\n")]
    return "\n".join(lines) + "\n"


def _with_decoys(strategies: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(((name, r) for name, r in strategies.items() if r.get("reach")),
                  key=lambda kv: (kv[1]["ceiling"] or 0, kv[0]))


def _reach_line(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """One paragraph on the strategies with decoys: how many decoys are tied to their harvesters
    in two families (given the labels), what one family alone would take of the organic accounts,
    and each such strategy's ceiling beside its recall."""
    drawn = _with_decoys(strategies)
    if not drawn:
        return []
    every = reach.total([reach.Reach(**r["reach"]) for _, r in drawn])
    one = ", ".join(f"{family} {every['decoys_by_family'][family]} and {every['organic_by_family'][family]}"
                    for family in sorted(every["decoys_by_family"]))
    ceilings = "; ".join(f"{name} {_pct(r['ceiling'])} (recall {_pct(r['recall'])})" for name, r in drawn)
    return [f"Decoys tied to their own campaign's harvesters in two families or more, given the labels "
            f"(bench/reach.py): {every['decoys_two']:,} of {every['decoys']:,}, organic accounts tied the same way "
            f"{every['organic_two']:,}; in one family (decoys and organic accounts): {one}. Each strategy's ceiling, "
            f"every harvester and those decoys: {ceilings}.", ""]


def _reach_table(strategies: dict[str, dict[str, Any]]) -> list[str]:
    drawn = _with_decoys(strategies)
    if not drawn:
        return []
    families = sorted(drawn[0][1]["reach"]["decoys_by_family"])
    lines = ["", "### Decoys within reach of their harvesters (bench/reach.py, given the labels)", "",
             "| strategy | decoys | tied in 2+ families | organic tied in 2+ | "
             + " | ".join(f"{f}: decoys, organic" for f in families) + " | ceiling | recall |",
             "|---|---|---|---|" + "---|" * len(families) + "---|---|"]
    for name, r in drawn:
        x = r["reach"]
        lines.append(f"| {name} | {x['decoys']} | {x['decoys_two']} | {x['organic_two']} | "
                     + " | ".join(f"{x['decoys_by_family'][f]}, {x['organic_by_family'][f]}" for f in families)
                     + f" | {_pct(r['ceiling'])} | {_pct(r['recall'])} |")
    return lines
