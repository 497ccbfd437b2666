"""The schema is the interface: its documentation is generated from the code and must match."""

from pathlib import Path

from distillguard import schema


def test_docs_schema_table_is_generated_from_the_code():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "schema.md").read_text()
    assert schema.markdown() in doc


def test_required_columns_are_the_four_the_pipeline_cannot_do_without():
    assert schema.REQUIRED == ("exchange_id", "timestamp", "account_id", "prompt")


def test_no_alias_is_claimed_by_two_columns():
    claimed = [a for c in schema.COLUMNS for a in (c.name, *c.aliases)]
    assert len(claimed) == len(set(claimed))


def test_otel_genai_attribute_names_are_aliases():
    for attribute, column in {"gen_ai.request.model": "model", "gen_ai.usage.input_tokens": "input_tokens",
                              "gen_ai.usage.output_tokens": "output_tokens",
                              "gen_ai.request.max_tokens": "max_tokens",
                              "gen_ai.conversation.id": "conversation_id", "client.address": "client_ip",
                              "user_agent.original": "user_agent"}.items():
        assert schema.ALIASES[attribute] == column


def test_docs_signals_is_generated_from_the_declared_signals():
    from distillguard.report.docs import signals_markdown

    doc = (Path(__file__).resolve().parent.parent / "docs" / "signals.md").read_text()
    assert doc == signals_markdown()


def test_docs_schema_account_events_table_is_generated_from_the_code():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "schema.md").read_text()
    assert schema.markdown(schema.ACCOUNT_EVENT_COLUMNS) in doc
