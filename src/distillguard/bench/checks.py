"""The checks every detector passes, public so that a user can run them on a detector of their own
(the idea of scikit-learn's ``check_estimator``)::

    from distillguard.bench.checks import check_detector

    report = check_detector(MyDetector(), cache_dir="checks-cache")
    print(report)              # passed, failed (with the reason), excused, not applicable
    assert report.ok, report

A detector follows the ``Detector`` protocol (verdicts.py): a constructor that stores its
parameters, ``fit(reference)`` that learns from an organic-only store and returns the fitted
detector, and ``detect(store, as_of)`` that returns one VERDICT_SCHEMA row per account seen
before ``as_of``. The checks never fit the object they are given: they fit deep copies of it.

Each check is a function of a :class:`Workbench` (the detector, fitted once, and the stores it
judges) that raises AssertionError naming the detector, the check and what broke. A detector
that cannot meet a check is excused from it by name with a stated reason
(``check_detector(..., exceptions={"monotonicity": "why"})``); nothing is skipped silently.

The stores are shipped scenarios simulated at a tiny scale (about 500 accounts, 70,000 and
160,000 exchanges over ten weeks; seconds to build) and cached under ``cache_dir``: an
organic-only reference to fit on and a scenario with one distillation campaign to judge. The
relabelled and amplified copies that two checks judge are derived from the scenario with DuckDB
SQL and ingested into fresh stores in a scratch directory.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

import pyarrow as pa

from distillguard.bench.prepare import prepare
from distillguard.bench.replay import Replayable, grid
from distillguard.ingest import ingest_paths
from distillguard.store import Store
from distillguard.store.verdicts import ACTIONS, SEVERITY, VERDICT_SCHEMA, Detector

#: scale of the simulated stores: the smallest at which the scenario's campaign is still a campaign
SCALE = 0.002
#: (scenario, seed) fitted on: organic traffic only
REFERENCE = ("baseline", 12)
#: (scenario, seed) judged: the reference's population (another draw) plus one campaign
SCENARIO = ("alibaba-2026", 11)
#: seed of the random bijection of the relabelling check
RELABEL_SEED = 20260425
#: what the monotonicity check appends to the prompt of each second copy, so it is a new prompt
AGAIN = " (asked again)"
#: scores may differ by float rounding where a relabelling reorders a sum
SCORE_TOLERANCE = 1e-9


@dataclass
class Workbench:
    """The detector under check and the stores the checks judge.

    ``fitted`` and ``verdicts`` (its judgement of the whole scenario) are computed once and
    shared by the checks that compare against them. ``campaign_accounts`` are the accounts of
    the scenario's campaign (the simulation's labels); ``scratch`` is where derived stores go.
    """

    detector: Detector
    reference: Store
    scenario: Store
    campaign_accounts: frozenset[str]
    scratch: Path

    @property
    def name(self) -> str:
        return str(getattr(self.detector, "name", type(self.detector).__name__))

    def fresh_fit(self) -> Detector:
        """A deep copy of the detector as given, fitted on the reference."""
        return copy.deepcopy(self.detector).fit(self.reference)

    @cached_property
    def fitted(self) -> Detector:
        return self.fresh_fit()

    @cached_property
    def verdicts(self) -> pa.Table:
        return self.fitted.detect(self.scenario)

    def expect(self, holds: bool, check: str, what: str) -> None:
        """Raise AssertionError naming the detector and the check unless ``holds``."""
        if not holds:
            raise AssertionError(f"detector {self.name!r} fails check {check!r}: {what}")

    def derived(self, name: str, select: str, tables: dict[str, pa.Table]) -> Store:
        """A fresh store holding the rows of ``select`` (SQL over the scenario's ``exchanges``
        and the Arrow ``tables`` registered by name), ingested in time order."""
        parquet = self.scratch / f"{name}.parquet"
        for table_name, table in tables.items():
            self.scenario.con.register(table_name, table)
        try:
            self.scenario.con.execute(f"COPY ({select} ORDER BY \"timestamp\", exchange_id) "
                                      f"TO '{_quoted(parquet)}' (FORMAT parquet)")
        finally:
            for table_name in tables:
                self.scenario.con.unregister(table_name)
        store = Store(self.scratch / f"{name}.duckdb")
        try:
            ingest_paths(store, [parquet])
        except BaseException:
            store.close()
            raise
        parquet.unlink()
        return store


@contextmanager
def workbench(detector: Detector, cache_dir: str | Path | None = None) -> Iterator[Workbench]:
    """The detector with the check stores, prepared under ``cache_dir`` (a temporary directory,
    removed afterwards, when None). The stores are opened read-only: a detector judges them,
    it does not write to them."""
    with tempfile.TemporaryDirectory(prefix="distillguard-checks-") as scratch:
        cache = Path(cache_dir) if cache_dir is not None else Path(scratch) / "cache"
        reference = prepare(REFERENCE[0], SCALE, REFERENCE[1], cache)
        scenario = prepare(SCENARIO[0], SCALE, SCENARIO[1], cache)
        labels = scenario.labels.to_pylist()
        campaigns = sorted({r["campaign_id"] for r in labels if r["campaign_id"] is not None})
        if not campaigns:  # the shipped scenario changed under the checks: a bug, not a user error
            raise AssertionError(f"check scenario {SCENARIO[0]!r} has no campaign")
        accounts = frozenset(r["account_id"] for r in labels if r["campaign_id"] == campaigns[0])
        with reference.open(read_only=True) as ref, scenario.open(read_only=True) as scen:
            yield Workbench(detector, ref, scen, accounts, Path(scratch))


# --- the checks ------------------------------------------------------------------------------

def check_contract(bench: Workbench) -> None:
    """One verdict per account seen, with VERDICT_SCHEMA (names, types, nullability), an action
    from ACTIONS, a score in [0, 1] and at least one reason for every action stronger than allow."""
    verdicts = bench.verdicts
    bench.expect(verdicts.schema.equals(VERDICT_SCHEMA), "contract",
                 f"schema\n{verdicts.schema}\nis not VERDICT_SCHEMA\n{VERDICT_SCHEMA}")
    judged = verdicts["account_id"].to_pylist()
    twice = sorted(a for a, n in Counter(judged).items() if n > 1)
    bench.expect(not twice, "contract", f"{len(twice)} accounts judged more than once, e.g. {twice[:3]}")
    seen = _accounts_before(bench.scenario, None)
    bench.expect(set(judged) == seen, "contract", _difference("accounts judged", set(judged), "accounts seen", seen))
    unknown = sorted(set(verdicts["action"].to_pylist()) - set(ACTIONS))
    bench.expect(not unknown, "contract", f"actions {unknown} are not in ACTIONS {list(ACTIONS)}")
    outside = [s for s in verdicts["score"].to_pylist() if not 0 <= s <= 1]
    bench.expect(not outside, "contract", f"{len(outside)} scores outside [0, 1], e.g. {outside[:3]}")
    silent = [v["account_id"] for v in verdicts.to_pylist() if v["action"] != "allow" and not v["reasons"]]
    bench.expect(not silent, "contract",
                 f"{len(silent)} verdicts stronger than allow give no reason, e.g. {silent[:3]}")


def check_empty_input(bench: Workbench) -> None:
    """A store without exchanges gives no verdicts, with VERDICT_SCHEMA, and no error."""
    with Store(":memory:") as empty:
        verdicts = bench.fitted.detect(empty)
    bench.expect(verdicts.num_rows == 0, "empty_input", f"an empty store gave {verdicts.num_rows} verdicts")
    bench.expect(verdicts.schema.equals(VERDICT_SCHEMA), "empty_input",
                 f"schema\n{verdicts.schema}\nis not VERDICT_SCHEMA")


def check_as_of(bench: Workbench) -> None:
    """Judged at ``as_of`` (the scenario's middle), exactly the accounts with an exchange before
    it are judged, and every verdict carries that ``as_of``."""
    (as_of,) = bench.scenario.con.execute(
        "SELECT date_trunc('hour', min(\"timestamp\") + (max(\"timestamp\") - min(\"timestamp\")) / 2) "
        "FROM exchanges").fetchone()
    verdicts = bench.fitted.detect(bench.scenario, as_of)
    judged, seen = set(verdicts["account_id"].to_pylist()), _accounts_before(bench.scenario, as_of)
    bench.expect(judged == seen, "as_of",
                 _difference("accounts judged", judged, f"accounts seen before {as_of}", seen))
    stamps = set(verdicts["as_of"].to_pylist())
    bench.expect(stamps <= {as_of}, "as_of", f"verdicts at as_of {as_of} carry as_of {sorted(stamps - {as_of})[:3]}")


def check_determinism(bench: Workbench) -> None:
    """Two fits on the same reference, and two detect calls on the same store, give identical
    verdicts (reasons included): a seeded detector must not depend on the run."""
    first = _by_account(bench.verdicts)
    again = _by_account(bench.fitted.detect(bench.scenario))
    bench.expect(first.equals(again), "determinism",
                 "two detect calls on the same store differ: " + _first_difference(first, again))
    refit = _by_account(bench.fresh_fit().detect(bench.scenario))
    bench.expect(first.equals(refit), "determinism",
                 "two fits on the same reference differ: " + _first_difference(first, refit))


def check_relabelling(bench: Workbench) -> None:
    """Renaming every account and every organization by a random bijection changes no verdict
    beyond the names: the same action and score (to float rounding) for each account under its
    new name, and the same partition of accounts into campaigns (campaign ids may differ).

    A detector must judge behaviour, not names; one that orders, hashes or samples by id gives
    an attacker a lever (pick names that sort last) and a bystander a lottery. The renamed store
    permutes the names that exist (same formats, another order) and keeps everything else.
    Reasons are not compared: they may quote names.
    """
    accounts = _permutation(bench.scenario, "account_id", RELABEL_SEED)
    orgs = _permutation(bench.scenario, "organization_id", RELABEL_SEED + 1)
    select = ("SELECT e.* REPLACE (a.new AS account_id, o.new AS organization_id) FROM exchanges e "
              "JOIN relabel_accounts a ON e.account_id = a.old "
              "LEFT JOIN relabel_orgs o ON e.organization_id = o.old")
    mapping = dict(zip(accounts["old"].to_pylist(), accounts["new"].to_pylist()))
    with bench.derived("relabelled", select, {"relabel_accounts": accounts, "relabel_orgs": orgs}) as renamed:
        after = {v["account_id"]: v for v in bench.fitted.detect(renamed).to_pylist()}
    before = {mapping[v["account_id"]]: dict(v, account_id=mapping[v["account_id"]])
              for v in bench.verdicts.to_pylist()}
    bench.expect(set(after) == set(before), "relabelling",
                 _difference("accounts judged after renaming", set(after), "renamed accounts judged before", set(before)))
    for account, was in before.items():
        now = after[account]
        bench.expect(now["action"] == was["action"] and _close(now["score"], was["score"]), "relabelling",
                     f"account {_inverse(mapping, account)!r}, renamed {account!r}: {was['action']} "
                     f"score {was['score']!r} before, {now['action']} score {now['score']!r} after")
    was, now = _campaigns(before.values()), _campaigns(after.values())
    bench.expect(was == now, "relabelling",
                 f"the partition of accounts into campaigns differs after renaming: {len(was)} campaigns "
                 f"before, {len(now)} after; groups only before (sizes) {sorted(map(len, was - now))}, "
                 f"only after {sorted(map(len, now - was))}")


def check_monotonicity(bench: Workbench) -> None:
    """Making a campaign's tell stronger never lowers any account's action.

    Stronger means: every exchange of the campaign's accounts is sent a second time, at the
    same moment, from the same account, address, key and conversation, identical but for its
    exchange_id and a prompt that ends with the fixed marker AGAIN; nothing else changes. The
    marker makes each copy a new prompt rather than a repeat (a detector may fairly read
    repeated prompts as weaker evidence: distillation seeks new answers), while every prompt
    template, system prompt and address the accounts shared stays shared. So each of the
    campaign's counts doubles (requests, tokens, volume per day, distinct prompts), every share
    per request stays as it was, and organic traffic is untouched.

    Why no action may fall: if more of the same traffic could lower a campaign account's
    action, an attacker would escape a detector by sending more; and a campaign growing louder
    is no reason to judge anyone else more leniently. Scores may move; actions only rise or stay.
    """
    campaign = pa.table({"account_id": pa.array(sorted(bench.campaign_accounts), pa.string())})
    select = ("SELECT * FROM exchanges UNION ALL "
              f"SELECT * REPLACE (exchange_id || '~again' AS exchange_id, prompt || '{AGAIN}' AS prompt) FROM exchanges "
              "WHERE account_id IN (SELECT account_id FROM campaign_accounts)")
    with bench.derived("amplified", select, {"campaign_accounts": campaign}) as louder:
        after = {v["account_id"]: v["action"] for v in bench.fitted.detect(louder).to_pylist()}
    before = {v["account_id"]: v["action"] for v in bench.verdicts.to_pylist()}
    bench.expect(set(after) == set(before), "monotonicity",
                 _difference("accounts judged after", set(after), "accounts judged before", set(before)))
    lowered = sorted((a, before[a], after[a]) for a in before if SEVERITY[after[a]] < SEVERITY[before[a]])
    bench.expect(not lowered, "monotonicity",
                 f"{len(lowered)} accounts' actions fell when the campaign sent its traffic twice "
                 f"(account, before, after): {lowered[:5]}")


def check_replay(bench: Workbench) -> None:
    """A one-pass ``replay`` says what ``detect`` says at every step (bench.replay.Replayable),
    on a regular 6-hour grid over the campaign's first 60 hours and on an irregular one."""
    (start,) = bench.scenario.con.execute(
        "SELECT min(\"timestamp\") FROM exchanges WHERE list_contains($accounts, account_id)",
        {"accounts": sorted(bench.campaign_accounts)}).fetchone()
    regular = grid(start, start + timedelta(hours=60), timedelta(hours=6))
    irregular = [t + timedelta(minutes=7 * i * i) for i, t in enumerate(regular)]
    for steps, as_ofs in (("regular", regular), ("irregular", irregular)):
        rows = bench.fitted.replay(bench.scenario, as_ofs).to_pylist()
        latest: dict[str, dict] = {}
        for as_of in as_ofs:
            latest.update({r["account_id"]: r for r in rows if r["as_of"] == as_of})
            truth = {r["account_id"]: r for r in bench.fitted.detect(bench.scenario, as_of).to_pylist()}
            bench.expect(set(truth) == set(latest), "replay",
                         f"{steps} steps, at {as_of}: " + _difference("replay judges", set(latest),
                                                                      "detect judges", set(truth)))
            for account, verdict in truth.items():
                said = latest[account]
                bench.expect(said["action"] == verdict["action"] and _close(said["score"], verdict["score"]),
                             "replay", f"{steps} steps, at {as_of}, account {account!r}: replay says "
                             f"{said['action']} {said['score']!r}, detect {verdict['action']} {verdict['score']!r}")


# --- running them ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """A check by name; ``not_applicable`` says why it does not apply to a detector (None: it does)."""

    name: str
    run: Callable[[Workbench], None]
    not_applicable: Callable[[Detector], str | None] = lambda detector: None


CHECKS: tuple[Check, ...] = (
    Check("contract", check_contract),
    Check("empty_input", check_empty_input),
    Check("as_of", check_as_of),
    Check("determinism", check_determinism),
    Check("relabelling", check_relabelling),
    Check("monotonicity", check_monotonicity),
    Check("replay", check_replay,
          lambda d: None if isinstance(d, Replayable) else "it offers no one-pass replay (bench.replay.Replayable)"),
)


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_detector` found: the checks passed, failed (with what broke), excused
    (with the reason the caller gave) and not applicable (with why)."""

    detector: str
    passed: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    excused: dict[str, str] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"detector {self.detector!r}: {len(self.passed)} passed, {len(self.failed)} failed, "
                 f"{len(self.excused)} excused, {len(self.not_applicable)} not applicable"]
        lines += [f"  passed {name}" for name in self.passed]
        lines += [f"  FAILED {name}: {why}" for name, why in self.failed.items()]
        lines += [f"  excused {name}: {why}" for name, why in self.excused.items()]
        lines += [f"  not applicable {name}: {why}" for name, why in self.not_applicable.items()]
        return "\n".join(lines)


def check_detector(detector: Detector, cache_dir: str | Path | None = None,
                   exceptions: dict[str, str] | None = None) -> CheckReport:
    """Run every check in CHECKS on ``detector`` (unfitted; the checks fit copies of it).

    ``exceptions`` maps a check's name to the reason the detector is excused from it; an
    unknown name, or an empty reason, is a ValueError (a typo must not excuse nothing).
    ``cache_dir`` keeps the simulated stores between runs (a temporary directory otherwise).
    A check that raises anything but AssertionError fails with the traceback as its reason.
    """
    exceptions = dict(exceptions or {})
    known = [c.name for c in CHECKS]
    unknown = sorted(set(exceptions) - set(known))
    if unknown:
        raise ValueError(f"no check named {', '.join(map(repr, unknown))}; the checks are {', '.join(known)}")
    unexplained = sorted(name for name, reason in exceptions.items() if not str(reason).strip())
    if unexplained:
        raise ValueError(f"excusing {', '.join(map(repr, unexplained))} needs a reason")
    passed: list[str] = []
    failed: dict[str, str] = {}
    excused: dict[str, str] = {}
    not_applicable: dict[str, str] = {}
    with workbench(detector, cache_dir) as bench:
        for check in CHECKS:
            if check.name in exceptions:
                excused[check.name] = exceptions[check.name]
            elif (why := check.not_applicable(detector)) is not None:
                not_applicable[check.name] = why
            else:
                try:
                    check.run(bench)
                except AssertionError as exc:
                    failed[check.name] = str(exc)
                except Exception as exc:  # the detector crashed: keep everything it said
                    failed[check.name] = (f"detector {bench.name!r} raised in check {check.name!r}:\n"
                                          + "".join(traceback.format_exception(exc)))
                else:
                    passed.append(check.name)
        name = bench.name
    return CheckReport(name, tuple(passed), failed, excused, not_applicable)


# --- helpers of the checks above -------------------------------------------------------------

def _accounts_before(store: Store, as_of: datetime | None) -> set[str]:
    where, params = ("", {}) if as_of is None else ("WHERE \"timestamp\" < $as_of", {"as_of": as_of})
    return {a for (a,) in store.con.execute(f"SELECT DISTINCT account_id FROM exchanges {where}", params).fetchall()}


def _permutation(store: Store, column: str, seed: int) -> pa.Table:
    """A random bijection of ``column``'s distinct values onto themselves: (old, new)."""
    names = sorted(v for (v,) in store.con.execute(
        f'SELECT DISTINCT "{column}" FROM exchanges WHERE "{column}" IS NOT NULL').fetchall())
    shuffled = names.copy()
    random.Random(seed).shuffle(shuffled)
    return pa.table({"old": pa.array(names, pa.string()), "new": pa.array(shuffled, pa.string())})


def _campaigns(verdicts) -> set[frozenset[str]]:
    """The partition of accounts into campaigns, without the campaigns' ids."""
    members: dict[str, set[str]] = {}
    for v in verdicts:
        if v["campaign_id"] is not None:
            members.setdefault(v["campaign_id"], set()).add(v["account_id"])
    return {frozenset(m) for m in members.values()}


def _by_account(verdicts: pa.Table) -> pa.Table:
    return verdicts.sort_by("account_id")


def _first_difference(a: pa.Table, b: pa.Table) -> str:
    if a.num_rows != b.num_rows or not a.schema.equals(b.schema):
        return f"{a.num_rows} rows with schema {a.schema.names} vs {b.num_rows} with {b.schema.names}"
    for x, y in zip(a.to_pylist(), b.to_pylist()):
        if x != y:
            return f"{x} vs {y}"
    return "the tables differ in their chunking or metadata only"


def _difference(a_name: str, a: set, b_name: str, b: set) -> str:
    return (f"{len(a)} {a_name} vs {len(b)} {b_name}; only in the first: {sorted(a - b)[:3]}, "
            f"only in the second: {sorted(b - a)[:3]}")


def _inverse(mapping: dict[str, str], new: str) -> str:
    return next(old for old, renamed in mapping.items() if renamed == new)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SCORE_TOLERANCE, abs_tol=SCORE_TOLERANCE)


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
