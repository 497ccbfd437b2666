"""The report's pieces: the docs section writer, the floors, and the cost probe."""

from __future__ import annotations

from distillguard.bench import floors
from distillguard.bench.cost import measured
from distillguard.bench.report import BEGIN, END, headline, markers, write_docs


def test_the_docs_section_is_appended_with_markers_when_the_page_has_none(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nIngest: 1M rows/s.\n")
    write_docs("## Detection\nfigures\n", page)
    assert page.read_text() == f"# Benchmarks\n\nIngest: 1M rows/s.\n\n{BEGIN}\n## Detection\nfigures\n{END}\n"
    write_docs("## Detection\nnew figures\n", page)
    assert page.read_text().count("figures") == 1 and "new figures" in page.read_text()


def test_the_docs_page_is_created_when_missing(tmp_path):
    page = write_docs("## Detection\n", tmp_path / "docs" / "benchmarks.md")
    assert page.read_text().startswith("# Benchmarks\n") and BEGIN in page.read_text()


def test_two_named_blocks_of_one_page_are_rewritten_independently(tmp_path):
    page = tmp_path / "benchmarks.md"
    write_docs("## Detection\nall scenarios\n", page)
    write_docs("## Detection: replay\ntwo scenarios\n", page, "replay")
    write_docs("## Detection\nall scenarios again\n", page)
    text = page.read_text()
    begin, end = markers("replay")
    assert text.count(BEGIN) == text.count(begin) == 1
    assert "all scenarios again" in text and "two scenarios" in text and "all scenarios\n" not in text
    assert text.index(begin) < text.index("two scenarios") < text.index(end)


SECTION = ("## Detection\n\n`distillguard bench`\n\n### Accounts\n\n| scenario | recall |\n|---|---|\n| a | 99% |\n\n"
           "### Cost\n\n| scenario | s |\n|---|---|\n| a | 3 |\n")


def test_a_compact_docs_block_keeps_the_first_table_and_says_where_the_others_are(tmp_path):
    page = write_docs(SECTION, tmp_path / "benchmarks.md", compact=True)
    block = page.read_text().split(BEGIN)[1].split(END)[0]
    assert "`distillguard bench`" in block and "| a | 99% |" in block
    assert "### Cost" not in block and "| a | 3 |" not in block and "results.md" in block


def test_a_section_of_one_table_is_its_own_headline():
    one_table = SECTION.split("\n### Cost")[0] + "\n"
    assert headline(one_table) == one_table
    assert headline("no table here\n") == "no table here\n"


def result(recall: float, organic_fpr: float, leaked: float, ttd: float | None, one: float | None = None) -> dict:
    """The parts of one detector's result on one scenario that the floors read."""
    return {
        "accounts": {"throttle": {"recall": recall, "organic_fpr": organic_fpr, "worst_persona_fpr": organic_fpr}},
        "campaigns": {"alibaba-2026": {"throttle": {"one_campaign_share": one}}},
        "replay": {"campaigns": {"alibaba-2026": {"ttd_throttle_hours": ttd, "leaked_exchanges_share": leaked}}},
    }


def test_the_floors_pass_a_detector_that_meets_them_and_fail_the_baselines_that_do_not():
    results = {"run": {"scale": 0.05}, "scenarios": {"alibaba-2026": {
        "campaigns": {"alibaba-2026": {}},
        "detectors": {"scan": result(0.995, 0.0, 0.01, 6.0, one=0.97),
                      "rate_limits": result(0.07, 0.0004, 0.9, 18.0)}}}}
    rows = {(r["detector"], r["floor"]): r for r in floors.evaluate(results, frozenset({"rate_limits"}))}
    assert all(r["passed"] for (detector, _), r in rows.items() if detector == "scan")
    assert rows[("scan", "beats_baselines")]["passed"]
    assert not rows[("rate_limits", "recall")]["passed"] and not rows[("rate_limits", "organic_fpr")]["passed"]
    assert rows[("rate_limits", "time_to_detection_hours")]["passed"]
    assert ("rate_limits", "beats_baselines") not in rows
    assert ("scan", "evasion_recall") not in rows  # alibaba-2026 is not an evasion variant


def test_a_campaign_never_detected_fails_the_time_to_detection_floor():
    results = {"run": {"scale": 0.05}, "scenarios": {"alibaba-2026": {
        "campaigns": {"alibaba-2026": {}}, "detectors": {"scan": result(0.0, 0.0, 1.0, None)}}}}
    rows = {r["floor"]: r for r in floors.evaluate(results, frozenset())}
    assert rows["time_to_detection_hours"]["passed"] is False and rows["time_to_detection_hours"]["value"] is None
    assert rows["leakage"]["passed"] is False


def test_a_floor_is_not_measured_without_a_replay():
    without_replay = result(0.995, 0.0, 0.0, 1.0) | {"replay": None}
    results = {"run": {"scale": 0.05}, "scenarios": {"alibaba-2026": {
        "campaigns": {"alibaba-2026": {}}, "detectors": {"scan": without_replay}}}}
    rows = {r["floor"]: r for r in floors.evaluate(results, frozenset())}
    assert rows["leakage"]["passed"] is None and rows["recall"]["passed"] is True
    results["scenarios"]["alibaba-2026"]["detectors"]["rate_limits"] = result(0.07, 0.0004, 0.9, 18.0)
    rows = {(r["detector"], r["floor"]): r for r in floors.evaluate(results, frozenset({"rate_limits"}))}
    assert rows[("scan", "beats_baselines")]["passed"] is None  # no leakage to compare: not measured


def test_the_cost_probe_reports_time_and_the_memory_a_call_needed():
    with measured() as cost:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert cost.seconds > 0
    if cost.peak_rss_mb is not None:  # Linux: the peak of this call, not of the process
        assert cost.rss_increase_mb >= 60
