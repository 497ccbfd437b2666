"""Command-line habits: --version, placeholders in --help, the policy as YAML, campaign ids at
80 columns, progress bars on stderr only where a person watches."""

from __future__ import annotations

import io
import re
from pathlib import Path
from types import SimpleNamespace

import ibis
import pytest
import typer.core
import typer.main
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from rich.console import Console
from typer.testing import CliRunner

from distillguard import __version__, cli
from distillguard.cli import app
from distillguard.detect import lineage, scan
from distillguard.detect.policy import Policy, load_policy, policy_yaml
from distillguard.detect.signals import BY_NAME as SIGNALS
from distillguard.ingest import ingest_paths
from distillguard.store import Store
from tests.records import good_record, write_jsonl

EXAMPLE_POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.yaml"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_version_option_prints_the_package_version_and_exits_zero():
    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == __version__


def every_command(group=None, ctx=None, path=()):
    """(path, command, context) of every command and group of the app."""
    group = group or typer.main.get_command(app)
    ctx = ctx or typer.core._click.Context(group, info_name="distillguard")
    yield path, group, ctx
    for name in getattr(group, "list_commands", lambda _ctx: [])(ctx):
        sub = group.get_command(ctx, name)
        yield from every_command(sub, typer.core._click.Context(sub, parent=ctx, info_name=name), (*path, name))


def test_every_command_help_names_values_with_real_placeholders_not_python_types():
    commands = list(every_command())
    assert len(commands) > 20
    for path, _, _ in commands:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert not re.findall(r"<[a-z][\w\[\], |]*>", result.output), (path, result.output)


def test_flags_show_no_placeholder_and_options_show_their_own():
    shown = invoke("scan", "--help").output
    assert re.search(r"--json\s+Print the result", shown)
    assert re.search(r"--lookback\s+DAYS\s", shown)
    assert re.search(r"--policy\s+FILE\.yaml\s", shown)


def campaign(members: list[str]) -> SimpleNamespace:
    """What the campaigns table reads of a scan's Campaign, under an id lineage gives a new campaign."""
    return SimpleNamespace(campaign_id=lineage.member_id(members), members=len(members), exchanges=1_234_567,
                           score=0.8123, action="throttle",
                           indicators=dict.fromkeys(["payment_fingerprint", "scaffold", "signup_hour", "subnet",
                                                     "system_prompt", "user_agent"], 1))


def test_campaign_ids_are_printed_whole_at_80_columns_and_the_other_columns_wrap():
    campaigns = [campaign([f"acct-{i}-{j}" for j in range(5)]) for i in range(3)]
    screen = Console(width=80, file=io.StringIO())
    screen.print(cli.campaigns_table(campaigns))
    text = screen.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for c in campaigns:
        assert c.campaign_id in text
    assert "…" not in text


def test_policy_show_prints_yaml_that_policy_reads_back_equal(tmp_path):
    changed = tmp_path / "changed.yaml"
    changed.write_text("lookback_days: 7\nlinkage:\n  slot_s: 600\nallowlist_organizations: [org-1]\n"
                       "gateway:\n  limits: [{scope: account, max_requests: 50}]\n")
    shown = invoke("policy", "show", "--policy", str(changed))
    assert shown.exit_code == 0, shown.output
    again = tmp_path / "again.yaml"
    again.write_text(shown.output)
    assert load_policy(again) == load_policy(changed) != Policy()
    assert "  slot_s: 600  # default: 300\n" in shown.output
    assert "# seconds: width of a session-start slot\n" in shown.output


def test_policy_show_of_an_unreadable_policy_is_one_error_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("linkage:\n  slot_s: -1\n")
    result = invoke("policy", "show", "--policy", str(bad))
    assert result.exit_code == 2
    assert "linkage.slot_s" in result.output and "Traceback" not in result.output


def test_the_example_policy_loads_as_the_default_policy():
    assert load_policy(EXAMPLE_POLICY) == Policy()


def test_the_example_policy_is_what_policy_show_prints_so_it_cannot_go_stale():
    # regenerate with: distillguard policy show > examples/policy.yaml
    assert EXAMPLE_POLICY.read_text() == invoke("policy", "show").output


def every_field(model: type[BaseModel], depth: int = 0):
    """(indent, name, description) of every field of ``model`` and of its sections."""
    for name, info in model.model_fields.items():
        kind = info.annotation
        section = isinstance(kind, type) and issubclass(kind, BaseModel)
        yield "  " * depth, name, info.description or (kind.__doc__ if section else None)
        if section:
            yield from every_field(kind, depth + 1)


def test_the_example_policy_documents_every_field_with_a_comment_above_it():
    lines = EXAMPLE_POLICY.read_text().splitlines()
    fields = list(every_field(Policy))
    assert len(fields) > 60
    at = 0
    for indent, name, description in fields:
        assert description, f"{name} has no description to document it"
        found = next(i for i in range(at, len(lines)) if lines[i].startswith(f"{indent}{name}:"))
        assert lines[found - 1].startswith(f"{indent}# "), name
        at = found + 1


def test_the_rate_limit_comment_documents_the_fields_of_each_limit():
    text = EXAMPLE_POLICY.read_text()
    for name in ("scope", "window_seconds", "max_requests", "action"):
        assert f"{name} (" in text


organisations = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(orgs=st.lists(organisations, max_size=4),
       thresholds=st.dictionaries(st.sampled_from(sorted(SIGNALS)), st.floats(-1e9, 1e9, allow_nan=False)),
       lookback=st.floats(1e-6, 1e6, allow_nan=False))
@example(orgs=["\x85", "caf\u00e9 \u2028 org"], thresholds={}, lookback=1.0)  # line separators in a name
def test_any_policy_round_trips_through_its_yaml(orgs, thresholds, lookback):
    policy = Policy(allowlist_organizations=orgs, signal_thresholds=thresholds, lookback_days=lookback)
    assert Policy.model_validate(yaml.safe_load(policy_yaml(policy))) == policy


def test_progress_bars_are_off_with_quiet_and_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(cli, "err", Console(file=io.StringIO(), force_terminal=True))
    assert not cli.progress_bar().disable
    assert cli.progress_bar(quiet=True).disable
    monkeypatch.setattr(cli, "err", Console(file=io.StringIO(), force_terminal=False))
    assert cli.progress_bar().disable


@pytest.mark.slow  # one small scan, about 5 s
def test_the_scan_tells_its_progress_callback_every_stage_in_order(tmp_path):
    write_jsonl(tmp_path / "tiny.jsonl", [good_record(i) for i in range(40)])
    with Store(":memory:") as store:
        ingest_paths(store, [tmp_path / "tiny.jsonl"])
        seen: list[str] = []
        scan.scan(ibis.duckdb.from_connection(store.con).table("exchanges"), None, Policy(), progress=seen.append)
    assert seen == list(scan.STAGES)


@pytest.mark.slow  # one small scan through the CLI
def test_scan_with_quiet_prints_no_progress_and_its_summary(tmp_path):
    write_jsonl(tmp_path / "tiny.jsonl", [good_record(i) for i in range(40)])
    result = CliRunner().invoke(app, ["scan", "--input", str(tmp_path / "tiny.jsonl"), "--out", str(tmp_path / "out"),
                                      "--quiet"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "scan as of" in result.output and (tmp_path / "out" / "verdicts.parquet").exists()
