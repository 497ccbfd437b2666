"""The console served for real (aiohttp on a free port) over the scanned demo store: who may see
what, who may act, what an action writes, and that attacker-controlled text stays text."""

from __future__ import annotations

import json
import re

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distillguard.console.server import COOKIE, CSP
from distillguard.gateway import overrides as overrides_mod
from distillguard.store import Store
from tests.console.conftest import DEMO_CAMPAIGN, XSS_ACCOUNT, XSS_AGENT, XSS_PROMPT

PAGES = ["/campaigns", f"/campaigns/{DEMO_CAMPAIGN}", "/audit", "/act?kind=campaign&target=x&action=block"]


def events(state_dir) -> list[overrides_mod.Event]:
    return overrides_mod.OverrideFile(state_dir).events()


def block(running, session, kind="campaign", target=DEMO_CAMPAIGN, action="block", reason="case 12: harvesting",
          **extra):
    form = {"csrf": running.csrf(session), "kind": kind, "target": target, "action": action, "reason": reason} | extra
    return session.post(running.url + "/act", data=form, allow_redirects=False)


# --- sessions ------------------------------------------------------------------------------

def test_nothing_but_the_login_page_and_static_assets_is_served_without_a_session(intel_store, start_console):
    c = start_console(intel_store)
    for path in PAGES:
        r = requests.get(c.url + path, allow_redirects=False)
        assert (r.status_code, r.headers["Location"]) == (303, "/login"), path
    assert requests.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/graph.json").status_code == 401
    assert requests.post(c.url + "/act", data={"kind": "campaign", "target": DEMO_CAMPAIGN, "action": "block",
                                               "reason": "x"}, allow_redirects=False).status_code == 401
    assert requests.get(c.url + "/login").status_code == 200
    assert requests.get(c.url + "/static/console.js").status_code == 200
    assert requests.get(c.url + "/static/cytoscape.LICENSE").status_code == 200
    assert events(c.state_dir) == []


def test_the_session_cookie_is_httponly_and_samesite_strict_and_secure_behind_tls(intel_store, start_console):
    c = start_console(intel_store)
    plain = requests.post(c.url + "/login", data={"token": c.tokens["ana"]}, allow_redirects=False)
    tls = requests.post(c.url + "/login", data={"token": c.tokens["ana"]}, allow_redirects=False,
                        headers={"X-Forwarded-Proto": "https"})
    for r, secure in ((plain, False), (tls, True)):
        cookie = r.headers["Set-Cookie"]
        assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert ("Secure" in cookie) is secure


def test_failed_logins_from_one_address_are_refused_for_a_while_even_with_a_good_token(intel_store, start_console):
    c = start_console(intel_store)
    for _ in range(5):
        assert requests.post(c.url + "/login", data={"token": "dgc_wrong"}).status_code == 401
    refused = requests.post(c.url + "/login", data={"token": c.tokens["ana"]}, allow_redirects=False)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert COOKIE not in refused.headers.get("Set-Cookie", "")


def test_every_page_carries_a_strict_content_security_policy(intel_store, start_console):
    c = start_console(intel_store)
    s = c.login("ana")
    for path in [*PAGES, "/login", "/static/console.css"]:
        r = s.get(c.url + path)
        assert r.headers["Content-Security-Policy"] == CSP, path
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in CSP and "unsafe-inline" not in CSP and "frame-ancestors 'none'" in CSP
    assert not re.search(r"<script(?![^>]*\bsrc=)", s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}").text)


def test_logging_out_or_removing_the_analyst_ends_the_session(intel_store, start_console):
    c = start_console(intel_store)
    ana, vic = c.login("ana"), c.login("vic")
    assert ana.post(c.url + "/logout", data={"csrf": c.csrf(ana)}, allow_redirects=False).status_code == 303
    assert ana.get(c.url + "/campaigns", allow_redirects=False).status_code == 303
    c.console.analysts.remove("vic")
    assert vic.get(c.url + "/campaigns", allow_redirects=False).headers["Location"] == "/login"


# --- pages ---------------------------------------------------------------------------------

def test_the_campaigns_page_lists_the_demo_campaign_and_finds_it_by_a_members_account(intel_store, start_console):
    with Store(intel_store, read_only=True) as store:
        action = dict(store.con.execute("SELECT campaign_id, action FROM campaigns").fetchall())[DEMO_CAMPAIGN]
    c = start_console(intel_store)
    s = c.login("vic")
    page = s.get(c.url + "/campaigns").text
    row = re.search(rf"<tr>(?:(?!</tr>).)*>{DEMO_CAMPAIGN}<(?:(?!</tr>).)*</tr>", page, re.DOTALL)
    assert row and f'<span class="action {action}">{action}</span>' in row.group(0)
    member = json.loads(s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/graph.json").text)["nodes"][0]["data"]["id"]
    found = s.get(c.url + "/campaigns", params={"q": member[-6:]}).text
    assert DEMO_CAMPAIGN in found and "1 campaign match" in found
    assert DEMO_CAMPAIGN in s.get(c.url + "/campaigns", params={"action": action}).text
    other = next(a for a in ("monitor", "throttle", "fallback", "block") if a != action)
    assert DEMO_CAMPAIGN not in s.get(c.url + "/campaigns", params={"action": other}).text
    ascending = s.get(c.url + "/campaigns", params={"sort": "members", "dir": "asc"}).text
    assert ascending.index("campaign-1a2a8593a7") < ascending.index(DEMO_CAMPAIGN)


def test_the_campaign_page_shows_members_evidence_leakage_lineage_and_a_graph_of_them(intel_store, start_console):
    c = start_console(intel_store)
    s = c.login("vic")
    page = s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}").text
    graph = s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/graph.json").json()
    members = {n["data"]["id"] for n in graph["nodes"]}
    assert len(members) == 25 and all(m in page for m in members)
    assert "BiCM null" in page and "p=" in page  # evidence with its p-values
    assert re.search(r'id="leakage">[\d,]+ exchanges', page)
    assert 'id="lineage"' in page and "<svg" in page
    assert graph["edges"] and all(e["data"]["source"] in members and e["data"]["kind"] in graph["kinds"]
                                  for e in graph["edges"])
    assert s.get(c.url + "/campaigns/campaign-none").status_code == 404


def test_the_account_page_plots_its_signals_against_the_population(intel_store, start_console):
    c = start_console(intel_store)
    s = c.login("vic")
    member = s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/graph.json").json()["nodes"][0]["data"]["id"]
    page = s.get(c.url + f"/accounts/{member}").text
    assert page.count('class="strip"') >= 10 and "key_" in page and DEMO_CAMPAIGN in page
    assert s.get(c.url + "/accounts/nobody").status_code == 404


def test_markup_in_prompts_user_agents_account_ids_and_organisations_is_rendered_as_text(markup_store, start_console):
    c = start_console(markup_store)
    s = c.login("vic")
    r = s.get(c.url + "/accounts/" + requests.utils.quote(XSS_ACCOUNT, safe=""))
    assert r.status_code == 200
    for raw in (XSS_PROMPT, XSS_AGENT, XSS_ACCOUNT, "<b>org</b>"):
        assert raw not in r.text
    assert "&lt;script&gt;window.__xss = 1&lt;/script&gt;" in r.text and "&lt;svg onload=alert(2)&gt;" in r.text


# --- acting --------------------------------------------------------------------------------

def test_an_operators_campaign_block_is_one_audited_override_on_its_id(intel_store, start_console):
    c = start_console(intel_store)
    ana = c.login("ana")
    confirm = ana.get(c.url + "/act", params={"kind": "campaign", "target": DEMO_CAMPAIGN, "action": "block"}).text
    assert re.search(r"touches <strong>25 accounts</strong>", confirm)
    r = block(c, ana)
    assert r.status_code == 303 and r.headers["Location"].startswith("/audit#")
    (event,) = events(c.state_dir)
    assert (event.account_id, event.action, event.actor, event.reason, event.previous) == (
        f"campaign:{DEMO_CAMPAIGN}", "block", "ana", "case 12: harvesting", None)
    audit = ana.get(c.url + "/audit").text
    assert event.event_id in audit and "case 12: harvesting" in audit
    # throttling it next records what held before; lifting it is one more row
    assert block(c, ana, action="throttle", reason="softer", expires_hours="2").status_code == 303
    assert block(c, ana, action="lift", reason="closed").status_code == 303
    rows = events(c.state_dir)
    assert [(e.action, e.previous and e.previous.action) for e in rows] == [
        ("block", None), ("throttle", "block"), ("lift", "throttle")]
    assert rows[1].expires_at is not None
    assert "override in force" not in ana.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}").text.lower()


def test_an_action_needs_a_reason_and_a_future_expiry(intel_store, start_console):
    c = start_console(intel_store)
    ana = c.login("ana")
    assert block(c, ana, reason="   ").status_code == 400
    assert block(c, ana, expires_hours="-1").status_code == 400
    assert block(c, ana, expires_hours="soon").status_code == 400
    assert block(c, ana, action="lift").status_code == 400  # nothing to lift
    assert block(c, ana, kind="account", target="campaign:x").status_code == 400
    assert events(c.state_dir) == []


def test_a_viewer_cannot_act(intel_store, start_console):
    c = start_console(intel_store)
    vic = c.login("vic")
    assert vic.get(c.url + "/act", params={"kind": "campaign", "target": DEMO_CAMPAIGN}).status_code == 403
    r = block(c, vic)
    assert r.status_code == 403 and "only operators can act" in r.text
    assert "Block campaign" not in vic.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}").text
    assert events(c.state_dir) == []


def test_a_form_without_the_sessions_csrf_token_or_from_another_origin_changes_nothing(intel_store, start_console):
    c = start_console(intel_store)
    ana = c.login("ana")
    form = {"kind": "campaign", "target": DEMO_CAMPAIGN, "action": "block", "reason": "forged"}
    assert ana.post(c.url + "/act", data=form).status_code == 403
    assert ana.post(c.url + "/act", data=form | {"csrf": "guess"}).status_code == 403
    assert ana.post(c.url + "/act", data=form | {"csrf": c.csrf(ana)},
                    headers={"Origin": "https://evil.example"}).status_code == 403
    assert events(c.state_dir) == []


_STARTED: dict[int, tuple] = {}


@pytest.mark.slow  # forty examples against a running console: about 8 s
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(q=st.text(max_size=40), sort=st.text(max_size=12), page=st.text(max_size=8), action=st.text(max_size=10),
       target=st.text(max_size=30), hours=st.text(max_size=8))
def test_no_query_or_form_value_makes_the_console_fail(intel_store, start_console, q, sort, page, action, target,
                                                       hours):
    if id(start_console) not in _STARTED:  # one console for every example of this run
        running = start_console(intel_store)
        _STARTED[id(start_console)] = (running, running.login("ana"))
    c, s = _STARTED[id(start_console)]
    listing = s.get(c.url + "/campaigns", params={"q": q, "sort": sort, "page": page, "action": action})
    assert listing.status_code == 200
    acted = block(c, s, kind="account", target=target or "t", action=action, reason=q or "r", expires_hours=hours)
    assert acted.status_code in (303, 400), acted.text[:300]


def test_a_campaigns_report_is_served_as_a_download_never_as_a_console_page(intel_store, start_console):
    c = start_console(intel_store)
    s = c.login("vic")
    r = s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/report.json")
    assert r.status_code == 200 and r.headers["Content-Disposition"].startswith("attachment;")
    assert DEMO_CAMPAIGN in json.dumps(r.json())
    assert s.get(c.url + f"/campaigns/{DEMO_CAMPAIGN}/report.exe").status_code == 404
