"""Nothing imported is re-shared beyond its TLP: a campaign's export leaves out a value another
party shared as TLP:RED unless the export itself is TLP:RED; and distillguard's own STIX export
is a bundle another distillguard imports."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
import stix2

from distillguard.detect.evidence import KINDS
from distillguard.intel import imports, indicators, stix_in
from distillguard.report import document, misp, stix
from distillguard.store import Store


def _copy(db, tmp_path):
    target = tmp_path / db.name
    shutil.copy(db, target)
    segments = db.with_name(db.stem + ".segments")
    if segments.exists():
        shutil.copytree(segments, target.with_name(target.stem + ".segments"))
    return target


@pytest.mark.slow
def test_a_red_indicator_is_left_out_of_every_export_below_red_and_our_bundle_imports(intel_store, tmp_path):
    db = _copy(intel_store, tmp_path)
    address = "203.0.113.77"
    secret = stix2.Indicator(pattern=f"[ipv4-addr:value = '{address}']", pattern_type="stix",
                             valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                             object_marking_refs=[stix_in.TLP2_IDS["red"]])
    (tmp_path / "red.json").write_text(stix2.Bundle(secret).serialize())
    with Store(db) as store:
        imports.import_source(store.con, str(tmp_path / "red.json"), datetime.now(UTC))
        withheld = {level: indicators.withheld(store.con, level) for level in ("amber", "red")}
        doc = document.build(store.con, None, None)
    assert withheld == {"amber": frozenset({address}), "red": frozenset()}
    # the throttled campaign's members also used the address: its row among the campaign's keys
    campaign = next(c for c in doc["campaigns"] if c["action"] in stix.SHARED_ACTIONS)
    keys = campaign["sections"]["indicator_keys"]
    row = dict(zip(keys["columns"], keys["rows"][0]))
    row.update(kind=next(n for n, k in KINDS.items() if k.key_form == "address"), key=address)
    keys["rows"].append([row[c] for c in keys["columns"]])
    amber = stix.bundle(doc, tlp="amber", withheld=withheld["amber"])
    red = stix.bundle(doc, tlp="red", withheld=withheld["red"])
    events = "".join(misp.export(doc, tlp="amber", withheld=withheld["amber"]).values())
    assert address not in amber and address not in events
    assert f"'{address}'" in red
    (tmp_path / "ours.stix.json").write_text(red)
    # our own bundle, as another distillguard receives it
    with Store(tmp_path / "other.duckdb") as other:
        done = imports.import_source(other.con, str(tmp_path / "ours.stix.json"), datetime.now(UTC))
        got = indicators.load(other.con).to_pylist()
    # every address of the red bundle comes back red, the withheld one among them
    assert done.format == "stix" and done.stored["network"] == red.count("ipv4-addr:value")
    assert (address, "red") in [(r["value"], r["tlp"]) for r in got] and {r["tlp"] for r in got} == {"red"}
