"""Every registered detector passes the same checks (scikit-learn's check_estimator, River's
test_estimators): the verdict contract, empty input, as-of, determinism and, for detectors that
replay in one pass, agreement with a loop of ``detect`` calls.

A detector that cannot meet a check is listed in EXCEPTIONS with the reason, never skipped
silently.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from distillguard.bench.prepare import prepare
from distillguard.bench.registry import DETECTORS, build
from distillguard.bench.replay import Replayable, grid
from distillguard.store import Store
from distillguard.store.verdicts import ACTIONS, VERDICT_SCHEMA
from tests.test_baselines import TINY, shared_cache

#: (detector, check) -> why the detector is excused from it
EXCEPTIONS: dict[tuple[str, str], str] = {}

NAMES = sorted(DETECTORS)


def excused(name: str, check: str) -> None:
    if (name, check) in EXCEPTIONS:
        pytest.skip(EXCEPTIONS[(name, check)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    with prepare("baseline", TINY, 12, shared_cache(tmp_path_factory)).open() as store:
        yield store


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    with prepare("alibaba-2026", TINY, 11, shared_cache(tmp_path_factory)).open() as store:
        yield store


@pytest.fixture(scope="module")
def fitted(reference):
    return {d.name: d.fit(reference) for d in build(NAMES)}


def accounts_before(store: Store, as_of: datetime | None) -> set[str]:
    where = "" if as_of is None else "WHERE \"timestamp\" < $as_of"
    params = {} if as_of is None else {"as_of": as_of}
    return {a for (a,) in store.con.execute(f"SELECT DISTINCT account_id FROM exchanges {where}", params).fetchall()}


@pytest.mark.parametrize("name", NAMES)
def test_a_detector_judges_every_account_seen_once_with_the_verdict_schema(name, fitted, scenario):
    excused(name, "contract")
    verdicts = fitted[name].detect(scenario)
    assert verdicts.schema.equals(VERDICT_SCHEMA)
    assert sorted(verdicts["account_id"].to_pylist()) == sorted(accounts_before(scenario, None))
    assert set(verdicts["action"].to_pylist()) <= set(ACTIONS)
    assert 0 <= pc.min(verdicts["score"]).as_py() and pc.max(verdicts["score"]).as_py() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_every_verdict_stronger_than_allow_gives_a_reason(name, fitted, scenario):
    excused(name, "reasons")
    for verdict in fitted[name].detect(scenario).to_pylist():
        if verdict["action"] != "allow":
            assert verdict["reasons"], verdict


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_store_gives_no_verdicts(name, fitted):
    excused(name, "empty")
    with Store(":memory:") as empty:
        verdicts = fitted[name].detect(empty)
    assert verdicts.num_rows == 0 and verdicts.schema.equals(VERDICT_SCHEMA)


@pytest.mark.parametrize("name", NAMES)
def test_a_detector_judges_only_accounts_seen_before_as_of(name, fitted, scenario):
    excused(name, "as_of")
    as_of = datetime(2026, 5, 1, tzinfo=timezone.utc)
    verdicts = fitted[name].detect(scenario, as_of)
    assert set(verdicts["account_id"].to_pylist()) == accounts_before(scenario, as_of)
    assert set(verdicts["as_of"].to_pylist()) == {as_of}


@pytest.mark.parametrize("name", NAMES)
def test_the_same_reference_gives_the_same_verdicts(name, fitted, reference, scenario):
    excused(name, "determinism")
    (again,) = build([name])
    first = fitted[name].detect(scenario).sort_by("account_id")
    second = again.fit(reference).detect(scenario).sort_by("account_id")
    assert first.equals(second)


def replayable() -> list[str]:
    return [n for n in NAMES if isinstance(DETECTORS[n](), Replayable)]


@pytest.mark.parametrize("name", replayable())
@pytest.mark.parametrize("steps", ["regular", "irregular"])
def test_a_one_pass_replay_says_what_detect_says_at_every_step(name, steps, fitted, scenario):
    excused(name, "replay")
    detector = fitted[name]
    as_ofs = grid(datetime(2026, 4, 21, 20, tzinfo=timezone.utc), datetime(2026, 4, 24, tzinfo=timezone.utc),
                  timedelta(hours=6))
    if steps == "irregular":
        as_ofs = [t + timedelta(minutes=7 * i * i) for i, t in enumerate(as_ofs)]
    rows = detector.replay(scenario, as_ofs).drop_columns(["reasons"])
    latest: dict[str, dict] = {}
    for as_of in as_ofs:
        step = rows.filter(pc.equal(rows["as_of"], pa.scalar(as_of, VERDICT_SCHEMA.field("as_of").type)))
        latest.update({r["account_id"]: r for r in step.to_pylist()})
        truth = {r["account_id"]: r for r in detector.detect(scenario, as_of).to_pylist()}
        assert set(truth) == set(latest)
        for account, verdict in truth.items():
            assert latest[account]["action"] == verdict["action"], (account, as_of)
            assert latest[account]["score"] == pytest.approx(verdict["score"]), (account, as_of)
