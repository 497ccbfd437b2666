"""Maintainer tool: rebuild the shipped corpora from a copy of the shared development data.

    python -m distillguard.data._refresh /path/to/shared/data

Copies only the sources whose licences allow shipping in an Apache-2.0 product (see README.md),
keeps only the fields the loaders return, and gzips each file (``mtime=0`` so a rebuild from the
same input gives the same bytes). Nothing at run time imports this module.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: shipped source -> (folder, licence file in the source tree)
SHIPPED: dict[str, tuple[str, str]] = {
    "arena_hard_v0_1": ("organic", "lmarena__arena-hard-auto__LICENSE"),
    "arena_hard_v2_0": ("organic", "lmarena__arena-hard-auto__LICENSE"),
    "mt_bench": ("organic", "lm-sys__FastChat__LICENSE"),
    "vicuna_bench": ("organic", "lm-sys__FastChat__LICENSE"),
    "koala_test": ("organic", "arnav-gudibande__koala-test-set__LICENSE"),
    "oasst_prompt_lottery_en": ("organic", "Open-Assistant__oasst-model-eval__LICENSE"),
    "oasst_en_100": ("organic", "Open-Assistant__oasst-model-eval__LICENSE"),
    "self_instruct_user_oriented": ("organic", "yizhongw__self-instruct__LICENSE"),
    "hh_rlhf_harmless_test": ("organic", "anthropics__hh-rlhf__LICENSE"),
    "gpteacher_codegen": ("distillation", "teknium1__GPTeacher__LICENSE"),
    "gpteacher_toolformer": ("distillation", "teknium1__GPTeacher__LICENSE"),
    "gpteacher_roleplay": ("distillation", "teknium1__GPTeacher__LICENSE"),
    "humaneval": ("distillation", "openai__human-eval__LICENSE"),
    "gsm8k_train": ("distillation", "openai__grade-school-math__LICENSE"),
    "gsm8k_test": ("distillation", "openai__grade-school-math__LICENSE"),
    "ipcat_datacenters": ("infra", "client9__ipcat__LICENSE"),
    "bad_asn_list": ("infra", "brianhama__bad-asn-list__LICENSE"),
}

PROMPT_FIELDS = ("prompt", "source", "subtype", "category", "turns")
INFRA_FIELDS = ("cidr", "start", "end", "asn", "category", "provider", "entity", "source")


def _slim(record: dict, folder: str) -> dict:
    if folder == "infra":
        return {k: record[k] for k in INFRA_FIELDS if record.get(k) is not None}
    out = {k: record[k] for k in PROMPT_FIELDS if record.get(k) is not None}
    # one topic label whatever the source calls it (arena v2 subcategory, arena v0.1 cluster)
    topic = record.get("subcategory") or record.get("cluster") or record.get("category")
    if topic:
        out["category"] = topic
    return out


def _write(records: list[dict], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(payload.encode("utf-8"))


def refresh(source_dir: Path) -> None:
    manifest = {m["source"]: m for m in json.loads((source_dir / "manifest.json").read_text())["files"]}
    sources = dict(SHIPPED)
    for name in manifest:
        if name.startswith("ipranges_"):  # lord-alfred/ipranges, CC0-1.0
            sources[name] = ("infra", "lord-alfred__ipranges__LICENSE")
    licences = HERE / "licenses"
    licences.mkdir(exist_ok=True)
    for name, (folder, licence) in sorted(sources.items()):
        src = source_dir / manifest[name]["file"]
        records = [_slim(json.loads(line), folder) for line in src.read_text().splitlines() if line]
        _write(records, HERE / folder / f"{name}.jsonl.gz")
        shutil.copyfile(source_dir / "licenses" / licence, licences / licence)
        print(f"{folder}/{name}.jsonl.gz  {len(records)} rows")


if __name__ == "__main__":  # pragma: no cover - maintainer tool
    refresh(Path(sys.argv[1]))
