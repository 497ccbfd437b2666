"""`distillguard policy show` lists every tunable of the one Policy with its value and default."""

from __future__ import annotations

import json

from pydantic import BaseModel
from typer.testing import CliRunner

from distillguard.cli import app
from distillguard.detect import campaigns, inherit, linkage
from distillguard.detect.policy import Policy


def every_field(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.extend(every_field(kind, f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return out


def test_policy_show_json_lists_every_field_of_the_policy_with_its_default():
    result = CliRunner().invoke(app, ["policy", "show", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == every_field(Policy)
    by_name = {r["name"]: r for r in rows}
    assert by_name["inherit.signature_words"]["default"] == 12
    assert by_name["linkage.sync_max_holders"]["value"] == 12


def test_policy_show_prints_a_changed_value_beside_its_default(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("linkage:\n  slot_s: 600\n")
    result = CliRunner().invoke(app, ["policy", "show", "--policy", str(path)])
    assert result.exit_code == 0, result.output
    assert "  slot_s: 600  # default: 300" in result.output
    assert "# seconds: width of a session-start slot" in result.output


def test_the_stage_constructors_take_their_defaults_from_the_policy():
    policy = Policy()
    assert linkage.LinkageParams() == policy.linkage
    assert campaigns.CampaignParams() == policy.clustering
    matcher = inherit.Matcher(inherit.INDICATOR_SCHEMA.empty_table())
    assert (matcher.signature_words, matcher.scaffold_ngrams, matcher.habitual_uses, matcher.min_families) == (
        policy.inherit.signature_words, policy.inherit.scaffold_ngrams, policy.inherit.habitual_uses,
        policy.inherit.min_families)
    assert matcher.fresh == inherit.Freshness.of(policy.inherit)
