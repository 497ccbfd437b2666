"""Live routing's statistics, in process: the alpha spending at checkpoints keeps organic
sessions within the budget and lets a long session cross, a stronger tell never raises the
p-value, an imported indicator routes, and the reference file is read or refused in one line."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from distillguard.detect.policy import ErrorBudget, LiveRouting, Policy
from distillguard.errors import UserError
from distillguard.gateway import live
from distillguard.gateway.enforce import ALLOW, Decision, ScanOutputs
from distillguard.gateway.resellers import Resellers
from distillguard.intel import indicators as intel
from distillguard.store import resellers as stored_resellers

T0 = datetime(2026, 5, 1, tzinfo=UTC)
TEMPLATES = [f"question {i} about" for i in range(40)]


def organic_sessions(n: int, seed: int, first_account: int = 0) -> list[dict]:
    """Exchanges of ``n`` organic-looking sessions (one per account), each drawn independently:
    its own rate, length, max_tokens habit, tools and phrasing."""
    rng = random.Random(seed)
    rows = []
    for s in range(n):
        account = f"acct-{first_account + s}"
        t = T0 + timedelta(hours=rng.uniform(0, 24 * 30))
        mean_gap = rng.lognormvariate(4.5, 1.0)  # ~90 s between requests, widely spread
        habit = rng.choice([None, 256, 1024, 4096, 8192, 16384])
        tools = rng.choice([0, 0, 0, 2, 5])
        for _ in range(min(int(rng.expovariate(1 / 12)) + 1, 120)):
            t += timedelta(seconds=min(rng.expovariate(1 / mean_gap), 1700))
            prompt = f"{rng.choice(TEMPLATES)} " + "x" * int(rng.lognormvariate(5, 1))
            rows.append({"account_id": account, "timestamp": t, "max_tokens": habit, "tool_count": tools,
                         "system_prompt": rng.choice([None, "You are helpful."]), "prompt": prompt,
                         "client_ip": f"10.{s % 250}.0.1", "client_asn": 64500, "user_agent": "sdk/1",
                         "email_domain": "example.com", "payment_fingerprint": f"card-{s}"})
    return rows


def exchanges(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("account_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")), ("max_tokens", pa.int64()),
        ("tool_count", pa.int64()), ("system_prompt", pa.string()), ("prompt", pa.string()),
        ("client_ip", pa.string()), ("client_asn", pa.int64()), ("user_agent", pa.string()),
        ("email_domain", pa.string()), ("payment_fingerprint", pa.string())]))
    con.register("_rows", table)
    con.execute("CREATE TABLE exchanges AS SELECT * FROM _rows")
    return con


def score(scorer: live.Scorer, rows: list[dict]) -> dict[str, list[live.Look]]:
    looks: dict[str, list[live.Look]] = {}
    for r in sorted(rows, key=lambda r: r["timestamp"]):
        looks.setdefault(r["account_id"], []).append(scorer.look(
            r["account_id"], r["timestamp"], r["max_tokens"], r["tool_count"], r["system_prompt"], r["prompt"]))
    return looks


def upper_bound(k: int, n: int) -> float:
    """Clopper-Pearson one-sided 95% upper bound of a share seen as k of n."""
    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


# --- the spending ---------------------------------------------------------------------------------

def test_only_the_checkpoints_1_2_4_8_and_on_spend_and_their_shares_sum_to_the_budget():
    spent = [(k, live.threshold(0.01, k)) for k in range(1, 5000)]
    assert [k for k, cut in spent if cut > 0] == [1 << j for j in range(13)]
    assert sum(cut for _, cut in spent) == pytest.approx(0.01 * (1 - 1 / 14))  # checkpoints 0..12
    assert sum(live.share(0.01, j) for j in range(100_000)) == pytest.approx(0.01, rel=1e-4)
    assert all(live.share(0.01, j + 1) < live.share(0.01, j) for j in range(100))


@settings(max_examples=300, deadline=None)
@given(budget=st.floats(1e-9, 0.1), looks=st.integers(1, 1 << 62), probe=st.integers(1, 1 << 62))
def test_the_shares_spent_over_any_number_of_looks_sum_to_at_most_the_budget(budget, looks, probe):
    """The union bound's premise for a session of any length: what its checkpoints up to look
    ``looks`` spend is ``budget (1 - 1 / (J + 2))`` with J the last one's index, never more than
    the budget; a look that is no checkpoint spends nothing."""
    checkpoints = [1 << j for j in range(looks.bit_length())]
    spent = sum(live.threshold(budget, k) for k in checkpoints)
    assert spent <= budget
    assert spent == pytest.approx(budget * (1 - 1 / (len(checkpoints) + 1)))
    j = live.checkpoint(probe)
    if probe & (probe - 1):  # not a power of two
        assert j is None and live.threshold(budget, probe) == 0.0
    else:
        assert 1 << j == probe and live.threshold(budget, probe) == live.share(budget, j)


def _tails_where_only(extreme: str, n: int) -> dict[str, list[live.Tail]]:
    """Tails of ``n`` reference values each under which every value of every statistic is
    ordinary (p-value 1) but a positive value of ``extreme``, which is beyond all of them (1 / (n + 1))."""
    ordinary = live.Tail([1e300], [n], n)
    tails = {s.name: [ordinary] * live.BUCKETS for s in live.STATISTICS}
    tails[extreme] = [live.Tail([0.0], [n], n)] * live.BUCKETS
    return tails


def test_a_sessions_64th_request_crosses_when_its_statistics_are_extreme():
    """A scripted session that turns extreme late: with a reference of a million looks, its 64th
    request crosses (checkpoint 6 spends budget / 56), where one share per request
    (budget / (64 * 65)) kept the same p-value out of reach; its 63rd, as extreme, is no
    checkpoint and decides nothing."""
    rules = LiveRouting()
    n = 10**6
    scorer = live.Scorer(rules, ErrorBudget(), live.Reference(_tails_where_only("max_tokens", n), 5000, {}))
    seen = [scorer.look("s", T0 + timedelta(seconds=10 * k), 4096 if k >= 63 else None, 0, None, "hi")
            for k in range(1, 66)]
    assert not any(x.crossed for x in seen[:63])
    assert seen[62].p_value == seen[63].p_value == pytest.approx(8 / (n + 1))  # 8 parts from the third look
    assert seen[62].threshold == 0.0
    assert seen[63].crossed and seen[63].look == 64 and seen[63].parts["max_tokens"] == pytest.approx(1 / (n + 1))
    assert seen[63].threshold == pytest.approx(rules.session_budget / 56)
    assert seen[63].p_value > rules.session_budget / (64 * 65)  # the old per-request share: never crossed
    assert seen[64].crossed and not seen[64].parts  # routed for the rest of the session


@settings(max_examples=100, deadline=None)
@given(extreme_from=st.integers(1, 300), verdict=st.sampled_from([1.0, 1e-2, 1e-4, 1e-6]),
       n=st.integers(200, 10**7))
def test_a_session_crosses_only_at_a_checkpoint_within_its_share(extreme_from, verdict, n):
    scorer = live.Scorer(LiveRouting(), ErrorBudget(), live.Reference(_tails_where_only("tool_count", n), 5000, {}))
    for k in range(1, 301):
        seen = scorer.look("s", T0 + timedelta(seconds=10 * k), None, 3 if k >= extreme_from else 0, None, "hi",
                           verdict_p=verdict)
        if seen.crossed:
            j = live.checkpoint(k)
            assert j is not None and seen.parts and seen.p_value <= live.share(0.005, j)
            break


def test_alpha_spending_keeps_the_share_of_organic_sessions_that_ever_cross_within_the_budget():
    """Organic sessions scored against a reference of other organic sessions from the same
    population: the share that ever crosses is within the budget (Clopper-Pearson upper bound),
    while the same p-values held to the whole budget at every look would cross far more often,
    so the test sees the spending at work."""
    rules = LiveRouting(session_budget=0.05, min_reference=50)
    reference = live.calibrate(exchanges(organic_sessions(3000, seed=1)), rules)
    fresh = organic_sessions(1500, seed=2, first_account=10_000)
    looks = score(live.Scorer(rules, ErrorBudget(), reference), fresh)
    crossed = sum(any(x.crossed for x in seen) for seen in looks.values())
    assert upper_bound(crossed, len(looks)) <= rules.session_budget, (crossed, len(looks))
    unspent = sum(any(x.p_value <= rules.session_budget for x in seen) for seen in looks.values())
    assert unspent / len(looks) > rules.session_budget, unspent


def test_a_session_that_crosses_stays_routed_until_a_quiet_gap_ends_it():
    rules = LiveRouting(session_budget=0.05, min_reference=1, session_gap_seconds=60)
    scorer = live.Scorer(rules, ErrorBudget(), live.Reference(_empty_tails(), 100, {}))
    first = scorer.look("a", T0, None, 0, None, "hi", verdict_p=1e-6)
    later = scorer.look("a", T0 + timedelta(seconds=30), None, 0, None, "hi")
    after_gap = scorer.look("a", T0 + timedelta(seconds=200), None, 0, None, "hi")
    assert first.crossed and first.parts["verdicts"] == 1e-6
    assert later.crossed and later.look == 2
    assert not after_gap.crossed and after_gap.look == 1


# --- the statistics -------------------------------------------------------------------------------

def _empty_tails() -> dict[str, list[live.Tail]]:
    return {s.name: [live.Tail() for _ in range(live.BUCKETS)] for s in live.STATISTICS}


def test_calibrate_files_each_look_under_its_bucket_and_splits_sessions_at_the_gap():
    rows = [{"account_id": "a", "timestamp": T0 + timedelta(seconds=s), "max_tokens": 100 * (i + 1), "tool_count": 0,
             "system_prompt": None, "prompt": "same words here", "client_ip": None, "client_asn": None,
             "user_agent": None, "email_domain": None, "payment_fingerprint": None}
            for i, s in enumerate([0, 10, 20, 30, 5000])]
    reference = live.calibrate(exchanges(rows), LiveRouting(session_gap_seconds=1800))
    assert reference.sessions == 2 and reference.accounts == 1
    max_tokens = reference.tails["max_tokens"]
    assert [t.n for t in max_tokens] == [2, 2, 1, 0, 0, 0, 0]  # looks 1,1 | 2,3 | 4
    assert max_tokens[0].values == [100.0, 500.0]
    assert reference.tails["template_repeat"][1].values == [1.0]  # the same template each time
    assert reference.tails["regularity"][1].values == [1.0]  # look 3: gaps of 10 s and 10 s


def _relayed_exchanges() -> duckdb.DuckDBPyConnection:
    """One reseller key relaying end users u1 and u2, interleaved a minute apart, three requests
    each, then one request naming no end user; a store's scans and resellers tables, as a scan
    as of ``T0 + 1 day`` that recognised the key left them."""
    rows = [{"account_id": "relay-co", "api_key_id": "key-relay", "end_user": user,
             "timestamp": T0 + timedelta(minutes=i), "max_tokens": 100, "tool_count": 0, "system_prompt": None,
             "prompt": "hello there", "client_ip": None, "client_asn": None, "user_agent": None,
             "email_domain": None, "payment_fingerprint": None}
            for i, user in enumerate(["u1", "u2"] * 3 + [None])]
    con = exchanges([{k: v for k, v in r.items() if k not in ("api_key_id", "end_user")} for r in rows])
    con.register("_relay", pa.table({"timestamp": [r["timestamp"] for r in rows],
                                     "end_user": pa.array([r["end_user"] for r in rows], pa.string())}))
    con.execute('CREATE OR REPLACE TABLE exchanges AS SELECT e.*, \'key-relay\' AS api_key_id, r.end_user '
                'FROM exchanges e JOIN _relay r USING ("timestamp")')
    as_of = T0 + timedelta(days=1)
    con.execute("CREATE TABLE scans (as_of TIMESTAMPTZ)")
    con.execute("INSERT INTO scans VALUES (?)", [as_of])
    found = {"key": ["key-relay"], "account_id": ["relay-co"], "exchanges": [7], "end_users": [2], "clients": [2],
             "addresses": [1], "agents": [1], "p_end_users": [0.01], "p_clients": [0.1]}
    stored_resellers.store(con, "scan-1", as_of, pa.table(found))
    return con


def test_calibrate_replays_a_resellers_end_users_as_sessions_of_their_own_as_the_gateway_keeps_them():
    con = _relayed_exchanges()
    as_one_key = live.calibrate(con, LiveRouting(), reseller_keys=frozenset())
    assert (as_one_key.sessions, as_one_key.accounts) == (1, 1)
    # the keys of the store's scan as of its as-of: u1, u2 and the key's own request
    by_end_user = live.calibrate(con, LiveRouting(), as_of=T0 + timedelta(days=1))
    assert (by_end_user.sessions, by_end_user.accounts) == (3, 3)
    assert [t.n for t in by_end_user.tails["max_tokens"]] == [3, 4, 0, 0, 0, 0, 0]  # looks 1,1,1 | 2,3,2,3
    # the scan allowed one end user (its entity id): only that end user's requests are the reference
    one = live.calibrate(con, LiveRouting(), allowed={"relay-co::u1"}, reseller_keys=frozenset({"key-relay"}))
    assert one.sessions == 1 and sum(t.n for t in one.tails["max_tokens"]) == 3


def test_a_statistic_whose_bucket_is_too_thin_counts_as_no_evidence():
    tails = _empty_tails()
    tails["max_tokens"][0] = live.Tail.of([1.0] * 10)
    scorer = live.Scorer(LiveRouting(min_reference=11), ErrorBudget(), live.Reference(tails, 10, {}))
    seen = scorer.look("a", T0, 10**6, 0, None, "hi", verdict_p=1.0)
    assert seen.p_value == 1.0


@settings(max_examples=200, deadline=None)
@given(sample=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50),
       a=st.floats(0, 2e6, allow_nan=False), b=st.floats(0, 2e6, allow_nan=False))
def test_a_larger_value_never_has_a_larger_tail_p_value_and_rounding_only_raises_it(sample, a, b):
    tail = live.Tail.of(sample)
    low, high = sorted((a, b))
    assert tail.p_value(high) <= tail.p_value(low)
    exact = (1 + sum(1 for v in sample if v >= low)) / (1 + len(sample))
    assert tail.p_value(low) >= exact


@settings(max_examples=60, deadline=None)
@given(history=st.lists(st.tuples(st.integers(1, 600), st.integers(0, 32000), st.integers(0, 8),
                                  st.integers(0, 3000)), min_size=0, max_size=6),
       last=st.tuples(st.integers(0, 32000), st.integers(0, 8), st.integers(0, 3000)),
       more=st.tuples(st.integers(0, 10000), st.integers(0, 5), st.integers(0, 3000)),
       verdict=st.sampled_from([1.0, 1e-2, 1e-4]), stronger_verdict=st.sampled_from([1.0, 1e-2, 1e-4, 1e-6]))
def test_a_stronger_tell_never_raises_the_p_value(history, last, more, verdict, stronger_verdict):
    """Two sessions alike but for their last request, whose tokens, tools, prompt and verdict
    are each at least as strong in the second: its p-value is never larger."""
    reference = _REFERENCE
    results = []
    for (tokens, tools, chars), v in ((last, verdict), (tuple(x + y for x, y in zip(last, more)),
                                                         min(verdict, stronger_verdict))):
        scorer = live.Scorer(LiveRouting(min_reference=20), ErrorBudget(), reference)
        t = T0
        for gap, h_tokens, h_tools, h_chars in history:
            t += timedelta(seconds=gap)
            scorer.look("a", t, h_tokens, h_tools, None, PHRASE + "x" * h_chars)
        results.append(scorer.look("a", t + timedelta(seconds=5), tokens, tools, None, PHRASE + "x" * chars,
                                   verdict_p=v))
    assert results[1].p_value <= results[0].p_value


#: the first four words of every prompt there: the template stays the same whatever the length
PHRASE = "the same four words "
_REFERENCE = live.calibrate(exchanges(organic_sessions(300, seed=3)), LiveRouting())


# --- indicators and the router --------------------------------------------------------------------

def _indicators(*rows: tuple[str, str, str, datetime | None]) -> pa.Table:
    return pa.Table.from_pylist([
        {"indicator_id": i, "source": "test", "external_id": None, "type": kind, "value": value, "confidence": 80,
         "valid_from": None, "valid_until": until, "tlp": "amber", "name": None, "imported_at": T0}
        for i, kind, value, until in rows], schema=intel.SCHEMA)


def _router(indicators: pa.Table, counted: dict[str, int], accounts: int = 5000,
            policy: Policy | None = None) -> live.LiveRouter:
    router = live.LiveRouter(policy or Policy(), None, "safe-small")
    router.refresh(None, ScanOutputs(None))
    router.indicators = live.Indicators(indicators)
    router.scorer = live.Scorer(router.policy.live, router.policy.statistics.budget,
                                live.Reference(_empty_tails(), accounts, counted), router.indicators)
    return router


def _request(router: live.LiveRouter, account: str, ip: str, decision: Decision = ALLOW,
             org: str | None = None, at: datetime | None = None) -> Decision:
    record = SimpleNamespace(account_id=account, organization_id=org, email_domain="example.com",
                             payment_fingerprint=None)
    client = SimpleNamespace(ip=ip, asn=None, user_agent="sdk/1")
    facts = SimpleNamespace(max_tokens=None, tool_count=0, system_prompt=None, prompt="hello")
    return router.route(decision, record, client, facts, at or datetime.now(UTC))


def test_a_request_from_an_imported_network_no_organic_account_used_is_routed_to_the_fallback():
    router = _router(_indicators(("ind-net", "network", "203.0.113.0/24", None)), {"ind-net": 0})
    routed = _request(router, "acct-x", "203.0.113.9")
    assert routed.action == "fallback" and routed.source == "live"
    assert _request(router, "acct-y", "198.51.100.1").action == "allow"
    assert (router.looks, router.routed, router.sessions_routed) == (2, 1, 1)


def test_an_operator_can_keep_imported_indicators_out_of_live_routing():
    policy = Policy.model_validate({"live": {"indicators": False}})
    router = _router(_indicators(("ind-net", "network", "203.0.113.0/24", None)), {"ind-net": 0}, policy=policy)
    assert _request(router, "acct-x", "203.0.113.9").action == "allow"


def test_an_indicator_many_organic_accounts_matched_or_that_has_expired_or_was_never_counted_routes_nothing():
    past = datetime(2020, 1, 1, tzinfo=UTC)
    router = _router(_indicators(("ind-common", "network", "203.0.113.0/24", None),
                                 ("ind-expired", "network", "192.0.2.0/24", past),
                                 ("ind-new", "network", "198.51.100.0/24", None)),
                     {"ind-common": 400, "ind-expired": 0})
    for account, ip in (("a", "203.0.113.9"), ("b", "192.0.2.9"), ("c", "198.51.100.9")):
        assert _request(router, account, ip).action == "allow", ip


def test_live_routing_only_adds_to_allow_and_monitor_and_leaves_overrides_and_the_allowlist_alone():
    router = _router(_indicators(("ind-net", "network", "203.0.113.0/24", None)), {"ind-net": 0},
                     policy=Policy(allowlist_organizations=["verified-uni"]))
    throttled = Decision("throttle", "verdict", ("r",), "campaign-1", 3600.0)
    assert _request(router, "t", "203.0.113.1", throttled) is throttled
    verified = Decision("allow", "override", ("operator says verified",))
    assert _request(router, "v", "203.0.113.1", verified) is verified
    assert _request(router, "u", "203.0.113.1", org="verified-uni").action == "allow"
    assert _request(router, "m", "203.0.113.1", Decision("monitor", "verdict")).action == "fallback"


def test_a_monitored_member_of_a_throttled_campaign_is_routed_by_its_campaigns_verdict(tmp_path):
    from tests.gateway.inputs import write_scan

    write_scan(tmp_path, [("member", "monitor", "campaign-9"), ("leader", "throttle", "campaign-9")])
    scan = ScanOutputs(tmp_path)
    scan.reload_if_changed()
    router = _router(_indicators(), {})
    router.refresh(None, scan)
    router.scorer = live.Scorer(router.policy.live, router.policy.statistics.budget,
                                live.Reference(_empty_tails(), 5000, {}))
    routed = _request(router, "member", "10.0.0.1", scan.verdicts["member"])
    assert routed.action == "fallback" and routed.campaign_id == "campaign-9"
    assert _request(router, "alone", "10.0.0.2", Decision("monitor", "verdict")).action == "monitor"


def test_a_resellers_end_users_form_sessions_of_their_own_and_one_routed_end_user_routes_no_other():
    """Two end users interleaved on one reseller key: the one whose requests are extreme is routed,
    the other, on the same key and at the same moments, is served as before; a request naming no
    end user, or of a key the scan did not recognise as a reseller's, is the account's."""
    router = _router(_indicators(), {})
    router.scorer = live.Scorer(router.policy.live, router.policy.statistics.budget,
                                live.Reference(_tails_where_only("tool_count", 10**6), 5000, {}))
    resellers = Resellers()
    resellers.keys = frozenset({"key-relay"})

    def relayed(end_user: str | None, tools: int, k: int, key: str = "key-relay") -> Decision:
        record = SimpleNamespace(account_id="relay-co", organization_id=None, email_domain=None,
                                 payment_fingerprint=None, key_id=key)
        facts = SimpleNamespace(max_tokens=None, tool_count=tools, system_prompt=None, prompt="hello",
                                end_user=end_user)
        # the entity as the gateway decides it (server.py: Resellers.relay)
        relay = resellers.relay(key, "relay-co", end_user)
        return router.route(ALLOW, record, SimpleNamespace(ip=None, asn=None, user_agent=None), facts,
                            T0 + timedelta(seconds=k), entity=relay.entity if relay is not None else None)

    for k in range(4):
        assert relayed("user-1", 3, 2 * k).action == "fallback"
        assert relayed("user-2", 0, 2 * k + 1).action == "allow"
    sessions = router.scorer.sessions.by_account
    assert (sessions["relay-co::user-1"].looks, sessions["relay-co::user-2"].looks) == (4, 4)
    assert "relay-co" not in sessions and router.sessions_routed == 1
    assert relayed(None, 0, 10).action == "allow" and sessions["relay-co"].looks == 1
    assert relayed("user-9", 0, 11, key="key-other").action == "allow" and sessions["relay-co"].looks == 2


# --- the reference file ----------------------------------------------------------------------------

def test_the_reference_reads_back_equal_and_a_broken_one_is_refused_in_one_line(tmp_path: Path):
    path = tmp_path / "live.json"
    _REFERENCE.write(path)
    again = live.Reference.read(path)
    assert again.to_json() == _REFERENCE.to_json()
    data = json.loads(path.read_text())
    data["statistics"]["max_tokens"] = data["statistics"]["max_tokens"][:3]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"live\.json: not a live routing reference .*max_tokens: 3 buckets"):
        live.Reference.read(path)
    path.write_text("{")
    with pytest.raises(UserError, match="cannot read the live routing reference"):
        live.Reference.read(path)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(data=st.fixed_dictionaries({}, optional={"version": st.just(1) | _json, "accounts": _json,
                                                "indicator_matches": _json, "statistics": _json}) | _json)
def test_any_json_is_a_reference_or_one_user_error(data):
    try:
        live.Reference.from_json(data, "live.json")
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("live.json: ")


# --- distillguard gateway calibrate -----------------------------------------------------------------

def test_calibrate_takes_the_scans_allowed_accounts_before_its_as_of_and_counts_indicator_matches(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app
    from distillguard.ingest import ingest_paths
    from distillguard.store import Store
    from tests.gateway.inputs import write_scan
    from tests.records import good_record, write_jsonl

    records = [good_record(i, account_id=f"acct-{i % 4}", client_ip=f"192.0.2.{i % 4}",
                           timestamp=f"2026-04-22T10:{i:02d}:00Z") for i in range(40)]
    with Store(str(tmp_path / "s.duckdb")) as store:
        ingest_paths(store, [write_jsonl(tmp_path / "x.jsonl", records)])
        intel.store(store.con, [intel.Indicator("feed", "1", "network", "192.0.2.0/30")], T0)
    write_scan(tmp_path / "scan", [("acct-0", "allow", None), ("acct-1", "allow", None), ("acct-2", "allow", None),
                                   ("acct-3", "throttle", "campaign-1")])
    runner = CliRunner()
    done = runner.invoke(app, ["gateway", "calibrate", "--db", str(tmp_path / "s.duckdb"), "--verdicts",
                               str(tmp_path / "scan"), "--out", str(tmp_path / "live.json"), "--json"])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    reference = live.Reference.read(tmp_path / "live.json")
    # the scan's as-of is now, after every exchange: three allowed accounts, one session each
    assert summary["organic_sessions"] == reference.sessions == 3 and reference.accounts == 3
    assert sum(t.n for t in reference.tails["max_tokens"]) == 30  # acct-3's ten exchanges left out
    # 192.0.2.0/30 holds .0 to .3: acct-0..2 matched it (acct-3 is no reference account)
    assert list(reference.indicator_matches.values()) == [3]
    missing = runner.invoke(app, ["gateway", "calibrate", "--db", str(tmp_path / "s.duckdb"), "--verdicts",
                                  str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.json")])
    assert missing.exit_code == 2 and "no verdicts.parquet there" in missing.output
    assert len(missing.output.strip().splitlines()) <= 2 and "Traceback" not in missing.output


@settings(max_examples=200, deadline=None)
@given(prompt=st.none() | st.text(max_size=300), system=st.none() | st.text(max_size=50),
       max_tokens=st.none() | st.integers(0, 10**30), tools=st.none() | st.integers(0, 10**6),
       ip=st.none() | st.text(max_size=45) | st.ip_addresses().map(str), user_agent=st.none() | st.text(max_size=40),
       gaps=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=5))
def test_any_request_a_client_can_send_is_scored_without_an_error(prompt, system, max_tokens, tools, ip, user_agent,
                                                                  gaps):
    scorer = live.Scorer(LiveRouting(min_reference=20), ErrorBudget(), _REFERENCE,
                         live.Indicators(_indicators(("n", "network", "203.0.113.0/24", None),
                                                     ("u", "user-agent", "evil/1", None))))
    t = T0
    for gap in gaps:
        t += timedelta(seconds=gap)
        seen = scorer.look("a", t, max_tokens, tools, system, prompt, ip, 64500, user_agent, "example.com", "card")
        assert 0 < seen.p_value <= 1
