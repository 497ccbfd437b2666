"""The gateway journal's segments in the store's hash chain: the hash the writer computed as it
wrote a segment, against the hash of what the loader stored."""

from __future__ import annotations

import json

from distillguard.gateway.journal import Journal, Loader, hashes_at_close
from distillguard.store import Store, chain


def _exchange(i: int) -> dict:
    return {"exchange_id": f"j-{i:05d}", "timestamp": "2026-04-22T10:00:00Z", "account_id": "acct-1",
            "prompt": f"prompt number {i}", "response": "an answer"}


def _journal_with_closed_segment(tmp_path, rows: int = 2500):
    journal = Journal(tmp_path / "log")
    for i in range(rows):
        journal.append(_exchange(i))
    return journal, journal.rotate()


def _load(journal: Journal, db) -> int:
    loaded = Loader(journal, db, in_process=True).round()
    journal.close()
    return loaded


def test_a_closed_segment_carries_the_hash_of_the_lines_its_writer_wrote(tmp_path):
    journal, closed = _journal_with_closed_segment(tmp_path)
    journal.close()
    at_close = hashes_at_close(closed)
    assert at_close == chain.journal_lines_digest(closed)
    assert (at_close["lines"], len(at_close["blocks"])) == (2500, 3)


def test_a_loaded_segment_is_linked_with_its_hash_at_close_and_its_files_are_removed(tmp_path):
    journal, closed = _journal_with_closed_segment(tmp_path)
    assert _load(journal, tmp_path / "s.duckdb") == 2500
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        link = chain.links(store.con)[-1]
        assert (link.kind, link.subject, link.detail["hashed_at"]) == ("journal_segment", closed.name, "close")
        assert link.sha256 == link.detail["sha256_at_load"]
        assert list(chain.check_store(store.con, store.segments_dir)) == []
    assert not closed.exists() and not closed.with_name(closed.name + ".sha256").exists()


def test_one_byte_of_a_segment_changed_between_close_and_load_is_named_by_its_lines(tmp_path):
    journal, closed = _journal_with_closed_segment(tmp_path)
    data = bytearray(closed.read_bytes())
    data[data.index(b"prompt number 1500")] = ord("P")  # line 1501: still valid JSON
    closed.write_bytes(bytes(data))
    assert _load(journal, tmp_path / "s.duckdb") == 2500  # nothing the gateway served is dropped
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        found = [str(d) for d in chain.check_store(store.con, store.segments_dir)]
    assert len(found) == 1
    assert found[0].startswith(f"journal segment {closed.name}: lines 1001-2000 changed between its close and its load")


def test_a_segment_closed_for_a_writer_that_died_is_hashed_at_load(tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    orphan = log / "20260422T100000-1-000001-0123abcd.jsonl"  # closed by recover(): no .sha256 beside it
    orphan.write_text("".join(json.dumps(_exchange(i)) + "\n" for i in range(10)))
    journal = Journal(log)
    assert _load(journal, tmp_path / "s.duckdb") == 10
    with Store(tmp_path / "s.duckdb", read_only=True) as store:
        link = chain.links(store.con)[-1]
        assert (link.subject, link.detail["hashed_at"]) == (orphan.name, "load")
        assert list(chain.check_store(store.con, store.segments_dir)) == []
