"""The HTML report: one self-contained page per campaign and an index page.

Jinja2 with autoescaping on for every template, a Content-Security-Policy that allows no
script and no fetch at all, and charts as inline SVG built from escaped text (svg.py): the
page reads the same offline, and nothing an attacker wrote into a prompt, a user agent or an
account id can run in the investigator's browser. tests/report/test_report.py fills every
field of the logs with XSS and template-injection payloads and checks the rendered markup.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from distillguard.ingest.enrich import CAPABILITIES
from distillguard.report import svg
from distillguard.report.document import rows_as_dicts


def _num(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value != int(value) or abs(value) < 1e15 else f"{value:,.0f}"
    return str(value)


def _day(value: object) -> str:
    return str(value)[:10] if value else "–"


def _clip(value: object, limit: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters in all)"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("distillguard.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=_num, day=_day, clip=_clip, zipcols=lambda row, cols: dict(zip(cols, row)),
                       p=lambda value: f"{value:.3g}")
    return env


def page_name(campaign_id: str) -> str:
    """The file name of a campaign's page: its id with anything but [A-Za-z0-9_.-] replaced."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", campaign_id)[:120] + ".html"


def holding(doc: dict, campaign_id: str) -> list[dict]:
    """The report's actors that hold ``campaign_id``; [] also when actors were never linked."""
    return [a for a in (doc["actors"] or {}).get("actors", []) if campaign_id in a["campaigns"]]


def campaign_page(doc: dict, campaign: dict, index_link: bool = False) -> str:
    s = campaign["sections"]
    timeline = rows_as_dicts(s["timeline"])
    caps = {row["population"]: row for row in rows_as_dicts(s["capabilities"])}
    areas = list(CAPABILITIES)
    actions = {row["account_id"]: row["action"] for row in rows_as_dicts(s["members"])}
    edges = [{"a": r["a"], "b": r["b"], "weight": r["weight"],
              "kinds": {k[len("shared_"):]: v for k, v in r.items() if k.startswith("shared_")}}
             for r in rows_as_dicts(s["graph"])]
    graph_svg, caption = svg.graph(edges, actions, len(actions))
    # what the members share, in words, from the linkage table (not a stock phrase)
    linked_by = [f"{row['evidence']} ({row['account_pairs']:,} pairs)"
                 for row in sorted(rows_as_dicts(s["linkage"]), key=lambda r: -r["account_pairs"]) if row["account_pairs"]]
    return _environment().get_template("campaign.html.j2").render(
        doc=doc, c=campaign, index_link=index_link, linked_by=linked_by, actors=holding(doc, campaign["campaign_id"]),
        policy=doc["scan"]["policy"],
        policy_json=json.dumps(doc["scan"]["policy"], indent=2, sort_keys=True),
        timeline_svg=svg.timeline([r["day"] for r in timeline], [r["exchanges"] for r in timeline],
                                  [r["accounts_created"] for r in timeline]),
        capability_svg=svg.capability_bars(areas, [caps.get("campaign", {}).get(a) or 0.0 for a in areas],
                                           [caps.get("organic", {}).get(a) or 0.0 for a in areas]),
        graph_svg=graph_svg, graph_caption=caption,
        action_colours=list(svg.ACTION_COLOURS.items()), family_colours=list(svg.FAMILY_COLOURS.items()),
    )


def index_page(doc: dict) -> str:
    return _environment().get_template("index.html.j2").render(
        doc=doc, campaigns=[(c, page_name(c["campaign_id"])) for c in doc["campaigns"]])


def write(doc: dict, out: Path, single: bool) -> list[Path]:
    """One campaign's page at ``out`` (``single``), or ``out``/index.html and a page per campaign."""
    if single:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(campaign_page(doc, doc["campaigns"][0]), encoding="utf-8")
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "index.html"]
    written[0].write_text(index_page(doc), encoding="utf-8")
    for campaign in doc["campaigns"]:
        path = out / page_name(campaign["campaign_id"])
        path.write_text(campaign_page(doc, campaign, index_link=True), encoding="utf-8")
        written.append(path)
    return written

