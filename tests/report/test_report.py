"""Evidence reports: what a skeptical investigator gets, and what an attacker cannot do to them.

One store is built for the module: a small simulated campaign whose logs carry an XSS or
template-injection payload in every text field (account ids, user agents, e-mail domains,
models, system prompts, prompts, conversation and key ids, payment fingerprints) and personal
data in every prompt. The reports of that store must render in a real browser, escape every
payload, reproduce every number with the query they print, redact on request, export valid
STIX 2.1, and come out the same twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import ibis
import jsonschema
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.detect import scan
from distillguard.detect.evidence import KINDS
from distillguard.ingest import ingest_paths
from distillguard.report import chromium, document, write_report
from distillguard.report.facts import _jsonable
from distillguard.report.redact import Redactor
from distillguard.store import Store
from tests.report.conftest import WRITER_POLICY

PAYLOADS = [line for line in (Path(__file__).parent / "data" / "xss_payloads.txt").read_text().splitlines() if line]
EMAIL, PHONE, KEY = "alice.smith@example.org", "+1 415 555 0134", "sk-proj-Zx81Kq0aLmNopQrs7TuvWxyz"
PII = f" (reach me at {EMAIL} or {PHONE}; my key is {KEY})"
TEXT_FIELDS = ("account_id", "user_agent", "email_domain", "organization_id", "model", "system_prompt",
               "conversation_id", "api_key_id", "payment_fingerprint")
# the module's store is a simulated, poisoned and scanned scenario (about 40 s); make test-fast runs
# report/test_writers.py instead
pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(chromium.find() is None, reason="Chromium is not installed (.ci/run installs it)")


def _payload(value: str) -> str:
    return PAYLOADS[int(hashlib.sha256(value.encode()).hexdigest(), 16) % len(PAYLOADS)]


def _poison(table: pa.Table) -> pa.Table:
    """Every text value followed by a payload chosen by the value (so equal values stay equal,
    and the campaign's shared keys stay shared); every prompt also carries personal data."""
    for name in (*TEXT_FIELDS, "prompt"):
        if name not in table.column_names:
            continue
        column = table.column(name)
        uniques = pc.unique(column)
        mapped = pa.array([None if v is None else v + " " + _payload(v) + (PII if name == "prompt" else "")
                           for v in uniques.to_pylist()], pa.string())
        # each value replaced by its unique's poisoned form, in Arrow rather than row by row in Python
        values = pc.take(mapped, pc.index_in(column, value_set=uniques))
        table = table.set_column(table.column_names.index(name), name, values)
    return table


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, alibaba_small):
    """(db path, campaign id): a scanned store of poisoned logs with one campaign at least."""
    root = tmp_path_factory.mktemp("report")
    pq.write_table(_poison(pq.read_table(alibaba_small / "exchanges.parquet")), root / "poisoned.parquet")
    db = root / "store.duckdb"
    with Store(db) as store:
        ingest_paths(store, [root / "poisoned.parquet"])
        result = scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, WRITER_POLICY)
        scan.store_result(store, result)
    assert result.campaigns, "the poisoned campaign must still be found for the report to have something to show"
    return db, result.campaigns[0].campaign_id


@pytest.fixture(scope="module")
def reports(poisoned, tmp_path_factory):
    """The HTML (all campaigns), JSON and STIX reports of the poisoned store, plain and redacted."""
    db, campaign = poisoned
    out = tmp_path_factory.mktemp("reports")
    with Store(db, read_only=True) as store:
        for redact in (False, True):
            tag = "redacted" if redact else "plain"
            r = Redactor(enabled=redact, salt="test-salt" if redact else "")
            write_report(store, out / f"html-{tag}", "html", None, redactor=r)
            write_report(store, out / f"{tag}.json", "json", campaign, redactor=r)
            write_report(store, out / f"{tag}.stix.json", "stix", None, redactor=r)
    return out


class _Markup(HTMLParser):
    """Every element, attribute and text node of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v) for k, v in attrs)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Markup:
    parser = _Markup()
    parser.feed(html)
    parser.close()
    return parser


REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "main", "footer", "h1", "h2", "h3", "p", "a",
               "span", "div", "i", "strong", "table", "thead", "tbody", "tr", "th", "td", "details", "summary",
               "pre", "svg", "line", "rect", "circle", "text"}


def _pages(reports: Path, tag: str) -> list[Path]:
    return sorted((reports / f"html-{tag}").glob("*.html"))


def _main_page(reports: Path, poisoned) -> Path:
    """The page of the scan's highest-scored campaign."""
    return reports / "html-plain" / f"{poisoned[1]}.html"


# --- attacker-controlled text -------------------------------------------------------------------

def test_every_payload_in_the_logs_reaches_the_page_only_as_text(poisoned, reports):
    for page in _pages(reports, "plain"):
        html = page.read_text()
        markup = _parse(html)
        assert set(markup.tags) <= REPORT_TAGS, f"{page.name}: unexpected elements {set(markup.tags) - REPORT_TAGS}"
        assert markup.tags.count("style") == 1 and markup.tags.count("title") >= 1
        assert not [a for a in markup.attrs if a[1].startswith("on")], "event handler attribute in the page"
        assert not [a for a in markup.attrs if a[1] in ("src", "srcset", "action", "formaction", "xlink:href")]
        for _, name, value in markup.attrs:
            if name == "href":
                assert re.fullmatch(r"(index|campaign-[0-9a-f]+)\.html", value or ""), value
    text = "".join(_parse(_main_page(reports, poisoned).read_text()).text)
    shown = [p for p in PAYLOADS if p in text]
    # the user agents, account ids and prompts shown carry payloads, and show them verbatim
    assert len(shown) >= 8, f"only {len(shown)} payloads shown as text"


def test_template_syntax_in_the_logs_is_not_evaluated(reports):
    from distillguard.report import html

    doc = json.loads((reports / "plain.json").read_text())
    campaign = doc["campaigns"][0]
    injected = "{{7*7}} ${7*7} <%= 7*7 %> {% for x in range(3) %}loop{% endfor %} {{ config }}"
    campaign["sections"]["user_agents"]["rows"][0][0] = injected
    campaign["sections"]["sample_prompts"]["rows"][0][0] = injected
    page = html.campaign_page(doc, campaign)
    text = "".join(_parse(page).text)
    assert text.count(injected) == 2
    assert "looploop" not in text  # what the engine would have made of the {% for %}


def test_the_page_forbids_scripts_and_network_with_its_own_policy(reports):
    page = next(p for p in _pages(reports, "plain") if p.name != "index.html").read_text()
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "http://" not in page.split("<main>", 1)[0].replace("http://www.w3.org/2000/svg", "")


@needs_chromium
def test_in_a_real_browser_no_payload_becomes_an_element(poisoned, reports):
    page = _main_page(reports, poisoned)
    dom = _parse(chromium.dump_dom(page))
    assert set(dom.tags) <= REPORT_TAGS, set(dom.tags) - REPORT_TAGS
    assert not [a for a in dom.attrs if a[1].startswith("on")]
    assert any(p in "".join(dom.text) for p in PAYLOADS)


#: the badge colour of each action (base.html.j2)
BADGE = {"block": (0xB2, 0x18, 0x2B), "fallback": (0xEF, 0x65, 0x48), "throttle": (0xE0, 0x82, 0x14),
         "monitor": (0x43, 0x93, 0xC3)}


@needs_chromium
def test_a_real_report_renders_in_headless_chromium(poisoned, reports, tmp_path):
    from PIL import Image

    page = _main_page(reports, poisoned)
    action = json.loads((reports / "plain.json").read_text())["campaigns"][0]["action"]
    shot = chromium.screenshot(page, tmp_path / "report.png", width=1200, height=2400)
    with Image.open(shot) as image:
        assert image.size == (1200, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1200 * 2400)
    # a rendered report: text, table rules, the coloured badge and the chart's blue bars, on white
    assert len(colours) > 50
    white = sum(n for n, c in colours if min(c) > 245)
    assert 0.3 < white / (1200 * 2400) < 0.97
    badge = sum(n for n, c in colours if c == BADGE[action])
    bars = sum(n for n, c in colours if c == (0x4A, 0x6F, 0xA5))
    assert badge > 300, "the action badge is missing"
    assert bars > 5000, "the timeline bars are missing"


# --- every number with the query that reproduces it ----------------------------------------------

def _sections(doc: dict):
    yield doc["inputs"]
    for campaign in doc["campaigns"]:
        yield from campaign["sections"].values()


def test_every_query_reproduces_its_numbers_on_a_plain_duckdb_connection(poisoned, reports):
    db, _ = poisoned
    doc = json.loads((reports / "plain.json").read_text())
    con = duckdb.connect(str(db), read_only=True)
    con.execute("SET TimeZone = 'America/New_York'")  # the queries must not depend on the reader's zone
    checked = 0
    for section in _sections(doc):
        rows = [[_jsonable(v) for v in row] for row in con.execute(section["query"]).fetchall()]
        assert rows == section["rows"], section["key"]
        checked += 1
    assert checked == 1 + 18
    con.close()


def test_the_summary_agrees_with_the_scan(poisoned, reports):
    db, campaign = poisoned
    doc = json.loads((reports / "plain.json").read_text())
    summary = dict(zip(*(doc["campaigns"][0]["sections"]["summary"][k] for k in ("columns",)),
                       doc["campaigns"][0]["sections"]["summary"]["rows"][0]))
    with duckdb.connect(str(db), read_only=True) as con:
        members, exchanges = con.execute("SELECT members, exchanges FROM campaigns WHERE campaign_id = ?",
                                         [campaign]).fetchone()
        ingested = con.execute("SELECT sha256 FROM ingests").fetchall()
    assert (summary["accounts"], summary["exchanges"]) == (members, exchanges)
    assert [r[2] for r in doc["inputs"]["rows"]] == [h for (h,) in ingested]
    assert len(doc["scan"]["policy_sha256"]) == 64
    assert hashlib.sha256(json.dumps(doc["scan"]["policy"], sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest() == doc["scan"]["policy_sha256"]


def test_infrastructure_names_the_hosting_networks_by_asn(reports):
    campaign = json.loads((reports / "plain.json").read_text())["campaigns"][0]
    asns = campaign["sections"]["asns"]["rows"]
    assert asns, "the simulated logs carry client ASNs"
    labels = campaign["asn_labels"]
    # the campaign harvests from clouds: its busiest networks are on the public hosting-ASN list
    assert labels[str(asns[0][0])]["category"] == "hosting" and labels[str(asns[0][0])]["entity"]
    page = (reports / "html-plain" / f"{campaign['campaign_id']}.html").read_text()
    assert f"AS{asns[0][0]}" in page


def test_the_json_report_follows_its_documented_schema(reports):
    schema = json.loads((Path(document.__file__).parent / "report.schema.json").read_text())
    for name in ("plain.json", "redacted.json"):
        jsonschema.validate(json.loads((reports / name).read_text()), schema)


# --- redaction ------------------------------------------------------------------------------------

def test_redacted_reports_keep_no_prompt_text_or_personal_data(reports):
    plain = (reports / "plain.json").read_text()
    assert EMAIL in plain and KEY in plain  # the unredacted report shows them...
    for path in [reports / "redacted.json", reports / "redacted.stix.json", *_pages(reports, "redacted")]:
        text = path.read_text()
        for secret in (EMAIL, KEY, PHONE, "reach me at"):
            assert secret not in text, f"{secret!r} in {path.name}"


def test_redaction_keeps_equal_values_equal(reports):
    doc = json.loads((reports / "redacted.json").read_text())
    prompts = [row[0] for row in doc["campaigns"][0]["sections"]["sample_prompts"]["rows"]]
    assert prompts and all(re.fullmatch(r"\[prompt:[0-9a-f]{12} [0-9,]+ chars\]", p) for p in prompts)
    assert len(set(prompts)) == len(prompts)  # distinct prompts stay distinct
    plain = json.loads((reports / "plain.json").read_text())
    salt = Redactor(salt="test-salt")
    assert [salt.text(row[0]) for row in plain["campaigns"][0]["sections"]["sample_prompts"]["rows"]] == prompts


# --- STIX -----------------------------------------------------------------------------------------

def test_the_stix_bundle_is_valid_under_the_official_validator(reports):
    from stix2validator import ValidationOptions, validate_string

    for name in ("plain.stix.json", "redacted.stix.json"):
        result = validate_string((reports / name).read_text(), ValidationOptions(strict=True))
        assert result.is_valid, [str(e) for e in result.errors][:5]
        assert not result.warnings, [str(w) for w in result.warnings][:5]


def test_the_stix_bundle_holds_campaign_indicators_infrastructure_and_their_relations(poisoned, reports):
    db, _ = poisoned
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("""SELECT DISTINCT i.kind, i.key FROM indicators i JOIN campaigns c USING (campaign_id)
                                WHERE c.action IN ('throttle', 'fallback', 'block')""").fetchall()
    bundle = json.loads((reports / "plain.stix.json").read_text())
    by_type: dict[str, list] = {}
    for obj in bundle["objects"]:
        by_type.setdefault(obj["type"], []).append(obj)
    assert {"identity", "campaign", "indicator", "relationship"} <= set(by_type)
    # infrastructure and what was observed on it come from the stopped campaigns' exclusive subnets
    ranges = {key for kind, key in stored if KINDS[kind].key_form == "range"}
    assert {"infrastructure", "observed-data"} <= set(by_type) if ranges else not {"infrastructure", "observed-data"} & set(by_type)
    campaign_ids = {c["id"] for c in by_type["campaign"]}
    ids = {o["id"] for o in bundle["objects"]}
    for rel in by_type["relationship"]:
        assert rel["source_ref"] in ids and rel["target_ref"] in ids
    indicates = {r["source_ref"] for r in by_type["relationship"] if r["relationship_type"] == "indicates"
                 and r["target_ref"] in campaign_ids}
    assert {i["id"] for i in by_type["indicator"]} == indicates
    patterns = " ".join(i["pattern"] for i in by_type["indicator"])
    addresses = {key for kind, key in stored if KINDS[kind].stix == "address"}
    assert all(f"'{key}'" in patterns or f"'{key.split('/')[0]}" in patterns for key in addresses)
    assert ("-addr:value" in patterns) == bool(addresses)
    templates = {hashlib.sha256(key.encode()).hexdigest() for kind, key in stored if KINDS[kind].stix == "prompt-template"}
    shared = set(re.findall(r"x-distillguard-prompt-template:\w+_sha256 = '([0-9a-f]{64})'", patterns))
    assert templates and shared and shared <= templates


def test_only_campaigns_the_policy_stops_are_shared_as_stix(poisoned):
    db, _ = poisoned
    with duckdb.connect(str(db), read_only=True) as con:
        actions = dict(con.execute("SELECT campaign_id, action FROM campaigns").fetchall())
    with Store(db, read_only=True) as store:
        doc = document.build(store.con)
    from distillguard.report import stix

    shared = {o["name"].rsplit(" ", 1)[1] for o in json.loads(stix.bundle(doc))["objects"] if o["type"] == "campaign"}
    assert shared == {c for c, a in actions.items() if a in ("throttle", "fallback", "block")}
    monitored = [c for c, a in actions.items() if a == "monitor"]
    if monitored:  # named explicitly, a monitored campaign is exported all the same
        with Store(db, read_only=True) as store:
            one = document.build(store.con, [monitored[0]])
        assert [o for o in json.loads(stix.bundle(one, named=True))["objects"] if o["type"] == "campaign"]


# --- determinism and the command ----------------------------------------------------------------

def _without_clock(text: str) -> str:
    text = re.sub(r'"generated_at": "[^"]+"', '"generated_at": ""', text)
    return re.sub(r"Generated [0-9T:+\-]+ by", "Generated by", text)


def test_the_same_store_gives_the_same_reports(poisoned, reports, tmp_path):
    db, campaign = poisoned
    with Store(db, read_only=True) as store:
        write_report(store, tmp_path / "html", "html", None)
        write_report(store, tmp_path / "r.json", "json", campaign)
        write_report(store, tmp_path / "r.stix.json", "stix", None)
    for ours, theirs in ((tmp_path / "r.json", reports / "plain.json"),
                         (tmp_path / "r.stix.json", reports / "plain.stix.json"),
                         *((p, reports / "html-plain" / p.name) for p in sorted((tmp_path / "html").glob("*.html")))):
        assert _without_clock(ours.read_text()) == _without_clock(theirs.read_text()), ours.name
    assert (tmp_path / "r.stix.json").read_bytes() == (reports / "plain.stix.json").read_bytes()


@needs_chromium
def test_report_command_writes_a_pdf(poisoned, tmp_path):
    from pypdf import PdfReader

    db, campaign = poisoned
    target = tmp_path / "campaign.pdf"
    result = CliRunner().invoke(app, ["report", campaign, "--format", "pdf", "--db", str(db), "--out", str(target)])
    assert result.exit_code == 0, result.output
    reader = PdfReader(str(target))
    assert len(reader.pages) >= 3
    first = reader.pages[0].extract_text()
    assert campaign in first and "Summary" in first


@pytest.mark.parametrize("args, message", [
    (["--format", "html"], "give a campaign id or --all"),
    (["campaign-x", "--all", "--format", "html"], "give a campaign id or --all"),
    (["campaign-nope", "--format", "json"], "no campaign 'campaign-nope'"),
    (["--all", "--format", "docx"], "--format must be one of"),
    (["--all", "--format", "json", "--scan", "19990101T000000Z"], "no scan '19990101T000000Z'"),
])
def test_report_command_says_what_is_wrong(poisoned, tmp_path, args, message):
    db, _ = poisoned
    result = CliRunner().invoke(app, ["report", *args, "--db", str(db), "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_report_command_on_a_store_without_a_scan(tmp_path):
    db = tmp_path / "empty.duckdb"
    Store(db).close()
    result = CliRunner().invoke(app, ["report", "--all", "--format", "json", "--db", str(db), "--out", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "no scan to report on" in result.output
