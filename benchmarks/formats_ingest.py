"""File-format ingest benchmark: rows/s and peak memory per source format.

``python benchmarks/formats_ingest.py --records 100000``: for each format, a large input is made by
repeating a real fixture's records (tests/data/*, examples/logs/*, each recorded beside it) as
they were written, byte for byte, except for their ids, times and accounts, which are rewritten in
the record's own text per copy: ids get a copy number (hex ids keep their length), every ISO time
and the epoch times shift by ten seconds a copy, and accounts take one of 1,000 variants. Each input
is then ingested by a separate ``distillguard ingest FILE --db fresh.duckdb --format NAME --json``
process, three times (median wall time, start-up included; the child's peak RSS from wait4), and
once without ``--format`` to show what detecting the format costs. Prints a Markdown block for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "examples" / "logs"
SHIFT_SECONDS = 10
ACCOUNTS = 1_000

ISO_TIME = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2})([T ])(\d{2}:\d{2}:\d{2})(\.\d+)?")
HEX_ID = re.compile(r"[0-9a-f]{8}(-?[0-9a-f]+)*")


@dataclass(frozen=True)
class Values:
    """The values of one record that a copy rewrites: ids, accounts and epoch times (with their unit)."""

    ids: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    epochs: tuple[tuple[str, int], ...] = ()  # (value as written, units per second)


@dataclass(frozen=True)
class Source:
    """One benchmarked input: the fixture, how its records are split and which values a copy rewrites."""

    name: str
    log_format: str
    fixture: Path
    suffix: str
    records: Callable[[str], tuple[str, list[str]]]  # fixture text -> (header, raw records)
    values: Callable[[str], Values]  # raw record -> its values to rewrite
    spans_per_record: int = 1


def jsonl_records(text: str) -> tuple[str, list[str]]:
    return "", [line + "\n" for line in text.splitlines() if line.strip()]


def csv_records(text: str) -> tuple[str, list[str]]:
    """Header line and the raw text of each CSV record (a quoted field may hold line breaks)."""
    lines = text.splitlines(keepends=True)
    records, current = [], ""
    for line in lines[1:]:
        current += line
        if current.count('"') % 2 == 0:
            records.append(current)
            current = ""
    return lines[0], records


def csv_row(raw: str, header: str) -> dict[str, str]:
    import csv

    return next(csv.DictReader([header, raw]))


def present(*values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values if v not in (None, "", "None"))


def spendlogs_values(row: dict[str, Any]) -> Values:
    return Values(ids=present(row.get("request_id"), row.get("litellm_call_id"), row.get("session_id")),
                  accounts=present(row.get("user"), row.get("end_user"), row.get("api_key")))


def langfuse_values(raw: str) -> Values:
    row = json.loads(raw)
    return Values(ids=present(row.get("id"), row.get("traceId"), row.get("parentObservationId")),
                  accounts=present(row.get("userId")))


def helicone_values(row: dict[str, Any]) -> Values:
    return Values(ids=present(row.get("request_id"), row.get("response_id")),
                  accounts=present(row.get("request_user_id")))


def otel_values(raw: str) -> Values:
    export = json.loads(raw)
    ids, accounts, epochs = [], [], []
    for resource in export["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                ids += present(span.get("traceId"), span.get("spanId"))
                epochs += [(span[k], 10**9) for k in ("startTimeUnixNano", "endTimeUnixNano") if k in span]
                for attribute in span.get("attributes", ()):
                    if attribute["key"] in ("enduser.id", "user.id"):
                        accounts += present(attribute["value"].get("stringValue"))
                    elif attribute["key"] == "gen_ai.conversation.id":
                        ids += present(attribute["value"].get("stringValue"))
    return Values(ids=tuple(ids), accounts=tuple(accounts), epochs=tuple(epochs))


def pairs_values(raw: str) -> Values:
    pair = json.loads(raw)
    created = pair.get("response", {}).get("created")
    return Values(ids=present(pair.get("exchange_id"), pair.get("response", {}).get("id")),
                  accounts=present(pair.get("account_id")),
                  epochs=((str(created), 1),) if isinstance(created, int) else ())


def canonical_values(raw: str) -> Values:
    row = json.loads(raw)
    stamp = row.get("timestamp")
    return Values(ids=present(row.get("exchange_id"), row.get("conversation_id")),
                  accounts=present(row.get("account_id"), row.get("api_key_id")),
                  epochs=((str(stamp), 1),) if isinstance(stamp, int) else ())


def otlp_export_lines(text: str) -> tuple[str, list[str]]:
    """The example's OTLP/JSON export as one line, the way the Collector's file exporter writes exports."""
    return "", [json.dumps(json.loads(text), separators=(",", ":")) + "\n"]


def gzip_jsonl(path: Path) -> Callable[[str], tuple[str, list[str]]]:
    return lambda _text: jsonl_records(gzip.decompress(path.read_bytes()).decode())


def canonical_records(text: str) -> tuple[str, list[str]]:
    """gateway.jsonl less its one deliberately malformed line (the example of a quarantined row)."""
    _, lines = jsonl_records(text)
    return "", [line for line in lines if _parses(line)]


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


SPENDLOGS_CSV = DATA / "litellm_spendlogs" / "spendlogs.csv"
HELICONE_CSV = DATA / "helicone" / "export-with-body.csv"
PAIRS = EXAMPLES / "openai_pairs.jsonl.gz"
SOURCES = (
    Source("LiteLLM SpendLogs CSV", "litellm-spendlogs", SPENDLOGS_CSV, ".csv", csv_records,
           lambda raw: spendlogs_values(csv_row(raw, SPENDLOGS_CSV.read_text().splitlines(True)[0]))),
    Source("LiteLLM SpendLogs JSONL", "litellm-spendlogs", DATA / "litellm_spendlogs" / "spendlogs.jsonl", ".jsonl",
           jsonl_records, lambda raw: spendlogs_values(json.loads(raw))),
    Source("Langfuse observations JSONL", "langfuse", DATA / "langfuse" / "observations.jsonl", ".jsonl",
           jsonl_records, langfuse_values),
    Source("Helicone export JSONL", "helicone", DATA / "helicone" / "export-with-body.jsonl", ".jsonl",
           jsonl_records, lambda raw: helicone_values(json.loads(raw))),
    Source("Helicone export CSV", "helicone", HELICONE_CSV, ".csv", csv_records,
           lambda raw: helicone_values(csv_row(raw, HELICONE_CSV.read_text().splitlines(True)[0]))),
    Source("OTel OTLP/JSON exports", "otel", EXAMPLES / "otel_spans.json", ".jsonl", otlp_export_lines,
           otel_values, spans_per_record=7),
    Source("OpenAI pairs JSONL", "openai-pairs", PAIRS, ".jsonl", gzip_jsonl(PAIRS), pairs_values),
    Source("canonical JSONL", "canonical", EXAMPLES / "gateway.jsonl", ".jsonl", canonical_records, canonical_values),
)


def new_id(old: str, number: int, tag: str = "c") -> str:
    """A numbered variant of the same kind: hex ids and key hashes keep their length and alphabet,
    others get a suffix."""
    if HEX_ID.fullmatch(old) and len(old) >= 8:
        return f"{number:08x}" + old[8:]
    return f"{old}-{tag}{number}"


def shift_iso(match: re.Match[str], seconds: int) -> str:
    date, sep, clock, fraction = match.groups()
    moved = datetime.fromisoformat(f"{date}T{clock}") + timedelta(seconds=seconds)
    return f"{moved:%Y-%m-%d}{sep}{moved:%H:%M:%S}{fraction or ''}"


def copy_of(raw: str, values: Values, copy: int) -> str:
    """The raw record with its ids, accounts and times rewritten for one copy; all else unchanged."""
    offset = copy * SHIFT_SECONDS
    mapping = {old: new_id(old, copy) for old in values.ids}
    mapping.update({old: new_id(old, copy % ACCOUNTS, "a") for old in values.accounts})
    mapping.update({old: str(int(old) + offset * unit) for old, unit in values.epochs})
    text = ISO_TIME.sub(lambda m: shift_iso(m, offset), raw)
    if not mapping:
        return text
    # whole values only: a value inside a longer one (a span id in a trace id) is not touched
    pattern = re.compile(r"(?<![\w.@-])(" + "|".join(map(re.escape, sorted(mapping, key=len, reverse=True)))
                         + r")(?![\w@-]|\.\w)")
    return pattern.sub(lambda m: mapping[m.group(1)], text)


def build(source: Source, records: int, path: Path) -> int:
    """Writes about ``records`` rows of ``source`` to ``path``; returns the rows written."""
    header, raws = source.records(source.fixture.read_text() if source.fixture.suffix != ".gz" else "")
    values = [source.values(raw) for raw in raws]
    per_copy = len(raws) * source.spans_per_record
    copies = math.ceil(records / per_copy)
    with path.open("w") as out:
        out.write(header)
        for copy in range(copies):
            out.writelines(copy_of(raw, v, copy) for raw, v in zip(raws, values))
    return copies * per_copy


def ingest(path: Path, log_format: str | None, workdir: Path) -> tuple[float, int, dict[str, Any]]:
    """(seconds, peak RSS bytes, the file's --json result) of one ingest process into a fresh store."""
    db = workdir / "bench.duckdb"
    for leftover in workdir.glob("bench.*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    cmd = [sys.executable, "-m", "distillguard.cli", "ingest", str(path), "--db", str(db), "--json"]
    cmd += ["--format", log_format] if log_format else []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    out = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"ingest of {path.name} failed: {out}")
    return elapsed, usage.ru_maxrss * 1024, json.loads(out)["files"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records per format (default 100,000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="names of the sources to run (default: all)")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory(prefix="fmt-bench-") as tmp:
        workdir = Path(tmp)
        for source in SOURCES:
            if args.only and source.name not in args.only:
                continue
            path = workdir / f"input{source.suffix}"
            rows = build(source, args.records, path)
            runs = [ingest(path, source.log_format, workdir) for _ in range(args.runs)]
            median = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            result = runs[0][2]
            detected_s, _, detected = ingest(path, None, workdir)
            counts = (result["rows_in"], result["rows_stored"], result["rows_duplicate"], result["rows_quarantined"])
            if counts[0] != sum(counts[1:]) or counts[0] != rows or detected["log_format"] != source.log_format:
                raise SystemExit(f"{source.name}: rows {rows}, counts {counts}, detected {detected['log_format']}")
            lines.append(f"| {source.name} | `--format {source.log_format}` | {path.stat().st_size / 2**20:,.0f} MiB | "
                         f"{counts[0]:,} = {counts[1]:,} + {counts[2]:,} + {counts[3]:,} | "
                         f"{', '.join(f'{r[0]:.1f}' for r in runs)} | {counts[0] / median:,.0f} | "
                         f"{peak / 2**20:,.0f} MiB | {detected_s:.1f} |")
            print(lines[-1], flush=True)
            path.unlink()
    load = os.getloadavg()
    print(f"\nCommand: `python benchmarks/formats_ingest.py --records {args.records}`. Machine: "
          f"{platform.machine()}, {os.cpu_count()} cores (load average {load[0]:.1f} at the end), Python "
          f"{platform.python_version()}. Date: {datetime.now(UTC):%Y-%m-%d}.\n")
    print("| source | named by | input | rows in = stored + duplicates + quarantined | runs (s) | rows/s "
          "(median) | peak memory | no `--format` (s) |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
