"""Actors in the evidence reports: every actor that holds a report's campaign, with its campaigns,
first and last seen, exchanges, confidence and the test behind each link, in JSON and HTML, and
re-checked by ``distillguard verify`` when the report is signed."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import jsonschema
import pytest
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.intel import actors as intel_actors
from distillguard.report import document, manifest
from distillguard.store import Store
from tests.records import good_record, write_jsonl

SCHEMA = Path(document.__file__).parent / "report.schema.json"
#: cards the operator later uses on accounts of both campaigns, held by no one else: a handful of
#: rare keys is enough, whatever common framing the campaigns' scripted prompts share or lack. The
#: second campaign holds a tenth of the store's accounts, so each such card has about one chance in
#: ten of landing in it by itself: six make the card kind's tail ~1e-5
REUSED_CARDS = 6


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def linked(intel_store, tmp_path_factory) -> dict:
    """A copy of the scanned store whose two campaigns later share cards, linked by ``distillguard
    actors``; its JSON report, and its signed HTML report of every campaign."""
    root = tmp_path_factory.mktemp("actors")
    db = root / intel_store.name
    shutil.copy(intel_store, db)
    shutil.copytree(intel_store.with_name(intel_store.stem + ".segments"), root / (intel_store.stem + ".segments"))
    with Store(db, read_only=True) as store:
        campaigns = {cid: sorted(json.loads(detail)["accounts"]) for cid, detail in store.con.execute(
            "SELECT campaign_id, detail FROM campaigns").fetchall()}
    assert len(campaigns) == 2, "the scanned store's fixture changed: this test needs its two campaigns"
    first, second = (campaigns[c] for c in sorted(campaigns))
    # after the scan (as of 2026-06-11) the operator pays for accounts of both campaigns with the same cards
    records = [good_record(n, exchange_id=f"later-{n}", account_id=account, timestamp="2026-06-20T10:00:00Z",
                           payment_fingerprint=f"operator-card-{n // 2}", prompt=f"later question {n}")
               for n, account in enumerate(a for k in range(REUSED_CARDS)
                                           for a in (first[k % len(first)], second[k % len(second)]))]
    steps = [("ingest", write_jsonl(root / "later.jsonl", records), "--db", db),
             ("actors", "--db", db, "--json"),
             ("report", "--all", "--format", "json", "--out", root / "report.json", "--db", db),
             ("evidence", "keygen", "--out", root / "keys"),
             ("report", "--all", "--format", "html", "--out", root / "html", "--db", db,
              "--signing-key", root / "keys" / "signing.key")]
    for step in steps:
        done = _invoke(*step)
        assert done.exit_code == 0, f"{step[0]}: {done.output}"
    return {"db": db, "campaigns": sorted(campaigns), "json": root / "report.json", "html": root / "html",
            "public_key": root / "keys" / "signing.pub"}


@pytest.mark.slow
def test_the_json_report_shows_the_actor_holding_its_campaigns_with_each_links_test(linked):
    doc = json.loads(linked["json"].read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    [actor] = doc["actors"]["actors"]
    assert actor["campaigns"] == linked["campaigns"]
    assert actor["exchanges"] > 0 and 0 < actor["confidence"] <= intel_actors.CONFIDENCE_CAP
    assert actor["first_seen"] < actor["last_seen"]
    [link] = actor["links"]
    assert (link["a"], link["b"]) == tuple(linked["campaigns"])
    assert link["by_kind"]["card"] == REUSED_CARDS and link["shared_keys"] > link["expected"]
    # a p-value far below the report's rounding of floats is kept whole
    assert 0 < link["p_value"] <= link["p_corrected"] <= 1e-3
    assert doc["actors"]["test"] == intel_actors.TEST
    assert doc["actors"]["section"]["rows"][0][0] == actor["actor_id"]


@pytest.mark.slow
def test_every_html_page_names_the_actor_its_campaigns_and_the_links_p_value(linked):
    doc = json.loads(linked["json"].read_text())
    [actor] = doc["actors"]["actors"]
    p_value = f"{actor['links'][0]['p_value']:.3g}"
    pages = sorted(linked["html"].glob("*.html"))
    assert len(pages) == 3  # the index and one page per campaign
    for page in pages:
        text = page.read_text()
        assert actor["actor_id"] in text and p_value in text and f"confidence {actor['confidence']} of 100" in text
        assert all(cid in text for cid in linked["campaigns"])
        assert f"{REUSED_CARDS} card" in text


@pytest.mark.slow
def test_a_signed_report_with_an_actor_verifies_and_a_changed_actor_is_named(linked, tmp_path):
    figures = json.loads((linked["html"] / "manifest.json").read_text())["figures"]
    assert [f["name"] for f in figures if f["name"] == "actors"] == ["actors"]
    done = _invoke("verify", linked["html"], "--db", linked["db"], "--public-key", linked["public_key"])
    assert done.exit_code == 0, done.output
    # linking again to the same actors keeps the report verifiable
    assert _invoke("actors", "--db", linked["db"], "--json").exit_code == 0
    assert manifest.verify(linked["html"], linked["db"], linked["public_key"])[0] is None
    copy = tmp_path / linked["db"].name
    shutil.copy(linked["db"], copy)
    shutil.copytree(linked["db"].with_name(linked["db"].stem + ".segments"), tmp_path / (linked["db"].stem + ".segments"))
    with Store(copy) as store:
        store.con.execute("UPDATE actors SET confidence = confidence - 1")
    found, _ = manifest.verify(linked["html"], copy, linked["public_key"])
    assert str(found).startswith("figure actors row 1 column confidence")


def test_the_actors_section_holds_only_actors_of_the_reports_campaigns_at_full_precision():
    con = duckdb.connect()
    assert document.actors_facts(con, ["camp-a"]) is None  # never linked: not "no actor"
    con.execute(intel_actors._DDL)
    link = intel_actors.Link("camp-a", "camp-b", 7, 0.42, 3.1e-14, 6.2e-14, {"card": 7}, 0)
    con.execute("INSERT INTO actors VALUES ('actor-0123456789ab', ['camp-a', 'camp-b'], TIMESTAMPTZ '2026-01-05 00:00:00+00', "
                "TIMESTAMPTZ '2026-03-01 00:00:00+00', 20, 200, 95, ?, ?)",
                [json.dumps([link.__dict__]), datetime(2026, 3, 2, tzinfo=UTC)])
    found = document.actors_facts(con, ["camp-b", "camp-q"])
    assert [a["campaigns"] for a in found["actors"]] == [["camp-a", "camp-b"]]
    assert found["actors"][0]["links"][0]["p_value"] == 3.1e-14
    assert found["actors"][0]["first_seen"] == "2026-01-05T00:00:00+00:00"
    assert document.actors_facts(con, ["camp-q"])["actors"] == []
    # the section is what a signed manifest re-runs: its query gives its rows again
    again = con.execute(found["section"]["query"]).fetchall()
    assert [r[0] for r in again] == ["actor-0123456789ab"]
