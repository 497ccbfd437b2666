"""``distillguard bench``: run detectors over simulated scenarios and score them against the truth.

For each scenario: simulate it (cached), ingest it into a store, judge every account with each
detector (account and campaign metrics), replay it in time order with detection every few
simulated hours (time to detection, leakage), and record what each run cost. Detectors are
fitted once, on an organic-only ``baseline`` simulated with another seed, so no detector ever
sees the labels or the scenario it is scored on. Results go to ``results.json`` (every figure),
``results.md`` (the tables for docs/benchmarks.md) and two PNG plots.

``make bench`` runs DEFAULT_SCENARIOS at DEFAULT_SCALE: simulating and ingesting them takes
a few minutes the first time and is cached after, and the baselines then take seconds. The
full-scale set (every shipped scenario with a campaign, ``--scenario all``) is::

    distillguard bench --scenario all --scale 1.0 --out bench-full --docs docs/benchmarks.md

It takes hours, most of it simulating and ingesting (about 15 minutes per Alibaba-sized
scenario), and the cache needs about 5 GB of disk per such scenario (plus twice that while one
is being prepared); run it on a quiet machine and keep ``bench-full/cache`` for later runs.
Detectors without a one-pass ``replay`` run ``detect`` once per replay step (176 steps for
alibaba-2026), so their replay cost is what to watch.

A scenario's result is a dictionary of sections: ``detectors``, and ``oracle`` (bench.oracle:
the best single-feature threshold and the card- and subnet-sharing rules, tuned with the labels,
beside the detectors, so that a scenario one feature alone gives away is marked easy).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard import __version__
from distillguard.bench import floors, metrics, oracle, plots, report
from distillguard.bench.cost import measured
from distillguard.bench.prepare import Prepared, prepare, withheld, withheld_name, withholdable
from distillguard.bench.registry import BASELINES, DETECTORS, build
from distillguard.bench.replay import campaign_traffic, campaign_window, grid, replay
from distillguard.errors import UserError
from distillguard.simulate import shipped_scenarios
from distillguard.store import Store
from distillguard.store.verdicts import VERDICT_SCHEMA, Detector

#: what ``make bench`` runs: the Alibaba-sized campaign and its volume-evasion variant, at the
#: smallest scale the detection floors are stated for
DEFAULT_SCENARIOS: tuple[str, ...] = ("alibaba-2026", "low-and-slow")
DEFAULT_SCALE = 0.05
DEFAULT_SEED = 7
REFERENCE_SCENARIO = "baseline"
#: the reference is simulated with ``seed + REFERENCE_SEED_OFFSET``: never the scenario's seed
REFERENCE_SEED_OFFSET = 1

Progress = Callable[[str], None]


def all_scenarios() -> list[str]:
    """Every shipped scenario with a campaign: the full benchmark set."""
    return [name for name in shipped_scenarios() if name != REFERENCE_SCENARIO]


def run_bench(
    scenarios: Sequence[str] = DEFAULT_SCENARIOS,
    scale: float = DEFAULT_SCALE,
    detectors: Sequence[str] | None = None,
    seed: int = DEFAULT_SEED,
    out_dir: str | Path = "bench-out",
    *,
    replay_every_hours: float = 6.0,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    docs: str | Path | None = None,
    docs_block: str = "detection",
    command: str | None = None,
    progress: Progress | None = None,
    withhold: Sequence[str] = (),
) -> dict[str, Any]:
    """Benchmark ``detectors`` (all registered when None) on ``scenarios`` and write the results.

    Args:
        scenarios: shipped scenario names or YAML files (comma-separated names are split);
            ``all`` stands for every shipped scenario except the organic-only reference.
        scale: multiplies every population's accounts (simulate's ``--scale``).
        detectors: registered names (bench.registry), in report order.
        seed: simulation seed of the scenarios; the reference uses ``seed + 1``.
        out_dir: receives results.json, results.md, leakage.png, precision_recall.png, and
            unless ``cache_dir`` says otherwise, ``cache/`` with the simulated stores (reused
            by later runs with the same scenario, scale and seed).
        replay_every_hours: detection interval of the time-ordered replay; 0 skips the replay.
        workers: processes for the replay steps of detectors judged step by step.
        cache_dir: where simulated stores are kept (default ``out_dir/cache``).
        docs: a Markdown file (docs/benchmarks.md) whose detection section is replaced.
        docs_block: the name of that section's markers (``<!-- NAME:begin -->``).
        command: the command line to print in the report (rebuilt from the arguments if None).
        progress: called with one line of text per stage.
        withhold: optional exchange columns every store (the reference's too) is scored without
            (bench.prepare.withheld), as logs that do not carry them would be ingested; the docs
            block is then ``docs_block`` with ``-without-COLUMN+...`` (unless it ends so already).

    Returns:
        The results dictionary written to results.json, with ``files`` (name -> path) added.

    Raises:
        UserError: unknown scenario or detector, a scale or interval that is not positive, or a
            column that cannot be withheld.
    """
    withhold = withholdable(withhold)
    suffix = f"-{withheld_name(withhold)}"
    if withhold and not docs_block.endswith(suffix):  # never over the full-column figures' block
        docs_block += suffix
    scenarios = [n for name in _names(scenarios) for n in (all_scenarios() if name == "all" else [name])]
    names = _names(detectors) if detectors else list(DETECTORS)
    if not scenarios:
        raise UserError("no scenario to benchmark")
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise UserError(f"scale must be a positive number, got {scale!r}")
    if replay_every_hours < 0:
        raise UserError(f"replay interval must be positive (or 0 for no replay), got {replay_every_hours!r}")
    say = progress or (lambda _message: None)
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    chosen = build(names)
    reference_seed = seed + REFERENCE_SEED_OFFSET

    results: dict[str, Any] = {"run": {
        "command": command or _command(scenarios, scale, names, seed, out, replay_every_hours, workers, withhold),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
        "machine": _machine(), "scenarios": scenarios, "scale": scale, "seed": seed,
        "reference_scenario": REFERENCE_SCENARIO, "reference_seed": reference_seed, "detectors": names,
        "replay_every_hours": replay_every_hours, "replay_workers": workers, "withheld": list(withhold),
    }}
    reference = withheld(prepare(REFERENCE_SCENARIO, scale, reference_seed, cache, say), withhold, say)
    results["reference"] = _facts(reference)
    results["fit"] = {}
    with reference.open() as store:
        for detector in chosen:
            say(f"fitting {detector.name} on the {REFERENCE_SCENARIO} reference")
            with measured() as cost:
                detector.fit(store)
            results["fit"][detector.name] = cost.as_dict()

    results["scenarios"] = {}
    for scenario in scenarios:
        prepared = withheld(prepare(scenario, scale, seed, cache, say), withhold, say)
        # read-only, so that replay workers can open the store beside this process
        with prepared.open(read_only=True) as store:
            results["scenarios"][prepared.scenario] = score_scenario(
                prepared, store, chosen, timedelta(hours=replay_every_hours) if replay_every_hours else None, say,
                workers, out)
        # each scenario's figures kept as soon as they exist: a long replay run that fails later
        # (or is stopped) does not lose the scenarios already measured
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.partial.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    results["floors"] = floors.evaluate(results, BASELINES)
    results["files"] = _write(results, out, docs, docs_block)
    say(f"wrote {', '.join(results['files'].values())}")
    return results


def score_scenario(prepared: Prepared, store: Store, detectors: Sequence[Detector],
                   every: timedelta | None, say: Progress, workers: int = 1,
                   out_dir: Path | None = None) -> dict[str, Any]:
    """Every figure of every detector on one prepared scenario; with ``out_dir``, each
    replay's stops account by account in ``replay-stops/SCENARIO-DETECTOR.parquet`` there."""
    # accounts the ingest kept no exchange of (quarantined) cannot be judged: leave them out
    seen = store.con.execute("SELECT DISTINCT account_id FROM exchanges").to_arrow_table()["account_id"]
    labels = prepared.labels.filter(pc.is_in(prepared.labels["account_id"], value_set=seen))
    outcome = _facts(prepared)
    outcome["campaigns"] = _campaigns(labels)
    window = campaign_window(store, labels, prepared.relayed) if every and outcome["campaigns"] else None
    as_ofs = grid(*window, every) if window else []
    traffic = campaign_traffic(store, labels, prepared.relayed, as_ofs) if as_ofs else None
    outcome["replay_window"] = None if not as_ofs else {
        "first_campaign_exchange": window[0].isoformat(), "last_campaign_exchange": window[1].isoformat(),
        "first_step": as_ofs[0].isoformat(), "last_step": as_ofs[-1].isoformat(), "steps": len(as_ofs)}
    outcome["undefended_curve"] = metrics.leakage_curve(traffic, None) if traffic is not None else []
    outcome["detectors"] = {}
    for detector in detectors:
        say(f"{prepared.scenario}: {detector.name} judging {outcome['exchanges']:,} exchanges")
        with measured() as cost:
            verdicts = detector.detect(store, None)
        judged = metrics.judge(_checked(verdicts, detector.name), labels)
        per_level = {level: metrics.campaign_metrics(judged, level) for level in metrics.LEVELS}
        result: dict[str, Any] = {
            "accounts": {level: metrics.account_metrics(judged, level) for level in metrics.LEVELS},
            "campaigns": {c: {level: per_level[level][c] for level in metrics.LEVELS} for c in outcome["campaigns"]},
            "cost": {"detect": cost.as_dict()},
        }
        if as_ofs:
            say(f"{prepared.scenario}: {detector.name} replaying {len(as_ofs)} steps")
            run = replay(detector, store, as_ofs, workers=workers, progress=lambda i, n, name=detector.name: (
                say(f"{prepared.scenario}: {name} step {i}/{n}") if i % 20 == 0 else None))
            # exact per request: an inherited flag can fall between steps
            stopped = campaign_traffic(store, labels, prepared.relayed, as_ofs, run.flags)
            leaks = metrics.leakage(stopped, run.flags, prepared.scale)
            if run.scans_only is not None:  # what inheritance between scans saved
                alone = metrics.leakage(campaign_traffic(store, labels, prepared.relayed, as_ofs, run.scans_only),
                                        run.scans_only, prepared.scale)
                for cid, figures in leaks.items():
                    figures["leaked_exchanges_share_scans_only"] = alone[cid]["leaked_exchanges_share"]
            result["replay"] = {
                "mode": run.mode, "steps": run.steps, "workers": run.workers,
                "cost": run.cost.as_dict() | {
                    "seconds_per_step": round(run.cost.seconds / run.steps, 4),
                    "slowest_step_seconds": run.slowest_step_seconds},
                "campaigns": leaks,
                "organic_flagged": metrics.organic_flagged(run.flags, labels),
                "curve": metrics.leakage_curve(stopped, run.flags),
                "inherited": _inherited(run.inherited, labels),
            }
            if out_dir is not None:
                path = Path(out_dir) / "replay-stops" / f"{prepared.scenario}-{detector.name}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(metrics.account_stops(stopped, run.flags, run.inherited, labels), path)
                result["replay"]["stops_file"] = str(path)
            result["cost"]["replay"] = result["replay"]["cost"]
        outcome["detectors"][detector.name] = result
    if outcome["campaigns"]:
        say(f"{prepared.scenario}: one-feature oracle")
        outcome["oracle"] = oracle.evaluate(oracle.scenario_table(store), labels)
    return outcome


def _inherited(rows: pa.Table | None, labels: pa.Table) -> dict[str, Any] | None:
    """Accounts stopped by inheritance between replay steps, campaign and organic (None: the
    detector exports no indicators), and every stop of an organic account with its time,
    persona and reasons: a customer stopped is the case someone must be able to examine."""
    if rows is None:
        return None
    ids = pc.unique(rows["account_id"])
    campaign = labels.filter(labels["campaign_id"].is_valid())["account_id"]
    positive = int(pc.sum(pc.is_in(ids, value_set=campaign)).as_py() or 0)
    persona = dict(zip(labels["account_id"].to_pylist(), labels["persona"].to_pylist()))
    organic = rows.filter(pc.invert(pc.is_in(rows["account_id"], value_set=campaign)))
    stops = [{"account_id": r["account_id"], "persona": persona.get(r["account_id"]), "at": str(r["as_of"]),
              "action": r["action"], "campaign_id": r["campaign_id"], "reasons": r["reasons"]}
             for r in organic.sort_by([("as_of", "ascending"), ("account_id", "ascending")]).to_pylist()]
    return {"accounts": len(ids), "campaign": positive, "organic": len(ids) - positive, "organic_stops": stops}


def _checked(verdicts: pa.Table, name: str) -> pa.Table:
    """A detector's output must be VERDICT_SCHEMA; anything else is a bug in the detector."""
    if verdicts.schema.names != VERDICT_SCHEMA.names:
        raise TypeError(f"{name}: verdict columns {verdicts.schema.names} are not {VERDICT_SCHEMA.names}")
    try:
        return verdicts.cast(VERDICT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"{name}: verdicts do not have VERDICT_SCHEMA: {exc}") from None


def _campaigns(labels: pa.Table) -> dict[str, dict[str, int]]:
    mine = labels.filter(labels["campaign_id"].is_valid())
    out = {}
    for campaign in sorted(set(mine["campaign_id"].to_pylist())):
        rows = mine.filter(pc.equal(mine["campaign_id"], campaign))
        out[campaign] = {"accounts": rows.num_rows, "exchanges": pc.sum(rows["campaign_exchanges"]).as_py() or 0}
    return out


def _facts(prepared: Prepared) -> dict[str, Any]:
    keep = ("scenario", "seed", "scale", "accounts", "exchanges", "campaign_exchanges", "relayed_exchanges",
            "stored_exchanges", "quarantined_exchanges", "simulate_seconds", "ingest_seconds")
    return {k: prepared.facts[k] for k in keep}


def _names(values: Sequence[str] | None) -> list[str]:
    return [n.strip() for v in (values or ()) for n in str(v).split(",") if n.strip()]


def _command(scenarios: list[str], scale: float, detectors: list[str], seed: int, out: Path,
             every: float, workers: int = 1, withhold: Sequence[str] = ()) -> str:
    parts = ["distillguard bench", *(f"--scenario {s}" for s in scenarios), f"--scale {scale:g}",
             f"--detectors {','.join(detectors)}", f"--seed {seed}"]
    if every != 6.0:
        parts.append(f"--replay-every-hours {every:g}")
    if workers != 1:
        parts.append(f"--workers {workers}")
    if withhold:
        parts.append(f"--withhold {','.join(withhold)}")
    return " ".join([*parts, f"--out {out}"])


def _machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = 0.0
    return {"platform": f"{platform.system()} {platform.machine()}", "cpu": model,
            "cpus": os.cpu_count(), "memory_gib": round(memory, 1), "python": platform.python_version()}


def _write(results: dict[str, Any], out: Path, docs: str | Path | None, docs_block: str) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "results.json", "markdown": out / "results.md",
             "leakage_plot": out / "leakage.png", "precision_recall_plot": out / "precision_recall.png"}
    section = report.markdown(results, docs_block)
    files["markdown"].write_text(section)
    if plots.leakage_plot(results, files["leakage_plot"]) is None:
        del files["leakage_plot"]
    plots.precision_recall_plot(results, files["precision_recall_plot"])
    if docs is not None:
        files["docs"] = report.write_docs(section, docs, docs_block, compact=True)
    listed = {name: str(path) for name, path in files.items()}
    files["json"].write_text(json.dumps(results | {"files": listed}, indent=1, default=str) + "\n")
    return listed
