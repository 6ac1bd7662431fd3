# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, run the default grid end to end, write figures, fits and report
#   make test   create .venv, run the test suite
# While developing: make test-fast (everything not marked slow), make lint, make schema.
# make nanotron-env: the nanotron backend's own environment (.nanotron/venv; make test builds it).
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

.PHONY: demo test test-fast env nanotron-env lint schema apt-lists report paper docs clean

env: $(STAMP)

# torch first, from the pinned CPU wheel: installing it later as a dependency would pull CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# nanotron pins numpy<2, so it gets an environment of its own, with the versions that install together and the
# pinned source: $$NANOTRON_HOME when set (a checkout at the pinned commit), else the unmodified source archive
# in ../shared/vendor, unpacked to .nanotron/nanotron with its commit recorded in .commit. The C++ data helper is
# built here, with this environment's python. On a GPU machine install the CUDA build of torch==2.13.0 into
# .nanotron/venv first (README: Cluster); flash-attn and grouped_gemm are then compiled on that machine.
NANOTRON_DIR     := .nanotron
NANOTRON_VENV    := $(NANOTRON_DIR)/venv
NANOTRON_STAMP   := $(NANOTRON_VENV)/.installed
NANOTRON_ARCHIVE ?= ../shared/vendor/nanotron-2411b022.tar.gz
NANOTRON_PINS    := numpy==1.26.4 transformers==4.52.4 tokenizers==0.21.4 datasets==3.6.0 pyarrow==19.0.1 \
                    huggingface_hub==0.36.2 datatrove==0.3.0 triton==3.5.1 pybind11==3.1.0 dacite==1.9.2 \
                    pyyaml==6.0.4 safetensors==0.8.0 tqdm==4.70.1 torchtyping==0.1.5 einops==0.8.2 psutil==7.2.2 \
                    jsonschema==4.26.0

nanotron-env: $(NANOTRON_STAMP)

$(NANOTRON_STAMP): Makefile
	test -x $(NANOTRON_VENV)/bin/python || $(PYTHON) -m venv $(NANOTRON_VENV)
	$(NANOTRON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NANOTRON_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(NANOTRON_VENV)/bin/python -m pip install --quiet $(NANOTRON_PINS)
	@if [ -n "$$NANOTRON_HOME" ]; then src="$$NANOTRON_HOME"; \
	else \
	  test -f "$(NANOTRON_ARCHIVE)" || { echo "error: $(NANOTRON_ARCHIVE): no nanotron source archive; set NANOTRON_HOME to a nanotron checkout at the pinned commit" >&2; exit 2; }; \
	  rm -rf $(NANOTRON_DIR)/nanotron && tar -xzf "$(NANOTRON_ARCHIVE)" -C $(NANOTRON_DIR) && \
	  $(PYTHON) -c "import sys, tarfile; print(tarfile.open(sys.argv[1]).pax_headers.get('comment', 'unknown'))" \
	    "$(NANOTRON_ARCHIVE)" > $(NANOTRON_DIR)/nanotron/.commit; \
	  src=$(NANOTRON_DIR)/nanotron; \
	fi; \
	echo "nanotron from $$src"; \
	$(NANOTRON_VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e "$$src" && \
	PATH="$(CURDIR)/$(NANOTRON_VENV)/bin:$$PATH" $(MAKE) --no-print-directory -C "$$src/src/nanotron/data/nemo_dataset"
	touch $@

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

test: env nanotron-env apt-lists
	$(BIN)/python -m pytest -q

test-fast: env nanotron-env
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (lint + formatting) and Snakemake's own linter over the workflow
lint: env
	$(BIN)/ruff check stages tests bench
	$(BIN)/ruff format --check stages tests bench
	$(BIN)/snakemake --lint

# workflow/schemas/config.schema.yaml is generated from the option groups (tests check it is current)
schema: env
	$(BIN)/python -c "from stages.workflow.schema import write_schema_file; write_schema_file()"

# docs/*.md: the tables of measured results rebuilt from results/ (a block whose study is missing is kept)
docs: env
	-$(BIN)/python -m stages.all_findings --results results --out results/all_findings
	$(BIN)/python -m stages.docs --results results --out docs

clean:
	rm -rf results logs benchmarks .snakemake
