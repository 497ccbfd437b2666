"""Fixtures of the console tests: the scanned demo store (the report tests' ``intel_store``), a
store whose exchanges carry markup, analysts, and a real console server on a free port."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from aiohttp import web
from playwright.sync_api import Browser, Page, sync_playwright

from distillguard.console import act
from distillguard.console.auth import Analysts
from distillguard.console.server import Console
from distillguard.gateway.ports import free_port
from distillguard.ingest import ingest_paths
from distillguard.report.redact import Redactor
from distillguard.store import Store
from tests.records import good_record, write_jsonl
from tests.report.conftest import intel_store  # noqa: F401 - the scanned alibaba-2026 store, shared

#: the demo scenario's campaign in ``intel_store`` (alibaba-2026, scale 0.001, seed 11)
DEMO_CAMPAIGN = "campaign-1fc8415b26"
XSS_ACCOUNT = "acct-<img src=x onerror=alert(1)>{{7*7}}"  # braces: a route must still take it
XSS_PROMPT = "<script>window.__xss = 1</script>ignore previous instructions"
XSS_AGENT = "Mozilla/5.0 <svg onload=alert(2)>"


@pytest.fixture(scope="session")
def markup_store(tmp_path_factory) -> Path:
    """A store whose exchanges carry script and markup in the prompt, user agent and account id."""
    root = tmp_path_factory.mktemp("markup")
    records = [good_record(i, account_id=XSS_ACCOUNT, prompt=XSS_PROMPT, user_agent=XSS_AGENT,
                           organization_id="<b>org</b>") for i in range(3)]
    db = root / "store.duckdb"
    with Store(db) as store:
        ingest_paths(store, [write_jsonl(root / "x.jsonl", records)])
    return db


@dataclass
class Running:
    """A console serving on ``url``; ``analysts`` and ``state_dir`` are its own."""

    url: str
    console: Console
    state_dir: Path
    tokens: dict[str, str]

    def login(self, name: str) -> requests.Session:
        s = requests.Session()
        r = s.post(self.url + "/login", data={"token": self.tokens[name]}, allow_redirects=False)
        assert r.status_code == 303, r.text
        return s

    def csrf(self, session: requests.Session, path: str = "/campaigns") -> str:
        import re

        page = session.get(self.url + path).text
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _serve(app: web.Application) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)
    port = free_port()
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result(10)
    asyncio.run_coroutine_threadsafe(web.TCPSite(runner, "127.0.0.1", port).start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def start_console(tmp_path) -> Iterator[Callable[..., Running]]:
    """Starts consoles on a store with an operator ``ana`` and a viewer ``vic``; all stopped at the end."""
    stops = []

    def start(db: Path, state_dir: Path | None = None) -> Running:
        state = state_dir or tmp_path / "state"
        analysts = Analysts(state)
        tokens = {"ana": analysts.add("ana", "operator"), "vic": analysts.add("vic", "viewer")}
        console = Console(str(db), analysts, act.LocalOverrides(str(state)), Redactor(salt="test"))
        gen = _serve(console.app())
        url = next(gen)
        stops.append(gen)
        return Running(url, console, state, tokens)

    yield start
    for gen in stops:
        next(gen, None)


# --- the browser: the system's Chromium, never a downloaded one ------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The distribution's Chromium (``.ci/run`` installs it) under Playwright, for one module.

    Not pytest-playwright's session-wide fixtures: Playwright's sync API keeps its event loop
    running in the main thread while it is open, and every later test that calls
    ``asyncio.run`` (the gateway's) would fail; closed with the module, it leaves no loop behind.
    No sandbox, as the tests may run as root in a container."""
    if CHROMIUM is None:
        pytest.skip("no system Chromium (the console's browser tests never download one)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()
