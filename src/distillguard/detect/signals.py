"""The declared per-account signals: what each measures, its threshold, and why it matters.

This list is the documentation (docs/signals.md is generated from it). Each signal reads one
column of the account features (features.py) and fires when the value is above (or below) its
threshold. No single signal blocks anyone: heavy organic users trip several of them. Signals
feed the account's suspicion score, which in turn weighs in the score of the campaign the
account is linked to (campaigns.py); policy.py maps scores to actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa


@dataclass(frozen=True)
class Signal:
    name: str
    feature: str
    threshold: float
    direction: Literal["above", "below"]
    weight: float
    meaning: str
    reference: str
    min_exchanges: int = 20  # accounts with less traffic are not judged on this signal


SIGNALS: tuple[Signal, ...] = (
    Signal("volume_per_active_day", "exchanges_per_active_day", 150.0, "above", 0.5,
           "Exchanges per active day. Campaigns average ~26/day/account, so this only catches the "
           "greedy ones; heavy organic users also exceed it, hence the low weight.",
           "Anthropic, 'Detecting and preventing distillation attacks' (2026): 28.8M exchanges / 25k accounts."),
    Signal("always_on_hours", "hour_entropy", 4.1, "above", 1.0,
           "Entropy (bits) of activity over the 24 hours of the day; 4.58 is perfectly flat. People sleep.",
           "Circadian activity as a bot tell: Chavoshi et al., DeBot (ICDM 2016)."),
    Signal("flat_week", "weekday_entropy", 2.75, "above", 0.5,
           "Entropy (bits) over the days of the week; 2.81 is perfectly flat. People have weekends.",
           "As above."),
    Signal("metronome_timing", "gap_cv", 0.35, "below", 1.0,
           "Coefficient of variation of gaps between requests; scripts on a timer are regular.",
           "Inter-arrival regularity: Chu et al., 'Detecting automation of Twitter accounts' (2012)."),
    Signal("single_turn", "first_turn_share", 0.9, "above", 1.0,
           "Share of requests that open a new conversation. Harvesting sends one question per "
           "conversation; people follow up.",
           "Distillation data collection practice (Alpaca, Self-Instruct: single-turn prompt sets)."),
    Signal("long_answers_requested", "long_max_tokens_share", 0.6, "above", 1.0,
           "Share of requests with max_tokens >= 8192: harvesters ask for the longest answers.",
           "OpenAI/Anthropic reports on output extraction; Anthropic 2026."),
    Signal("tool_definitions", "tools_per_request", 3.0, "above", 0.5,
           "Mean tool definitions offered per request (agentic-capability harvesting; coding "
           "agents do this too, hence the low weight).",
           "Anthropic 2026: campaigns targeted agentic reasoning and tool use."),
    Signal("output_heavy", "output_input_ratio", 4.0, "above", 0.5,
           "Output tokens per input token: harvesting short prompts for long answers.",
           "Model extraction economics: Tramer et al., USENIX Security 2016."),
    Signal("reasoning_elicitation", "cot_elicitation_share", 0.25, "above", 1.5,
           "Share of prompts asking for step-by-step reasoning or explanations of reasoning: "
           "chain-of-thought extraction.",
           "Anthropic 2026 (DeepSeek campaign: chain-of-thought elicitation); Hsieh et al., "
           "'Distilling step-by-step' (2023)."),
    Signal("capability_targeting", "targeted_share", 0.6, "above", 0.5,
           "Share of prompts in software engineering or agentic tool use, the areas campaigns sweep.",
           "Anthropic 2026."),
    Signal("rubric_grading", "rubric_grading_share", 0.2, "above", 1.0,
           "Share of prompts asking to grade or score answers: harvesting reward-model labels.",
           "RLAIF: Bai et al., 'Constitutional AI' (2022); Lee et al. (2023)."),
    Signal("hosted_infrastructure", "hosted_share", 0.5, "above", 1.0,
           "Share of traffic from published cloud, datacenter, VPN or relay ranges.",
           "Public range lists shipped in distillguard/data (ipcat, lord-alfred/ipranges)."),
    Signal("many_subnets", "distinct_subnets", 15.0, "above", 0.5,
           "Distinct /24 or /48 subnets used: proxy rotation.",
           "Residential proxy abuse: Mi et al., 'Resident Evil' (IEEE S&P 2019)."),
    Signal("sdk_default_agent", "sdk_agent_share", 0.9, "above", 0.3,
           "Share of requests with an SDK's default user agent (scripts rarely set one).",
           "HTTP client fingerprinting practice."),
    Signal("young_account", "account_age_days", 30.0, "below", 0.5,
           "Account age in days at the scan time: campaigns burn through fresh accounts.",
           "Sybil account lifecycles: Thomas et al., 'Trafficking fraudulent accounts' (USENIX 2013)."),
    Signal("model_pivot", "pivot_hours", 24.0, "below", 0.5,
           "Hours from a model's release (its first sighting, inside the window) to the account's first "
           "request to it. Operations re-point their fleet within hours; enthusiasts do too, hence "
           "the low weight: it matters when a whole linked cluster does it.",
           "Anthropic 2026: the campaign redirected nearly half its traffic to a new model within 24 hours."),
)

BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}


def evaluate(features: pa.Table, thresholds: dict[str, float] | None = None) -> tuple[pa.Table, pa.Table]:
    """(signals table: account_id, signal, value, threshold, fired; suspicion per account 0..1)."""
    thresholds = thresholds or {}
    accounts = features.column("account_id").to_pylist()
    exchanges = features.column("exchanges").to_pylist()
    rows = {"account_id": [], "signal": [], "value": [], "threshold": [], "fired": []}
    score = [0.0] * len(accounts)
    judged = [0.0] * len(accounts)
    for signal in SIGNALS:
        threshold = thresholds.get(signal.name, signal.threshold)
        values = features.column(signal.feature).to_pylist()
        for i, (account, value) in enumerate(zip(accounts, values)):
            if exchanges[i] < signal.min_exchanges or value is None:
                continue
            fired = value > threshold if signal.direction == "above" else value < threshold
            rows["account_id"].append(account)
            rows["signal"].append(signal.name)
            rows["value"].append(float(value))
            rows["threshold"].append(float(threshold))
            rows["fired"].append(fired)
            judged[i] += signal.weight
            score[i] += signal.weight if fired else 0.0
    table = pa.table({"account_id": pa.array(rows["account_id"], pa.string()),
                      "signal": pa.array(rows["signal"], pa.string()),
                      "value": pa.array(rows["value"], pa.float64()),
                      "threshold": pa.array(rows["threshold"], pa.float64()),
                      "fired": pa.array(rows["fired"], pa.bool_())})
    total = sum(s.weight for s in SIGNALS)
    suspicion = pa.table({"account_id": pa.array(accounts, pa.string()),
                          "suspicion": pa.array([s / total for s in score], pa.float64())})
    return table, suspicion


def markdown() -> str:
    lines = ["| signal | fires when | weight | what it measures | reference |", "|---|---|---|---|---|"]
    for s in SIGNALS:
        op = ">" if s.direction == "above" else "<"
        lines.append(f"| `{s.name}` | `{s.feature}` {op} {s.threshold:g} | {s.weight:g} | {s.meaning} | {s.reference} |")
    return "\n".join(lines) + "\n"


