"""The LiteLLM SpendLogs source, read live from a real PostgreSQL server (tests/ingest/conftest.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from distillguard.errors import IngestError
from distillguard.ingest.postgres import TABLE, ingest_spendlogs, redacted

T0 = datetime(2026, 11, 20, 9, 30, 0, 125000)  # naive UTC, as LiteLLM stores "startTime"


def spendlog(i: int, start: datetime = T0, *, prompt: str | None = "Explain step by step: item {i}",
             **overrides) -> dict:
    """One row in the shape LiteLLM's get_logging_payload writes (spend_tracking_utils.py)."""
    request = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be terse."},
                                              {"role": "user", "content": prompt.format(i=i)}],
               "max_tokens": 512} if prompt is not None else None
    row = {
        "request_id": f"chatcmpl-{i:06d}", "call_type": "acompletion",
        "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "spend": 0.00042, "total_tokens": 130, "prompt_tokens": 30, "completion_tokens": 100,
        "startTime": start, "endTime": start + timedelta(milliseconds=850),
        "model": "gpt-4o-2024-08-06", "model_group": "gpt-4o", "custom_llm_provider": "openai",
        "user": "owner-1", "end_user": f"customer-{i % 3}", "team_id": "team-a", "organization_id": "org-1",
        "requester_ip_address": "203.0.113.7", "session_id": f"sess-{i % 5}", "status": "success",
        "metadata": json.dumps({"user_api_key_org_id": "org-1", "user_agent": "OpenAI/Python 1.54.0",
                                "requester_ip_address": "203.0.113.7"}),
        "messages": json.dumps(request["messages"] if request else {}),
        "response": json.dumps({}),
        "proxy_server_request": json.dumps({"body": request} if request else {}),
    }
    row.update(overrides)
    return row


def insert(url: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    names = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join("%s" for _ in columns)
    with psycopg.connect(url) as con, con.cursor() as cur:
        cur.executemany(f'INSERT INTO "{TABLE}" ({names}) VALUES ({marks})',
                        [[r[c] for c in columns] for r in rows])


def test_spendlogs_rows_become_exchanges_with_identity_address_agent_and_prompt(store, litellm_db):
    insert(litellm_db, [spendlog(i) for i in range(3)])
    done = ingest_spendlogs(store, litellm_db)
    r = done.result
    assert (r.rows_in, r.rows_stored, r.rows_duplicate, r.rows_quarantined) == (3, 3, 0, 0)
    assert done.warnings == []
    row = store.con.execute(
        "SELECT exchange_id, timestamp, account_id, api_key_id, organization_id, client_ip, user_agent, model, "
        "conversation_id, prompt, system_prompt, input_tokens, output_tokens, max_tokens, status_code, latency_ms "
        "FROM exchanges WHERE exchange_id = 'chatcmpl-000001'").fetchone()
    assert row[0] == "chatcmpl-000001"
    assert row[1].replace(tzinfo=None) == T0
    assert row[2:] == ("customer-1", spendlog(1)["api_key"], "org-1", "203.0.113.7", "OpenAI/Python 1.54.0",
                       "gpt-4o", "sess-1", "Explain step by step: item 1", "Be terse.", 30, 100, 512, 200, 850.0)


def test_a_second_run_reads_only_rows_added_since_the_first(store, litellm_db):
    insert(litellm_db, [spendlog(i, T0 + timedelta(seconds=i)) for i in range(4)])
    assert ingest_spendlogs(store, litellm_db).result.rows_stored == 4
    assert ingest_spendlogs(store, litellm_db).result.rows_in == 0
    insert(litellm_db, [spendlog(i, T0 + timedelta(seconds=i)) for i in range(4, 6)])
    again = ingest_spendlogs(store, litellm_db, batch_rows=1)
    assert (again.result.rows_in, again.result.rows_stored) == (2, 2)
    assert again.watermark == (T0 + timedelta(seconds=5), "chatcmpl-000005")
    assert store.con.execute("SELECT count(*) FROM exchanges").fetchone()[0] == 6


def test_rows_sharing_the_watermarks_time_are_neither_lost_nor_read_twice(store, litellm_db):
    # two rows at one millisecond are read; then a third row at that same millisecond (later id)
    # arrives: a watermark on time alone would skip it (>) or read the first two again (>=)
    insert(litellm_db, [spendlog(1), spendlog(3)])
    first = ingest_spendlogs(store, litellm_db, batch_rows=1)
    assert first.watermark == (T0, "chatcmpl-000003")
    insert(litellm_db, [spendlog(5), spendlog(7, T0 + timedelta(milliseconds=1))])
    second = ingest_spendlogs(store, litellm_db)
    assert (second.result.rows_in, second.result.rows_stored, second.result.rows_duplicate) == (2, 2, 0)
    ids = [i for (i,) in store.con.execute("SELECT exchange_id FROM exchanges ORDER BY 1").fetchall()]
    assert ids == ["chatcmpl-000001", "chatcmpl-000003", "chatcmpl-000005", "chatcmpl-000007"]


def test_since_rereads_from_a_time_and_counts_rows_already_stored_as_duplicates(store, litellm_db):
    insert(litellm_db, [spendlog(i, T0 + timedelta(minutes=i)) for i in range(5)])
    ingest_spendlogs(store, litellm_db)
    again = ingest_spendlogs(store, litellm_db, since=T0 + timedelta(minutes=3))
    r = again.result
    assert (r.rows_in, r.rows_stored, r.rows_duplicate, r.rows_quarantined) == (2, 0, 2, 0)
    assert again.watermark == (T0 + timedelta(minutes=4), "chatcmpl-000004")  # not moved back


def test_rows_without_stored_prompts_are_ingested_with_one_warning(store, litellm_db):
    insert(litellm_db, [spendlog(i, prompt=None) for i in range(3)])
    done = ingest_spendlogs(store, litellm_db)
    assert done.result.rows_stored == 3
    assert len(done.warnings) == 1 and "3 of 3 records carry no prompt" in done.warnings[0]
    assert "store_prompts_in_spend_logs" in done.warnings[0]
    prompts = store.con.execute("SELECT DISTINCT prompt, account_id IS NOT NULL FROM exchanges").fetchall()
    assert prompts == [("", True)]


def test_user_agent_comes_from_the_stored_request_headers_when_metadata_lacks_it(store, litellm_db):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    insert(litellm_db, [spendlog(1, metadata=json.dumps({}), proxy_server_request=json.dumps(
        {"url": "http://proxy/v1/chat/completions", "method": "POST",
         "headers": {"User-Agent": "curl/8.5.0"}, "body": body}))])
    ingest_spendlogs(store, litellm_db)
    assert store.con.execute("SELECT user_agent, prompt FROM exchanges").fetchone() == ("curl/8.5.0", "hi")


def test_a_row_the_schema_refuses_is_quarantined_and_counted(store, litellm_db):
    insert(litellm_db, [spendlog(1), spendlog(2, requester_ip_address="not-an-ip", metadata=json.dumps({}))])
    r = ingest_spendlogs(store, litellm_db).result
    assert (r.rows_in, r.rows_stored, r.rows_quarantined) == (2, 1, 1)
    reason, raw = store.con.execute("SELECT reason, raw FROM quarantine").fetchone()
    assert "client_ip" in reason and "chatcmpl-000002" in raw


def test_unreachable_server_is_one_error_without_the_password(store, postgres_server):
    from distillguard.gateway.ports import free_port

    url = f"postgresql://admin:s3cret-pw@127.0.0.1:{free_port()}/litellm"
    with pytest.raises(IngestError) as caught:
        ingest_spendlogs(store, url)
    message = str(caught.value)
    assert message.startswith("postgresql://admin@127.0.0.1:") and "cannot connect" in message
    assert "s3cret-pw" not in message and "\n" not in message


def test_a_database_without_the_spendlogs_table_is_one_clear_error(store, postgres_server):
    with pytest.raises(IngestError, match='no table "LiteLLM_SpendLogs"'):
        ingest_spendlogs(store, postgres_server.url("postgres"))


def test_redacted_url_keeps_user_host_port_and_database_only():
    assert redacted("postgresql://u:pw@db.internal:6543/litellm?sslmode=require") == \
        "postgresql://u@db.internal:6543/litellm"


def test_cli_ingests_a_database_url_and_a_second_run_adds_nothing(tmp_path, litellm_db):
    from typer.testing import CliRunner

    from distillguard.cli import app

    insert(litellm_db, [spendlog(i, prompt=None) for i in range(3)])
    db = str(tmp_path / "s.duckdb")
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", litellm_db, "--source", "litellm", "--db", db, "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["files"][0]["rows_stored"] == 3 and summary["files"][0]["balanced"]
    assert summary["watermark"] == {"startTime": T0.isoformat(), "request_id": "chatcmpl-000002"}
    assert "carry no prompt" in first.stderr
    second = runner.invoke(app, ["ingest", litellm_db, "--source", "litellm", "--db", db, "--json"])
    assert json.loads(second.stdout)["files"][0]["rows_in"] == 0


@pytest.mark.parametrize("args, expected", [
    (["postgresql://u:hunter22@127.0.0.1:1/x", "--source", "litellm"], "cannot connect"),
    (["postgresql://u:hunter22@127.0.0.1:1/x"], "needs --source"),
    (["postgresql://u:hunter22@127.0.0.1:1/x", "--source", "litellm", "--since", "yesterday"], "not an ISO-8601"),
    (["postgresql://u:hunter22@[::1/x", "--source", "litellm"], "postgresql://"),
    (["postgresql://u:hunter22@127.0.0.1:1/x?bogus=1", "--source", "litellm"], "not a usable PostgreSQL URL"),
    (["postgresql://u:hunter%zz@127.0.0.1:1/x", "--source", "litellm"], "not a usable PostgreSQL URL"),
])
def test_cli_bad_database_input_is_one_line_exit_2_without_the_password(tmp_path, args, expected):
    from typer.testing import CliRunner

    from distillguard.cli import app

    result = CliRunner().invoke(app, ["ingest", *args, "--db", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 2, result.output
    password = args[0].split(":", 2)[2].split("@")[0]
    assert expected in result.stderr and password not in result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("url", ["postgresql://u:hunter22@[::1/x", "postgresql://u:hunter22@h:99999/x",
                                 "postgresql://u:hunter22@h:port/x"])
def test_redacted_drops_the_password_of_urls_that_do_not_parse(url):
    assert "hunter22" not in redacted(url) and redacted(url).startswith("postgresql://")


@given(user=st.text(alphabet=st.characters(blacklist_characters="@/:?#[]", blacklist_categories=("Cs",)),
                    min_size=1, max_size=8),
       password=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=6, max_size=12),
       tail=st.text(max_size=30))
def test_redacted_never_raises_and_never_shows_the_password(user, password, tail):
    url = f"postgresql://{user}:{password}@{tail}"
    shown = redacted(url)
    assert shown.startswith("postgresql://")
    assert f":{password}@" not in shown


def test_litellms_own_rows_read_live_give_the_same_exchanges_as_their_json_lines_export(tmp_path, litellm_db):
    """tests/data/litellm_spendlogs: rows made by LiteLLM's get_logging_payload, exported with
    row_to_json; loaded back into the table with its inverse, json_populate_record."""
    from distillguard.ingest import ingest_paths
    from distillguard.store import Store

    export = Path(__file__).parent.parent / "data" / "litellm_spendlogs" / "spendlogs.jsonl"
    lines = export.read_text().splitlines()
    with psycopg.connect(litellm_db) as con:
        for line in lines:
            # get_logging_payload leaves created_at / updated_at to the database (NOT NULL DEFAULT now)
            names = ", ".join(f'"{c}"' for c, v in json.loads(line).items()
                              if v is not None or c not in ("created_at", "updated_at"))
            con.execute(f'INSERT INTO "{TABLE}" ({names}) SELECT {names} '
                        f'FROM json_populate_record(NULL::"{TABLE}", %s::json)', [line])
    columns = "exchange_id, timestamp, account_id, api_key_id, organization_id, client_ip, user_agent, model, " \
              "conversation_id, prompt, system_prompt, input_tokens, output_tokens, max_tokens, status_code, latency_ms"
    with Store(tmp_path / "live.duckdb") as live, Store(tmp_path / "file.duckdb") as file:
        done = ingest_spendlogs(live, litellm_db)
        from_file, = ingest_paths(file, [export])
        assert (done.result.rows_in, done.result.rows_stored) == (len(lines), from_file.rows_stored)
        assert done.result.rows_stored == len(lines) and done.result.balanced
        assert done.warnings == from_file.warnings != []
        query = f"SELECT {columns} FROM exchanges ORDER BY exchange_id"
        assert live.con.execute(query).fetchall() == file.con.execute(query).fetchall()


def test_a_field_map_reads_any_column_or_json_path_of_the_live_rows(store, litellm_db, tmp_path):
    from distillguard.ingest.fieldmap import FieldMap

    insert(litellm_db, [spendlog(i, custom_llm_provider="azure") for i in range(2)])
    (tmp_path / "map.yaml").write_text("fields:\n  account_id: team_id\n  user_agent: custom_llm_provider\n"
                                       "  email_domain: metadata.user_api_key_org_id\n")
    ingest_spendlogs(store, litellm_db, field_map=FieldMap.load(tmp_path / "map.yaml"))
    assert store.con.execute("SELECT DISTINCT account_id, user_agent, email_domain FROM exchanges").fetchall() == \
        [("team-a", "azure", "org-1")]


def test_cli_refuses_format_for_a_database_url_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from distillguard.cli import app

    result = CliRunner().invoke(app, ["ingest", "postgresql://u@127.0.0.1:1/x", "--source", "litellm",
                                      "--format", "langfuse", "--db", str(tmp_path / "s.duckdb")])
    assert result.exit_code == 2 and "--format names the format of files" in result.stderr


def test_the_watermark_belongs_to_the_table_not_to_the_user_reading_it(store, litellm_db, postgres_server):
    with psycopg.connect(litellm_db, autocommit=True) as con:
        con.execute("CREATE ROLE reader LOGIN")
        con.execute(f'GRANT SELECT ON "{TABLE}" TO reader')
    insert(litellm_db, [spendlog(1)])
    ingest_spendlogs(store, litellm_db)
    as_reader = litellm_db.replace(f"//{postgres_server.user}@", "//reader@")
    assert ingest_spendlogs(store, as_reader).result.rows_in == 0
