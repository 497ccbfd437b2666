"""Inheritance: a new account showing a throttled campaign's indicators takes its action at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import ibis
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.detect import inherit, linkage
from distillguard.store.verdicts import VERDICT_SCHEMA

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _verdicts(rows):
    """rows: (account, action, campaign or None)."""
    n = len(rows)
    return pa.table({
        "account_id": [r[0] for r in rows], "action": [r[1] for r in rows], "score": [0.5] * n,
        "campaign_id": pa.array([r[2] for r in rows], pa.string()), "reasons": [[]] * n, "as_of": [T0] * n,
    }, schema=VERDICT_SCHEMA)


def _candidates(rows):
    """rows: (kind, key, account, holders)."""
    return pa.table({"kind": [r[0] for r in rows], "key": [r[1] for r in rows],
                     "account_id": [r[2] for r in rows], "holders": pa.array([r[3] for r in rows], pa.int64())})


def _indicators(rows, action="throttle"):
    """rows: (kind, key, holders), all of campaign c1."""
    return pa.table({"campaign_id": ["c1"] * len(rows), "action": [action] * len(rows),
                     "kind": [r[0] for r in rows], "key": [r[1] for r in rows],
                     "holders": pa.array([r[2] for r in rows], pa.int64())}, schema=inherit.INDICATOR_SCHEMA)


def test_a_key_only_members_of_one_throttled_campaign_hold_is_an_indicator():
    verdicts = _verdicts([("a", "throttle", "c1"), ("b", "throttle", "c1"), ("c", "throttle", "c1"),
                          ("d", "monitor", "c1"), ("e", "throttle", "c2"), ("f", "allow", None)])
    candidates = _candidates([
        ("payment", "card-1", "a", 3), ("payment", "card-1", "b", 3), ("payment", "card-1", "c", 3),
        # a monitored (weakly tied) member holds it too: it may be a customer Leiden attached
        ("subnet", "10.0.0.0/24", "a", 3), ("subnet", "10.0.0.0/24", "b", 3), ("subnet", "10.0.0.0/24", "d", 3),
        # ...while the campaign's framing may be held by its weakly tied members (its newest)
        ("scaffold", "show your full reasoning", "a", 3), ("scaffold", "show your full reasoning", "b", 3),
        ("scaffold", "show your full reasoning", "d", 3),
        # held across two campaigns: whose action would it carry?
        ("ip", "10.0.0.7", "a", 3), ("ip", "10.0.0.7", "b", 3), ("ip", "10.0.0.7", "e", 3),
        # one holder outside the candidates (an allowed customer): fewer rows than holders
        ("system_prompt", "you are a bot", "a", 3), ("system_prompt", "you are a bot", "b", 3),
        ("subnet", "10.9.9.0/24", "a", 3), ("subnet", "10.9.9.0/24", "b", 3),
    ])
    table = inherit.indicators(candidates, verdicts, min_holders=2)
    assert table.select(["campaign_id", "kind", "key", "holders"]).to_pylist() == [
        {"campaign_id": "c1", "kind": "payment", "key": "card-1", "holders": 3},
        {"campaign_id": "c1", "kind": "scaffold", "key": "show your full reasoning", "holders": 2}]
    assert table["action"].to_pylist() == ["throttle", "throttle"]  # the campaign's action
    # fewer throttled holders than min_holders: not an indicator
    assert inherit.indicators(candidates, verdicts, min_holders=3)["key"].to_pylist() == ["card-1"]


def test_a_residential_subnet_is_never_an_indicator_while_a_hosting_range_and_the_exit_itself_are():
    # residential proxy exits are households' connections: the next customer on that street is no recruit
    verdicts = _verdicts([("a", "throttle", "c1"), ("b", "throttle", "c1"), ("c", "throttle", "c1")])
    keys = [("subnet", "76.207.192.0/24"), ("subnet", "3.5.140.0/24"), ("ip", "76.207.192.212")]
    candidates = _candidates([(kind, key, account, 3) for kind, key in keys for account in "abc"])
    table = inherit.indicators(candidates, verdicts, min_holders=3)
    assert sorted(zip(table["kind"].to_pylist(), table["key"].to_pylist())) == [
        ("ip", "76.207.192.212"), ("subnet", "3.5.140.0/24")]  # 3.5.140.0/24: an Amazon range
    assert inherit.neighbourhoods(pa.array(["subnet", "subnet", "ip"]),
                                  pa.array(["76.207.192.0/24", "3.5.140.0/24", "76.207.192.212"])).to_pylist() == [
        True, False, False]


def test_a_sign_up_hour_is_an_indicator_only_at_a_domain_customers_do_not_use():
    verdicts = _verdicts([("a", "throttle", "c1"), ("b", "throttle", "c1"), ("c", "throttle", "c1")])
    keys = [("signup_burst", "gmail.com@2026-05-03 14"), ("signup_burst", "mailbox-ops.net@2026-05-03 14")]
    candidates = _candidates([(kind, key, account, 3) for kind, key in keys for account in "abc"])
    accounts = pa.table({
        "account_id": ["a", "b", "c", "d", "e", "f", "g", "new"],
        "email_domain": ["GMail.com", "mailbox-ops.net", "mailbox-ops.net", "gmail.com", "gmail.com", "gmail.com",
                         None, "mailbox-ops.net"]})
    # d, e, f: customers at gmail in no cluster; "new" is a recruit no clustering placed yet
    common = inherit.common_domains(accounts, clustered={"a", "b", "c"}, new={"new"}, outside_share=0.02)
    assert common == {"gmail.com"}
    table = inherit.indicators(candidates, verdicts, min_holders=3, common=common)
    assert table["key"].to_pylist() == ["mailbox-ops.net@2026-05-03 14"]
    # counted against it, the unplaced recruit would make the operation's own domain common too
    assert inherit.common_domains(accounts, {"a", "b", "c"}, set(), 0.02) == {"gmail.com", "mailbox-ops.net"}


def test_habitual_framing_needs_only_most_of_its_holders_to_be_the_campaigns_throttled_members():
    # an operation's framing: 19 of its 20 holders throttled members, one of its accounts no scan tied
    verdicts = _verdicts([(f"m{i}", "throttle", "c1") for i in range(19)] + [("quiet", "allow", None)])
    framing = [("system_prompt", "you are a harvester", f"m{i}", 20) for i in range(19)]
    # the same share on an address is not enough: every other kind needs all its holders inside
    address = [("subnet", "10.0.0.0/24", f"m{i}", 20) for i in range(19)]
    table = inherit.indicators(_candidates(framing + address), verdicts, min_holders=3, min_share=0.9)
    assert table.select(["kind", "key", "holders"]).to_pylist() == [
        {"kind": "system_prompt", "key": "you are a harvester", "holders": 19}]
    # a popular prompt that the campaign also uses is held by customers far beyond that share
    popular = [("system_prompt", "you are a helpful assistant", f"m{i}", 40) for i in range(19)]
    assert inherit.indicators(_candidates(popular), verdicts, min_holders=3, min_share=0.9).num_rows == 0


def _held(rows):
    """rows: (kind, key, account); holders counted per key, as linkage.ranked carries them."""
    counts: dict[tuple[str, str], int] = {}
    for kind, key, _ in rows:
        counts[(kind, key)] = counts.get((kind, key), 0) + 1
    return ibis.memtable(pa.table({
        "kind": [r[0] for r in rows], "key": [r[1] for r in rows], "account_id": [r[2] for r in rows],
        "holders": pa.array([counts[(r[0], r[1])] for r in rows], pa.int64())}))


def _candidate_rows(table):
    return sorted((r["kind"], r["key"], r["account_id"], r["holders"]) for r in table.to_pyarrow().to_pylist())


def test_candidate_framing_is_held_inside_campaign_sized_clusters_new_accounts_aside():
    members = ibis.memtable(pa.table({"account_id": ["a", "b", "c"], "cluster": pa.array([1, 1, 1], pa.int64())}))
    held = _held([
        # the campaign's framing, and a recruit too new for any cluster that uses it: still its own
        ("system_prompt", "you are a harvester", "a"), ("system_prompt", "you are a harvester", "b"),
        ("system_prompt", "you are a harvester", "c"), ("system_prompt", "you are a harvester", "recruit"),
        # a sign-up hour a new customer shares: its own holding keeps it from being an indicator
        ("signup_burst", "gmail.com@2026-04-25 14", "a"), ("signup_burst", "gmail.com@2026-04-25 14", "b"),
        ("signup_burst", "gmail.com@2026-04-25 14", "c"), ("signup_burst", "gmail.com@2026-04-25 14", "recruit"),
    ])
    new = ibis.memtable(pa.table({"account_id": ["recruit"]}))
    rows = _candidate_rows(inherit.candidate_keys(held, members, 3, new))
    assert rows == [("system_prompt", "you are a harvester", a, 3) for a in "abc"]
    # without knowing who is new, the recruit counts against the framing like anyone else
    assert _candidate_rows(inherit.candidate_keys(held, members, 3)) == []


def test_framing_may_have_a_few_holders_outside_any_cluster_but_not_a_tools_customers():
    inside = [f"m{i}" for i in range(49)]
    members = ibis.memtable(pa.table({"account_id": inside, "cluster": pa.array([1] * 49, pa.int64())}))
    held = _held([("system_prompt", "you are a harvester", a) for a in inside + ["quiet"]]
                 + [("system_prompt", "you are a coding agent", a) for a in inside + [f"c{i}" for i in range(10)]])
    rows = _candidate_rows(inherit.candidate_keys(held, members, 3, outside_share=0.02))
    assert {key for _, key, _, _ in rows} == {"you are a harvester"}
    assert len(rows) == 49 and rows[0][3] == 50


def test_the_card_alone_is_enough_to_inherit():
    matcher = inherit.Matcher(_indicators([("payment", "card-1", 12)]))
    hit = matcher.observe("new", [("payment", "card-1")], T0)
    assert hit is not None and hit[0] == "c1"
    assert "held by 12 throttled accounts of c1" in hit[1][0]


def test_network_evidence_alone_is_not_enough_however_much_of_it():
    # a residential neighbour of a proxy exit shares its subnet, even its address
    matcher = inherit.Matcher(_indicators([("subnet", "10.0.0.0/24", 9), ("ip", "10.0.0.7", 4)]))
    assert matcher.observe("neighbour", [("subnet", "10.0.0.0/24"), ("ip", "10.0.0.7")], T0) is None
    assert matcher.observe("neighbour", [("ip", "10.0.0.7")], T0) is None


def test_client_evidence_alone_is_not_enough():
    # a user who pasted a campaign's framing into their own requests
    matcher = inherit.Matcher(_indicators([("system_prompt", "you are a harvester", 200),
                                           ("scaffold", "think step by step", 150)]))
    assert matcher.observe("copycat", [("system_prompt", "you are a harvester"), ("scaffold", "think step by step")], T0) is None
    assert matcher.observe("copycat", [("system_prompt", "you are a harvester"), ("scaffold", "think step by step")], T0) is None


LONG_PROMPT = "you are a world class expert work through the problem exhaustively and verify each step always include code"


def test_a_campaigns_own_long_system_prompt_used_habitually_is_a_signature_that_suffices_alone():
    matcher = inherit.Matcher(_indicators([("system_prompt", LONG_PROMPT, 436), ("system_prompt", "you are a harvester", 200)]),
                              signature_words=12)
    # once is not habit
    assert matcher.observe("recruit", [("system_prompt", LONG_PROMPT)], T0) is None
    campaign, reasons = matcher.observe("recruit", [("system_prompt", LONG_PROMPT)], T0)
    assert campaign == "c1"
    assert reasons == [f"the campaign's own 18-word system prompt {LONG_PROMPT[:60]!r} in 2 requests, "
                       "held by 436 throttled accounts of c1"]
    # a short prompt, however habitual, is a phrase anyone may type: framing alone is not enough
    for _ in range(5):
        assert matcher.observe("copycat", [("system_prompt", "you are a harvester")], T0) is None
    # with signatures off (0) the long prompt is client evidence like any other
    off = inherit.Matcher(_indicators([("system_prompt", LONG_PROMPT, 436)]), signature_words=0)
    for _ in range(5):
        assert off.observe("recruit", [("system_prompt", LONG_PROMPT)], T0) is None


def test_two_families_over_several_requests_complete_the_evidence():
    # one n-gram of framing suffices here (the policy asks two: see the scaffold_ngrams tests below)
    matcher = inherit.Matcher(_indicators([("subnet", "10.0.0.0/24", 9), ("scaffold", "think step by step", 150)]),
                              scaffold_ngrams=1)
    assert matcher.observe("recruit", [("subnet", "10.0.0.0/24")], T0) is None
    # the framing is habitual evidence: it counts from its second request on
    assert matcher.observe("recruit", [("scaffold", "think step by step")], T0) is None
    campaign, reasons = matcher.observe("recruit", [("scaffold", "think step by step")], T0)
    assert campaign == "c1" and len(reasons) == 2
    assert "in 2 requests" in reasons[1]
    # another account's requests do not add to this one's evidence
    assert matcher.observe("other", [("scaffold", "think step by step")], T0) is None


def test_a_phrase_typed_once_from_a_campaigns_neighbourhood_is_not_a_recruit():
    # the residential-proxies replay: a new customer on a /24 that the campaign's proxies shared
    # asked once for reasoning in the words of the campaign's framing
    matcher = inherit.Matcher(_indicators([("subnet", "10.0.0.0/24", 5), ("scaffold", "and show your complete", 284),
                                           ("scaffold", "show your complete reasoning", 284)]))
    once = [("subnet", "10.0.0.0/24"), ("scaffold", "and show your complete"),
            ("scaffold", "show your complete reasoning")]
    assert matcher.observe("customer", once, T0) is None
    assert matcher.observe("customer", [("subnet", "10.0.0.0/24")], T0) is None
    # ...while the campaign's script carries it in every request
    assert matcher.observe("recruit", once, T0) is None
    assert matcher.observe("recruit", once, T0) is not None


def test_framing_counts_once_several_of_the_campaigns_n_grams_matched_not_one_phrase():
    # a customer on a subnet of the campaign's whose own wording shares one 4-word n-gram with
    # the campaign's framing, in request after request
    table = _indicators([("subnet", "10.0.0.0/24", 7), ("scaffold", "do not skip any", 287),
                         ("scaffold", "not skip any steps", 287), ("scaffold", "and verbosely include self", 287)])
    matcher = inherit.Matcher(table, scaffold_ngrams=2)
    phrase = [("subnet", "10.0.0.0/24"), ("scaffold", "do not skip any")]
    assert matcher.observe("customer", phrase, T0) is None
    assert matcher.observe("customer", phrase, T0) is None
    assert matcher.observe("customer", phrase, T0) is None
    # the script's framing sentence spans several of the campaign's n-grams
    script = phrase + [("scaffold", "not skip any steps")]
    assert matcher.observe("recruit", script, T0) is None
    campaign, reasons = matcher.observe("recruit", script, T0)
    assert campaign == "c1"
    assert "2 scaffold n-grams 'do not skip any', 'not skip any steps' in 2 requests" in reasons[1]
    # n-grams gathered over several requests (a paraphrasing script) count as well
    assert matcher.observe("paraphraser", [("subnet", "10.0.0.0/24"), ("scaffold", "do not skip any")], T0) is None
    assert matcher.observe("paraphraser", [("scaffold", "and verbosely include self")], T0) is not None
    # with one n-gram enough, the customer's phrase would have been
    lenient = inherit.Matcher(table, scaffold_ngrams=1)
    assert lenient.observe("customer", phrase, T0) is None
    assert lenient.observe("customer", phrase, T0) is not None


def _requests(rows):
    """rows: (account, minutes after T0, payment, ip, system prompt, prompt)."""
    return pa.table({
        "account_id": [r[0] for r in rows], "timestamp": [T0 + timedelta(minutes=r[1]) for r in rows],
        "payment_fingerprint": pa.array([r[2] for r in rows], pa.string()),
        "client_ip": pa.array([r[3] for r in rows], pa.string()),
        "system_prompt": pa.array([r[4] for r in rows], pa.string()),
        "prompt": [r[5] for r in rows]})


def test_an_inheriting_account_is_stopped_at_the_request_that_completes_the_evidence():
    table = _indicators([("subnet", "203.0.113.0/24", 9), ("system_prompt", "you are a harvester", 40)],
                        action="block")
    requests = _requests([
        ("recruit", 5, None, "203.0.113.9", None, "first question"),
        ("recruit", 9, None, "203.0.113.9", "You are a HARVESTER!", "second question"),
        ("recruit", 12, None, "203.0.113.9", "You are a harvester.", "third question"),
        ("recruit", 15, None, "203.0.113.9", "you are a harvester", "fourth question"),
        ("recruit", 18, None, "203.0.113.9", "you are a harvester", "fifth question"),
        ("customer", 7, None, "198.51.100.4", "You are a harvester", "hello"),
    ])
    rows = inherit.inherited(requests, table, T0, cap="throttle").to_pylist()
    assert [r["account_id"] for r in rows] == ["recruit"]
    assert rows[0]["as_of"] == T0 + timedelta(minutes=12)  # the second request with the system prompt
    # capped: a block is the next scan's to decide on the account's own evidence
    assert rows[0]["action"] == "throttle"
    assert rows[0]["reasons"][0].startswith("new account inherits throttle from c1")


def test_a_customer_of_long_standing_in_a_campaigns_neighbourhood_inherits_nothing():
    # the residential-proxies replay: a customer's ISP /24 holds campaign exits, and its prompts
    # ask for reasoning in the campaign's words; two families, but the account is years old
    table = _indicators([("subnet", "203.0.113.0/24", 7), ("system_prompt", "you are a harvester", 40)])
    requests = _requests([(account, minute + k, None, ip, "You are a harvester", "hi")
                          for k in (0, 10, 20)
                          for account, minute, ip in (("customer", 5, "203.0.113.9"), ("recruit", 6, "203.0.113.10"),
                                                      ("unknown age", 7, "203.0.113.11"))])
    created = [T0 - timedelta(days=700), T0 - timedelta(days=3), None] * 3
    requests = requests.append_column("account_created_at", pa.array(created, pa.timestamp("us", tz="UTC")))
    rows = inherit.inherited(requests, table, T0, cap="throttle")
    assert sorted(rows["account_id"].to_pylist()) == ["recruit", "unknown age"]
    # without the age rule the customer would have been stopped too
    ageless = inherit.Freshness(created_within=timedelta(days=10_000))
    assert "customer" in inherit.inherited(requests, table, T0, cap="throttle", fresh=ageless)["account_id"].to_pylist()


def test_the_gateway_applies_the_same_freshness_rule_request_by_request():
    table = _indicators([("payment", "card-1", 12)])
    matcher = inherit.Matcher(table)
    # a customer of two years holds the campaign's card: not a recruit
    assert matcher.observe("old", [("payment", "card-1")], T0, created=T0 - timedelta(days=700)) is None
    # first seen by the store four days ago: not new any more, whatever it shows now
    assert matcher.observe("seen", [("payment", "card-1")], T0, first_seen=T0 - timedelta(days=4)) is None
    # an account this matcher first saw four days ago is no longer new either
    assert matcher.observe("quiet", [], T0 - timedelta(days=4)) is None
    assert matcher.observe("quiet", [("payment", "card-1")], T0) is None
    assert matcher.observe("recruit", [("payment", "card-1")], T0, created=T0 - timedelta(days=2)) is not None


def test_no_indicators_no_inheritance():
    requests = _requests([("a", 1, "card-1", "10.0.0.1", None, "hi")])
    assert inherit.inherited(requests, inherit.INDICATOR_SCHEMA.empty_table(), T0, "throttle").num_rows == 0


def test_the_sign_up_burst_key_is_the_one_linkage_computes():
    created = [datetime(2026, 5, 5, 21, 37, 3, tzinfo=UTC), datetime(2026, 5, 5, 0, 0, tzinfo=UTC)]
    ex = ibis.memtable(pa.table({
        "account_id": ["a", "b"], "payment_fingerprint": pa.array([None, None], pa.string()),
        "user_agent": pa.array([None, None], pa.string()), "email_domain": ["Byte81.TOP", "gmail.com"],
        "account_created_at": pa.array(created, pa.timestamp("us", tz="UTC"))}))
    empty = ibis.memtable(pa.table({"account_id": pa.array([], pa.string()), "key": pa.array([], pa.string())}))
    params = linkage.LinkageParams(exclude=tuple(k for k in linkage.EVIDENCE if k not in ("signup_burst", "payment",
                                                                                             "user_agent")))
    keys = linkage.account_keys(ex, None, empty, params).to_pyarrow()
    from_scan = sorted(k for k, kind in zip(keys["key"].to_pylist(), keys["kind"].to_pylist()) if kind == "signup_burst")
    assert from_scan == sorted(inherit.signup_burst_key(d, c) for d, c in zip(["Byte81.TOP", "gmail.com"], created))
    assert inherit.signup_burst_key("x.org", datetime(2026, 5, 5, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) \
        == "x.org@2026-05-06 01"


_ages = st.one_of(st.none(), st.integers(min_value=-3_600, max_value=40 * 86_400))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_ages, _ages), min_size=1, max_size=8))
def test_the_replays_vectorised_freshness_is_the_gateways_per_request_rule(rows):
    """rows: (seconds since first seen, seconds since created), None where unknown."""
    fresh = inherit.Freshness()
    at = [T0 + timedelta(minutes=i) for i in range(len(rows))]
    first = [None if f is None else t - timedelta(seconds=f) for t, (f, _) in zip(at, rows)]
    created = [None if c is None else t - timedelta(seconds=c) for t, (_, c) in zip(at, rows)]
    table = pa.table({"timestamp": at, "first_seen": pa.array(first, pa.timestamp("us", tz="UTC")),
                      "account_created_at": pa.array(created, pa.timestamp("us", tz="UTC"))})
    kept = fresh.filter(table)["timestamp"].to_pylist()
    assert kept == [t for t, f, c in zip(at, first, created) if fresh.is_new(t, f, c)]


_texts = st.one_of(st.none(), st.text(max_size=300))
_ips = st.one_of(st.none(), st.just(""), st.from_regex(r"\A(\d{1,3}\.){3}\d{1,3}\Z"), st.just("2001:db8::1"),
                 st.text(max_size=20))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.text(max_size=12)), _ips, _texts, st.text(max_size=400)),
                min_size=1, max_size=6))
def test_keys_of_a_table_are_the_keys_of_each_request(rows):
    table = pa.table({"payment_fingerprint": pa.array([r[0] for r in rows], pa.string()),
                      "client_ip": pa.array([r[1] for r in rows], pa.string()),
                      "system_prompt": pa.array([r[2] for r in rows], pa.string()),
                      "prompt": pa.array([r[3] for r in rows], pa.string())})
    keys = inherit.exchange_keys(table)
    for i, row in enumerate(rows):
        mine = sorted((k, v) for r, k, v in zip(*(keys[n].to_pylist() for n in ("row", "kind", "key"))) if r == i)
        assert mine == sorted(inherit.request_keys(*row))


def test_the_scan_calls_new_the_accounts_the_gateway_would_still_judge_as_new():
    from distillguard.detect.policy import Policy
    from distillguard.detect.scan import _new_accounts

    as_of = T0 + timedelta(days=30)
    feats = pa.table({
        "account_id": ["recruit", "returning_customer", "unknown_creation", "old_traffic"],
        "first_seen": pa.array([as_of - timedelta(hours=5), as_of - timedelta(hours=5), as_of - timedelta(hours=70),
                                as_of - timedelta(hours=80)], pa.timestamp("us", tz="UTC")),
        # a customer of long standing whose first request in the lookback is recent is not new
        "created_at": pa.array([as_of - timedelta(days=2), as_of - timedelta(days=400), None,
                                as_of - timedelta(days=4)], pa.timestamp("us", tz="UTC")),
    })
    assert sorted(_new_accounts(feats, as_of, Policy())["account_id"].to_pylist()) == ["recruit", "unknown_creation"]


def test_no_accounts_none_new():
    from distillguard.detect.policy import Policy
    from distillguard.detect.scan import _new_accounts

    empty = pa.table({"account_id": pa.array([], pa.string()), "first_seen": pa.array([], pa.timestamp("us", tz="UTC")),
                      "created_at": pa.array([], pa.timestamp("us", tz="UTC"))})
    assert _new_accounts(empty, T0, Policy()).num_rows == 0
