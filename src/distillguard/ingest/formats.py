"""The log formats ingest reads, by name: what each looks like and which canonical fields it fills.

A format is the shape of one record, whatever the container (JSON Lines, JSON, CSV, Parquet)
holds it. ``canonical`` (our own column names and their aliases), ``openai-pairs`` and ``otel``
go through the readers' own record handling (records.expand), fast lanes included; the others
map every record through a ``RecordMapper`` made for the file. Without ``--format`` the first
record of a file decides (``detect``): the first format in FORMATS whose ``detects`` accepts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from distillguard.errors import IngestError
from distillguard.ingest import helicone, langfuse, litellm, openai_pairs, otel
from distillguard.ingest.fieldmap import FieldMap
from distillguard.ingest.keys import canonical_keys, flatten
from distillguard.schema import ALIASES, COLUMN_NAMES

Expanded = Iterator[dict[str, Any] | str | tuple[str, Any]]


class RecordMapper:
    """Maps the records of one file; ``warnings`` says, once, what the file lacked."""

    def __init__(self, to_record: Callable[[Mapping[str, Any]], dict[str, Any] | str] | None,
                 field_map: FieldMap | None = None) -> None:
        self._to_record = to_record
        self._field_map = field_map
        self.notes: dict[str, int] = {}

    def __call__(self, obj: Any) -> Expanded:
        if not isinstance(obj, dict):
            yield f"malformed record: expected a JSON object, got {type(obj).__name__}"
            return
        if self._to_record is None:
            from distillguard.ingest.records import expand

            records = list(expand(obj))
            if self._field_map is None or len(records) != 1 or not isinstance(records[0], dict):
                yield from records
                return
            record: dict[str, Any] | str = records[0]
        else:
            record = self._to_record(obj)
        if isinstance(record, str):
            yield record
            return
        if self._field_map is not None:
            record = {**record, **self._field_map.apply(obj)}
        for note in record.pop("_notes", ()):
            self.notes[note] = self.notes.get(note, 0) + 1
        yield record

    def warnings(self, rows: int) -> list[str]:
        return [f"{count:,} of {rows:,} records {note}" for note, count in self.notes.items()]


def _litellm_record(row: Mapping[str, Any]) -> dict[str, Any]:
    record = litellm.spendlogs_record(row)
    if not litellm.prompts_stored(row):
        record["_notes"] = ("carry no prompt: the LiteLLM proxy stores request bodies only with "
                            "general_settings.store_prompts_in_spend_logs: true; they are ingested with an empty "
                            "prompt, so only the metadata signals (timing, identity, addresses, tokens) see them",)
    return record


@dataclass(frozen=True)
class SourceFormat:
    """One named format: ``detects`` tells it from one record's keys and values, ``to_record``
    maps one record (None: the readers' own handling of canonical records, pairs and spans)."""

    name: str
    summary: str
    fills: tuple[str, ...]
    detects: Callable[[Mapping[str, Any]], bool]
    to_record: Callable[[Mapping[str, Any]], dict[str, Any] | str] | None = None
    reference: str = ""

    def mapper(self, field_map: FieldMap | None = None) -> RecordMapper | None:
        """The per-file record mapper, or None where the readers' own lanes apply unchanged."""
        if self.to_record is None and field_map is None:
            return None
        return RecordMapper(self.to_record, field_map)


def _canonical(obj: Mapping[str, Any]) -> bool:
    return any(ALIASES.get(k) == "prompt" for k in flatten(dict(obj)))


FORMATS: tuple[SourceFormat, ...] = (
    SourceFormat("litellm-spendlogs", "LiteLLM proxy's LiteLLM_SpendLogs table, exported as CSV or JSON Lines",
                 litellm.FILLS, litellm.is_spendlogs_row, _litellm_record,
                 "BerriAI/litellm schema.prisma, spend_tracking_utils.get_logging_payload"),
    SourceFormat("langfuse", "Langfuse batch export of observations (generations) or traces",
                 langfuse.FILLS, langfuse.is_langfuse_record, langfuse.record,
                 "langfuse/langfuse worker batch export (observation-stream.ts, trace-stream.ts)"),
    SourceFormat("helicone", "Helicone request export (its REST API's request rows, its export tool's JSONL or CSV)",
                 helicone.FILLS, helicone.is_helicone_record, helicone.record,
                 "Helicone/helicone HeliconeRequest"),
    SourceFormat("otel", "OpenTelemetry GenAI spans: OTLP/JSON export or the Python SDK's span.to_json()",
                 otel.FILLS, lambda o: otel.is_otlp_export(dict(o)) or otel.is_sdk_span(dict(o)),
                 reference="open-telemetry/semantic-conventions docs/gen-ai"),
    SourceFormat("openai-pairs", "OpenAI-style request/response pairs (chat, completions, Responses, Anthropic)",
                 openai_pairs.FILLS, lambda o: openai_pairs.is_pair(dict(o))),
    SourceFormat("canonical", "distillguard's own columns or their aliases (docs/schema.md)",
                 COLUMN_NAMES, _canonical),
)
BY_FORMAT: dict[str, SourceFormat] = {f.name: f for f in FORMATS}
#: short names a user may type for --format
ALIASES_OF_FORMATS = {"litellm": "litellm-spendlogs", "spendlogs": "litellm-spendlogs", "openai": "openai-pairs",
                      "otlp": "otel"}


def named(name: str) -> SourceFormat:
    """The format called ``name`` (or a short name of it); an unknown name is the user's error."""
    fmt = BY_FORMAT.get(ALIASES_OF_FORMATS.get(name, name))
    if fmt is None:
        raise IngestError(f"--format {name}: unknown format; known: {', '.join(BY_FORMAT)}")
    return fmt


def detect(first: Mapping[str, Any] | None) -> SourceFormat:
    """The format of a file from its first record (None: nothing to go by, the canonical readers)."""
    if first is not None:
        for fmt in FORMATS:
            try:
                if fmt.detects(first):
                    return fmt
            except (TypeError, AttributeError):  # a record of an unexpected shape is not that format
                continue
    return BY_FORMAT["canonical"]

