"""Prompt corpora and the table of text pieces that prompts are assembled from.

A simulated prompt is the concatenation of five pieces (head, body, two context pieces, tail),
each an index into one :class:`TextTable`. Rows then carry five small integers instead of text,
and the writer builds each distinct prompt once per row group.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from distillguard import data
from distillguard.simulate.scenario import Corpus, ScenarioError

PIECES = 5  # head, body, context, context, tail
_MAX_CONTEXT_SENTENCES = 20_000


class CorpusError(ScenarioError):
    """A prompt file given by the user cannot be used."""


@dataclass(frozen=True)
class Section:
    """A contiguous run of entries in the text table."""

    start: int
    count: int

    def index(self, i: np.ndarray | int) -> np.ndarray:
        return self.start + np.asarray(i, dtype=np.int64)


@dataclass
class CorpusTexts:
    """Prompts of one corpus, with their later turns where the source has whole conversations."""

    prompts: list[str]
    later_turns: list[list[str]]  # turns after the first, per prompt (often empty)


@dataclass
class TextTable:
    """Every text piece of a run. Entry 0 is the empty string."""

    _strings: list[str] = field(default_factory=lambda: [""])
    sections: dict[str, Section] = field(default_factory=dict)
    strings: pa.StringArray | None = None
    lengths: np.ndarray | None = None  # UTF-8 bytes per entry

    def add(self, name: str, texts: list[str] | tuple[str, ...]) -> Section:
        if name in self.sections:
            return self.sections[name]
        if not texts:
            raise ValueError(f"text section {name!r} is empty")
        section = Section(len(self._strings), len(texts))
        self._strings.extend(texts)
        self.sections[name] = section
        return section

    def finish(self) -> None:
        self.strings = pa.array(self._strings, pa.string())
        self.lengths = np.array([len(s.encode("utf-8")) for s in self._strings], dtype=np.int64)
        if len(self._strings) >= 2**31:
            raise ValueError("text table too large")

    def __getitem__(self, name: str) -> Section:
        return self.sections[name]


def _from_records(records: list[dict], label: str) -> CorpusTexts:
    prompts, later = [], []
    for i, record in enumerate(records):
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise CorpusError(f"{label}: line {i + 1}: needs a non-empty string field 'prompt'")
        turns = record.get("turns") or []
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise CorpusError(f"{label}: line {i + 1}: 'turns' must be a list of strings")
        prompts.append(prompt)
        later.append([t for t in turns[1:] if t.strip()])
    if not prompts:
        raise CorpusError(f"{label}: no prompts")
    return CorpusTexts(prompts, later)


def read_prompt_files(paths: list[Path]) -> CorpusTexts:
    """Prompts from user JSONL files (``prompt`` field, optional ``turns``)."""
    records: list[dict] = []
    for path in paths:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise CorpusError(f"{path}: cannot read prompt file ({exc.strerror})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path}: line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{path}: line {number}: expected a JSON object with a 'prompt' field")
            records.append(record)
    return _from_records(records, ", ".join(str(p) for p in paths))


def load_corpora(corpora: dict[str, Corpus], organic_files: list[Path] | None,
                 distill_files: list[Path] | None) -> dict[str, CorpusTexts]:
    """Each named corpus: shipped sources, or the user's files for its kind."""
    user = {
        "organic": read_prompt_files(organic_files) if organic_files else None,
        "distillation": read_prompt_files(distill_files) if distill_files else None,
    }
    out: dict[str, CorpusTexts] = {}
    for name, corpus in corpora.items():
        replacement = user.get(corpus.kind)
        if replacement is not None:
            out[name] = replacement
            continue
        shipped_kind = "organic" if corpus.kind == "organic" else "distillation"
        out[name] = _from_records(data.load_prompts(shipped_kind, corpus.sources), f"corpora.{name}")
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def context_sentences(texts: list[str]) -> list[str]:
    """Sentences of a corpus, used as the personal context people paste around a question."""
    seen: dict[str, None] = {}
    for text in texts:
        for sentence in _SENTENCE_END.split(text):
            sentence = sentence.strip()
            if 20 <= len(sentence) <= 240:
                seen.setdefault(sentence, None)
    sentences = list(seen)[:_MAX_CONTEXT_SENTENCES]
    return sentences or ["(no further details)"]


def code_lines(texts: list[str]) -> list[str]:
    """Non-trivial lines of code-like prompts, pasted back by coding tools."""
    seen: dict[str, None] = {}
    for text in texts:
        for line in text.splitlines():
            if 12 <= len(line.strip()) <= 160:
                seen.setdefault(line.rstrip(), None)
    lines = list(seen)[:_MAX_CONTEXT_SENTENCES]
    return lines or ["# (no code)"]
