"""``run_bench`` end to end on a tiny scale: the files it writes and what they hold."""

from __future__ import annotations

import json

import pytest

from distillguard.bench import run_bench
from distillguard.bench.prepare import cache_key
from distillguard.bench.report import BEGIN, END
from distillguard.errors import UserError
from tests.bench.tiny import TINY, shared_cache

pytestmark = pytest.mark.slow  # simulates and replays a scenario: about a minute

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    docs = out / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\nIngest numbers stay.\n\n{BEGIN}\nold figures\n{END}\n\nFooter stays.\n")
    messages: list[str] = []
    # the baselines replay in one pass; the scan's 6-hourly replay is too slow for a unit test
    results = run_bench(["alibaba-2026"], scale=TINY, seed=11, out_dir=out, docs=docs, progress=messages.append,
                        detectors=["rate_limits", "isolation_forest"], cache_dir=shared_cache(tmp_path_factory))
    return results, out, docs, messages


def test_the_bench_writes_json_markdown_and_two_plots(bench):
    results, out, _, _ = bench
    for name in ("results.json", "results.md", "leakage.png", "precision_recall.png"):
        assert (out / name).exists(), name
    assert (out / "leakage.png").read_bytes().startswith(PNG)
    assert (out / "precision_recall.png").read_bytes().startswith(PNG)
    assert json.loads((out / "results.json").read_text())["scenarios"].keys() == {"alibaba-2026"}


def test_the_json_holds_account_campaign_replay_and_cost_figures_for_every_detector(bench):
    results, *_ = bench
    scenario = results["scenarios"]["alibaba-2026"]
    assert scenario["replay_window"]["steps"] > 100  # six weeks of campaign, every 6 hours
    assert set(scenario["detectors"]) == {"rate_limits", "isolation_forest"}
    for detector, result in scenario["detectors"].items():
        throttle = result["accounts"]["throttle"]
        assert {"precision", "recall", "organic_fpr", "personas"} <= throttle.keys()
        assert "coding_agent" in throttle["personas"]
        campaign = result["campaigns"]["alibaba-2026"]["throttle"]
        assert {"accounts_caught_share", "exchanges_caught_share", "one_campaign_share"} <= campaign.keys()
        leak = result["replay"]["campaigns"]["alibaba-2026"]
        assert 0 <= leak["leaked_exchanges"] <= leak["exchanges"] == scenario["undefended_curve"][-1][1]
        assert leak["leaked_exchanges_full_scale"] == pytest.approx(leak["leaked_exchanges"] / TINY)
        assert result["cost"]["detect"]["seconds"] > 0 and result["cost"]["replay"]["seconds"] > 0
        assert results["fit"][detector]["seconds"] > 0
    assert {row["floor"] for row in results["floors"]} >= {"recall", "organic_fpr", "leakage"}


def test_each_replay_leaves_its_stops_account_by_account(bench):
    import pyarrow.parquet as pq

    results, out, _, _ = bench
    scenario = results["scenarios"]["alibaba-2026"]
    for detector, result in scenario["detectors"].items():
        path = out / "replay-stops" / f"alibaba-2026-{detector}.parquet"
        assert result["replay"]["stops_file"] == str(path)
        stops = pq.read_table(path).to_pylist()
        campaign = [r for r in stops if r["campaign_id"] == "alibaba-2026"]
        assert len(campaign) == scenario["campaigns"]["alibaba-2026"]["accounts"]
        leak = result["replay"]["campaigns"]["alibaba-2026"]
        assert sum(r["leaked_exchanges"] for r in campaign) == leak["leaked_exchanges"]
        organic = [r for r in stops if r["campaign_id"] is None]
        assert len(organic) == result["replay"]["organic_flagged"]["throttle"]["accounts"]
        assert all(r["stopped_by"] == "scan" and r["persona"] for r in organic)


def test_every_scenario_with_a_campaign_gets_the_one_feature_oracle_beside_the_detectors(bench):
    results, out, _, _ = bench
    found = results["scenarios"]["alibaba-2026"]["oracle"]
    assert set(found["ceilings"]) == {"0.0001", "0.001"}
    at_ceiling = found["ceilings"]["0.0001"]
    assert at_ceiling["best_sharing_rule"]["feature"] in ("payment_sharing", "subnet_sharing")
    assert {t["feature"] for t in at_ceiling["all"]} >= {"hour_entropy", "gap_cv", "payment_sharing"}
    assert all(t["organic_fpr"] <= 1e-4 for t in at_ceiling["all"])
    assert found["easy"] == (at_ceiling["best_feature"]["recall"] >= 0.5)
    assert "### One-feature oracle" in (out / "results.md").read_text()


def test_the_docs_block_is_the_runs_headline_table_and_replaces_only_the_detection_block(bench):
    _, out, docs, _ = bench
    text = docs.read_text()
    assert "Ingest numbers stay." in text and "Footer stays." in text and "old figures" not in text
    assert text.count(BEGIN) == text.count(END) == 1
    block = text.split(BEGIN)[1].split(END)[0]
    section = (out / "results.md").read_text()
    assert "distillguard bench --scenario alibaba-2026" in block and "| alibaba-2026 | rate_limits |" in block
    # this run replays, so its headline is campaigns and leakage; the accounts table stays in results.md
    assert "### Campaigns and leakage" in block and "### Accounts" not in block and "### Cost" not in block
    assert "### Accounts" in section and "### Cost" in section and "results.md" in block
    assert len(block.splitlines()) < len(section.splitlines())


def test_a_second_run_reuses_the_simulated_scenarios(tmp_path):
    first: list[str] = []
    run_bench(["alibaba-2026"], scale=0.001, seed=5, detectors=["rate_limits"], out_dir=tmp_path,
              replay_every_hours=0, progress=first.append)
    assert any(m.startswith("simulating alibaba-2026") for m in first)
    assert (tmp_path / "cache" / cache_key("alibaba-2026") / "scale-0.001" / "seed-5" / "store.duckdb").exists()
    again: list[str] = []
    run_bench(["alibaba-2026"], scale=0.001, seed=5, detectors=["rate_limits"], out_dir=tmp_path,
              replay_every_hours=0, progress=again.append)
    assert not any(m.startswith("simulating") for m in again)


def test_a_run_with_columns_withheld_scores_stores_without_them_and_says_so(tmp_path_factory):
    out = tmp_path_factory.mktemp("withheld")
    messages: list[str] = []
    results = run_bench(["alibaba-2026"], scale=TINY, seed=11, detectors=["rate_limits"], out_dir=out,
                        replay_every_hours=0, cache_dir=shared_cache(tmp_path_factory), progress=messages.append,
                        withhold=["user_agent"])
    assert results["run"]["withheld"] == ["user_agent"] and "--withhold user_agent" in results["run"]["command"]
    assert any(m.startswith("withholding user_agent") for m in messages)
    assert "every store without user_agent" in (out / "results.md").read_text()
    docs = out / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{BEGIN}\nthe full columns' figures\n{END}\n")
    run_bench(["alibaba-2026"], scale=TINY, seed=11, detectors=["rate_limits"], out_dir=out, replay_every_hours=0,
              cache_dir=shared_cache(tmp_path_factory), docs=docs, withhold=["user_agent"])
    text = docs.read_text()
    assert "the full columns' figures" in text and "<!-- detection-without-user_agent:begin -->" in text
    with pytest.raises(UserError, match="'timestamp' is required"):
        run_bench(["alibaba-2026"], scale=TINY, detectors=["rate_limits"], out_dir=out, withhold=["timestamp"])


def test_editing_a_scenario_changes_its_cache_key_so_no_stale_store_is_scored(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nbase: alibaba-2026\n")
    before = cache_key(str(path))
    assert cache_key(str(path)) == before  # the same definition: the same store
    path.write_text("name: mine\nbase: alibaba-2026\ncampaigns:\n  alibaba-2026:\n    cells: {size: 30}\n")
    assert cache_key(str(path)) != before
    assert cache_key("alibaba-2026").startswith("alibaba-2026-")


def test_an_unknown_detector_is_a_user_error_before_anything_is_simulated(tmp_path):
    with pytest.raises(UserError, match="unknown detector 'oracle'"):
        run_bench(["alibaba-2026"], scale=TINY, detectors=["oracle"], out_dir=tmp_path)
    assert not (tmp_path / "cache").exists()


def test_all_stands_for_every_shipped_scenario_with_a_campaign():
    from distillguard.bench.floors import EVASION_VARIANTS
    from distillguard.bench.run import all_scenarios

    assert "baseline" not in all_scenarios()
    assert {"alibaba-2026", *EVASION_VARIANTS} <= set(all_scenarios())


class StepByStep:
    """The rate-limit baseline without its one-pass replay: judged step by step, like the scan."""

    name = "rate_limits_stepwise"

    def __init__(self) -> None:
        from distillguard.bench.baselines.rate_limits import RateLimits

        self.inner = RateLimits()

    def fit(self, reference):
        self.inner.fit(reference)
        return self

    def detect(self, store, as_of=None):
        return self.inner.detect(store, as_of)


def test_replay_steps_in_parallel_workers_flag_what_one_process_flags(tmp_path_factory):
    from datetime import timedelta

    from distillguard.bench.prepare import prepare
    from distillguard.bench.replay import grid, replay

    detector = StepByStep()
    with prepare("baseline", TINY, 12, shared_cache(tmp_path_factory)).open() as reference:
        detector.fit(reference)
    prepared = prepare("alibaba-2026", TINY, 11, shared_cache(tmp_path_factory))
    with prepared.open(read_only=True) as store:
        first = store.con.execute('SELECT min("timestamp") FROM exchanges').fetchone()[0]
        as_ofs = grid(first + timedelta(days=12), first + timedelta(days=14), timedelta(hours=6))
        serial = replay(detector, store, as_ofs)
        parallel = replay(detector, store, as_ofs, workers=2)
    assert (serial.mode, parallel.mode, serial.workers, parallel.workers) == ("per_step", "per_step", 1, 2)
    assert serial.flags.num_rows > 0
    assert parallel.flags.sort_by("account_id").equals(serial.flags.sort_by("account_id"))


def test_between_scans_new_recruits_inherit_their_campaigns_action(tmp_path_factory):
    """The replay credits the scan with what the gateway does between scans (inherit.py): only
    campaign accounts inherit, and the campaign obtains less than with the scans alone."""
    from datetime import timedelta

    import pyarrow.compute as pc

    from distillguard.bench import metrics
    from distillguard.bench.prepare import prepare
    from distillguard.bench.replay import campaign_traffic, campaign_window, grid, replay
    from distillguard.bench.detectors import DistillguardDetector

    prepared = prepare("alibaba-2026", TINY, 11, shared_cache(tmp_path_factory))
    labels = prepared.labels
    with prepared.open(read_only=True) as store:
        window = campaign_window(store, labels, prepared.relayed)
        # four and a half days from the campaign's eighth: cells found, fresh recruits still arriving
        # (over the three days before, the scans alone catch each recruit by the next scan)
        as_ofs = grid(*window, timedelta(hours=6))[30:48]
        run = replay(DistillguardDetector(), store, as_ofs)
        leaked = {name: metrics.leakage(campaign_traffic(store, labels, prepared.relayed, as_ofs, flags),
                                        flags, TINY)["alibaba-2026"]["leaked_exchanges"]
                  for name, flags in (("inheriting", run.flags), ("scans_only", run.scans_only))}
    campaign = labels.filter(labels["campaign_id"].is_valid())["account_id"]
    inherited = run.inherited["account_id"]
    assert len(inherited) > 0 and pc.all(pc.is_in(inherited, value_set=campaign)).as_py()
    assert all(r.startswith("new account inherits throttle from campaign-") for r in
               (reasons[0] for reasons in run.inherited["reasons"].to_pylist()))
    assert leaked["inheriting"] < leaked["scans_only"]

    # the same figures account by account (replay-stops/*.parquet)
    with prepared.open(read_only=True) as store:
        stops = metrics.account_stops(campaign_traffic(store, labels, prepared.relayed, as_ofs, run.flags),
                                      run.flags, run.inherited, labels).to_pylist()
    mine = [r for r in stops if r["campaign_id"] is not None]
    assert sum(r["leaked_exchanges"] for r in mine) == leaked["inheriting"]
    by_inheritance = {r["account_id"] for r in mine if r["stopped_by"] == "inheritance"}
    assert by_inheritance and by_inheritance <= set(inherited.to_pylist())
    for r in mine:
        assert (r["first_throttle"] is None) == (r["stopped_by"] == "never")
        assert r["stopped_by"] != "never" or r["leaked_exchanges"] == r["exchanges"]
        assert 0 <= r["leaked_exchanges"] <= r["exchanges"]


def test_every_customer_stopped_by_inheritance_is_listed_with_its_reasons():
    from datetime import UTC, datetime

    import pyarrow as pa

    from distillguard.bench.run import _inherited
    from distillguard.store.verdicts import VERDICT_SCHEMA

    at = datetime(2026, 5, 1, 6, tzinfo=UTC)
    rows = pa.table({"account_id": ["c1", "o1"], "action": ["throttle", "throttle"], "score": [0.0, 0.0],
                     "campaign_id": ["k", "k"], "reasons": [["new account inherits"], ["subnet x", "scaffold y"]],
                     "as_of": [at, at]}, schema=VERDICT_SCHEMA)
    labels = pa.table({"account_id": ["c1", "o1", "o2"], "campaign_id": ["alibaba", None, None],
                       "persona": [None, "developer", "casual"]})
    summary = _inherited(rows, labels)
    assert (summary["campaign"], summary["organic"]) == (1, 1)
    assert summary["organic_stops"] == [{"account_id": "o1", "persona": "developer", "at": str(at),
                                         "action": "throttle", "campaign_id": "k",
                                         "reasons": ["subnet x", "scaffold y"]}]
