"""Entity controls and step-up verification, in process: the admin body parser (any JSON value),
which requests a control refuses and with what, the GeoIP lookup on MaxMind's test database and on
damaged copies of it, durability across a new Controls (a restart), and the policy's verify rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.detect.policy import EntityControl, Policy, load_policy
from distillguard.errors import UserError
from distillguard.gateway import controls as ctl
from distillguard.gateway.enforce import Decision, refusal
from distillguard.gateway.overrides import Held

GEOIP = Path(__file__).parents[1] / "data" / "geoip" / "GeoIP2-Country-Test.mmdb"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
#: addresses MaxMind's test database places (GeoIP2-Country-Test.mmdb.source.txt)
GB_IP, SE_IP = "81.2.69.160", "89.160.20.112"
STAT_REASON = "block (BiCM null): 6 entities share 9 rare tokens (p=1e-12)"
WORDING_REASON = "wording (the population null): 40 entities hold the system prompt 'x'; ... p=1e-9"


def body(**fields):
    return {"kind": "model", "value": "m-large", "action": "disable", "reason": "r"} | fields


def controls(tmp_path: Path, *bodies: dict, geoip: Path | None = None, policy: Policy | None = None) -> ctl.Controls:
    """A Controls in ``tmp_path`` with each body set through the same steps as the admin API."""
    c = ctl.Controls(tmp_path, policy or Policy(), str(geoip) if geoip else None)
    for b in bodies:
        spec, actor = ctl.parse_body(b, NOW)
        event = c.change(None, c.new_control(spec, actor, NOW), spec.reason, actor, "127.0.0.1", NOW)
        c.file.append(event)
        c.book.apply(event)
    return c


# --- the admin body ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, says", [
    ({"kind": "user"}, "kind: Input should be 'model', 'organization', 'country', 'asn' or 'email_domain'"),
    ({"action": "block"}, "a model control's action is disable"),
    ({"kind": "organization", "action": "disable"}, "a organization control's action is block"),
    ({"value": 42}, "value: Input should be a valid string"),
    ({"value": "  "}, "value must be 1 to 253 printable characters"),
    ({"expires_at": "tomorrow"}, "expires_at: 'tomorrow' is not an ISO-8601 time"),
    ({"expires_at": "2031-01-01T00:00:00"}, "expires_at: has no UTC offset"),
    ({"expires_at": "2029-01-01T00:00:00Z"}, "expires_at: not in the future"),
    ({"expires_at": 1893456000}, "expires_at: must be an ISO-8601 time"),
    ({"kind": "country", "value": "GBR", "action": "block"}, "a country is an ISO 3166-1 alpha-2 code"),
    ({"kind": "asn", "value": "AS4294967296", "action": "block"}, "an AS number is 0..4294967295"),
    ({"kind": "email_domain", "value": "a@b.com", "action": "block"}, "an e-mail domain has no blanks and no @"),
    ({"scope": {"countries": ["Britain"]}}, "scope.countries: a country is an ISO 3166-1 alpha-2 code"),
    ({"scope": {"teams": ["x"]}}, "scope.teams: Extra inputs are not permitted"),
    ({"reason": ""}, "reason: required"),
    ({"colour": "red"}, "Unknown field(s) 'colour'"),
])
def test_a_control_body_with_a_bad_field_is_refused_in_one_line_naming_the_field(fields, says):
    with pytest.raises(ctl.BodyRefused) as refused:
        ctl.parse_body(body(**fields), NOW)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_a_control_body_is_normalised_as_it_will_be_matched():
    spec, actor = ctl.parse_body({"kind": "asn", "value": "as013335", "action": "block", "reason": " why ",
                                  "actor": "jo"}, NOW)
    assert (spec.value, spec.reason, actor) == ("13335", "why", "jo")
    spec, _ = ctl.parse_body({"kind": "email_domain", "value": "@Example.COM", "action": "block", "reason": "r",
                              "scope": {"countries": ["gb"]}}, NOW)
    assert (spec.value, spec.scope.countries) == ("example.com", ["GB"])


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4), max_leaves=12)
control_bodies = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["model", "organization", "country", "asn", "email_domain", ""]) | json_values,
    "value": st.text(max_size=300) | st.sampled_from(["GB", "AS1", "13335", "example.com", "m"]) | json_values,
    "action": st.sampled_from(["disable", "block", "verify"]) | json_values,
    "reason": st.text(max_size=20) | json_values,
    "actor": st.text(max_size=20) | json_values,
    "expires_at": st.sampled_from(["2031-01-01T00:00:00Z", "2031-01-01", "x", "2020-01-01T00:00:00+00:00"])
    | json_values,
    "scope": st.fixed_dictionaries({}, optional={"organizations": json_values, "countries": json_values})
    | json_values,
}) | json_values


@given(value=control_bodies)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_control_body_becomes_a_control_or_one_refusal_line(value):
    try:
        spec, actor = ctl.parse_body(value, NOW)
    except ctl.BodyRefused as refused:
        assert str(refused) and "\n" not in str(refused)
        return
    assert isinstance(spec, EntityControl) and isinstance(actor, str) and spec.reason.strip()
    assert spec.expires_at is None or spec.expires_at > NOW
    assert json.loads(spec.model_dump_json())["kind"] == spec.kind


# --- what a control refuses ----------------------------------------------------------------------

def test_a_disabled_model_answers_model_not_found_and_only_to_its_scope(tmp_path):
    c = controls(tmp_path, body(value="m-large", scope={"organizations": ["org-b"]}))
    got = c.refusal("org-b", None, None, None, "m-large", NOW)
    assert (got.status, got.kind, got.code) == (404, "invalid_request_error", "model_not_found")
    assert got.message == "The model `m-large` does not exist or you do not have access to it."
    assert c.refusal("org-other", None, None, None, "m-large", NOW) is None
    assert c.refusal("org-b", None, None, None, "m-small", NOW) is None


def test_a_blocked_organisation_domain_or_asn_gets_a_generic_403(tmp_path):
    c = controls(tmp_path, body(kind="organization", value="org-b", action="block", reason="case 7: resold keys"),
                 body(kind="email_domain", value="burner.example", action="block"),
                 body(kind="asn", value="AS64500", action="block"))
    refused = [c.refusal("org-b", None, None, None, None, NOW, "gw-1"),
               c.refusal(None, "mail.burner.example", None, None, None, NOW, "gw-1"),
               c.refusal(None, None, None, 64500, None, NOW, "gw-1")]
    for got in refused:
        assert (got.status, got.code) == (403, "account_blocked")
        assert "case 7" not in got.message and "burner" not in got.message and "gw-1" in got.message
    assert c.refusal("org-c", "notburner.example", None, 64501, "m", NOW) is None


def test_a_control_stops_holding_at_its_expiry(tmp_path):
    c = controls(tmp_path, body(kind="organization", value="org-b", action="block",
                                expires_at=(NOW + timedelta(hours=1)).isoformat()))
    assert c.refusal("org-b", None, None, None, None, NOW) is not None
    assert c.refusal("org-b", None, None, None, None, NOW + timedelta(hours=1)) is None
    assert c.view(NOW + timedelta(hours=2))["count"] == 0


def test_a_country_block_needs_the_geoip_database_and_says_when_it_is_inert(tmp_path):
    country = body(kind="country", value="GB", action="block")
    with_db = controls(tmp_path / "a", country, geoip=GEOIP)
    assert with_db.refusal(None, None, GB_IP, None, None, NOW).status == 403
    assert with_db.refusal(None, None, SE_IP, None, None, NOW) is None
    assert with_db.view(NOW)["geoip"]["loaded"] is True
    without = controls(tmp_path / "b", country)
    assert without.refusal(None, None, GB_IP, None, None, NOW) is None
    view = without.view(NOW)
    assert view["geoip"]["loaded"] is False and "inert" in view["geoip"]["detail"]
    assert view["controls"][0]["inert"] is True


def test_the_model_list_leaves_out_the_models_disabled_for_the_client(tmp_path):
    c = controls(tmp_path, body(value="mock-model", scope={"countries": ["SE"]}), geoip=GEOIP)
    listing = json.dumps({"object": "list", "data": [{"id": "mock-model"}, {"id": "other"}]}).encode()
    assert [m["id"] for m in json.loads(c.listing(listing, None, SE_IP, NOW))["data"]] == ["other"]
    assert c.listing(listing, None, GB_IP, NOW) == listing


def test_controls_and_their_audit_come_back_from_the_file_after_a_restart(tmp_path):
    # two changes a millisecond apart: changes of one instant are ordered by their ids, as every
    # gateway sharing them must agree, not by which was made first
    first = controls(tmp_path, body(kind="organization", value="org-b", action="block", reason="one"))
    [held] = first.book.in_force(NOW)
    spec, actor = ctl.parse_body(body(kind="organization", value="org-b", action="block", reason="two"), NOW)
    again_set = first.change(held.control_id, first.new_control(spec, actor, NOW), spec.reason, actor, "127.0.0.1",
                             NOW + timedelta(milliseconds=1))
    first.file.append(again_set)
    first.book.apply(again_set)
    [held] = first.book.in_force(NOW + timedelta(milliseconds=1))
    gone = first.change(held.control_id, None, "lifted", "jo", None, NOW + timedelta(seconds=1))
    first.file.append(gone)
    first.book.apply(gone)
    again = ctl.Controls(tmp_path, Policy())
    assert again.book.in_force(NOW) == [] and again.refusal("org-b", None, None, None, None, NOW) is None
    audit = again.audit()
    assert [(e["op"], e["reason"]) for e in audit] == [("set", "one"), ("set", "two"), ("remove", "lifted")]
    assert audit[1]["previous"]["reason"] == "one" and audit[2]["previous"]["reason"] == "two"
    assert len({e["control_id"] for e in audit}) == 1  # the same target is one control, replaced


def test_policy_file_controls_are_in_force_and_read_only(tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("controls:\n- {kind: model, value: m-old, action: disable, reason: retired}\n")
    c = ctl.Controls(tmp_path, load_policy(policy_file))
    assert c.refusal(None, None, None, None, "m-old", NOW).status == 404
    [row] = c.view(NOW)["controls"]
    assert (row["source"], row["read_only"]) == ("policy", True)


# --- GeoIP: the operator's file, unchecked ---------------------------------------------------------

def test_the_geoip_database_gives_countries_and_none_for_unknown_addresses():
    countries = ctl.Countries(GEOIP)
    assert [countries.country(ip) for ip in (GB_IP, SE_IP, "127.0.0.1", "not an address", None)] == [
        "GB", "SE", None, None, None]


def test_a_file_that_is_not_a_maxmind_database_is_one_user_error(tmp_path):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    with pytest.raises(UserError, match="bad.mmdb: --geoip: not a MaxMind database"):
        ctl.Countries(bad)


@given(flips=st.lists(st.tuples(st.integers(0, GEOIP.stat().st_size - 1), st.integers(0, 255)), min_size=1,
                      max_size=8))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_damaged_geoip_database_is_refused_or_answers_countries_never_raises(tmp_path_factory, flips):
    data = bytearray(GEOIP.read_bytes())
    for at, byte in flips:
        data[at] = byte
    path = tmp_path_factory.mktemp("mmdb") / "damaged.mmdb"
    path.write_bytes(bytes(data))
    try:
        countries = ctl.Countries(path)
    except UserError:
        return
    for ip in (GB_IP, SE_IP, "216.160.83.56", "::1", "2001:218::1"):
        code = countries.country(ip)
        assert code is None or isinstance(code, str)


# --- step-up verification --------------------------------------------------------------------------

STEP_UP = Policy(verify={"enabled": True, "new_account_days": 7})


@pytest.mark.parametrize("action, reasons, age_days, policy, expected", [
    ("throttle", (STAT_REASON,), 2, STEP_UP, "verify"),
    ("throttle", (WORDING_REASON,), 2, STEP_UP, "verify"),
    ("monitor", (STAT_REASON,), 2, STEP_UP, "verify"),
    ("throttle", (STAT_REASON,), 30, STEP_UP, "throttle"),  # not new
    ("throttle", ("campaign c1: score=0.9",), 2, STEP_UP, "throttle"),  # no calibrated test
    ("throttle", (STAT_REASON,), None, STEP_UP, "throttle"),  # creation unknown: never new
    ("block", (STAT_REASON,), 2, STEP_UP, "block"),
    ("fallback", (STAT_REASON,), 2, STEP_UP, "fallback"),
    ("monitor", (STAT_REASON,), 2, Policy(verify={"enabled": True, "min_action": "throttle"}), "monitor"),
    ("throttle", (STAT_REASON,), 2, Policy(), "throttle"),  # off by default
])
def test_the_policy_sends_new_accounts_with_statistical_evidence_to_verify(action, reasons, age_days, policy,
                                                                            expected):
    created = None if age_days is None else NOW - timedelta(days=age_days)
    got = ctl.step_up(Decision(action, "verdict", reasons), created, NOW, policy)
    assert got.action == expected


def test_an_override_is_never_raised_to_verify_by_the_policy():
    d = Decision("throttle", "override", (STAT_REASON,))
    assert ctl.step_up(d, NOW, NOW, STEP_UP) is d


def test_verify_answers_403_verification_required_with_a_reference_stable_until_the_override_changes():
    first = {"alice": Held("verify", "case 9: linked to campaign-abc", "jo", NOW)}
    ref = ctl.verification_reference("alice", Decision("verify", "override"), first, None)
    assert ref == ctl.verification_reference("alice", Decision("verify", "override"), dict(first), None)
    later = {"alice": Held("verify", "again", "jo", NOW + timedelta(days=1))}
    assert ref != ctl.verification_reference("alice", Decision("verify", "override"), later, None)
    assert ref != ctl.verification_reference("bob", Decision("verify", "override"), first | {"bob": first["alice"]},
                                             None)
    got = refusal(Decision("verify", "override", ("case 9: linked to campaign-abc",)), None, 3600, "gw-1", ref)
    assert (got.status, got.kind, got.code) == (403, "permission_error", "verification_required")
    assert ref in got.message and "case 9" not in got.message and "campaign" not in got.message


def test_serve_with_a_geoip_file_that_is_not_a_database_exits_2_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app

    bad = tmp_path / "countries.mmdb"
    bad.write_bytes(b"\x00" * 64)
    result = CliRunner().invoke(app, ["serve", "--upstream", "http://127.0.0.1:9", "--db", str(tmp_path / "s.duckdb"),
                                      "--port", "0", "--geoip", str(bad)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "countries.mmdb: --geoip: not a MaxMind database" in result.output
    assert "Traceback" not in result.output
