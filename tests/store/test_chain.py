"""The store's hash chain: every ingest and compaction adds a link, and a change to a link, a
segment's Parquet bytes or an ``ingests`` row after the fact is named."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distillguard.ingest import ingest_paths
from distillguard.store import Store, chain
from tests.records import good_record, write_jsonl


def _ingest(store: Store, tmp_path, name: str, start: int, count: int) -> None:
    ingest_paths(store, [write_jsonl(tmp_path / name, (good_record(i) for i in range(start, start + count)))])


@pytest.fixture
def two_ingests(tmp_path) -> Store:
    (tmp_path / "store").mkdir()
    store = Store(tmp_path / "store" / "s.duckdb")
    _ingest(store, tmp_path, "a.jsonl", 0, 300)
    _ingest(store, tmp_path, "b.jsonl", 300, 300)
    yield store
    store.close()


def _differences(store: Store) -> list[str]:
    return [str(d) for d in chain.check_store(store.con, store.segments_dir)]


def _only_part(store: Store, ingest_file: str):
    segment = store.con.execute("SELECT segment FROM ingests WHERE path LIKE ?", [f"%{ingest_file}"]).fetchone()[0]
    (part,) = sorted((store.segments_dir / segment).glob("*.parquet"))
    return segment, part


def test_every_ingested_file_is_linked_with_its_sha256_and_its_segments_part_hashes(two_ingests):
    links = chain.links(two_ingests.con)
    ingests = two_ingests.con.execute("SELECT ingest_id, sha256, segment FROM ingests "
                                      "ORDER BY started_at").fetchall()
    assert [(link.kind, link.subject, link.sha256) for link in links] == [
        ("ingest_file", ingest_id, sha) for ingest_id, sha, _ in ingests]
    for link, (_, _, segment) in zip(links, ingests):
        assert link.detail["segment"] == segment
        part = two_ingests.segments_dir / segment / "part-00000.parquet"
        assert link.detail["parts"]["part-00000.parquet"]["sha256"] == chain.file_digest(part)["sha256"]
    assert _differences(two_ingests) == []


def test_each_link_holds_the_hash_of_the_one_before_it(two_ingests):
    first, second = chain.links(two_ingests.con)
    assert first.prev_hash == chain.GENESIS
    assert second.prev_hash == first.link_hash
    assert chain.head(two_ingests.con) == {"seq": 2, "link_hash": second.link_hash}


def test_a_link_changed_after_it_was_written_is_named(two_ingests):
    two_ingests.con.execute("UPDATE chain SET sha256 = repeat('0', 64) WHERE seq = 1")
    assert _differences(two_ingests)[0].startswith("chain link 1 (ingest_file ")
    assert "link hash differs" in _differences(two_ingests)[0]


def test_a_link_removed_from_the_middle_is_named(two_ingests):
    _ingest(two_ingests, two_ingests.segments_dir.parent.parent, "c.jsonl", 600, 10)
    two_ingests.con.execute("DELETE FROM chain WHERE seq = 2")
    assert _differences(two_ingests) == ["chain link 2: missing (the links jump from 1 to 3)"]


def test_one_flipped_byte_of_a_stored_part_is_named_by_segment_byte_range_and_rows(two_ingests):
    segment, part = _only_part(two_ingests, "b.jsonl")
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0x01
    part.write_bytes(bytes(data))
    (found,) = _differences(two_ingests)
    assert found.startswith(f"segment {segment} part part-00000.parquet: rows 0-299 differ (bytes 4-")


def test_a_prompt_rewritten_in_a_stored_part_is_named(two_ingests):
    segment, part = _only_part(two_ingests, "a.jsonl")
    table = pq.read_table(part)
    prompts = table.column("prompt").to_pylist()
    prompts[120] = prompts[120].replace("number", "numbes")  # one byte of one stored prompt
    table = table.set_column(table.schema.get_field_index("prompt"), "prompt", pa.array(prompts))
    pq.write_table(table, part, compression="zstd")
    (found,) = _differences(two_ingests)
    assert found.startswith(f"segment {segment} part part-00000.parquet: ")
    assert "rows 0-299 differ" in found or "(the Parquet footer)" in found  # rewritten: sizes shift


def test_a_changed_byte_is_named_by_the_rows_of_its_row_group(tmp_path):
    part = tmp_path / "part.parquet"
    pq.write_table(pa.table({"prompt": [f"prompt number {i} " * 20 for i in range(40_000)]}), part,
                   row_group_size=10_000)
    recorded = chain.file_digest(part)
    third = recorded["blocks"][3]
    assert third[2:] == [20_000, 29_999]
    data = bytearray(part.read_bytes())
    data[third[0] + 50] ^= 0x01
    part.write_bytes(bytes(data))
    assert chain.check_part(part, recorded) == (
        f"rows 20000-29999 differ (bytes {third[0]}-{recorded['blocks'][4][0] - 1})")
    data[-12] ^= 0x01
    data[third[0] + 50] ^= 0x01
    part.write_bytes(bytes(data))
    assert chain.check_part(part, recorded).endswith("(the Parquet footer)")


def test_a_part_added_to_a_segment_is_named(two_ingests):
    segment, part = _only_part(two_ingests, "a.jsonl")
    (part.parent / "part-00001.parquet").write_bytes(part.read_bytes())
    assert _differences(two_ingests) == [
        f"segment {segment} part part-00001.parquet: is not in the chain (added after the segment was written)"]


def test_an_ingests_row_changed_after_the_fact_is_named(two_ingests):
    ingest_id = two_ingests.con.execute("SELECT ingest_id FROM ingests WHERE path LIKE '%a.jsonl'").fetchone()[0]
    two_ingests.con.execute("UPDATE ingests SET sha256 = repeat('a', 64) WHERE ingest_id = ?", [ingest_id])
    (found,) = _differences(two_ingests)
    assert found.startswith(f"ingests row {ingest_id} (")
    assert "sha256 is 'aaaa" in found


def test_a_compacted_store_links_the_merged_segment_and_still_checks_clean(two_ingests):
    assert two_ingests.compact(min_segments=2) == 2
    last = chain.links(two_ingests.con)[-1]
    (segment,) = {s for (s,) in two_ingests.con.execute("SELECT segment FROM ingests").fetchall()}
    assert (last.kind, last.subject) == ("segment", segment)
    assert len(last.detail["merged"]) == 2
    assert _differences(two_ingests) == []


def test_a_store_copied_elsewhere_checks_clean(two_ingests, tmp_path):
    import shutil

    two_ingests.close()
    shutil.copytree(tmp_path / "store", tmp_path / "copy")
    with Store(tmp_path / "copy" / "s.duckdb", read_only=True) as copy:
        assert _differences(copy) == []
        assert len(chain.links(copy.con)) == 2


def test_a_scans_results_changed_after_its_link_are_named_and_a_column_added_later_is_not(two_ingests):
    con = two_ingests.con
    con.execute("CREATE TABLE verdicts AS SELECT 's1' AS scan_id, 'acct-' || i AS account_id, 'allow' AS action, "
                "0.1 * i AS score FROM range(5) t(i)")
    link = chain.record_scan(con, "s1", chain.head(con), "policy-sha")
    assert link.detail["tables"]["verdicts"]["rows"] == 5
    assert _differences(two_ingests) == []
    con.execute("ALTER TABLE verdicts ADD COLUMN reasons VARCHAR[]")  # what a later version's scan adds
    assert _differences(two_ingests) == []
    con.execute("UPDATE verdicts SET action = 'block' WHERE account_id = 'acct-3'")
    assert _differences(two_ingests) == ["scan s1 table verdicts: its rows changed after the scan (5 rows then, 5 now)"]
