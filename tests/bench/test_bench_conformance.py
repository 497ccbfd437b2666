"""Every registered detector passes the public conformance suite (distillguard.bench.checks), and
the suite catches detectors that break the contract it states.

A registered detector that cannot meet a check is listed in EXCEPTIONS with the reason, which
the report shows as excused; nothing is skipped silently.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest

from distillguard.bench.checks import CHECKS, check_detector
from distillguard.bench.registry import DETECTORS, build
from distillguard.store import Store
from distillguard.store.verdicts import VERDICT_SCHEMA
from tests.bench.tiny import shared_cache

#: detector -> {check: why the detector is excused from it}
EXCEPTIONS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return shared_cache(tmp_path_factory)


# each detector fits and detects on every check's population: 7 s for the rate limits, about 75 s
# for the scan; make test-fast runs the checks on the small detectors below instead
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_registered_detector_passes_the_conformance_checks(name, cache):
    (detector,) = build([name])
    report = check_detector(detector, cache_dir=cache, exceptions=EXCEPTIONS.get(name))
    assert report.ok, str(report)
    assert set(report.passed) | set(report.excused) | set(report.not_applicable) == {c.name for c in CHECKS}


class AllowsEveryone:
    """The smallest detector that keeps the contract: every account seen before as_of, allowed."""

    name = "allows_everyone"

    def fit(self, reference: Store) -> "AllowsEveryone":
        return self

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table:
        where, params = ("", {}) if as_of is None else ('WHERE "timestamp" < $as_of', {"as_of": as_of})
        accounts = sorted(a for (a,) in store.con.execute(
            f"SELECT DISTINCT account_id FROM exchanges {where}", params).fetchall())
        return self.verdicts(accounts, as_of)

    def verdicts(self, accounts: list[str], as_of: datetime | None) -> pa.Table:
        actions = self.actions(accounts)
        return pa.table({
            "account_id": accounts, "action": actions,
            "score": [0.0 if a == "allow" else 1.0 for a in actions],
            "campaign_id": [None] * len(accounts),
            "reasons": [[] if a == "allow" else ["named first"] for a in actions],
            "as_of": [as_of] * len(accounts),
        }, schema=VERDICT_SCHEMA)

    def actions(self, accounts: list[str]) -> list[str]:
        return ["allow"] * len(accounts)


class JudgesAGhost(AllowsEveryone):
    """Also returns a verdict for an account that sent nothing."""

    name = "judges_a_ghost"

    def detect(self, store: Store, as_of: datetime | None = None) -> pa.Table:
        seen = super().detect(store, as_of)
        return pa.concat_tables([seen, self.verdicts(["acct_ghost"], as_of)])


class BlocksTheFirstName(AllowsEveryone):
    """Blocks whichever account sorts first by id: a verdict that follows names, not behaviour."""

    name = "blocks_the_first_name"

    def actions(self, accounts: list[str]) -> list[str]:
        return ["block" if i == 0 else "allow" for i in range(len(accounts))]


@pytest.mark.slow  # all checks on a tiny scenario, simulated first: about 8 s
def test_a_detector_that_keeps_the_contract_passes_every_check_that_applies(cache):
    report = check_detector(AllowsEveryone(), cache_dir=cache)
    assert report.ok, str(report)
    assert report.not_applicable.keys() == {"replay"}


@pytest.mark.slow  # all checks on a tiny scenario: about 4 s
def test_a_verdict_for_an_account_never_seen_fails_the_contract_and_as_of_checks(cache):
    report = check_detector(JudgesAGhost(), cache_dir=cache)
    assert {"contract", "as_of"} <= report.failed.keys()
    assert "acct_ghost" in report.failed["contract"]
    assert "judges_a_ghost" in report.failed["contract"] and "'contract'" in report.failed["contract"]


@pytest.mark.slow  # all checks on a tiny scenario: about 4 s
def test_a_verdict_that_follows_account_names_fails_the_relabelling_check_alone(cache):
    report = check_detector(BlocksTheFirstName(), cache_dir=cache)
    assert report.failed.keys() == {"relabelling"}, str(report)
    assert "block" in report.failed["relabelling"]


@pytest.mark.slow  # runs the checks on a tiny scenario, simulated first: about 13 s
def test_an_excused_check_is_reported_with_its_reason_not_run(cache):
    report = check_detector(BlocksTheFirstName(), cache_dir=cache,
                            exceptions={"relabelling": "blocks by name on purpose"})
    assert report.ok
    assert report.excused == {"relabelling": "blocks by name on purpose"}
    assert "excused relabelling: blocks by name on purpose" in str(report)


@pytest.mark.parametrize("exceptions", [{"relabeling": "a typo"}, {"relabelling": " "}])
def test_excusing_an_unknown_check_or_without_a_reason_is_refused(exceptions):
    with pytest.raises(ValueError):
        check_detector(AllowsEveryone(), exceptions=exceptions)
