"""The ``distillguard`` command line: thin wrappers that call the pipeline stages.

A user error (UserError) becomes one line on stderr and exit code 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table
from rich.text import Text

from distillguard import __version__
from distillguard.errors import IngestError, UserError
from distillguard.store import DEFAULT_DB, Store

def _no_type_placeholders(params: list[Any]) -> list[Any]:
    """``params`` as --help should show them: typer prints ``<bool>`` beside a flag, as if it
    took a value, and ``<str>`` beside an argument, whose name (its metavar) already says what
    it takes; options name their value with a metavar of their own (FILE.yaml, DAYS)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if isinstance(param, typer.core.TyperArgument):
            param.display_type_rich = lambda ctx: None
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_placeholders(super().get_params(ctx))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_placeholders(super().get_params(ctx))


class _Typer(typer.Typer):
    """A typer app whose commands and groups show flags without a placeholder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=_Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(add_completion=False, no_args_is_help=True,
             help="Detect, stop and document adversarial distillation of LLM APIs.")
console = Console()
err = Console(stderr=True)

DbOption = typer.Option(DEFAULT_DB, "--db", metavar="FILE.duckdb", help="DuckDB store file.")
JsonOption = typer.Option(False, "--json", help="Print the result as JSON instead of a table.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress bar on stderr (there is none when stderr is "
                           "not a terminal either).")


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the distillguard version and exit.")) -> None:
    pass


def progress_bar(*columns: ProgressColumn, quiet: bool = False) -> Progress:
    """A progress display on stderr that leaves no trace; off with --quiet (or --json) and when
    stderr is not a terminal, where redrawn bars would only fill a log."""
    return Progress(*columns, console=err, disable=quiet or not err.is_terminal, transient=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one clear line and exit code 2, and a full disk (the machine's
    problem, not the input's) into one clear line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if not disk_full(exc):
                raise
            where = " ".join(str(exc).split())
            err.print(f"[bold red]error:[/] out of disk space ({escape(where)}); free space, or use a --db "
                      "on a larger disk, and run it again", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: an OSError with ENOSPC, or DuckDB's IO error that
    carries the system's message."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (
        "duckdb" in type(exc).__module__ and "No space left on device" in str(exc))


def existing_store(db: str) -> str:
    """``db`` if the store exists; a read command on a mistyped path must not create an empty one
    (an empty store scanned publishes empty verdicts, which a gateway takes as "lift every block")."""
    if db != ":memory:" and not Path(db).exists():
        raise UserError(f"store {db} does not exist (check --db; `distillguard ingest` creates a store)")
    return db


@app.command()
def version() -> None:
    """Print the distillguard version."""
    console.print(__version__)


@app.command()
@user_errors
def ingest(
    paths: list[str] = typer.Argument(..., metavar="PATH|URL", help="Files or directories: JSONL, JSON, CSV, Parquet "
                                      "(optionally .gz/.zst), OpenAI request/response pairs, OTel GenAI spans; "
                                      "or a database URL postgresql://USER@HOST:PORT/DB with --source."),
    db: str = DbOption,
    max_record_bytes: int = typer.Option(
        64 << 20, "--max-record-bytes", min=1, metavar="BYTES",
        help="Longest JSON Lines line, JSON record or CSV line; a longer one is quarantined."),
    max_decompressed_bytes: int = typer.Option(
        64 << 30, "--max-decompressed-bytes", min=1, metavar="BYTES",
        help="Most bytes read out of one .gz/.zst file; the rest is quarantined as one record."),
    source: Optional[str] = typer.Option(
        None, "--source", metavar="litellm",
        help="What a database URL holds: litellm (the proxy's LiteLLM_SpendLogs table)."),
    since: Optional[str] = typer.Option(
        None, "--since", metavar="ISO-8601",
        help="Database sources: read rows from this UTC time on, instead of after the last run's."),
    log_format: Optional[str] = typer.Option(
        None, "--format", metavar="NAME",
        help="Log format of every file (`distillguard formats` lists them); default: told from each file's "
             "first record."),
    map_file: Optional[Path] = typer.Option(
        None, "--map", metavar="FILE.yaml",
        help="YAML mapping canonical fields to your own column names or JSON paths (see docs/usage.md)."),
    kind: str = typer.Option(
        "exchanges", "--kind", metavar="exchanges|accounts",
        help="What the files hold: exchange logs (default), or sign-up and payment events of accounts "
             "(JSON Lines or CSV, see docs/schema.md)."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Load exchange logs (or, with --kind accounts, account events) into the store; every row is
    stored, a duplicate, or quarantined.

    A path that exists is read as it is; a path that does not exist and holds * ? or [ is
    expanded as a glob pattern (quote it so the shell leaves it alone). A database URL is
    read incrementally: each run adds the rows logged since the previous one.
    """
    from distillguard.ingest.postgres import is_database_url

    if kind not in ("exchanges", "accounts"):
        raise UserError(f"--kind {kind!r}: one of exchanges, accounts")
    if kind == "accounts":
        if source or since or log_format or map_file:
            raise UserError("--kind accounts reads files of account events: --source, --since, --format and --map "
                            "are for exchange logs")
        _ingest_accounts(paths, db, max_record_bytes, max_decompressed_bytes, as_json)
        return
    if any(is_database_url(p) for p in paths) or source or since:
        _ingest_database(paths, db, source, since, as_json, map_file, log_format)
        return
    from distillguard.ingest import ingest_paths
    from distillguard.ingest.fieldmap import FieldMap
    from distillguard.ingest.formats import named
    from distillguard.ingest.sources import IngestLimits

    if log_format is not None:
        log_format = named(log_format).name
    field_map = FieldMap.load(map_file) if map_file is not None else None
    errors: list[IngestError] = []
    with Store(db) as store:
        with progress_bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                          quiet=quiet or as_json) as bar:
            tasks: dict[str, Any] = {}

            def progress(source: Any, position: int) -> None:
                key = str(source.path)
                if key not in tasks:
                    tasks[key] = bar.add_task(source.path.name, total=source.size)
                bar.update(tasks[key], completed=min(position, source.size))

            def on_error(exc: IngestError) -> None:
                errors.append(exc)
                err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)

            limits = IngestLimits(max_record_bytes=max_record_bytes, max_decompressed_bytes=max_decompressed_bytes)
            results = ingest_paths(store, list(paths), progress, on_error, limits, log_format, field_map)
    for r in results:
        for warning in r.warnings:
            err.print(f"[bold yellow]warning:[/] {escape(r.path)}: {escape(warning)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"files": [r.as_dict() for r in results],
                          "errors": [str(e) for e in errors]}, indent=2))
    elif results:
        _print_ingest_table(results)
    # a file of which nothing could be used is almost always the wrong file or the wrong format:
    # say so, and fail, so that a script does not go on to scan what it believes was loaded
    unusable = [r for r in results if r.rows_in and not r.rows_stored + r.rows_duplicate]
    for r in unusable:
        err.print(f"[bold red]error:[/] {escape(r.path)}: every one of its {r.rows_in:,} rows was quarantined "
                  f"(see `distillguard quarantine --db {escape(db)}`)", highlight=False, soft_wrap=True)
    if errors or unusable:
        raise typer.Exit(2)


def _ingest_accounts(paths: list[str], db: str, max_record_bytes: int, max_decompressed_bytes: int,
                     as_json: bool) -> None:
    """``ingest --kind accounts FILE...``: sign-up and payment events (ingest/accounts.py)."""
    from distillguard.ingest.accounts import ingest_account_paths
    from distillguard.ingest.sources import IngestLimits

    errors: list[IngestError] = []

    def on_error(exc: IngestError) -> None:
        errors.append(exc)
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)

    with Store(db) as store:
        results = ingest_account_paths(store, list(paths), on_error, IngestLimits(
            max_record_bytes=max_record_bytes, max_decompressed_bytes=max_decompressed_bytes))
    unusable = [r for r in results if r.rows_in and not r.rows_stored + r.rows_duplicate]
    for r in results:
        if r in unusable:  # one line: the file, and the line and field of its first bad record
            first = r.warnings[0].split("; ", 1)[-1] if r.warnings else ""
            err.print(f"[bold red]error:[/] {escape(r.path)}: every one of its {r.rows_in:,} rows was quarantined; "
                      f"{escape(first)} (see `distillguard quarantine --db {escape(db)}`)", highlight=False,
                      soft_wrap=True)
            continue
        for warning in r.warnings:
            err.print(f"[bold yellow]warning:[/] {escape(r.path)}: {escape(warning)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps({"files": [r.as_dict() for r in results], "errors": [str(e) for e in errors]}, indent=2))
    elif results:
        _print_ingest_table(results)
    if errors or unusable:
        raise typer.Exit(2)


def _ingest_database(urls: list[str], db: str, source: Optional[str], since: Optional[str], as_json: bool,
                     map_file: Optional[Path], log_format: Optional[str]) -> None:
    """``ingest postgresql://... --source litellm [--since TS] [--map FILE]``: one table, read from
    its watermark."""
    from datetime import datetime

    from distillguard.ingest.fieldmap import FieldMap
    from distillguard.ingest.postgres import SOURCES, ingest_spendlogs, is_database_url

    if len(urls) != 1 or not is_database_url(urls[0]):
        raise UserError("--source and --since read one database URL (postgresql://USER@HOST:PORT/DB); "
                        "ingest files in a separate run")
    if source not in SOURCES:
        raise UserError(f"a database URL needs --source, one of: {', '.join(SOURCES)}")
    if log_format is not None:
        raise UserError("--format names the format of files; a database URL's is named by --source")
    field_map = FieldMap.load(map_file) if map_file is not None else None
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise UserError(f"--since {since!r}: not an ISO-8601 time (e.g. 2026-11-20T09:30:00Z)") from None
    with Store(db) as store:
        done = ingest_spendlogs(store, urls[0], since=start, field_map=field_map)
    r = done.result
    for warning in done.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if as_json:
        mark = done.watermark
        print(json.dumps({"files": [r.as_dict()], "errors": [], "warnings": done.warnings,
                          "watermark": {"startTime": mark[0].isoformat(), "request_id": mark[1]} if mark else None},
                         indent=2))
    else:
        _print_ingest_table([r])
    if r.rows_in and not r.rows_stored + r.rows_duplicate:
        err.print(f"[bold red]error:[/] {escape(r.path)}: every one of its {r.rows_in:,} rows was quarantined "
                  f"(see `distillguard quarantine --db {escape(db)}`)", highlight=False, soft_wrap=True)
        raise typer.Exit(2)


@app.command()
def formats(as_json: bool = JsonOption) -> None:
    """List the log formats `ingest --format` names, and the canonical fields each fills."""
    from distillguard.ingest.formats import FORMATS

    if as_json:
        print(json.dumps([{"name": f.name, "summary": f.summary, "fills": list(f.fills), "reference": f.reference}
                          for f in FORMATS], indent=2))
        return
    table = Table(title="log formats (told from the first record, first match in this order)")
    for name in ("format", "what it reads", "canonical fields it fills"):
        table.add_column(name, overflow="fold")
    for f in FORMATS:
        table.add_row(f.name, f.summary, ", ".join(f.fills))
    console.print(table)


def _print_ingest_table(results: list[Any]) -> None:
    table = Table(title="ingest")
    for name in ("file", "format", "rows in", "stored", "duplicates", "quarantined", "in = out"):
        table.add_column(name, justify="left" if name in ("file", "format") else "right",
                         overflow="fold", min_width=len(name))
    totals = [0, 0, 0, 0]
    for r in results:
        values = [r.rows_in, r.rows_stored, r.rows_duplicate, r.rows_quarantined]
        totals = [a + b for a, b in zip(totals, values)]
        # the path as read, not its last part: two files of one name in two folders stay apart
        # the log format read, beside the container it came in ("litellm-spendlogs (csv)")
        shown = r.format if r.log_format == "canonical" else f"{r.log_format} ({r.format})"
        table.add_row(Text(r.path), shown, *(f"{v:,}" for v in values), "ok" if r.balanced else "MISMATCH")
    if len(results) > 1:
        table.add_row("total", "", *(f"{v:,}" for v in totals),
                      "ok" if totals[0] == sum(totals[1:]) else "MISMATCH", style="bold")
    console.print(table)


@app.command()
@user_errors
def stats(db: str = DbOption, as_json: bool = JsonOption) -> None:
    """Summarise the store: rows, accounts, time span, volume per day, models, quarantine."""
    from distillguard.store.stats import store_stats

    with Store(db, read_only=True) as store:
        summary = store_stats(store)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    overview = Table(title=f"store {db}", show_header=False)
    for key in ("rows", "accounts", "first_seen", "last_seen", "quarantined", "files_ingested", "rows_read",
                "account_events", "accounts_with_events"):
        value = summary[key]
        overview.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else str(value))
    console.print(overview)
    days = summary["exchanges_per_day"]
    if days:
        peak = max(d["exchanges"] for d in days)
        per_day = Table(title="exchanges per day")
        per_day.add_column("day")
        per_day.add_column("exchanges", justify="right")
        per_day.add_column("")
        shown = days if len(days) <= 60 else days[:30] + days[-30:]
        for d in shown:
            per_day.add_row(d["day"], f"{d['exchanges']:,}", "#" * max(1, round(30 * d["exchanges"] / peak)))
        if len(days) > 60:
            per_day.caption = f"{len(days) - 60} days in the middle not shown (--json has all)"
        console.print(per_day)
    for title, rows, key in (("top models", summary["top_models"], "model"),
                             ("quarantine by reason", summary["quarantine_by_reason"], "reason")):
        if rows:
            t = Table(title=title)
            t.add_column(key)
            t.add_column("rows", justify="right")
            for row in rows:
                t.add_row(str(row[key]), f"{row.get('exchanges', row.get('rows')):,}")
            console.print(t)


@app.command()
@user_errors
def quarantine(
    db: str = DbOption,
    limit: int = typer.Option(50, "--limit", min=0, metavar="ROWS", help="Rows to show, newest ingest first (0: all)."),
    source_file: Optional[str] = typer.Option(None, "--file", metavar="PATH", help="Only rows read from this input file."),
    as_json: bool = JsonOption,
) -> None:
    """Show the input rows ingest could not use: file, line, reason and the raw text."""
    with Store(existing_store(db), read_only=True) as store:
        where, params = ("WHERE q.source_file = ?", [source_file]) if source_file else ("", [])
        total = store.con.execute(f"SELECT count(*) FROM quarantine q {where}", params).fetchone()[0]
        cur = store.con.execute(
            "SELECT q.source_file, q.line_number, q.record_number, q.exchange_id, q.reason_code, q.reason, q.raw, "
            f"i.finished_at AS ingested_at FROM quarantine q LEFT JOIN ingests i USING (ingest_id) {where} "
            "ORDER BY i.finished_at DESC NULLS LAST, q.source_file, q.record_number"
            + (" LIMIT ?" if limit else ""), params + ([limit] if limit else []))
        names = [d[0] for d in cur.description]
        shown = [dict(zip(names, row)) for row in cur.fetchall()]
    if as_json:
        print(json.dumps({"db": db, "total": total, "rows": shown}, indent=2, default=str))
        return
    if not total:
        console.print(f"{db}: the quarantine is empty", highlight=False)
        return
    table = Table(title=f"quarantine of {db}: {len(shown):,} of {total:,} rows")
    for name in ("file", "line", "record", "reason", "raw"):
        table.add_column(name, justify="right" if name in ("line", "record") else "left", overflow="fold")
    for r in shown:
        raw = r["raw"] or ""
        table.add_row(Text(r["source_file"]), str(r["line_number"] or ""), str(r["record_number"] or ""),
                      Text(r["reason"]), Text(raw if len(raw) <= 120 else raw[:117] + "..."))
    console.print(table)


@app.command()
@user_errors
def compact(
    db: str = DbOption,
    min_segments: int = typer.Option(2, "--min-segments", min=2, metavar="N", help="Merge only when at least this many small segments exist."),
    small_rows: int = typer.Option(1_000_000, "--small-rows", min=1, metavar="ROWS", help="A segment with fewer rows than this is small."),
    as_json: bool = JsonOption,
) -> None:
    """Merge the store's small segments (one per ingested file) into one; rows and provenance kept.

    The gateway's loader does this by itself; a store fed by many small `ingest` runs (a file an
    hour, say) gathers one segment per file, and every open of the store reads each one's footer.
    """
    with Store(existing_store(db)) as store:
        before = len(store.segment_files())
        rows_before = store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0]
        merged = store.compact(min_segments=min_segments, small_rows=small_rows)
        after = len(store.segment_files())
        rows_after = store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0]
    summary = {"db": db, "segments_merged": merged, "segment_files_before": before, "segment_files_after": after,
               "rows_before": rows_before, "rows_after": rows_after}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"{db}: merged {merged} small segment(s); segment files {before:,} -> {after:,}; "
                      f"rows {rows_before:,} -> {rows_after:,}")


@app.command()
@user_errors
def simulate(
    scenario: str = typer.Option(..., "--scenario", metavar="NAME|FILE.yaml", help="A shipped scenario name or a scenario YAML file."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Directory for exchanges.parquet, labels.parquet, scenario.json."),
    scale: float = typer.Option(1.0, "--scale", metavar="FACTOR", help="Multiplies account counts (not per-account behaviour)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="INT", help="Random seed (default: the scenario's)."),
    organic_prompts: list[Path] = typer.Option([], "--organic-prompts", metavar="FILE.jsonl", help="JSONL corpora for organic users."),
    distill_prompts: list[Path] = typer.Option([], "--distill-prompts", metavar="FILE.jsonl", help="JSONL corpora for campaigns."),
    as_json: bool = JsonOption,
) -> None:
    """Generate labelled traffic: organic customers and distillation campaigns, with ground truth."""
    from distillguard.simulate import simulate as run_simulation

    if scale <= 0:
        raise UserError(f"--scale must be positive, got {scale}")
    with Progress(TextColumn("simulating {task.description}"), BarColumn(), TimeRemainingColumn(),
                  console=err, disable=not err.is_terminal or as_json, transient=True) as bar:
        task = bar.add_task(str(scenario), total=None)
        summary = run_simulation(scenario, scale=scale, seed=seed, organic_prompts=organic_prompts,
                                 distill_prompts=distill_prompts, out_dir=out,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
    facts = {"scenario": summary.scenario, "seed": summary.seed, "scale": summary.scale,
             "exchanges": summary.exchanges, "campaign_exchanges": summary.campaign_exchanges,
             "relayed_exchanges": summary.relayed_exchanges, "accounts": summary.accounts,
             "seconds": round(summary.seconds, 2), "files": {k: str(v) for k, v in summary.files.items()}}
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    table = Table(title=f"simulated {summary.scenario} (scale {summary.scale:g}, seed {summary.seed})")
    table.add_column("population")
    table.add_column("accounts", justify="right")
    for name, count in summary.accounts.items():
        table.add_row(name, f"{count:,}")
    table.caption = (f"{summary.exchanges:,} exchanges ({summary.campaign_exchanges:,} by campaigns, "
                     f"{summary.relayed_exchanges:,} relayed) in {summary.seconds:.1f} s -> {out}")
    console.print(table)


@app.command()
@user_errors
def scan(
    out: str = typer.Option(..., "--out", metavar="DIR|URI", help="Directory for verdicts, campaigns, signals and "
                            "indicators files; with --engine spark also a URI (file://, s3a://, gs://, abfss://)."),
    db: Optional[str] = typer.Option(None, "--db", metavar="FILE.duckdb", help=f"Store to scan (default {DEFAULT_DB})."),
    inputs: list[str] = typer.Option([], "--input", metavar="PATH|URI", help="Scan these log files instead of a "
                                     "store; with --engine spark, URIs of canonical Parquet that Spark reads itself."),
    as_of: Optional[str] = typer.Option(None, "--as-of", metavar="ISO-8601", help="Judge only exchanges before this time (ISO-8601)."),
    lookback: Optional[float] = typer.Option(None, "--lookback", metavar="DAYS", help="Days of history before --as-of to use."),
    policy_file: Optional[Path] = typer.Option(None, "--policy", metavar="FILE.yaml",
                                               help="Policy YAML (default: the built-in policy)."),
    engine: str = typer.Option("duckdb", "--engine", metavar="duckdb|spark", help="duckdb (default) or spark."),
    master: Optional[str] = typer.Option(None, "--master", metavar="URL", envvar="SPARK_MASTER",
                                         help="Spark master, e.g. spark://HOST:7077 (default: spark-submit's, "
                                              "else local[2])."),
    end_users: bool = typer.Option(True, "--end-users/--no-end-users", help="Judge the end users of recognised "
                                   "resellers (keys fronting many end users) as entities ACCOUNT::END_USER "
                                   "instead of the reseller's account (docs/detection.md, Resellers)."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Find distillation campaigns and give every account a verdict with its reasons."""
    from datetime import datetime, timedelta

    from distillguard.detect import resellers as relays
    from distillguard.detect import scan as scanning
    from distillguard.store import chain
    from distillguard.store import resellers as stored_resellers
    from distillguard.store.engine import copy_out, exchanges, is_uri
    from distillguard.detect.policy import load_policy
    from distillguard.intel import indicators as intel_indicators

    if db and inputs:
        raise UserError("give either --db or --input, not both")
    # URIs are read and written by Spark itself, through the Hadoop connectors of the job
    sources = [i for i in inputs if is_uri(i)]
    if sources and (len(sources) < len(inputs) or engine != "spark"):
        raise UserError("an --input URI is read by Spark: give --engine spark and only URIs")
    if is_uri(out) and engine != "spark":
        raise UserError(f"--out {out} is a URI: give --engine spark, or a local directory")
    policy = load_policy(policy_file)
    if lookback is not None:
        if lookback <= 0:
            raise UserError(f"--lookback must be positive, got {lookback}")
        policy = policy.model_copy(update={"lookback_days": lookback})
    when = None
    if as_of:
        try:
            when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"--as-of {as_of!r} is not an ISO-8601 time") from None
    if sources:
        store = Store(":memory:")  # lineage and previous verdicts need a store: none here
    elif inputs:
        from distillguard.ingest import ingest_paths

        store = Store(":memory:")
        ingest_paths(store, [Path(i) for i in inputs])
    else:
        store = Store(existing_store(db or DEFAULT_DB), read_only=False)
    with store:
        # nothing seen is nothing judged: publishing empty verdicts would lift every block of a
        # gateway that hot-reloads them, so the previous verdicts in --out stay as they are
        seen = "the input files" if inputs else f"store {db or DEFAULT_DB}"
        # sign-up and payment events (ingest --kind accounts): their accounts are judged before any traffic
        signups = None if sources or inputs else store.con.execute(
            "SELECT * FROM account_events ORDER BY event_id").to_arrow_table()
        signups = signups if signups is not None and signups.num_rows else None
        if not sources and not store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] and signups is None:
            raise UserError(f"{seen} holds no exchanges: nothing scanned, nothing published in {out}")
        if when is None and signups is not None:  # one second after the latest exchange or event
            latest = store.con.execute("SELECT max(t) FROM (SELECT max(timestamp) AS t FROM exchanges UNION ALL "
                                       "SELECT max(timestamp) FROM account_events)").fetchone()[0]
            when = latest.replace(microsecond=0) + timedelta(seconds=1)
        read_head = None if inputs else chain.head(store.con)
        backend, table, lookup = exchanges(store, engine, master=master, sources=sources)
        accounts = None if signups is None else lookup("dg_account_events", signups)
        # keys that front many end users: their end users are judged, not the key (detect/resellers.py)
        split, found_resellers = relays.split(table, scanning.resolve_as_of(table, when), policy.lookback_days)
        if end_users:
            table = split
        previous = None if inputs else scanning.previous_verdicts(store, when)
        # the campaigns whose ids this scan's campaigns keep where they continue them (detect/lineage.py)
        lineage = [] if inputs else scanning.previous_campaigns(store, scanning.resolve_as_of(table, when))
        stages = [s for s in scanning.STAGES if s != "statistics" or policy.statistics.enabled]
        with progress_bar(TextColumn("scan"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                          TimeElapsedColumn(), quiet=quiet or as_json) as bar:
            task = bar.add_task(stages[0], total=len(stages))

            def stage_done(stage: str) -> None:
                after = stages.index(stage) + 1 if stage in stages else 0
                bar.update(task, completed=after, description=stages[after] if after < len(stages) else "")

            result = scanning.scan(table, when, policy, lookup=lookup, previous=previous,
                                   previous_campaigns=lineage, progress=stage_done,
                                   intel=None if inputs else intel_indicators.load(store.con), accounts=accounts)
        if end_users:
            result.verdicts = relays.named(result.verdicts, found_resellers)
        if not result.verdicts.num_rows:
            raise UserError(f"{seen}: no exchanges in the scan's window (--as-of, --lookback): nothing judged, "
                            f"nothing published in {out}")
        if is_uri(out):
            import tempfile

            with tempfile.TemporaryDirectory(prefix="distillguard-out-") as local:
                scanning.write_outputs(result, Path(local))
                files = copy_out(backend, Path(local), out)
        else:
            files = scanning.write_outputs(result, Path(out))
        scan_id = scanning.store_result(store, result, engine=engine,
                                        policy_source=str(policy_file) if policy_file else "built-in")
        # the gateway judges these keys' end users one by one, by the verdicts of this scan
        stored_resellers.store(store.con, scan_id, result.as_of, found_resellers)
        if not inputs:  # the scan's link in the store's hash chain: the head it read (store/chain.py)
            chain.record_scan(store.con, scan_id, read_head, store.con.execute(
                "SELECT policy_sha256 FROM scans WHERE scan_id = ?", [scan_id]).fetchone()[0])
    summary = {**result.summary(), "resellers": found_resellers.to_pylist()}
    if as_json:
        print(json.dumps({**summary, "files": {k: str(v) for k, v in files.items()}}, indent=2))
        return
    overview = Table(title=f"scan as of {summary['as_of']}")
    overview.add_column("action")
    overview.add_column("accounts", justify="right")
    for action in ("allow", "monitor", "throttle", "fallback", "block"):
        overview.add_row(action, f"{summary['actions'].get(action, 0):,}")
    console.print(overview)
    if result.campaigns:
        console.print(campaigns_table(result.campaigns))
    for r in summary["resellers"]:
        judged = "judged one by one as <account>::<end user>" if end_users else "judged as its account " \
            "(--no-end-users)"
        console.print(f"reseller: account {escape(r['account_id'])} key {escape(r['key'])} fronts {r['end_users']:,} "
                      f"end users, {judged}", highlight=False, soft_wrap=True)
    console.print(f"outputs in {out}")


def campaigns_table(campaigns: list[Any]) -> Table:
    """The scan's campaigns. An id is what a user copies into `report`, so it is printed whole
    at any width (80 columns included); the other columns wrap instead."""
    table = Table(title="campaigns")
    table.add_column("campaign", no_wrap=True, min_width=max(len(c.campaign_id) for c in campaigns))
    for col in ("accounts", "exchanges", "score", "action", "linked by"):
        table.add_column(col, justify="right" if col in ("accounts", "exchanges", "score") else "left",
                         overflow="fold")
    for c in campaigns:
        table.add_row(c.campaign_id, f"{c.members:,}", f"{c.exchanges:,}", f"{c.score:.3f}", c.action,
                      ", ".join(sorted(c.indicators)))
    return table


@app.command()
@user_errors
def evaluate(
    verdicts: Path = typer.Option(..., "--verdicts", metavar="FILE.parquet", help="verdicts.parquet written by scan."),
    labels: Path = typer.Option(..., "--labels", metavar="FILE.parquet", help="labels.parquet written by simulate."),
    as_json: bool = JsonOption,
) -> None:
    """Score verdicts against a simulation's ground truth: actions per persona, precision, recall."""
    from distillguard.bench.metrics import LEVELS, account_metrics, campaign_metrics, judge

    verdict_table = _read_parquet_input(verdicts, "--verdicts", "verdicts.parquet written by scan",
                                        ("account_id", "action", "campaign_id"))
    label_table = _read_parquet_input(labels, "--labels", "labels.parquet written by simulate",
                                      ("account_id", "campaign_id", "persona", "role", "exchanges"))
    try:
        judged = judge(verdict_table, label_table)
    except ValueError as exc:
        raise UserError(f"{verdicts} against {labels}: {exc}") from None
    result = {level: {"accounts": account_metrics(judged, level), "campaigns": campaign_metrics(judged, level)}
              for level in LEVELS}
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    from distillguard.store.verdicts import ACTIONS

    persona = [p or r for p, r in zip(judged.column("persona").to_pylist(), judged.column("role").to_pylist())]
    counts: dict[str, dict[str, int]] = {}
    for who, severity in zip(persona, judged.column("severity").to_pylist()):
        counts.setdefault(who, {a: 0 for a in ACTIONS})[ACTIONS[severity]] += 1
    table = Table(title="actions per persona (ground truth from the simulator)")
    table.add_column("persona")
    for action in ACTIONS:
        table.add_column(action, justify="right")
    for who in sorted(counts):
        table.add_row(who, *(f"{counts[who][a]:,}" for a in ACTIONS))
    console.print(table)
    scores = Table(title="accounts")
    for col in ("level", "precision", "recall", "organic FPR", "worst persona FPR"):
        scores.add_column(col, justify="left" if col == "level" else "right")
    fmt = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    for level in LEVELS:
        m = result[level]["accounts"]
        scores.add_row(f"{level}+", fmt(m["precision"]), fmt(m["recall"]), fmt(m["organic_fpr"]),
                       f"{fmt(m['worst_persona_fpr'])} ({m['worst_persona']})")
    console.print(scores)
    for campaign, m in result["throttle"]["campaigns"].items():
        console.print(f"campaign {campaign}: {m['accounts_caught']:,}/{m['accounts']:,} accounts throttled or "
                      f"stronger, {fmt(m['exchanges_caught_share'])} of its exchanges, "
                      f"{fmt(m['one_campaign_share'])} in one campaign_id")


def _read_parquet_input(path: Path, option: str, expected: str, columns: tuple[str, ...]) -> Any:
    """A Parquet table with ``columns``; a missing file, another format or a swapped input is a
    user error that names the option and what it expects."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise UserError(f"{option} {path}: no such file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{option} {path}: not a Parquet file ({expected}): {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(f"{option} {path}: no column {', '.join(missing)}: expected the {expected} "
                        "(are --verdicts and --labels swapped?)")
    return table


@app.command()
@user_errors
def report(
    campaign: Optional[str] = typer.Argument(None, metavar="CAMPAIGN_ID", help="Campaign id (see `scan`); or give --all."),
    all_campaigns: bool = typer.Option(False, "--all", help="Every campaign of the scan, with an index page."),
    fmt: str = typer.Option("html", "--format", metavar="html|json|pdf|stix|misp", help="html, json, pdf, stix or misp."),
    out: Path = typer.Option(..., "--out", metavar="PATH", help="File (with a suffix) or directory to write."),
    db: str = DbOption,
    scan_id: Optional[str] = typer.Option(None, "--scan", metavar="SCAN_ID", help="Scan id (default: the latest scan in the store)."),
    redact: bool = typer.Option(False, "--redact", help="Replace prompt text and personal data with stable hashes."),
    redact_salt: Optional[str] = typer.Option(None, "--redact-salt", envvar="DISTILLGUARD_REDACT_SALT", metavar="SECRET",
                                              help="Secret mixed into the redaction hashes (env DISTILLGUARD_REDACT_SALT)."),
    producer: str = typer.Option("distillguard", "--producer", metavar="NAME", help="Name of the organisation in the STIX identity."),
    tlp: str = typer.Option("amber", "--tlp", metavar="clear|green|amber|amber+strict|red",
                            help="TLP 2.0 marking of STIX objects and MISP events."),
    valid_days: int = typer.Option(90, "--valid-days", metavar="DAYS",
                                   help="STIX indicators stay valid this many days after the scan."),
    signing_key: Optional[Path] = typer.Option(None, "--signing-key", metavar="FILE", help="Ed25519 private key "
                                               "(`evidence keygen`): write a signed manifest.json beside the report."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Write the evidence report of a campaign (or all): HTML, JSON, PDF, a STIX 2.1 bundle or MISP events."""
    from distillguard.report import Redactor, write_report

    if (campaign is None) == (not all_campaigns):
        raise UserError("give a campaign id or --all (one of them)")
    existing_store(db)
    redactor = Redactor(enabled=redact, salt=redact_salt or "")
    with Store(db, read_only=True) as store, \
            progress_bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                         quiet=quiet or as_json) as bar:
        bar.add_task(f"writing the {fmt.lower()} report of {campaign or 'every campaign'}", total=None)
        written = write_report(store, out, fmt.lower(), campaign, scan_id, redactor, producer, tlp.lower(), valid_days,
                               signing_key)
    if as_json:
        print(json.dumps({"format": fmt, "files": [str(p) for p in written]}, indent=2))
        return
    for path in written:
        console.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def verify(
    report_dir: Path = typer.Argument(..., metavar="REPORT_DIR", help="Directory holding the report, manifest.json "
                                      "and manifest.sig."),
    db: Path = typer.Option(..., "--db", metavar="FILE.duckdb", help="The store (or a copy of it, with its "
                            ".segments directory beside it)."),
    public_key: Optional[Path] = typer.Option(None, "--public-key", metavar="FILE", help="The signer's public key "
                                              "(signing.pub); without it the key the manifest carries is used, "
                                              "which proves integrity, not who signed."),
    as_json: bool = JsonOption,
) -> None:
    """Check a signed report against a store; exit 0 when everything matches, 1 naming the first difference.

    Checks the signature, the report files' hashes, the store's hash chain and segments, and
    re-runs every figure's query (docs/reports.md, Signed manifest)."""
    from distillguard.report import manifest

    found, summary = manifest.verify(report_dir, db, public_key)
    if as_json:
        print(json.dumps({"ok": found is None, "difference": str(found) if found else None, **summary}, indent=2))
    elif found is not None:
        err.print(f"differs: {escape(str(found))}", highlight=False, soft_wrap=True)
    else:
        console.print(f"verified: signature ({summary['key']}, from {summary['key_from']}), {summary['files']} "
                      f"report file(s), the store's chain up to link {summary['chain_head']} and its segments, "
                      f"{summary['inputs']} input(s), {summary['figures']} figure(s) re-run", highlight=False,
                      soft_wrap=True)
    if found is not None:
        raise typer.Exit(1)


evidence_app = _Typer(no_args_is_help=True, help="Signing keys for evidence reports.")
app.add_typer(evidence_app, name="evidence")


@evidence_app.command("keygen")
@user_errors
def evidence_keygen(out: Path = typer.Option(..., "--out", metavar="DIR", help="Directory for signing.key "
                                             "(private, mode 0600) and signing.pub.")) -> None:
    """Make an Ed25519 key pair for signing reports (`report --signing-key DIR/signing.key`)."""
    from distillguard.report import manifest

    private, public, fingerprint = manifest.keygen(out)
    console.print(f"wrote {private} (keep it secret) and {public}\nfingerprint {fingerprint}", highlight=False,
                  soft_wrap=True)


@app.command()
@user_errors
def taxii(
    db: str = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS"),
    port: int = typer.Option(9450, "--port", metavar="PORT"),
    token_file: Optional[Path] = typer.Option(
        None, "--token-file", metavar="FILE", help="File holding the bearer token every request must carry "
        "(or the environment variable DISTILLGUARD_TAXII_TOKEN); none: no authentication."),
    producer: str = typer.Option("distillguard", "--producer", metavar="NAME", help="Name of the organisation in the STIX identity."),
    tlp: str = typer.Option("amber", "--tlp", metavar="clear|green|amber|amber+strict|red",
                            help="TLP 2.0 marking of the served objects."),
    valid_days: int = typer.Option(90, "--valid-days", metavar="DAYS",
                                   help="Indicators stay valid this many days after their scan."),
    redact: bool = typer.Option(False, "--redact", help="Replace prompt text and personal data with stable hashes."),
    redact_salt: Optional[str] = typer.Option(None, "--redact-salt", envvar="DISTILLGUARD_REDACT_SALT", metavar="SECRET",
                                              help="Secret mixed into the redaction hashes (env DISTILLGUARD_REDACT_SALT)."),
    refresh_seconds: float = typer.Option(30.0, "--refresh-seconds", metavar="SECONDS",
                                          help="How often to look for new scans in the store."),
) -> None:
    """Serve the STIX objects of the store's scans as a read-only TAXII 2.1 collection (docs/reports.md)."""
    import logging
    import os

    from distillguard.report import Redactor, taxii as taxii_server

    existing_store(db)
    token = None
    if token_file is not None:
        if not token_file.is_file():
            raise UserError(f"--token-file {token_file}: no such file")
        token = token_file.read_text(encoding="utf-8").strip()
    else:
        token = os.environ.get("DISTILLGUARD_TAXII_TOKEN", "").strip() or None
    if token_file is not None and not token:
        raise UserError(f"--token-file {token_file}: the file is empty")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    taxii_server.serve(db, host, port, token, producer, tlp.lower(), valid_days,
                       Redactor(enabled=redact, salt=redact_salt or ""), refresh_seconds)


@app.command()
@user_errors
def bench(
    out: Path = typer.Option(Path("bench-out"), "--out", metavar="DIR", help="Directory for results, plots and the scenario cache."),
    scenario: list[str] = typer.Option(["alibaba-2026", "low-and-slow"], "--scenario", metavar="NAME|FILE.yaml",
                                       help="Scenario names or YAML files (repeat, or 'all')."),
    scale: float = typer.Option(0.05, "--scale", metavar="FACTOR", help="Scenario scale."),
    detectors: list[str] = typer.Option([], "--detectors", metavar="NAME[,NAME...]", help="Detectors to run (default: all registered)."),
    seed: int = typer.Option(7, "--seed", metavar="INT", help="Scenario seed (the organic reference uses seed + 1)."),
    replay_every_hours: float = typer.Option(6.0, "--replay-every-hours", metavar="HOURS", help="Replay step; 0 = no replay."),
    workers: int = typer.Option(1, "--workers", min=1, metavar="N",
                                help="Processes for the replay steps of step-by-step detectors."),
    docs: Optional[Path] = typer.Option(None, "--docs", metavar="FILE.md", help="Markdown file whose detection section to rewrite."),
    cache: Optional[Path] = typer.Option(None, "--cache", metavar="DIR",
                                         help="Directory of simulated stores (default: OUT/cache)."),
    docs_block: str = typer.Option("detection", "--docs-block", metavar="NAME",
                                   help="Name of the marked block of --docs to rewrite (<!-- NAME:begin -->)."),
    withhold: str = typer.Option("", "--withhold", metavar="COLUMN[,COLUMN...]",
                                 help="Score every store without these optional exchange columns, as logs that do "
                                      "not carry them would be ingested."),
    as_json: bool = JsonOption,
    quiet: bool = QuietOption,
) -> None:
    """Run detectors on simulated scenarios and score them against the ground truth."""
    import sys

    from distillguard.bench import run_bench

    detector_names = [d for item in detectors for d in item.split(",") if d] or None
    with progress_bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      quiet=quiet or as_json) as bar:
        task = bar.add_task("bench", total=None)

        def say(message: str) -> None:
            # each stage and replay step is a line of the run's log; the bar shows the latest
            err.print(message, highlight=False)
            bar.update(task, description=message)

        results = run_bench(scenario, scale=scale, detectors=detector_names, seed=seed, out_dir=out,
                            replay_every_hours=replay_every_hours, workers=workers, docs=docs, docs_block=docs_block,
                            cache_dir=cache, command="distillguard " + " ".join(sys.argv[1:]),
                            withhold=withhold.split(","),
                            progress=None if as_json or quiet else say)
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    else:
        console.print(f"results in {out}")


@app.command("bench-strategies")
@user_errors
def bench_strategies(
    split: str = typer.Option("dev", "--split", metavar="dev|heldout", help="Strategy set: dev (develop on it) or heldout (once per tag)."),
    n: int = typer.Option(12, "--n", min=1, metavar="N", help="Strategies to draw from the split."),
    seed: int = typer.Option(7, "--seed", metavar="INT", help="Seed of the draw and the first simulation seed."),
    seeds: int = typer.Option(1, "--seeds", min=1, metavar="N", help="Simulation seeds per strategy (seed, seed + 1, ...)."),
    out: Path = typer.Option(Path("bench-out/strategies"), "--out", metavar="DIR", help="Directory for results and the cache."),
    detector: str = typer.Option("distillguard", "--detector", metavar="NAME", help="Registered detector to score."),
    docs: Optional[Path] = typer.Option(None, "--docs", metavar="FILE.md", help="Markdown file whose strategies-SPLIT block to rewrite."),
    cache: Optional[Path] = typer.Option(None, "--cache", metavar="DIR",
                                         help="Directory of simulated stores (default: OUT/cache)."),
    force: bool = typer.Option(False, "--force", help="Run the held-out set again at a tag it already ran at."),
    throttle_budgets: str = typer.Option("", "--throttle-budgets", metavar="RATE[,RATE...]",
                                         help="Also score distillguard with these throttle budgets (expected false "
                                              "throttles per organic entity): the operating curve."),
    organic_scale: float = typer.Option(1.0, "--organic-scale", metavar="FACTOR",
                                        help="Every organic persona with FACTOR times the template's accounts "
                                             "(the campaign unchanged)."),
    withhold: str = typer.Option("", "--withhold", metavar="COLUMN[,COLUMN...]",
                                 help="Score every store without these optional exchange columns, as logs that do "
                                      "not carry them would be ingested."),
    as_json: bool = JsonOption,
) -> None:
    """Score a detector on randomized campaign strategies: recall distribution, per knob, organic FPs, and each
    decoy strategy's ceiling (every harvester plus the decoys tied to them in two families)."""
    import sys

    from distillguard.bench.strategies import run_strategies
    from distillguard.simulate.strategies import SPLITS

    if split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    try:
        budgets = [float(b) for b in throttle_budgets.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--throttle-budgets must be numbers separated by commas, got {throttle_budgets!r}") from None
    results = run_strategies(split, n, seed, out, detector=detector, seeds=seeds, cache_dir=cache, docs=docs,
                             force=force, command="distillguard " + " ".join(sys.argv[1:]),
                             throttle_budgets=budgets, organic_scale=organic_scale,
                             withhold=withhold.split(","),
                             progress=None if as_json else (lambda msg: err.print(msg, highlight=False)))
    if as_json:
        print(json.dumps(results, indent=2, default=str))
    else:
        console.print(f"results in {out}")


@app.command()
@user_errors
def sweep(
    scenario: str = typer.Option("adaptive-2026", "--scenario", metavar="NAME|FILE.yaml", help="Scenario name or YAML file with a campaign."),
    tell: list[str] = typer.Option([], "--tell", metavar="TELL", help="Tells to sweep (repeat; default: every tell)."),
    strengths: str = typer.Option("0,0.25,0.5,0.75,1", "--strengths", metavar="S[,S...]", help="Comma-separated strengths in [0, 1]."),
    scale: float = typer.Option(0.05, "--scale", metavar="FACTOR", help="Scenario scale."),
    seed: int = typer.Option(7, "--seed", metavar="INT", help="Scenario seed."),
    out: Path = typer.Option(Path("bench-out/sweep"), "--out", metavar="DIR", help="Directory for the variants, results and plot."),
    cache: Optional[Path] = typer.Option(None, "--cache", metavar="DIR",
                                         help="Directory of simulated stores (default: OUT/cache)."),
    docs: Optional[Path] = typer.Option(None, "--docs", metavar="FILE.md", help="Markdown file whose sweep block to rewrite."),
    docs_block: str = typer.Option("sweep", "--docs-block", metavar="NAME", help="Name of the marked block of --docs."),
    as_json: bool = JsonOption,
) -> None:
    """Turn each collective tell of a campaign from full strength to zero and measure recall: which tell detection rests on."""
    import dataclasses
    import sys

    from distillguard.bench import sweep as sw
    from distillguard.bench.report import pct, write_docs

    tells = [t for item in tell for t in item.split(",") if t] or list(sw.TELLS)
    unknown = [t for t in tells if t not in sw.TELLS]
    if unknown:
        raise UserError(f"--tell: unknown tell {unknown[0]!r}; tells: {', '.join(sw.TELLS)}")
    try:
        levels = [float(v) for v in strengths.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--strengths: {strengths!r} is not a comma-separated list of numbers") from None
    if not levels or any(not 0 <= v <= 1 for v in levels):
        raise UserError("--strengths: give numbers between 0 and 1")
    defaults = {t: sw.default_strength(scenario, t) for t in tells}
    points = sw.sweep(scenario, scale, seed, cache or out / "cache", out / "variants", tells, levels,
                      progress=None if as_json else (lambda msg: err.print(msg, highlight=False)))
    image = sw.plot(points, defaults, out / "sweep.png", f"{scenario}: recall against tell strength")
    (out / "sweep.json").write_text(json.dumps([dataclasses.asdict(p) for p in points], indent=2) + "\n")
    if docs is not None:
        figure = Path(docs).parent / "img" / f"{docs_block}.png"
        figure.parent.mkdir(parents=True, exist_ok=True)
        figure.write_bytes(image.read_bytes())
        command = "distillguard " + " ".join(sys.argv[1:])
        write_docs(sw.markdown(points, defaults, scenario, scale, seed, command, f"img/{docs_block}.png"),
                   docs, docs_block)
    if as_json:
        print(json.dumps([dataclasses.asdict(p) for p in points], indent=2))
    else:
        for p in points:
            console.print(f"{p.tell} = {p.strength:g}: recall {pct(p.recall)}, organic FPR {pct(p.organic_fpr, 3)}")


@app.command()
@user_errors
def serve(
    upstream: Optional[str] = typer.Option(None, "--upstream", metavar="URL", help="Base URL of the model API to protect."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE.yaml", help="Gateway settings (YAML); options override it."),
    db: Optional[str] = typer.Option(None, "--db", metavar="FILE.duckdb", help="Store the exchange log is loaded into."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", metavar="PORT", help="Port to listen on."),
    keys_file: Optional[Path] = typer.Option(None, "--keys", metavar="FILE", help="API keys (CSV or YAML: api_key, account_id, ...)."),
    policy: Optional[Path] = typer.Option(None, "--policy", metavar="FILE.yaml", help="Policy YAML (the one scan uses)."),
    verdicts: Optional[Path] = typer.Option(None, "--verdicts", metavar="DIR", help="A scan's --out directory, hot-reloaded."),
    fallback_model: Optional[str] = typer.Option(None, "--fallback-model", metavar="MODEL", help="Model for 'fallback' verdicts."),
    admin_token_file: Optional[Path] = typer.Option(
        None, "--admin-token-file", metavar="FILE", help="File holding the bearer token of /admin (or the environment variable "
        "DISTILLGUARD_ADMIN_TOKEN); none: admin API off."),
    admin_token: Optional[str] = typer.Option(None, "--admin-token", hidden=True),
    admin_port: Optional[int] = typer.Option(None, "--admin-port", metavar="PORT", help="Serve /admin/* and /metrics on their "
                                             "own listener (default: on --port, /metrics behind the admin token)."),
    admin_host: Optional[str] = typer.Option(None, "--admin-host", metavar="ADDRESS", help="Address of --admin-port [127.0.0.1]."),
    state: Optional[str] = typer.Option(None, "--state", metavar="redis://...", help="redis://... to share state between gateways."),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", metavar="DIR", help="Exchange log segments (default beside the db)."),
    geoip: Optional[Path] = typer.Option(None, "--geoip", metavar="FILE.mmdb",
                                         help="MaxMind country database for country controls (needs geoip2)."),
    live_reference: Optional[Path] = typer.Option(None, "--live-reference", metavar="FILE.json", help="Live routing's "
                                                  "reference (distillguard gateway calibrate); none: no live routing."),
) -> None:
    """Run the OpenAI-compatible gateway: log every exchange, apply the verdicts online."""
    import logging

    from distillguard.gateway.config import load_config
    from distillguard.gateway.server import serve as run

    if admin_token is not None:
        raise UserError("--admin-token is not accepted: a command line is visible to every user of the machine "
                        "(ps); use --admin-token-file FILE or the environment variable DISTILLGUARD_ADMIN_TOKEN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_config(config, {
        "upstream": upstream, "db": db, "keys": str(keys_file) if keys_file else None,
        "policy": str(policy) if policy else None, "verdicts": str(verdicts) if verdicts else None,
        "fallback_model": fallback_model, "state": state, "admin_port": admin_port, "admin_host": admin_host,
        "admin_token_file": str(admin_token_file) if admin_token_file else None,
        "log_dir": str(log_dir) if log_dir else None, "geoip": str(geoip) if geoip else None,
        "live_reference": str(live_reference) if live_reference else None})
    run(settings, host, port)


gateway_app = _Typer(no_args_is_help=True, help="What the gateway needs prepared offline (live routing's reference).")
app.add_typer(gateway_app, name="gateway")


@gateway_app.command("calibrate")
@user_errors
def gateway_calibrate(
    out: Path = typer.Option(..., "--out", metavar="FILE.json", help="Reference to write (serve --live-reference)."),
    db: str = DbOption,
    verdicts: Optional[Path] = typer.Option(
        None, "--verdicts", metavar="DIR", help="The latest scan's --out: the accounts it allowed, before its as-of, "
        "are the organic reference (default: every account and exchange, which only widens the tails)."),
    policy: Optional[Path] = typer.Option(None, "--policy", metavar="FILE.yaml", help="Policy YAML (its live section)."),
    as_json: bool = JsonOption,
) -> None:
    """Measure organic traffic for live routing: each online statistic per look of a session, and how many organic
    accounts matched each imported indicator. A running gateway re-reads the file when it changes."""
    import pyarrow.parquet as pq

    from distillguard.detect.policy import load_policy
    from distillguard.gateway import live
    from distillguard.intel import indicators as intel

    allowed, as_of = None, None
    if verdicts is not None:
        if not (verdicts / "verdicts.parquet").is_file():
            raise UserError(f"--verdicts {verdicts}: no verdicts.parquet there (give a scan's --out directory)")
        try:
            table = pq.read_table(verdicts / "verdicts.parquet", columns=["account_id", "action", "as_of"])
        except (OSError, ValueError) as exc:
            raise UserError(f"--verdicts {verdicts}: cannot read verdicts.parquet ({exc})") from None
        allowed = {a for a, x in zip(table["account_id"].to_pylist(), table["action"].to_pylist()) if x == "allow"}
        as_of = table["as_of"][0].as_py() if table.num_rows else None
    rules = load_policy(policy).live
    with Store(existing_store(db), read_only=True) as store:
        reference = live.calibrate(store.con, rules, allowed, as_of, intel.load(store.con))
    reference.write(out)
    summary = {"out": str(out), "as_of": reference.as_of, "organic_sessions": reference.sessions,
               "organic_accounts": reference.accounts, "indicators_counted": len(reference.indicator_matches)}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console.print(f"{out}: {reference.sessions:,} organic sessions of {reference.accounts:,} accounts"
                  f"{f' before {reference.as_of}' if reference.as_of else ''}; "
                  f"{len(reference.indicator_matches):,} imported indicators counted", highlight=False)


policy_app = _Typer(no_args_is_help=True, help="The detection and enforcement policy.")
app.add_typer(policy_app, name="policy")


@policy_app.command("show")
@user_errors
def policy_show(
    policy_file: Optional[Path] = typer.Option(None, "--policy", metavar="FILE.yaml",
                                               help="Policy YAML (default: the built-in policy)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON list of {name, value, default, description}."),
) -> None:
    """The effective policy as YAML that --policy reads back: every field with what it means
    (with its unit) as a comment, and its default beside a value that differs."""
    from distillguard.detect.policy import load_policy, policy_yaml, tunables

    policy = load_policy(policy_file)
    if as_json:
        typer.echo(json.dumps(tunables(policy), indent=2))
        return
    typer.echo(f"# distillguard policy ({policy_file or 'built-in defaults'})", nl=True)
    typer.echo(policy_yaml(policy), nl=False)


intel_app = _Typer(no_args_is_help=True, help="Threat intelligence in: other parties' indicators, and keyed-hash "
                   "exchange within a sharing group (docs/reports.md).")
app.add_typer(intel_app, name="intel")


@intel_app.command("import")
@user_errors
def intel_import(
    source: str = typer.Argument(..., metavar="PATH|URL", help="A STIX 2.1 bundle, a MISP event or a keyed-hash file; "
                                 "or a TAXII 2.1 collection URL (.../collections/ID/)."),
    db: str = DbOption,
    key_file: Optional[Path] = typer.Option(None, "--key-file", metavar="FILE", help="The sharing group's key, "
                                            "to match a keyed-hash file against this store's values."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", metavar="FILE",
                                              help="Bearer token for the TAXII server."),
    full: bool = typer.Option(False, "--full", help="Pull a TAXII collection from the start, not after the last pull."),
    as_json: bool = JsonOption,
) -> None:
    """Import indicators into the store: the next scan matches them (evidence kind intel_match)."""
    from datetime import datetime, timezone

    from distillguard.intel import hashed, imports

    key = hashed.read_key(key_file) if key_file is not None else None
    token = None
    if token_file is not None:
        if not token_file.is_file():
            raise UserError(f"--token-file {token_file}: no such file")
        token = token_file.read_text(encoding="utf-8").strip()
    with Store(existing_store(db)) as store:
        done = imports.import_source(store.con, source, datetime.now(timezone.utc), key, token, full)
    summary = done.summary()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    stored = ", ".join(f"{n:,} {t}" for t, n in summary["stored"].items()) or "nothing"
    skipped = ", ".join(f"{n:,} {why}" for why, n in summary["skipped"].items())
    console.print(f"{done.format} {source}: stored {stored}" + (f"; skipped {skipped}" if skipped else ""),
                  highlight=False)


@intel_app.command("export-hashed")
@user_errors
def intel_export_hashed(
    group: str = typer.Option(..., "--group", metavar="NAME", help="The sharing group (named in the file)."),
    key_file: Path = typer.Option(..., "--key-file", metavar="FILE", help="The group's secret key (16 bytes or more)."),
    out: Path = typer.Option(..., "--out", metavar="FILE.json", help="Keyed-hash file to write."),
    db: str = DbOption,
    min_action: str = typer.Option("throttle", "--min-action", metavar="allow|monitor|throttle|fallback|block",
                                   help="Export the values of accounts the latest scan acted on at least so."),
    tlp: str = typer.Option("amber", "--tlp", metavar="clear|green|amber|amber+strict|red",
                            help="TLP 2.0 level of the file (receivers keep it)."),
    as_json: bool = JsonOption,
) -> None:
    """Write HMAC-SHA256 hashes of flagged accounts' cards, e-mail address fingerprints and own e-mail domains, never the values."""
    from datetime import datetime, timezone

    from distillguard.intel import hashed

    key = hashed.read_key(key_file)
    with Store(existing_store(db), read_only=True) as store:
        doc = hashed.export(store.con, group, key, tlp.lower(), min_action, datetime.now(timezone.utc))
    hashed.write(doc, out)
    counts = {t: sum(1 for h in doc["hashes"] if h["type"] == t) for t in hashed.COLUMNS}
    if as_json:
        print(json.dumps({"out": str(out), "group": group, "hashes": counts}, indent=2))
        return
    console.print(f"wrote {out}: " + ", ".join(f"{n:,} {t}" for t, n in counts.items()), highlight=False)


@app.command()
@user_errors
def actors(
    db: str = DbOption,
    policy_file: Optional[Path] = typer.Option(None, "--policy", metavar="FILE.yaml",
                                               help="Policy YAML (its intel.actor_alpha; default: the built-in policy)."),
    as_json: bool = JsonOption,
) -> None:
    """Link the store's campaigns into actors (shared keys beyond chance), keep them in the store and list them."""
    from datetime import datetime, timezone

    from distillguard.detect.policy import load_policy
    from distillguard.intel import actors as linking

    policy = load_policy(policy_file)
    with Store(existing_store(db)) as store:
        linking.link(store.con, policy.intel.actor_alpha, datetime.now(timezone.utc))
        found = linking.stored(store.con)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    table = Table(title=f"{len(found)} actor(s)")
    for column in ("actor", "campaigns", "first seen", "last seen", "exchanges", "confidence"):
        table.add_column(column, no_wrap=column == "actor")
    for actor in found:
        table.add_row(actor["actor_id"], "\n".join(actor["campaigns"]), actor["first_seen"] or "",
                      actor["last_seen"] or "", f"{actor['exchanges']:,}", str(actor["confidence"]))
    console.print(table)


keys_app = _Typer(no_args_is_help=True, help="The gateway's API keys (stored hashed in the store).")
app.add_typer(keys_app, name="keys")


@keys_app.command("add")
@user_errors
def keys_add(
    account_id: str = typer.Option(..., "--account", metavar="ACCOUNT_ID", help="Account the key belongs to."),
    db: str = DbOption,
    api_key: Optional[str] = typer.Option(None, "--key", metavar="SECRET", help="The key (default: a new random one, printed once)."),
    organization_id: Optional[str] = typer.Option(None, "--organization", metavar="ORGANIZATION_ID",
                                                  help="Organisation the account belongs to."),
    payment_fingerprint: Optional[str] = typer.Option(None, "--payment-fingerprint", metavar="FINGERPRINT",
                                                      help="Fingerprint of the account's payment card."),
    account_created_at: Optional[str] = typer.Option(None, "--account-created-at", metavar="ISO-8601",
                                                     help="When the account was created."),
    email_domain: Optional[str] = typer.Option(None, "--email-domain", metavar="DOMAIN",
                                               help="Domain of the account's e-mail address."),
) -> None:
    """Add a key; a generated key is printed once and never stored in clear."""
    from distillguard.gateway import keys as keytable

    if api_key is not None:
        keytable.check_strength(api_key)
    secret = api_key or keytable.new_secret()
    record = keytable.record_from({"api_key": secret, "account_id": account_id, "organization_id": organization_id,
                                   "payment_fingerprint": payment_fingerprint,
                                   "account_created_at": account_created_at, "email_domain": email_domain},
                                  "command line")
    with Store(db) as store:
        keytable.add(store.con, record)
    console.print(f"added {record.key_id} for account {account_id}")
    if api_key is None:
        console.print(secret, highlight=False, soft_wrap=True)


@keys_app.command("revoke")
@user_errors
def keys_revoke(key: str = typer.Argument(..., metavar="KEY_ID|ACCOUNT_ID", help="A key_id, or an account_id (all its keys)."),
                db: str = DbOption) -> None:
    """Revoke a key (or every key of an account); gateways stop accepting it within a minute."""
    from distillguard.gateway import keys as keytable

    with Store(existing_store(db)) as store:
        n = keytable.revoke(store.con, key)
    if not n:
        raise UserError(f"no live key with key_id or account_id {key!r}")
    console.print(f"revoked {n} key(s)")


@keys_app.command("list")
@user_errors
def keys_list(db: str = DbOption, as_json: bool = JsonOption) -> None:
    """The key table (ids and accounts; secrets are never stored)."""
    from distillguard.gateway import keys as keytable

    with Store(existing_store(db)) as store:
        rows = keytable.listed(store.con)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table("key_id", "account_id", "organization_id", "added_at", "revoked_at")
    for r in rows:
        table.add_row(r["key_id"], r["account_id"], r["organization_id"] or "", str(r["added_at"]),
                      str(r["revoked_at"] or ""))
    console.print(table)


StateDirOption = typer.Option(None, "--state-dir", metavar="DIR", help="The gateway's state directory, where "
                              "overrides and analysts are kept (default: the store's name with .gateway-state, "
                              "as the gateway's).")


def _state_dir(db: str, state_dir: Optional[Path]) -> Path:
    """The gateway's default state directory for ``db`` (GatewayConfig.overrides_dir)."""
    return state_dir if state_dir is not None else Path(db).with_name(Path(db).stem + ".gateway-state")


@app.command("console")
@user_errors
def console_command(
    db: str = DbOption,
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on."),
    port: int = typer.Option(8700, "--port", metavar="PORT", help="Port to listen on."),
    state_dir: Optional[Path] = StateDirOption,
    gateway_admin: Optional[str] = typer.Option(
        None, "--gateway-admin", metavar="URL", help="Act through this gateway's admin API (its token from "
        "--admin-token-file or DISTILLGUARD_ADMIN_TOKEN) instead of writing the state directory's override file."),
    admin_token_file: Optional[Path] = typer.Option(None, "--admin-token-file", metavar="FILE",
                                                    help="File holding the gateway's admin token (with --gateway-admin)."),
    redact_salt: Optional[str] = typer.Option(None, "--redact-salt", envvar="DISTILLGUARD_REDACT_SALT", metavar="SECRET",
                                              help="Secret mixed into the redaction hashes (env DISTILLGUARD_REDACT_SALT)."),
) -> None:
    """Serve the analyst console: campaigns, accounts, actions and their audit (docs/console.md)."""
    import logging
    import os

    from distillguard.console import act
    from distillguard.console.auth import Analysts
    from distillguard.console.server import Console, serve as run
    from distillguard.gateway.config import read_token
    from distillguard.report.redact import Redactor

    existing_store(db)
    directory = _state_dir(db, state_dir)
    analysts = Analysts(directory)
    if not analysts.list():
        raise UserError(f"no analysts in {analysts.path}: add one with `distillguard analysts add NAME --role operator "
                        f"--db {db}`")
    if gateway_admin:
        token = read_token(admin_token_file) if admin_token_file else os.environ.get("DISTILLGUARD_ADMIN_TOKEN", "").strip()
        if not token:
            raise UserError("--gateway-admin needs the gateway's admin token: --admin-token-file FILE or "
                            "DISTILLGUARD_ADMIN_TOKEN")
        overrides: act.LocalOverrides | act.GatewayOverrides = act.GatewayOverrides(gateway_admin, token)
    else:
        overrides = act.LocalOverrides(str(directory))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(Console(db, analysts, overrides, Redactor(enabled=True, salt=redact_salt or "")), host, port)


analysts_app = _Typer(no_args_is_help=True, help="Who may use the console (tokens stored hashed in the state directory).")
app.add_typer(analysts_app, name="analysts")


@analysts_app.command("add")
@user_errors
def analysts_add(
    name: str = typer.Argument(..., metavar="NAME", help="The analyst's name, shown as the actor of their actions."),
    role: str = typer.Option(..., "--role", metavar="viewer|operator", help="viewer: reads; operator: also acts."),
    db: str = DbOption,
    state_dir: Optional[Path] = StateDirOption,
) -> None:
    """Add an analyst (or give one a new token); the token is printed once and only its hash kept."""
    from distillguard.console.auth import Analysts

    token = Analysts(_state_dir(db, state_dir)).add(name, role)
    console.print(f"added analyst {name} ({role}); their token, shown once:")
    console.print(token, highlight=False, soft_wrap=True)


@analysts_app.command("remove")
@user_errors
def analysts_remove(name: str = typer.Argument(..., metavar="NAME"), db: str = DbOption,
                    state_dir: Optional[Path] = StateDirOption) -> None:
    """Remove an analyst: their token stops working at their next login."""
    from distillguard.console.auth import Analysts

    if not Analysts(_state_dir(db, state_dir)).remove(name):
        raise UserError(f"no analyst named {name!r}")
    console.print(f"removed analyst {name}")


@analysts_app.command("list")
@user_errors
def analysts_list(db: str = DbOption, state_dir: Optional[Path] = StateDirOption) -> None:
    """The analysts and their roles (tokens are never stored)."""
    from distillguard.console.auth import Analysts

    table = Table("name", "role", "created_at")
    for row in Analysts(_state_dir(db, state_dir)).list():
        table.add_row(*row)
    console.print(table)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
