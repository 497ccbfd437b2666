"""Each report writer on the smallest scanned store that still holds campaigns: the HTML pages
link every campaign, the JSON report follows its schema and the STIX bundle names the same
campaigns. A quick check of the report stage; test_report.py holds the thorough one (hostile
logs, a real browser, redaction, reproducible numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from distillguard.report import document, write_report
from distillguard.store import Store


@pytest.fixture(scope="module")
def scanned_store(intel_store) -> tuple[Path, list[str]]:
    """(db path, campaign ids of the scan): conftest's scanned tenth of a per mille of alibaba-2026."""
    with Store(intel_store, read_only=True) as store:
        campaigns = [row[0] for row in store.con.execute(
            "SELECT campaign_id FROM campaigns WHERE scan_id = (SELECT max(scan_id) FROM campaigns) "
            "ORDER BY score DESC, campaign_id").fetchall()]
    assert campaigns, "the scenario's campaign must be found for the reports to have something to show"
    return intel_store, campaigns


def test_the_html_report_has_an_index_linking_a_page_per_campaign(scanned_store, tmp_path):
    db, campaigns = scanned_store
    with Store(db, read_only=True) as store:
        write_report(store, tmp_path, "html")
    index = (tmp_path / "index.html").read_text()
    for campaign in campaigns:
        page = tmp_path / f"{campaign}.html"
        assert f'href="{page.name}"' in index and campaign in page.read_text()


def test_the_json_report_follows_its_schema_and_covers_the_campaign_asked_for(scanned_store, tmp_path):
    db, campaigns = scanned_store
    with Store(db, read_only=True) as store:
        write_report(store, tmp_path / "report.json", "json", campaigns[0])
    report = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(report, json.loads((Path(document.__file__).parent / "report.schema.json").read_text()))
    assert [c["campaign_id"] for c in report["campaigns"]] == [campaigns[0]]


def test_the_stix_bundle_shares_exactly_the_campaigns_the_policy_stops(scanned_store, tmp_path):
    db, _ = scanned_store
    with Store(db, read_only=True) as store:
        write_report(store, tmp_path / "bundle.stix.json", "stix")
        actions = dict(store.con.execute("SELECT campaign_id, action FROM campaigns").fetchall())
    bundle = json.loads((tmp_path / "bundle.stix.json").read_text())
    shared = {o["name"].rsplit(" ", 1)[1] for o in bundle["objects"] if o["type"] == "campaign"}
    assert shared and shared == {c for c, a in actions.items() if a in ("throttle", "fallback", "block")}
