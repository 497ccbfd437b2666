"""The signed manifest of a report, and ``distillguard verify``: a report an outsider can check
holding only the report, the provider's public key and a copy of the store.

``report ... --signing-key FILE`` writes, beside the report's files, ``manifest.json``: the sha256
of every report file, the inputs (ingested files with their sha256), the head of the store's
hash chain (store/chain.py) and the segments it vouches for, the code version (package version
and git commit), the policy's sha256, and every figure: the text of the query that produced it
and its rows (for a redacted report the rows as the report shows them, and the sha256 of each
row as the store gives it). ``manifest.sig`` is the Ed25519 signature (base64) of the manifest's
canonical JSON bytes (chain.canonical), and the report names the key's fingerprint.

verify checks, in this order, and stops at the first difference: the signature (against
``--public-key``, else against the key the manifest carries, which proves integrity only), the
report files' hashes, the store's chain (every link, the head the report signed, every segment's
Parquet bytes, every ``ingests`` row, every journal segment's hash at close), the inputs, and
finally every figure, re-running its query against the store. The queries run with DuckDB's
file access limited to the store's own segments: a manifest is input, and its SQL must not read
or write anything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import duckdb
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from distillguard import __version__
from distillguard.errors import UserError
from distillguard.report import document, facts
from distillguard.store import Store, chain, has_table
from distillguard.store.chain import Difference, canonical

SCHEMA_ID = "distillguard-manifest/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PRIVATE_KEY = "signing.key"
PUBLIC_KEY = "signing.pub"
#: relative tolerance when a re-run figure is compared with the report's (sums of doubles may
#: add up in another order on another machine); everything else must match exactly
FLOAT_TOLERANCE = 1e-6


# --- keys ------------------------------------------------------------------------------------------

def keygen(out_dir: Path) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair to ``out_dir``: signing.key (PKCS#8 PEM, mode 0600) and
    signing.pub (SubjectPublicKeyInfo PEM); returns both paths and the fingerprint. An existing
    key is never overwritten: a lost private key cannot be got back."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private, public = out_dir / PRIVATE_KEY, out_dir / PUBLIC_KEY
    for path in (private, public):
        if path.exists():
            raise UserError(f"{path} already exists: not overwritten (move it away, or choose another --out)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public, fingerprint(key.public_key())


def fingerprint(public: Ed25519PublicKey) -> str:
    """``sha256:`` and the hex sha256 of the key's 32 raw bytes: what reports name."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "--signing-key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UserError(f"--signing-key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"--signing-key {path}: not an Ed25519 key (make one with `distillguard evidence keygen`)")
    return key


def load_public_key(data: bytes, name: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise UserError(f"{name}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{name}: not an Ed25519 public key")
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read ({exc.strerror})") from None


def signing_section(key: Ed25519PrivateKey) -> dict:
    """What a signed report says about its signature (the document's ``signing``)."""
    return {"public_key_fingerprint": fingerprint(key.public_key()), "manifest": MANIFEST,
            "signature": SIGNATURE}


# --- writing ---------------------------------------------------------------------------------------

def code_version() -> dict:
    """The package version, and the git commit of its source when it runs from a checkout."""
    commit = None
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=5, check=False)
        if done.returncode == 0 and len(done.stdout.strip()) == 40:
            commit = done.stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git here: the version alone names the code
        pass
    return {"distillguard_version": __version__, "git_commit": commit}


def _scan_query(scan_id: str) -> str:
    return ("SELECT scan_id, as_of, scanned_at, lookback_days, engine, policy_source, policy_sha256,\n"
            "       distillguard_version, accounts, campaigns\n"
            f"FROM scans WHERE scan_id = {facts.lit(scan_id)}")


def _inputs_query() -> str:
    return "SELECT ingest_id, path, sha256, rows_stored, segment FROM ingests ORDER BY started_at, ingest_id"


def _row_hash(row: list) -> str:
    text = json.dumps([_comparable(v) for v in row], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)  # a query of a forged manifest may give BLOBs, intervals, UUIDs
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _comparable(value: Any) -> Any:
    """A value as hashed: floats to 6 significant digits (see FLOAT_TOLERANCE)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


#: the sections whose rows redaction changes (document.py): only theirs are read again from the store
_REDACTED_SECTIONS = {key for key, _ in document._REDACTED} | {"indicator_keys"}


def _figure(con: duckdb.DuckDBPyConnection, name: str, section: dict, redacted: bool) -> dict:
    figure = {"name": name, "query": section["query"], "columns": section["columns"], "rows": section["rows"]}
    if redacted:  # the report shows hashes in place of text: keep what the store gives, hashed
        raw = (facts.section(con, section["key"], "", section["query"])["rows"]
               if section["key"] in _REDACTED_SECTIONS else section["rows"])
        figure["row_sha256"] = [_row_hash(r) for r in raw]
    return figure


def figures(con: duckdb.DuckDBPyConnection, doc: dict) -> list[dict]:
    """Every figure of the report, with the query that produced it."""
    redacted = bool(doc["redaction"]["enabled"])
    scan_id = doc["scan"]["scan_id"]
    out = [_figure(con, "scan", facts.section(con, "scan", "", _scan_query(scan_id)), False),
           _figure(con, "inputs", doc["inputs"], redacted)]
    for campaign in doc["campaigns"]:
        for key, section in campaign["sections"].items():
            out.append(_figure(con, f"campaign {campaign['campaign_id']} {key}", section, redacted))
    if doc.get("actors") is not None:
        out.append(_figure(con, "actors", doc["actors"]["section"], redacted))
    return out


def build(store: Store, doc: dict, files: list[Path], folder: Path, key: Ed25519PrivateKey) -> dict:
    """The manifest of a report whose ``files`` lie under ``folder``."""
    con = store.con
    links = chain.links(con)
    scan_id = doc["scan"]["scan_id"]
    scan_links = [link for link in links if link.kind == "scan" and link.subject == scan_id]
    inputs = [{"ingest_id": i, "path": p, "sha256": s} for i, p, s in con.execute(
        "SELECT ingest_id, path, sha256 FROM ingests ORDER BY started_at, ingest_id").fetchall()] \
        if has_table(con, "ingests") else []
    public = key.public_key()
    return {
        "schema": SCHEMA_ID,
        "generated_at": doc["generated_at"],
        "code": code_version(),
        "store": {"name": doc["store"], "chain_head": chain.head(con),
                  "segments": {name: chain._parts_sha256(parts) for name, parts in chain.live_segments(links).items()}},
        "scan": {"scan_id": scan_id, "policy_sha256": doc["scan"]["policy_sha256"],
                 "read_head": scan_links[-1].detail.get("read_head") if scan_links else None},
        "inputs": inputs,
        "redacted": bool(doc["redaction"]["enabled"]),
        "figures": figures(con, doc),
        "files": {f.relative_to(folder).as_posix(): chain.file_digest(f)["sha256"] for f in sorted(files)},
        "public_key": {"algorithm": "ed25519", "fingerprint": fingerprint(public),
                       "pem": public.public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()},
    }


def write(store: Store, doc: dict, files: list[Path], key: Ed25519PrivateKey) -> list[Path]:
    """Write manifest.json and manifest.sig into the directory that holds ``files``."""
    if not files:
        raise UserError("the report wrote no file (no campaign to write?): nothing to sign")
    folder = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    manifest = build(store, doc, [f.resolve() for f in files], folder, key)
    target, signature = folder / MANIFEST, folder / SIGNATURE
    target.write_text(json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    signed = key.sign(canonical(manifest).encode("utf-8"))
    signature.write_text(base64.b64encode(signed).decode() + "\n", encoding="ascii")
    return [target, signature]


# --- verifying -------------------------------------------------------------------------------------

def load(report_dir: Path) -> tuple[dict, bytes]:
    """The manifest and its signature; anything unreadable or malformed is one UserError line."""
    if not report_dir.is_dir():
        raise UserError(f"{report_dir}: no such report directory")
    path = report_dir / MANIFEST
    text = _read(path, "manifest")
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a JSON object")
    if manifest.get("schema") != SCHEMA_ID:
        raise UserError(f"{path}: field schema is {str(manifest.get('schema'))[:40]!r}, not {SCHEMA_ID!r}")
    _field(manifest, path, "files", dict)
    _field(manifest, path, "figures", list)
    _field(manifest, path, "inputs", list)
    _field(manifest, path, "store", dict)
    _field(manifest, path, "public_key", dict)
    _field(manifest["public_key"], path, "pem", str, "public_key.")
    _field(manifest["public_key"], path, "fingerprint", str, "public_key.")
    head = manifest["store"].get("chain_head")
    if head is not None and not (isinstance(head, dict) and isinstance(head.get("seq"), int)
                                 and isinstance(head.get("link_hash"), str)):
        raise UserError(f"{path}: field store.chain_head is not {{seq, link_hash}}")
    for name in manifest["files"]:
        if not isinstance(manifest["files"][name], str):
            raise UserError(f"{path}: field files[{name!r}] is not a sha256 string")
    for i, item in enumerate(manifest["inputs"]):
        if not (isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("ingest_id", "path", "sha256"))):
            raise UserError(f"{path}: field inputs[{i}] is not {{ingest_id, path, sha256}}")
    for i, fig in enumerate(manifest["figures"]):
        if not (isinstance(fig, dict) and isinstance(fig.get("name"), str) and isinstance(fig.get("query"), str)
                and isinstance(fig.get("columns"), list) and isinstance(fig.get("rows"), list)
                and all(isinstance(r, list) for r in fig["rows"])
                and isinstance(fig.get("row_sha256", []), list)):
            raise UserError(f"{path}: field figures[{i}] is not {{name, query, columns, rows}}")
    signature_path = report_dir / SIGNATURE
    try:
        signature = base64.b64decode(_read(signature_path, "signature").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{signature_path}: not base64") from None
    return manifest, signature


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string"}


def _field(obj: dict, path: Path, name: str, kind: type, prefix: str = "") -> None:
    if not isinstance(obj.get(name), kind):
        raise UserError(f"{path}: field {prefix}{name} is missing or not {_JSON_NAMES[kind]}")


def check_signature(manifest: dict, signature: bytes, public_key: Path | None) -> tuple[Difference | None, str]:
    """(the difference, or None; the fingerprint of the key that was checked against)."""
    embedded = load_public_key(manifest["public_key"]["pem"].encode(), f"{MANIFEST} field public_key.pem")
    key = embedded
    if public_key is not None:
        key = load_public_key(_read(public_key, "--public-key"), f"--public-key {public_key}")
        if fingerprint(key) != fingerprint(embedded):
            return (Difference(SIGNATURE, f"signed with key {fingerprint(embedded)}, not with --public-key "
                               f"{public_key} ({fingerprint(key)})"), fingerprint(key))
    try:
        key.verify(signature, canonical(manifest).encode("utf-8"))
    except InvalidSignature:
        return Difference(SIGNATURE, f"the signature does not match {MANIFEST} (the manifest was changed "
                          "after it was signed)"), fingerprint(key)
    return None, fingerprint(key)


def check_files(report_dir: Path, manifest: dict) -> Difference | None:
    root = report_dir.resolve()
    for name, sha256 in sorted(manifest["files"].items()):
        try:
            path = (root / name).resolve()
            if root not in path.parents:  # a manifest names files inside its own directory only
                return Difference(f"report file {name}", "lies outside the report directory")
            if not path.is_file():
                return Difference(f"report file {name}", "missing")
            digest = chain.file_digest(path)["sha256"]
        except (OSError, ValueError) as exc:  # a NUL in the name, a file unreadable
            return Difference(f"report file {name!r}", f"cannot be read ({exc})")
        if digest != sha256:
            return Difference(f"report file {name}", "changed after it was signed (sha256 differs)")
    return None


def check_store(store: Store, manifest: dict) -> Difference | None:
    con = store.con
    head = manifest["store"].get("chain_head")
    if head is None:
        return Difference("store", "the report was made from a store without a hash chain: its inputs "
                          "cannot be checked")
    links = chain.links(con, upto=None)
    at = next((link for link in links if link.seq == head["seq"]), None)
    if at is None:
        return Difference(f"chain link {head['seq']}", f"missing: the store's chain ends at "
                          f"{links[-1].seq if links else 0}, the report signed a head at {head['seq']}")
    found = next(chain.check_store(con, store.segments_dir), None)
    if found is not None:
        return found
    if at.link_hash != head["link_hash"]:
        return Difference(at.name, "is not the link the report signed as the chain's head")
    present = {i: (p, s) for i, p, s in con.execute("SELECT ingest_id, path, sha256 FROM ingests").fetchall()} \
        if has_table(con, "ingests") else {}
    for item in manifest["inputs"]:
        if present.get(item["ingest_id"]) != (item["path"], item["sha256"]):
            return Difference(f"input {item['path']} (ingest {item['ingest_id']})",
                              "missing from the store" if item["ingest_id"] not in present
                              else "its sha256 in the store differs from the report's")
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_figures(store: Store, manifest: dict) -> Difference | None:
    con = store.con
    for fig in manifest["figures"]:
        where = f"figure {fig['name']}"
        try:
            now = facts.section(con, "verify", "", fig["query"])
        except duckdb.Error as exc:
            return Difference(where, f"its query fails on this store: {(str(exc).splitlines() or [''])[0]}")
        except (TypeError, AttributeError):  # no cursor or no columns: only comments, or not a query
            return Difference(where, "its query gives no table")
        hashes = fig.get("row_sha256")
        if len(now["rows"]) != len(fig["rows"]):
            return Difference(where, f"the report has {len(fig['rows'])} rows, the store gives {len(now['rows'])}")
        for i, (then, got) in enumerate(zip(fig["rows"], now["rows"]), start=1):
            if hashes is not None:
                if i > len(hashes) or hashes[i - 1] != _row_hash(got):
                    return Difference(f"{where} row {i}", "differs from the store (compared by hash: the report "
                                      "is redacted)")
                continue
            if len(then) != len(got):
                return Difference(f"{where} row {i}", f"has {len(then)} columns, the store gives {len(got)}")
            for column, a, b in zip(now["columns"], then, got):
                if not _same(a, b):
                    return Difference(f"{where} row {i} column {column}",
                                      f"the report says {_show(a)}, the store gives {_show(b)}")
    return None


def sandbox(store: Store) -> None:
    """Limit what SQL on ``store`` may touch to the store's own segments: the queries come from
    the manifest, which is input (a manifest signed with a key of an attacker's own still
    verifies when no --public-key is given)."""
    allowed = [str(store.segments_dir) + "/", str(Path(store.path).resolve()) + ".tmp/"]
    store.con.execute("SET allowed_directories = [" + ", ".join(facts.lit(d) for d in allowed) + "]")
    store.con.execute("SET enable_external_access = false")


def verify(report_dir: Path, db: Path, public_key: Path | None = None) -> tuple[Difference | None, dict]:
    """The first difference between the report in ``report_dir`` and the store ``db`` (None when
    everything matches), and what was checked (for the CLI's summary)."""
    manifest, signature = load(report_dir)
    found, key_fingerprint = check_signature(manifest, signature, public_key)
    summary = {"key": key_fingerprint, "key_from": "--public-key" if public_key else "the manifest",
               "files": len(manifest["files"]), "figures": len(manifest["figures"]),
               "inputs": len(manifest["inputs"]),
               "chain_head": (manifest["store"].get("chain_head") or {}).get("seq")}
    if found is None:
        found = check_files(report_dir, manifest)
    if found is None:
        if not Path(db).is_file():
            raise UserError(f"--db {db}: no such store")
        with Store(db, read_only=True) as store:
            sandbox(store)
            found = check_store(store, manifest) or check_figures(store, manifest)
    return found, summary

