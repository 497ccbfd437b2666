"""Evidence reports: ``distillguard report`` (docs/reports.md).

facts.py runs the queries, document.py assembles the one document every format is drawn
from (and redacts it), html.py, stix.py, misp.py and chromium.py (PDF) render it; taxii.py
serves the STIX objects of the store's scans.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from distillguard.errors import UserError
from distillguard.intel import actors as intel_actors
from distillguard.intel import indicators as intel_indicators
from distillguard.report import chromium, document, html, manifest, misp, stix
from distillguard.report.redact import NONE, Redactor
from distillguard.store import Store

FORMATS = ("html", "json", "pdf", "stix", "misp")
_DEFAULT_NAMES = {"json": "report.json", "stix": "bundle.stix.json"}


def write_report(store: Store, out: Path, fmt: str, campaign_id: str | None = None, scan_id: str | None = None,
                 redactor: Redactor = NONE, producer: str = "distillguard", tlp: str = stix.DEFAULT_TLP,
                 valid_days: int = stix.DEFAULT_VALID_DAYS, signing_key: Path | None = None) -> list[Path]:
    """Write the report of one campaign (``campaign_id``) or of all the scan's campaigns (None).

    ``out`` is a file when it has a suffix, else a directory; all campaigns as HTML, PDF or MISP
    always go to a directory (an index page and one page per campaign; one event per campaign).
    ``tlp`` and ``valid_days`` apply to STIX and MISP (stix.py). ``signing_key``: an Ed25519
    private key; the report then names its fingerprint, and manifest.json and manifest.sig are
    written beside its files (manifest.py).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    key = manifest.load_private_key(signing_key) if signing_key is not None else None
    doc = document.build(store.con, None if campaign_id is None else [campaign_id], scan_id, redactor,
                         store_name=store.path)
    if key is not None:
        doc["signing"] = manifest.signing_section(key)
    # nothing imported goes out beyond its TLP (intel/indicators.py); actors as last linked
    written = _write(doc, out, fmt, campaign_id, producer, tlp, valid_days,
                     intel_indicators.withheld(store.con, tlp), intel_actors.stored(store.con))
    return written + manifest.write(store, doc, written, key) if key is not None else written


def _write(doc: dict, out: Path, fmt: str, campaign_id: str | None, producer: str, tlp: str,
           valid_days: int, withheld: frozenset[str] = frozenset(), actors: list[dict] = ()) -> list[Path]:
    single = campaign_id is not None
    is_file = bool(out.suffix) and not out.is_dir()
    if fmt == "html":
        if single and not is_file:
            out = out / html.page_name(campaign_id)
        if not single and is_file:
            raise UserError(f"--all writes an index page and one page per campaign: give a directory, not {out}")
        return html.write(doc, out, single)
    if fmt == "pdf":
        if not single and is_file:
            raise UserError(f"--all writes one PDF per campaign: give a directory, not {out}")
        folder = out.parent if single and is_file else out
        written = []
        folder.mkdir(parents=True, exist_ok=True)
        # the HTML that Chromium prints, in a temporary directory next to the output
        with tempfile.TemporaryDirectory(prefix=".report-", dir=folder) as staging_dir:
            staging = Path(staging_dir)
            pages = html.write(doc, staging / "page.html" if single else staging, single)
            for page in pages:
                if page.name == "index.html":
                    continue
                if single:
                    target = out if is_file else folder / (Path(html.page_name(campaign_id)).stem + ".pdf")
                else:
                    target = folder / (page.stem + ".pdf")
                written.append(chromium.pdf(page, target))
        return written
    if fmt == "misp":
        if not single and is_file:
            raise UserError(f"--all writes one MISP event per campaign: give a directory, not {out}")
        events = misp.export(doc, producer, named=single, tlp=tlp, withheld=withheld)
        written = []
        for cid, text in events.items():
            target = out if is_file else out / f"{cid}.misp.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            written.append(target)
        return written
    target = out if is_file else out / _DEFAULT_NAMES[fmt]
    target.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n" if fmt == "json"
            else stix.bundle(doc, producer, named=single, tlp=tlp, valid_days=valid_days,
                             withheld=withheld, actors=actors))
    target.write_text(text, encoding="utf-8")
    return [target]


__all__ = ["FORMATS", "Redactor", "write_report"]
