"""One simulation run: scenario + seed + scale -> exchanges, labels and the resolved parameters."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.simulate import clients, text
from distillguard.simulate.attackers import (
    CAPABILITY_CORPUS,
    SHARED_HEADS_PER_CAPABILITY,
    CampaignPopulation,
    paraphrase_heads,
    relay_content,
)
from distillguard.simulate.corpora import TextTable, code_lines, context_sentences, load_corpora
from distillguard.simulate.keys import mix
from distillguard.simulate.network import build_pools
from distillguard.simulate.organic import OrganicPopulation, TurnIndex, micros
from distillguard.simulate.population import Accounts, Catalog, Catalogs, RunContext, generate_rows
from distillguard.simulate.scenario import Scenario, ScenarioError, load_scenario
from distillguard.simulate.timing import Calendar
from distillguard.simulate.writer import ExchangeWriter, IdSalts, account_ids

#: rows generated (and written as one Parquet row group) per block of accounts
TARGET_BLOCK_ROWS = 400_000
LABELS_SCHEMA = pa.schema([
    pa.field("account_id", pa.string(), nullable=False),
    pa.field("role", pa.string(), nullable=False),  # organic | attacker | hydra_relay
    pa.field("campaign_id", pa.string()),
    pa.field("persona", pa.string()),
    pa.field("group_id", pa.string()),  # campus/office/organisation, or the campaign cell
    pa.field("exchanges", pa.int64(), nullable=False),
    pa.field("campaign_exchanges", pa.int64(), nullable=False),  # excludes relayed customers
    pa.field("relayed_exchanges", pa.int64(), nullable=False),
])


@dataclass(frozen=True)
class SimulationSummary:
    """What a run wrote."""

    out_dir: Path
    scenario: str
    seed: int
    scale: float
    accounts: dict[str, int]  # population ("organic:<persona>" / "campaign:<id>") -> accounts
    exchanges: int
    campaign_exchanges: int  # exchanges sent by campaigns for themselves
    relayed_exchanges: int  # genuine customers' exchanges relayed through hydra accounts
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _populations(scenario: Scenario, scale: float) -> list[OrganicPopulation | CampaignPopulation]:
    organic = {name: OrganicPopulation(name, spec, scale) for name, spec in scenario.organic.items()}
    campaigns = [CampaignPopulation(name, spec, scale, organic.get(spec.hydra.customers) if spec.hydra else None,
                                    organic.get(spec.decoys.customers) if spec.decoys else None)
                 for name, spec in scenario.campaigns.items()]
    return [*organic.values(), *campaigns]


def _text_table(scenario: Scenario, corpora, populations) -> tuple[TextTable, dict[str, TurnIndex]]:
    table = TextTable()
    # people ask for step-by-step reasoning and state constraints too, in the same words
    asked_reasoning = tuple(" " + phrase.strip() for phrase in text.COT_ELICITATION)
    code_suffixes = (*text.CAPABILITY_CONSTRAINTS["software_engineering"][1:], *text.TASK_REQUIREMENTS)
    for name, values in (
        ("organic_prefix", text.ORGANIC_PREFIXES), ("organic_suffix", text.ORGANIC_SUFFIXES + asked_reasoning),
        ("code_suffix", code_suffixes), ("longform_template", text.LONGFORM_TEMPLATES),
        ("follow_up", text.FOLLOW_UPS), ("short", text.COMMON_SHORT), ("agent_head", text.AGENT_TURN_HEADS),
        ("agent_detail", ["\n" + line for line in text.AGENT_DETAIL_LINES]),
        ("harness_head", text.HARNESS_HEADS), ("harness_tail", text.HARNESS_TAILS),
        ("batch_template", text.BATCH_TEMPLATES), ("attack_follow_up", text.ATTACK_FOLLOW_UPS),
        ("task_domain", text.TASK_DOMAINS), ("task_requirement", text.TASK_REQUIREMENTS),
    ):
        table.add(name, list(values))
    turns: dict[str, TurnIndex] = {}
    for name, corpus in corpora.items():
        table.add(f"corpus:{name}", corpus.prompts)
        counts = np.array([len(t) for t in corpus.later_turns], dtype=np.int64)
        if counts.sum():
            section = table.add(f"turns:{name}", [t for later in corpus.later_turns for t in later])
            turns[name] = TurnIndex(section.start + np.cumsum(counts) - counts, counts)
    prose = context_sentences(corpora["chat"].prompts)
    code = code_lines(corpora["code"].prompts)
    table.add("ctx_prose_first", ["\n\n" + s for s in prose])
    table.add("ctx_prose_next", [" " + s for s in prose])
    table.add("ctx_code_first", ["\n\n" + s for s in code])
    table.add("ctx_code_next", ["\n" + s for s in code])
    for cap in CAPABILITY_CORPUS:
        table.add(f"cap_head:{cap}", list(text.CAPABILITY_HEADS[cap]))
        table.add(f"cap_tail:{cap}", [c + k for c in text.CAPABILITY_CONSTRAINTS[cap]
                                      for k in ("", *text.COT_ELICITATION)])
    for pop in populations:
        if not isinstance(pop, CampaignPopulation) or not pop.n_accounts:
            continue
        key = int(mix(scenario.seed, sum(map(ord, pop.name))))
        # the campaign's own scaffold heads: shared by its accounts, unlike any other campaign's
        table.add(f"shared_head:{pop.name}", paraphrase_heads(
            SHARED_HEADS_PER_CAPABILITY * len(CAPABILITY_CORPUS), key + 1, f"campaigns.{pop.name}"))
        if pop.spec.prompts.paraphrase:
            table.add(f"para:{pop.name}", paraphrase_heads(pop.n_accounts, key, f"campaigns.{pop.name}"))
    table.finish()
    return table, turns


def _block_plan(populations, accounts: list[Accounts]) -> list[tuple[int, int, int]]:
    """(population, first account, end account) per block, populations interleaved by progress."""
    tasks = []
    for p, (pop, acc) in enumerate(zip(populations, accounts)):
        n = len(acc)
        if n == 0:
            continue
        relay = pop.relay_factor if isinstance(pop, CampaignPopulation) else 0.0
        per_account = max(float(acc.exchanges.mean()) * (1.0 + relay), 1.0)
        size = max(1, int(TARGET_BLOCK_ROWS / per_account))
        blocks = -(-n // size)
        for b in range(blocks):
            tasks.append(((b + 0.5) / blocks, p, b * size, min(n, (b + 1) * size)))
    tasks.sort()
    return [(p, start, stop) for _, p, start, stop in tasks]


def simulate(
    scenario: str | Path | Scenario,
    scale: float = 1.0,
    seed: int | None = None,
    organic_prompts: Sequence[str | Path] = (),
    distill_prompts: Sequence[str | Path] = (),
    out_dir: str | Path = "out",
    progress: Callable[[int, int], None] | None = None,
) -> SimulationSummary:
    """Simulate a scenario's traffic and write it, with ground truth, to ``out_dir``.

    Args:
        scenario: a shipped scenario name (see ``shipped_scenarios()``), a YAML file path, or a
            loaded :class:`Scenario`.
        scale: multiplies every persona's and campaign's account count (not their behaviour);
            a population with any accounts keeps at least one.
        seed: random seed; the scenario's own ``seed`` when None. Same seed, same bytes.
        organic_prompts: JSONL files (``prompt``, optional ``turns``) replacing the organic corpora.
        distill_prompts: JSONL files replacing the distillation corpora campaigns draw seeds from.
        out_dir: created if missing. Receives ``exchanges.parquet`` (canonical schema, one row
            group per block of accounts, each sorted by time; the file as a whole is not in
            time order), ``labels.parquet`` (one row per
            account), ``relayed.parquet`` (ids of genuine requests relayed by hydra accounts; only
            when a hydra campaign ran) and ``scenario.json`` (the resolved parameters).
        progress: called with (blocks done, blocks total) after each block.

    Raises:
        ScenarioError: unknown scenario, invalid YAML field, bad scale, or unusable prompt file.
    """
    started = time.perf_counter()
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if not (isinstance(scale, (int, float)) and scale > 0 and np.isfinite(scale)):
        raise ScenarioError(f"scale must be a positive number, got {scale!r}")
    seed = scenario.seed if seed is None else int(seed)
    if seed < 0:
        raise ScenarioError(f"seed must be >= 0, got {seed}")
    scenario = scenario.model_copy(update={"seed": seed})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    organic_files = [Path(p) for p in organic_prompts]
    distill_files = [Path(p) for p in distill_prompts]

    populations = _populations(scenario, scale)
    corpora = load_corpora(scenario.corpora, organic_files, distill_files)
    table, turns = _text_table(scenario, corpora, populations)
    ua_strings, ua_start, ua_size = clients.catalogue()
    catalogs = Catalogs(domains=Catalog(), system_prompts=Catalog(), user_agents=Catalog(ua_strings),
                        models=Catalog(list(scenario.models)), ua_family_start=ua_start,
                        ua_family_size=ua_size, ua_family_names=clients.FAMILY_NAMES)
    salt = int(mix(seed, 0xD157))

    accounts: list[Accounts] = []
    first_groups: list[int] = []
    ordinal, group = 0, 0
    for p, pop in enumerate(populations):
        rng = np.random.default_rng([seed, 1, p])
        accounts.append(pop.build_accounts(scenario, ordinal, group, catalogs, salt, rng))
        first_groups.append(group)
        ordinal += pop.n_accounts
        group += pop.n_groups

    model_index = {name: catalogs.models.add(name) for name in scenario.models}
    ctx = RunContext(
        calendar=Calendar(micros(scenario.period.start), micros(scenario.period.end)),
        pools=build_pools(), text=table,
        system_prompt_lengths=np.array([len(s.encode()) for s in catalogs.system_prompts.items] or [0]),
        model_index=model_index,
        releases=[(model_index[name], micros(when)) for name, when in scenario.releases()],
        salt=salt)
    contents = []
    for pop in populations:
        if isinstance(pop, CampaignPopulation):
            contents.append((pop.content(table, turns, salt), relay_content(pop, table, turns)))
        else:
            contents.append((pop.content(table, turns), None))

    salts = IdSalts(salt)
    partial = {name: out / f"{name}.partial" for name in ("exchanges.parquet", "relayed.parquet")}
    for stale in (out / "relayed.parquet", *partial.values()):
        stale.unlink(missing_ok=True)
    writer = ExchangeWriter(partial["exchanges.parquet"], partial["relayed.parquet"], catalogs, table, salts)
    counts = [np.zeros((len(a), 3), dtype=np.int64) for a in accounts]  # all, campaign, relayed
    plan = _block_plan(populations, accounts)
    # encoding and compressing a row group (mostly outside the GIL) overlaps generating the next
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="exchange-writer") as background:
            pending = None
            for done, (p, start, stop) in enumerate(plan, start=1):
                pop, acc = populations[p], accounts[p]
                rng = np.random.default_rng([seed, 2, p, start])
                content, relay = contents[p]
                if isinstance(pop, CampaignPopulation):
                    rows = pop.generate(acc, start, stop, ctx, scenario, content, relay, rng)
                else:
                    rows = generate_rows(acc.slice(start, stop), pop.behaviour(scenario), content, ctx, rng)
                if pending is not None:
                    pending.result()
                pending = background.submit(writer.write, rows, acc.slice(start, stop))
                n = stop - start
                counts[p][start:stop, 0] += np.bincount(rows.account, minlength=n)
                if pop.role != "organic":
                    counts[p][start:stop, 1] += np.bincount(rows.account[~rows.relayed], minlength=n)
                    counts[p][start:stop, 2] += np.bincount(rows.account[rows.relayed], minlength=n)
                if progress is not None:
                    progress(done, len(plan))
            if pending is not None:
                pending.result()
    finally:
        writer.close()
    os.replace(partial["exchanges.parquet"], out / "exchanges.parquet")
    files = {"exchanges": out / "exchanges.parquet", "labels": out / "labels.parquet",
             "scenario": out / "scenario.json"}
    if partial["relayed.parquet"].exists():
        os.replace(partial["relayed.parquet"], out / "relayed.parquet")
        files["relayed"] = out / "relayed.parquet"

    _write_labels(out / "labels.parquet", populations, accounts, first_groups, counts, salts)
    population_accounts = {
        f"{'organic' if pop.role == 'organic' else 'campaign'}:{pop.name}": pop.n_accounts for pop in populations}
    totals = sum(c.sum(axis=0) for c in counts) if counts else np.zeros(3, dtype=np.int64)
    summary = SimulationSummary(
        out_dir=out, scenario=scenario.name, seed=seed, scale=float(scale), accounts=population_accounts,
        exchanges=int(totals[0]), campaign_exchanges=int(totals[1]), relayed_exchanges=int(totals[2]),
        files=files, seconds=round(time.perf_counter() - started, 3))
    resolved = {
        "scenario": scenario.model_dump(mode="json"),
        "seed": seed,
        "scale": float(scale),
        "organic_prompts": [str(p) for p in organic_files],
        "distill_prompts": [str(p) for p in distill_files],
        "accounts": population_accounts,
        "exchanges": summary.exchanges,
        "campaign_exchanges": summary.campaign_exchanges,
        "relayed_exchanges": summary.relayed_exchanges,
    }
    (out / "scenario.json").write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    return summary


def _roles(pop, n: int) -> list[str]:
    """Each account's role: its population's, or ``decoy`` for a campaign's accounts that send
    only the persona traffic they copy (camouflage ``benign_accounts``): a campaign's accounts
    all the same, but ones that harvest nothing, which a benchmark may report apart."""
    decoy = getattr(pop, "decoy", None)
    if decoy is None:
        return [pop.role] * n
    return np.where(np.asarray(decoy, dtype=bool), "decoy", pop.role).tolist()


def _write_labels(path: Path, populations, accounts: list[Accounts], first_groups: list[int], counts,
                  salts: IdSalts) -> None:
    parts = []
    for pop, acc, first_group, count in zip(populations, accounts, first_groups, counts):
        n = len(acc)
        if n == 0:
            continue
        names = np.array(pop.group_names or [""], dtype=object)
        local_group = np.clip(acc.group - first_group, 0, len(names) - 1)
        group_id = np.where(acc.group >= 0, names[local_group], None)
        parts.append(pa.table({
            "account_id": account_ids(acc.ordinal, salts),
            "role": pa.array(_roles(pop, n), pa.string()),
            "campaign_id": pa.array([pop.campaign_id] * n, pa.string()),
            "persona": pa.array([pop.persona] * n, pa.string()),
            "group_id": pa.array(group_id.tolist(), pa.string()),
            "exchanges": pa.array(count[:, 0]),
            "campaign_exchanges": pa.array(count[:, 1]),
            "relayed_exchanges": pa.array(count[:, 2]),
        }, schema=LABELS_SCHEMA))
    labels = pa.concat_tables(parts) if parts else LABELS_SCHEMA.empty_table()
    pq.write_table(labels, path, compression="zstd")
