"""Evidence kinds are declared once (detect/evidence.py) and read everywhere else from that table."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from distillguard.detect import evidence, extract, inherit, linkage
from distillguard.report.docs import signals_markdown

SRC = Path(__file__).resolve().parents[2] / "src" / "distillguard"

#: where a kind's name may appear as a string: its declaration and its extractors
HOMES = {"detect/evidence.py", "detect/extract.py"}
#: packages whose vocabulary is not the detector's: the simulator knows nothing of the detector,
#: and the bundled data files' loaders name their own fields
OTHER_VOCABULARY = ("simulate/", "data/")
#: (file, word) where the word names something other than an evidence kind, with the reason
NOT_A_KIND = {
    ("schema.py", "ip"): "a canonical column type",
    ("schema.py", "asn"): "part of a column's description",
    ("schema.py", "user_agent"): "a canonical column",
    ("schema.py", "system_prompt"): "a canonical column",
    ("store/engine.py", "ip"): "a canonical column type",
    ("ingest/normalize.py", "ip"): "a canonical column type",
    ("ingest/accounts.py", "ip"): "a canonical column type",
    ("ingest/fast_parquet.py", "ip"): "a canonical column type",
    ("ingest/openai_pairs.py", "system_prompt"): "a canonical column",
    ("ingest/enrich.py", "ip"): "a column of the address table",
    ("ingest/enrich.py", "subnet"): "a column of the address table",
    ("detect/features.py", "subnet"): "a column of the address table",
    ("detect/scan.py", "subnet"): "a column of the address table",
    ("detect/inherit.py", "ip"): "a column of the address table",
    ("detect/inherit.py", "system_prompt"): "a canonical column",
    ("report/facts.py", "ip"): "a column of the address table",
    ("report/document.py", "user_agent"): "a column of a report section",
    ("console/pages.py", "user_agent"): "the canonical column, shown on the account page",
    ("detect/policy.py", "subnet"): "a rate limit's scope",
    ("detect/policy.py", "payment"): "a rate limit's scope",
    ("gateway/enforce.py", "subnet"): "a rate limit's scope",
    ("gateway/enforce.py", "payment"): "a rate limit's scope",
    ("gateway/protocol.py", "user_agent"): "a canonical column",
    ("gateway/protocol.py", "system_prompt"): "a canonical column",
    ("ingest/litellm.py", "user_agent"): "a canonical column",
    ("ingest/litellm.py", "system_prompt"): "a canonical column",
    ("ingest/langfuse.py", "system_prompt"): "a canonical column",
    ("ingest/helicone.py", "system_prompt"): "a canonical column",
    ("ingest/otel.py", "user_agent"): "a canonical column",
    ("ingest/otel.py", "system_prompt"): "a canonical column",
    ("report/misp.py", "asn"): "a column of a report section",
    ("gateway/litellm.py", "ip"): "a field of the gateway's own request record",
    ("gateway/litellm.py", "user_agent"): "a LiteLLM metadata field",
    ("detect/policy.py", "asn"): "an entity control's kind",
    ("gateway/controls.py", "asn"): "an entity control's kind",
    ("gateway/live.py", "ip"): "a request field matched against imported indicators",
    ("gateway/live.py", "asn"): "a request field matched against imported indicators",
    ("gateway/live.py", "user_agent"): "a request field matched against imported indicators",
    ("gateway/live.py", "payment"): "a request field matched against imported indicators",
    ("bench/reach.py", "user_agent"): "a canonical column the label-aware decoy oracle reads",
    ("bench/reach.py", "system_prompt"): "a canonical column the label-aware decoy oracle reads",
}


def kind_names_in_source() -> dict[tuple[str, str], list[int]]:
    """(file, kind name) -> lines where a string constant equal to a declared kind's name occurs."""
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in HOMES or rel.startswith(OTHER_VOCABULARY):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in evidence.KINDS:
                found.setdefault((rel, node.value), []).append(node.lineno)
    return found


@pytest.mark.parametrize("name", list(evidence.KINDS))
def test_every_declared_kind_has_an_extractor_and_a_row_in_the_docs_table(name):
    kind = evidence.KINDS[name]
    assert callable(kind.extractor) and kind.extractor.__module__ == extract.__name__
    assert kind.extractor.__name__ == name
    if kind.inheritable:
        assert callable(kind.request_extractor) and kind.request_extractor.__module__ == extract.__name__
    assert f"| `{name}` |" in evidence.markdown()
    assert f"| `{name}` |" in signals_markdown()


def test_no_module_outside_the_declaration_and_its_extractors_names_a_kind():
    found = kind_names_in_source()
    stray = {f"{f}:{lines} {word!r}" for (f, word), lines in found.items() if (f, word) not in NOT_A_KIND}
    assert not stray, "branch on the declared table instead of naming a kind: " + ", ".join(sorted(stray))


def test_every_declared_exception_still_occurs():
    # an exception that no longer matches anything would silently allow a future branch
    found = kind_names_in_source()
    assert set(NOT_A_KIND) <= set(found), sorted(set(NOT_A_KIND) - set(found))


def test_the_scan_finds_a_kind_named_in_a_new_branch(tmp_path, monkeypatch):
    module = tmp_path / "report" / "new_writer.py"
    module.parent.mkdir()
    module.write_text('def shown(kind):\n    return kind == "payment"\n')
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert kind_names_in_source() == {("report/new_writer.py", "payment"): [2]}


def test_linkage_and_inheritance_read_their_kinds_from_the_declaration():
    assert list(linkage.EVIDENCE) == [n for n, k in evidence.KINDS.items() if k.weight > 0]
    assert set(inherit.KINDS) == {n for n, k in evidence.KINDS.items() if k.inheritable}
    assert all(inherit.FAMILY[n] == evidence.KINDS[n].family for n in inherit.KINDS)
    assert set(evidence.FAMILY_OF) == set(evidence.KINDS)


def test_a_request_shows_one_key_per_inheritable_kind_it_carries():
    from datetime import UTC, datetime

    facts = extract.RequestFacts("card-1", "10.0.0.7", "You are a Harvester!", None, "Byte81.TOP",
                                 datetime(2026, 5, 5, 13, 30, tzinfo=UTC))
    keys = dict(evidence.request_keys(facts))
    assert keys == {"payment": "card-1", "ip": "10.0.0.7", "subnet": "10.0.0.0/24",
                    "signup_burst": "byte81.top@2026-05-05 13", "system_prompt": "you are a harvester"}


def test_a_system_prompt_is_habitual_at_the_policys_share_of_the_requests_and_its_third_use():
    """By default a system prompt is held where it is at least 10% of the account's requests and
    used three times: an operation that sends its harvest through it on 5 of 100 requests (the
    rest other traffic) does not hold it, one that sends nothing else does, one used twice does
    not. With the share set to 0 the diluted one holds it too."""
    import ibis
    import pyarrow as pa

    from distillguard.detect import linkage

    accounts = ["harvest"] * 100 + ["pure"] * 5 + ["twice"] * 2
    prompts = ["You are a world-class expert."] * 5 + [None] * 95 + ["You are a world-class expert."] * 7
    ex = ibis.memtable(pa.table({"account_id": accounts, "system_prompt": pa.array(prompts, pa.string())}))
    empty = ibis.memtable(pa.table({"account_id": pa.array([], pa.string()), "key": pa.array([], pa.string())}))
    exclude = tuple(k for k in linkage.EVIDENCE if k != "system_prompt")

    def holders(params: linkage.LinkageParams) -> list[str]:
        keys = linkage.account_keys(ex, None, empty, params).to_pyarrow()
        return sorted(a for a, kind in zip(keys["account_id"].to_pylist(), keys["kind"].to_pylist())
                      if kind == "system_prompt")

    assert holders(linkage.LinkageParams(exclude=exclude)) == ["pure"]
    assert holders(linkage.LinkageParams(exclude=exclude, system_prompt_min_share=0.0)) == ["harvest", "pure"]
