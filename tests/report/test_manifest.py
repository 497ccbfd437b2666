"""Signed reports: the manifest, its signature, and ``distillguard verify`` against a copy of the store."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, event, given, settings, strategies as st
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.errors import UserError
from distillguard.report import Redactor, manifest, write_report
from distillguard.store import Store
from distillguard.store.chain import canonical

SCHEMA = Path(__file__).resolve().parents[2] / "src" / "distillguard" / "report" / "report.schema.json"


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path, str]:
    return manifest.keygen(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def signed(intel_store, keys, tmp_path_factory) -> Path:
    """The HTML report of every campaign of conftest's scanned store, signed: its directory."""
    out = tmp_path_factory.mktemp("signed") / "report"
    with Store(intel_store, read_only=True) as store:
        write_report(store, out, "html", signing_key=keys[0])
    return out


def _copy_store(db: Path, where: Path) -> Path:
    where.mkdir()
    shutil.copy(db, where / db.name)
    shutil.copytree(db.with_name(db.stem + ".segments"), where / (db.stem + ".segments"))
    return where / db.name


def _copy_report(report: Path, where: Path) -> Path:
    shutil.copytree(report, where)
    return where


def _verify(report: Path, db: Path, public_key: Path | None) -> str | None:
    found, _ = manifest.verify(report, db, public_key)
    return None if found is None else str(found)


def test_keygen_writes_a_private_key_only_its_owner_reads_and_refuses_to_overwrite_it(keys):
    private, public, fingerprint = keys
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert fingerprint.startswith("sha256:") and len(fingerprint) == 7 + 64
    with pytest.raises(UserError, match="already exists"):
        manifest.keygen(private.parent)


def test_a_signed_report_verifies_from_a_copy_of_the_store(signed, intel_store, keys, tmp_path):
    db = _copy_store(intel_store, tmp_path / "copy")
    result = CliRunner().invoke(app, ["verify", str(signed), "--db", str(db), "--public-key", str(keys[1])])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"verified: signature ({keys[2]}, from --public-key)")


def test_the_manifest_holds_inputs_chain_head_code_policy_figures_and_file_hashes(signed, intel_store):
    found = json.loads((signed / "manifest.json").read_text())
    with Store(intel_store, read_only=True) as store:
        sha, policy_sha = store.con.execute("SELECT sha256, (SELECT policy_sha256 FROM scans) FROM ingests").fetchone()
        head = store.con.execute("SELECT max(seq) FROM chain").fetchone()[0]
    assert [i["sha256"] for i in found["inputs"]] == [sha]
    assert found["store"]["chain_head"]["seq"] == head
    assert found["scan"]["policy_sha256"] == policy_sha
    assert found["code"]["distillguard_version"]
    assert set(found["files"]) == {p.name for p in signed.glob("*.html")}
    summary = next(f for f in found["figures"] if f["name"].endswith(" summary"))
    assert summary["query"].startswith("WITH members AS") and summary["rows"][0][1] > 0


def test_the_html_and_json_reports_name_the_keys_fingerprint(intel_store, keys, tmp_path):
    with Store(intel_store, read_only=True) as store:
        written = write_report(store, tmp_path / "r" / "report.json", "json", signing_key=keys[0])
    assert [p.name for p in written] == ["report.json", "manifest.json", "manifest.sig"]
    doc = json.loads(written[0].read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["signing"]["public_key_fingerprint"] == keys[2]
    with Store(intel_store, read_only=True) as store:
        page = write_report(store, tmp_path / "h", "html", signing_key=keys[0])[0]
    assert f"Ed25519 key <code>{keys[2]}</code>" in page.read_text()


def test_one_changed_byte_of_a_stored_prompt_is_named_by_segment_and_rows(signed, intel_store, keys, tmp_path):
    db = _copy_store(intel_store, tmp_path / "copy")
    (part,) = sorted(db.with_name("store.segments").glob("*/part-00000.parquet"))
    table = pq.read_table(part)
    prompts = table.column("prompt").to_pylist()
    prompts[7] = ("X" if prompts[7][:1] != "X" else "Y") + prompts[7][1:]
    pq.write_table(table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts)), part,
                   compression="zstd")
    result = CliRunner().invoke(app, ["verify", str(signed), "--db", str(db), "--public-key", str(keys[1])])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"differs: segment {part.parent.name} part part-00000.parquet: rows 0-")


def test_one_changed_byte_of_a_report_file_is_named(signed, intel_store, keys, tmp_path):
    report = _copy_report(signed, tmp_path / "report")
    page = sorted(report.glob("campaign-*.html"))[0]
    data = bytearray(page.read_bytes())
    data[len(data) // 2] ^= 0x01
    page.write_bytes(bytes(data))
    assert _verify(report, intel_store, keys[1]) == (
        f"report file {page.name}: changed after it was signed (sha256 differs)")


def test_a_figure_changed_in_the_store_is_named_by_row_and_column(signed, intel_store, keys, tmp_path):
    db = _copy_store(intel_store, tmp_path / "copy")
    with Store(db) as store:
        campaign, score = store.con.execute("SELECT campaign_id, score FROM campaigns ORDER BY score DESC "
                                            "LIMIT 1").fetchone()
        store.con.execute("UPDATE campaigns SET score = 0.5 WHERE campaign_id = ?", [campaign])
    assert _verify(signed, db, keys[1]) == (
        f"figure campaign {campaign} confidence row 1 column score: the report says {round(score, 6)}, "
        "the store gives 0.5")


def test_links_cut_off_the_end_of_the_chain_are_caught(signed, intel_store, keys, tmp_path):
    db = _copy_store(intel_store, tmp_path / "copy")
    with Store(db) as store:
        last = store.con.execute("SELECT max(seq) FROM chain").fetchone()[0]
        store.con.execute("DELETE FROM chain WHERE seq = ?", [last])
    assert _verify(signed, db, keys[1]).startswith(f"chain link {last}: missing: the store's chain ends at {last - 1}")


def test_a_manifest_changed_after_signing_fails_its_signature(signed, intel_store, keys, tmp_path):
    report = _copy_report(signed, tmp_path / "report")
    text = (report / "manifest.json").read_text()
    (report / "manifest.json").write_text(text.replace('"accounts"', '"account"', 1))
    assert _verify(report, intel_store, keys[1]).startswith("manifest.sig: the signature does not match")


def test_a_report_checked_against_another_key_is_refused(signed, intel_store, tmp_path):
    _, other, fingerprint = manifest.keygen(tmp_path / "other")
    assert _verify(signed, intel_store, other).startswith("manifest.sig: signed with key sha256:")
    assert fingerprint in _verify(signed, intel_store, other)


@pytest.mark.slow
def test_a_redacted_report_verifies_and_compares_its_text_figures_by_hash(intel_store, keys, tmp_path):
    with Store(intel_store, read_only=True) as store:
        write_report(store, tmp_path / "r", "html", redactor=Redactor(enabled=True, salt="s"), signing_key=keys[0])
    found = json.loads((tmp_path / "r" / "manifest.json").read_text())
    prompts = next(f for f in found["figures"] if f["name"].endswith(" sample_prompts"))
    assert len(prompts["row_sha256"]) == len(prompts["rows"]) > 0
    assert _verify(tmp_path / "r", intel_store, keys[1]) is None
    db = _copy_store(intel_store, tmp_path / "copy")
    with Store(db) as store:
        campaign = prompts["name"].split()[1]
        store.con.execute("UPDATE verdicts SET reasons = list_append(reasons, 'forged') WHERE campaign_id = ?",
                          [campaign])
    assert _verify(tmp_path / "r", db, keys[1]) == (
        f"figure campaign {campaign} members row 1: differs from the store (compared by hash: the report is redacted)")


def test_a_manifests_queries_cannot_read_files_outside_the_store(signed, intel_store, tmp_path):
    report = _copy_report(signed, tmp_path / "report")
    private, _, _ = manifest.keygen(tmp_path / "attacker")
    forged = json.loads((report / "manifest.json").read_text())
    forged["figures"] = [{"name": "secret", "query": "SELECT content FROM read_text('/etc/hostname')",
                          "columns": ["content"], "rows": [["x"]]}]
    key = manifest.load_private_key(private)
    forged["public_key"]["pem"] = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (report / "manifest.json").write_text(json.dumps(forged))
    (report / "manifest.sig").write_bytes(base64.b64encode(key.sign(canonical(forged).encode())))
    found = _verify(report, intel_store, None)  # no --public-key: the manifest's own key is used
    assert found.startswith("figure secret: its query fails on this store: Permission Error")


@pytest.mark.parametrize("case,message", [
    ("no dir", "no such report directory"),
    ("no manifest", "manifest.json: cannot read"),
    ("not json", "manifest.json: not JSON"),
    ("wrong schema", "field schema is"),
    ("no signature", "manifest.sig: cannot read"),
])
def test_bad_input_is_one_line_and_exit_2(signed, intel_store, tmp_path, case, message):
    report = _copy_report(signed, tmp_path / "report")
    if case == "no dir":
        report = tmp_path / "nowhere"
    elif case == "no manifest":
        (report / "manifest.json").unlink()
    elif case == "not json":
        (report / "manifest.json").write_text("{")
    elif case == "wrong schema":
        (report / "manifest.json").write_text('{"schema": "x"}')
    else:
        (report / "manifest.sig").unlink()
    result = CliRunner().invoke(app, ["verify", str(report), "--db", str(intel_store)])
    assert result.exit_code == 2
    assert message in result.output and result.output.startswith("error: ")
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- property: verify never tracebacks on a corrupted manifest ------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                     | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=6)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _paths(v, prefix + (i,))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [(_replace(v, rest, new) if i == head else v) for i, v in enumerate(value)]


@pytest.fixture(scope="module")
def small_signed(signed, keys, tmp_path_factory) -> tuple[Path, dict]:
    """The signed report with its first three figures only (re-signed), so each example runs fast."""
    report = _copy_report(signed, tmp_path_factory.mktemp("small") / "report")
    base = json.loads((report / "manifest.json").read_text())
    base["figures"] = base["figures"][:3]
    return report, base


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_never_tracebacks_on_a_corrupted_manifest(small_signed, intel_store, keys, data):
    report, base = small_signed
    key = manifest.load_private_key(keys[0])
    how = data.draw(st.sampled_from(["replace", "bytes", "truncate"]))
    if how == "replace":
        path = data.draw(st.sampled_from(list(_paths(base))))
        corrupted = _replace(base, path, data.draw(_json))
        text = json.dumps(corrupted)
        signed_again = data.draw(st.booleans())  # signed: the checks past the signature run on it too
        sig = key.sign(canonical(corrupted).encode()) if signed_again and isinstance(corrupted, dict) else b"x" * 64
        (report / "manifest.sig").write_bytes(base64.b64encode(sig))
        (report / "manifest.json").write_text(text)
    else:
        raw = json.dumps(base).encode()
        if how == "bytes":
            at = data.draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([data.draw(st.integers(0, 255))]) + raw[at + 1:]
        else:
            raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
        (report / "manifest.json").write_bytes(raw)
    try:
        found, _ = manifest.verify(report, intel_store, keys[1])
    except UserError:
        event("refused as bad input")
        return
    event("verified" if found is None else f"differs at {str(found).split(':')[0].split(' row ')[0][:20]}")
    assert found is None or str(found)


@pytest.mark.slow
def test_the_cli_scans_signs_and_verifies_and_the_scan_links_the_chain_head_it_read(intel_store, keys, tmp_path):
    from distillguard.store import chain

    db = _copy_store(intel_store, tmp_path / "copy")
    with Store(db, read_only=True) as store:
        before = chain.head(store.con)
    runner = CliRunner()
    scanned = runner.invoke(app, ["scan", "--db", str(db), "--out", str(tmp_path / "scan"), "--lookback", "365",
                                  "--as-of", "2026-07-01T00:00:00Z", "--quiet"])
    assert scanned.exit_code == 0, scanned.output
    with Store(db, read_only=True) as store:
        last = chain.links(store.con)[-1]
        scan_id, policy_sha = store.con.execute("SELECT scan_id, policy_sha256 FROM scans "
                                                "ORDER BY scanned_at DESC LIMIT 1").fetchone()
    assert (last.kind, last.subject, last.sha256, last.detail["read_head"]) == ("scan", scan_id, policy_sha, before)
    reported = runner.invoke(app, ["report", "--all", "--db", str(db), "--out", str(tmp_path / "r"),
                                   "--signing-key", str(keys[0]), "--quiet"])
    assert reported.exit_code == 0, reported.output
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["scan"]["read_head"] == before
    copy = _copy_store(db, tmp_path / "elsewhere")
    verified = runner.invoke(app, ["verify", str(tmp_path / "r"), "--db", str(copy), "--public-key", str(keys[1]),
                                   "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["ok"] is True
    with Store(copy) as store:  # an account no figure shows: caught by the scan's link, not by a figure
        store.con.execute("UPDATE verdicts SET action = 'block' WHERE scan_id = ? AND account_id = (SELECT "
                          "min(account_id) FROM verdicts WHERE scan_id = ? AND campaign_id IS NULL)", [scan_id, scan_id])
    changed = runner.invoke(app, ["verify", str(tmp_path / "r"), "--db", str(copy), "--public-key", str(keys[1])])
    assert changed.exit_code == 1
    assert changed.output.startswith(f"differs: scan {scan_id} table verdicts: its rows changed after the scan")


@pytest.mark.parametrize("query,expected", [
    ("", "its query gives no table"),
    ("-- only a comment", "its query gives no table"),
    ("SET threads = 1", "the report has 1 rows, the store gives 0"),
    ("SELECT 'a'::BLOB AS b", "differs from the store"),
    ("SELEC nonsense", "its query fails on this store: Parser Error"),
])
def test_a_forged_figure_query_is_a_difference_not_a_traceback(signed, intel_store, keys, tmp_path, query, expected):
    report = _copy_report(signed, tmp_path / "report")
    forged = json.loads((report / "manifest.json").read_text())
    forged["redacted"] = True
    forged["figures"] = [{"name": "forged", "query": query, "columns": ["b"], "rows": [["x"]], "row_sha256": ["0"]}]
    forged["files"]["a\x00b"] = "0" * 64
    key = manifest.load_private_key(keys[0])
    (report / "manifest.json").write_text(json.dumps(forged))
    (report / "manifest.sig").write_bytes(base64.b64encode(key.sign(canonical(forged).encode())))
    assert _verify(report, intel_store, keys[1]).startswith("report file 'a\\x00b': cannot be read")
    del forged["files"]["a\x00b"]
    (report / "manifest.json").write_text(json.dumps(forged))
    (report / "manifest.sig").write_bytes(base64.b64encode(key.sign(canonical(forged).encode())))
    assert expected in _verify(report, intel_store, keys[1])
