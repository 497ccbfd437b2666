# distillguard: `make demo`, `make test`, `make test-fast`, `make bench`. The venv is created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DG := $(VENV)/bin/distillguard
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast test-all bench bench-heldout clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,spark,litellm]'
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	@rm -rf out/demo.duckdb out/demo.segments out/sim out/scan out/report
	$(DG) simulate --scenario alibaba-2026 --scale 0.005 --seed 7 --out out/sim
	$(DG) ingest out/sim/exchanges.parquet --db out/demo.duckdb
	$(DG) stats --db out/demo.duckdb
	$(DG) scan --db out/demo.duckdb --lookback 90 --out out/scan
	$(DG) evaluate --verdicts out/scan/verdicts.parquet --labels out/sim/labels.parquet
	$(DG) report --all --format html --db out/demo.duckdb --out out/report
	@echo "Evidence report of the campaigns found: open file://$(CURDIR)/out/report/index.html"
	@echo "Analyst console of the demo store: $(DG) analysts add YOU --role operator --db out/demo.duckdb"
	@echo "  (prints your token once), then $(DG) console --db out/demo.duckdb and open http://127.0.0.1:8700/"

# make test: the whole suite, skips listed with their reasons (-rs, pyproject.toml's addopts).
# make test-fast: everything not marked slow (the simulations, fault injection, Spark parity,
# LiteLLM and subprocess-heavy tests), for the edit-test loop: a quick test of every stage.
# tests/ mirrors src/distillguard (tests/gateway/ for gateway/, ...).
# Both run in TEST_JOBS pytest-xdist workers, one more than the cores (most tests wait on the
# processes they start), at most 4; each file's tests stay on one worker and the Spark tests on
# one, started first (tests/conftest.py WORKER_GROUPS). Serially: make test PYTEST_ARGS=-n0.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n + 1 < 4 ? n + 1 : 4 )))
XDIST := -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
PYTEST_ARGS ?=

test: $(STAMP)
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# the name the whole suite had when make test left the slow tests out
test-all: test

bench: $(STAMP)
	$(PY) benchmarks/ingest.py --out bench-out
	$(PY) benchmarks/formats_ingest.py --records 100000
	# the gateway against direct calls and the LiteLLM proxy, and its 10,000-stream load test; the
	# proxy under test on CPU 1, the load generator and the mock on the others
	$(PY) benchmarks/gateway.py --out bench-out/gateway --docs docs/benchmarks.md --proxy-cpus 1
	# one round of the gateway's log loader against the store's size (time-ordered vs random ids)
	$(PY) benchmarks/loader.py --rows 4000000 --docs docs/benchmarks.md
	# live routing on replayed simulated traffic: organic sessions routed, campaigns routed, added time
	$(PY) benchmarks/live_routing.py --scale 0.02 --scan-after-days 7 --docs docs/benchmarks.md
	# recall over a randomized family of attacker strategies (development split; docs/benchmarks.md)
	$(DG) bench-strategies --split dev --n 12 --seeds 2 --seed 7 --out bench-out/strategies-dev --docs docs/benchmarks.md \
	  --throttle-budgets 1e-5,3e-5,3e-4,1e-3
	# the same strategies hidden in five times the organic population (about 10 minutes)
	$(DG) bench-strategies --split dev --n 12 --seeds 2 --seed 7 --organic-scale 5 --out bench-out/strategies-dev-organic5 \
	  --docs docs/benchmarks.md --throttle-budgets 3e-5
	# final verdicts of every detector on every scenario (no replay: see the next run)
	$(DG) bench --scenario all --out bench-out --replay-every-hours 0 --docs docs/benchmarks.md
	# recall against each collective tell's strength on the adaptive campaign (25 scenario variants)
	$(DG) sweep --scenario adaptive-2026 --out bench-out/sweep --cache bench-out/cache --docs docs/benchmarks.md
	# the 6-hour replay (time to detection, leakage) of the default scenarios: the scan is judged
	# step by step, 176 scans per scenario, in two processes (about 35 minutes per scenario)
	$(DG) bench --out bench-out/replay --cache bench-out/cache --workers 2 --docs docs/benchmarks.md --docs-block replay
	# the two smaller campaigns replayed with their full-scale account counts, alone and inside
	# mixed: at scale 0.05 they have only a few accounts in their first day (docs/benchmarks.md,
	# replay-*-fullsize)
	for s in deepseek moonshot mixed; do $(DG) bench --scenario benchmarks/scenarios/$$s-fullsize.yaml \
	  --out bench-out/replay-$$s-fullsize --cache bench-out/cache --workers 2 --docs docs/benchmarks.md \
	  --docs-block replay-$$s-fullsize || exit 1; done

# the held-out strategies, once per detector tag (git tag detector-...; the command refuses otherwise)
bench-heldout: $(STAMP)
	$(DG) bench-strategies --split heldout --n 12 --seeds 2 --seed 7 --out bench-out/strategies-heldout --docs docs/benchmarks.md \
	  --throttle-budgets 1e-5,3e-5,3e-4,1e-3
	$(DG) bench-strategies --split heldout --n 12 --seeds 2 --seed 7 --organic-scale 5 --out bench-out/strategies-heldout-organic5 \
	  --docs docs/benchmarks.md --throttle-budgets 3e-5

clean:
	rm -rf $(VENV) out bench-out .pytest_cache .hypothesis
