"""Writes the Langfuse exports of this folder from the real traces in traces/.

traces/*.trace.json are traces (with their observations) that Langfuse's own instance recorded
from framework integrations and its repository keeps as test data (see README.md). From their
observations this script writes:

* ``observations.jsonl``, ``observations.json``, ``observations.csv``: the rows of the UI's batch
  export of the observations table, laid out as Langfuse's worker writes them
  (worker/src/features/database-read-stream/observation-stream.ts: ``convertObservation`` with
  ``shouldJsonParse`` and the trace's ``traceName``, ``traceTags``, ``traceTimestamp``, ``userId``,
  then the model's price columns and ``comments``; packages/shared/src/server/utils/transforms/:
  JSON Lines and JSON through ``JSON.stringify``, CSV with the first row's keys as header, every
  field quoted, strings as they are, anything else as JSON, null as an empty field).
* ``observations-api-v2.jsonl``: the same observations with their trace's ``userId`` and
  ``sessionId`` as the public API's v2 observations endpoint returns them (input and output as
  raw text, metadata as an object), parsed as one ``ObservationsV2Response`` page by the
  Langfuse Python SDK's own ``parse_obj_as`` (what its client does with the HTTP answer) and
  each observation serialised by the SDK model's ``json()``.

Run: .venv/bin/python tests/data/langfuse/make_fixture.py   (needs the langfuse package)
"""

from __future__ import annotations

import json
from pathlib import Path

from langfuse.api.core.pydantic_utilities import parse_obj_as
from langfuse.api.observations.types import ObservationsV2Response

HERE = Path(__file__).parent


def _parsed(value):
    """``parseJsonPrioritised``: JSON text becomes its value, other text stays as it is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _js(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_rows(trace: dict, observations: list[dict]) -> list[dict]:
    rows = []
    for obs in observations:
        row = {k: (_parsed(v) if k in ("input", "output", "metadata") else v) for k, v in obs.items()
               if k != "internalModel"}  # the tRPC trace view's copy of internalModelId
        row.update(traceName=trace.get("name"), traceTags=trace.get("tags"), traceTimestamp=trace.get("timestamp"),
                   userId=trace.get("userId"), modelId=obs.get("internalModelId"), inputPrice=None,
                   outputPrice=None, totalPrice=None, comments=[])
        rows.append(row)
    return rows


def csv_field(value) -> str:
    text = "" if value is None else value if isinstance(value, str) else _js(value)
    return '"' + text.replace('"', '""') + '"'


def main() -> None:
    rows, api_page = [], []
    for path in sorted((HERE / "traces").glob("*.trace.json")):
        document = json.loads(path.read_text())
        trace, observations = document["trace"], document["observations"]
        rows.extend(export_rows(trace, observations))
        api_page.extend({**obs, "metadata": _parsed(obs.get("metadata")), "userId": trace.get("userId"),
                         "sessionId": trace.get("sessionId"), "traceName": trace.get("name"),
                         "tags": trace.get("tags")} for obs in observations)
    (HERE / "observations.jsonl").write_text("".join(_js(r) + "\n" for r in rows))
    (HERE / "observations.json").write_text("[" + ",".join(_js(r) for r in rows) + "]")
    header = list(rows[0])
    lines = [",".join(csv_field(h) for h in header)]
    lines += [",".join(csv_field(r.get(h)) for h in header) for r in rows]
    (HERE / "observations.csv").write_text("\n".join(lines) + "\n")
    page = parse_obj_as(ObservationsV2Response, {"data": api_page, "meta": {}})
    (HERE / "observations-api-v2.jsonl").write_text("".join(o.json() + "\n" for o in page.data))


if __name__ == "__main__":
    main()
