# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, run the default grid end to end, write figures, fits and report
#   make test   create .venv, run the test suite
# While developing: make test-fast (everything not marked slow), make lint, make schema.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# A second study beside the demo: make demo STUDY=name CONFIG=config/other.yaml writes everything under
# results/name/ (the config key `study`), the report included; without STUDY, results/ as before.
STUDY  ?=
CONFIG ?=
SMK    := $(BIN)/snakemake $(if $(CONFIG),--configfile $(CONFIG)) $(if $(STUDY),--config study=$(STUDY))
REPORT := results/$(if $(STUDY),$(STUDY)/)report.html

.PHONY: demo test test-fast env lint schema apt-lists report paper clean

env: $(STAMP)

# torch first, from the pinned CPU wheel: installing it later as a dependency would pull CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The data stage fetches pinned Debian packages with `apt-get download`: it needs current package lists.
apt-lists:
	@if command -v apt-get >/dev/null && ! apt-cache show sword-text-web >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq; \
	  else echo "note: run 'sudo apt-get update' (or set data.files in the config to your own text)"; fi; \
	fi

demo: env apt-lists
	$(SMK) --cores $(CORES)
	$(SMK) --report $(REPORT)

paper: env
	$(SMK) paper --cores $(CORES)

report: env
	$(SMK) --report $(REPORT)

test: env apt-lists
	$(BIN)/python -m pytest -q

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (lint + formatting) and Snakemake's own linter over the workflow
lint: env
	$(BIN)/ruff check stages tests bench
	$(BIN)/ruff format --check stages tests bench
	$(BIN)/snakemake --lint

# workflow/schemas/config.schema.yaml is generated from the option groups (tests check it is current)
schema: env
	$(BIN)/python -c "from stages.workflow.schema import write_schema_file; write_schema_file()"

clean:
	rm -rf results logs benchmarks .snakemake
