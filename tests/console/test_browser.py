"""The console in a real browser (Playwright driving the system's Chromium): an operator finds the
demo's campaign, reads its members and evidence, blocks it with a reason and sees the audit row,
and a running gateway then answers 403 to a member's key; a viewer's block is refused; script in
a prompt and a user agent stays text. Any Content-Security-Policy violation fails the test.

``CONSOLE_SCREENSHOTS=docs/console`` saves a screenshot of each page there (README's console
section shows them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import DEMO_CAMPAIGN, XSS_ACCOUNT, XSS_AGENT, XSS_PROMPT
from tests.gateway.inputs import write_scan
from tests.gateway.procs import call, chat, mock_upstream, start_gateway, wait_until

pytestmark = pytest.mark.slow  # a browser, a console and (for one) a gateway per test: 5-20 s each

#: records every securitypolicyviolation event of the page (added by the browser, so outside the CSP)
WATCH_CSP = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));"""


@pytest.fixture
def watched(page: Page) -> Page:
    """The page, failing the test on any CSP violation (event or console message), uncaught
    script error or dialog (an alert run by injected script)."""
    problems: list[str] = []
    page.add_init_script(WATCH_CSP)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} at {m.location}")
            if "Content Security Policy" in m.text or "Refused to" in m.text else None)
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.problems = problems
    yield page
    violations = page.evaluate("window.__csp || []") if not page.is_closed() else []
    assert not violations and not problems, "\n".join([*violations, *problems])


def shot(page: Page, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def log_in(page: Page, url: str, token: str) -> None:
    page.goto(url + "/login")
    shot(page, "login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Campaigns")).to_be_visible()


def test_an_operator_blocks_the_demo_campaign_and_the_gateway_refuses_its_keys(
        intel_store, start_console, watched, tmp_path):
    members_rows = None
    with mock_upstream() as upstream:
        # the gateway enforces the scan's verdicts for the campaign's members (fallback without a
        # fallback model: throttled) and keeps its overrides in its state directory, which the
        # console writes to
        page = watched
        console = start_console(intel_store, state_dir=tmp_path / "gw.gateway-state")
        log_in(page, console.url, console.tokens["ana"])
        shot(page, "campaigns")
        page.get_by_label("Campaign or account").fill(DEMO_CAMPAIGN[-6:])
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("link", name=DEMO_CAMPAIGN).click()
        expect(page.locator("#graph.drawn")).to_be_attached(timeout=20_000)
        members_rows = page.locator("#members tbody tr")
        expect(members_rows).to_have_count(25)
        expect(page.locator("#evidence")).to_contain_text("BiCM null")
        expect(page.locator("#evidence")).to_contain_text("p=")
        assert int(page.locator("#graph").get_attribute("data-edges")) > 0
        shot(page, "campaign")
        member = members_rows.first.locator("a").inner_text()
        write_scan(tmp_path / "scan", [(m, "fallback", DEMO_CAMPAIGN)
                                       for m in members_rows.locator("td:first-child a").all_inner_texts()])
        gw = start_gateway(tmp_path, upstream, keys=[{"api_key": "sk-member-key", "account_id": member}],
                           verdicts=str(tmp_path / "scan"))
        try:
            assert call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-member-key").status == 429
            members_rows.first.locator("a").click()
            expect(page.locator("#signals svg.strip").first).to_be_visible()
            shot(page, "account")
            page.go_back()
            page.get_by_role("link", name="Block campaign").click()
            expect(page.locator("#impact")).to_contain_text("25 accounts")
            page.get_by_label("Reason (required)").fill("case 31: harvesting chain-of-thought at scale")
            shot(page, "act")
            page.get_by_role("button", name="Confirm block").click()
            row = page.locator("#audit tbody tr").first
            expect(row).to_contain_text("case 31: harvesting chain-of-thought at scale")
            expect(row).to_contain_text("ana")
            expect(row).to_contain_text(DEMO_CAMPAIGN)
            shot(page, "audit")
            wait_until(lambda: call(gw.port, "/v1/chat/completions", chat("hi"), key="sk-member-key").status == 403,
                       timeout=10, what="the gateway to enforce the console's block")
        finally:
            gw.stop()


def test_a_viewer_sees_no_action_and_a_block_posted_anyway_is_refused(intel_store, start_console, watched):
    page = watched
    console = start_console(intel_store)
    log_in(page, console.url, console.tokens["vic"])
    page.get_by_role("link", name=DEMO_CAMPAIGN).click()
    expect(page.get_by_text("Viewers read; operators act.")).to_be_visible()
    expect(page.get_by_role("link", name="Block campaign")).to_have_count(0)
    status = page.evaluate("""async (target) => {
        const body = new URLSearchParams({csrf: document.querySelector('input[name=csrf]').value,
            kind: 'campaign', target: target, action: 'block', reason: 'viewer tries'});
        return (await fetch('/act', {method: 'POST', body: body})).status; }""", DEMO_CAMPAIGN)
    assert status == 403
    page.goto(f"{console.url}/act?kind=campaign&target={DEMO_CAMPAIGN}&action=block")
    expect(page.get_by_text("only operators can act")).to_be_visible()
    assert not (console.state_dir / "overrides.jsonl").exists()


def test_script_in_a_prompt_and_a_user_agent_is_shown_as_text_and_never_runs(markup_store, start_console, watched):
    page = watched
    console = start_console(markup_store)
    log_in(page, console.url, console.tokens["vic"])
    page.goto(console.url + "/accounts/" + XSS_ACCOUNT.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20"))
    expect(page.locator("#sample td.prompt").first).to_have_text(XSS_PROMPT)
    expect(page.locator("#sample td.ua").first).to_have_text(XSS_AGENT)
    expect(page.locator("h1 .id")).to_have_text(XSS_ACCOUNT)
    assert page.evaluate("window.__xss") is None
    assert page.locator("#sample img, #sample script, #sample svg").count() == 0
