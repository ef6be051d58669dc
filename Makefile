# The two set-up commands: `make run` and `make test`. Each builds .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test pytest lint typecheck messages models migrate bench bench-batch bench-persist bench-intake bench-soak lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cvm db upgrade
	$(BIN)/cvm serve

# Lint and mypy run beside the tests instead of a minute before them (mypy from cold is a
# minute of one core); `make test` fails if any of the three fails.
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck pytest

# Three workers on two cores (measured with mypy beside them, fresh caches, one quiet machine:
# 2 workers 353 s with the cores idle 55 s; 3 workers 346 s; 4 workers 371 s, both cores busy
# throughout and each extra worker paying its own start-up and collection).
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE): the
# CLI, writer and broker processes the tests start would otherwise each compile the app anew.
pytest: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n 3 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check app tests bench migrations
	$(BIN)/ruff format --check app tests bench migrations
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The console's message catalogues (app/console/translations): extract the English text of
# templates and code, merge it into each language's .po, compile the .mo. Both are committed:
# an installed package needs no build step; tests/test_console.py fails on a stale .mo.
I18N := app/console/translations
messages: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _ -k N_ -k NC_:1c,2 --no-wrap --sort-by-file --omit-header \
		-o $(I18N)/messages.pot .
	$(BIN)/pybabel update -i $(I18N)/messages.pot -d $(I18N) -D messages --no-wrap --ignore-pot-creation-date
	$(BIN)/pybabel compile -d $(I18N) -D messages --statistics

# Retrain the bundled models from the seeded synthetic book (see README).
models: $(STAMP)
	$(BIN)/cvm synth --customers 30000 --months 18 --seed 7 --out var/book
	for task in tier recommendation churn prospect; do \
		$(BIN)/cvm train $$task --book var/book --out models/$$task/1 || exit 1; \
	done

# Batch scoring against raw LightGBM predict, 1M and 4M customers (issue 6; SCALING.md).
bench-batch: $(STAMP)
	$(BIN)/python bench/batch_bench.py

# What the score table takes durably on its own, 1,000-row commits (bench/README.md).
bench-persist: $(STAMP)
	$(BIN)/python bench/persist_ceiling.py $(BENCH_ARGS)

# Events persisted per second through the HTTP service in 1,000-event calls, against COPY of
# the same rows, on PostgreSQL (issue 15; bench/README.md). Options: BENCH_ARGS="--workers 2".
bench-intake: $(STAMP)
	$(BIN)/python bench/intake_bench.py $(BENCH_ARGS)

# Ten minutes at twice the nominal load with PostgreSQL restarted midway (issue 20; bench/README.md).
bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py $(BENCH_ARGS)

migrate: $(STAMP)
	$(BIN)/cvm db upgrade

clean:
	rm -rf $(VENV) var/book .pytest_cache .mypy_cache .ruff_cache

# Scoring service vs a bare endpoint on the same server and MLServer; interleaved rounds
# (bench/README.md). Needs wrk (apt-get install -y wrk); builds MLServer's venv in var/bench once.
# Options: make bench BENCH_ARGS="--database postgres --rounds 5"
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
	$(BIN)/python bench/serve_bench.py $(BENCH_ARGS)

# Re-resolve every dependency to the newest release pyproject.toml allows, in a throw-away
# venv, and record the versions; then run `make test` before committing constraints.txt.
lock:
	rm -rf var/lock-venv
	$(PYTHON) -m venv var/lock-venv
	var/lock-venv/bin/pip install --quiet --upgrade pip
	var/lock-venv/bin/pip install --quiet -e '.[dev]'
	{ sed -n '1,3p' constraints.txt; var/lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf var/lock-venv
