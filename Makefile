# alliance-fhir developer entry points. The README's two commands are `make demo` and `make test`;
# both create the virtualenv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HAPI_PORT ?= 8080
export HAPI_PORT
HAPI_URL := http://127.0.0.1:$(HAPI_PORT)/fhir
# make demo-ehr: two local HAPI servers, one playing the EHR, one the results store
EHR_PORT ?= 8081
RESULTS_PORT ?= 8082
EHR_URL := http://127.0.0.1:$(EHR_PORT)/fhir
RESULTS_URL := http://127.0.0.1:$(RESULTS_PORT)/fhir

.PHONY: install demo demo-ehr demo-ehr-stop demo-offline test test-scale lint docs schema clean hapi-start hapi-stop bench bench-quick

install: $(STAMP)

## What `make demo` needs is the package alone (no test, Spark or docs tooling): a fresh machine runs the
## demo after one small install; `make test`, `lint` and `docs` add the dev extra to the same venv.
RUN_STAMP := $(VENV)/.run-stamp
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## The main job: start the local HAPI FHIR server, publish the instruments, post a synthetic
## caseload, sync, sync again (nothing to write), and print the summaries.
demo: $(RUN_STAMP) hapi-start
	$(BIN)/alliance-fhir demo --server $(HAPI_URL)

## Two servers: a local HAPI plays the EHR (a stand-in: plain HAPI, not a vendor's EHR) and another is the
## results store. check prints both roles and the write-back plan; the demo's people, sessions and responses
## go to the EHR, the scores and signals to the store, and the EHR gets one note per session.
demo-ehr: $(RUN_STAMP)
	@HAPI_PORT=$(EHR_PORT) bash hapi/ctl.sh start >/dev/null
	@HAPI_PORT=$(RESULTS_PORT) bash hapi/ctl.sh start >/dev/null
	$(BIN)/alliance-fhir check --server $(EHR_URL) --results-server $(RESULTS_URL)
	$(BIN)/alliance-fhir demo --server $(EHR_URL) --results-server $(RESULTS_URL)
	@echo "Stop both servers: make demo-ehr-stop EHR_PORT=$(EHR_PORT) RESULTS_PORT=$(RESULTS_PORT)"

demo-ehr-stop:
	@HAPI_PORT=$(EHR_PORT) bash hapi/ctl.sh stop
	@HAPI_PORT=$(RESULTS_PORT) bash hapi/ctl.sh stop

## Score the example responses offline (no server).
demo-offline: install
	$(BIN)/alliance-fhir instruments list
	$(BIN)/alliance-fhir score examples/*/complete.json examples/*/amended.json --format table
	@echo "Incomplete examples: WAI-SR and HAq-II are prorated (project rule); the unfinished VAS forms are in progress, so refused:"
	-$(BIN)/alliance-fhir score examples/*/incomplete.json --format table

## The whole test suite (the command CI runs): unit, integration (real local HAPI) and browser tests.
test: install browser-deps
	$(BIN)/python -m pytest

## The full-size proofs left out of make test for CI's time budget (pytest -m scale): the 10,000-response back-fill.
test-scale: install
	$(BIN)/python -m pytest -m scale

## Lint and types (CI runs this before the tests): ruff check and ruff format --check; mypy --strict on the package; mypy on tests and
## benchmarks with bodies checked (check_untyped_defs) but no annotations required (pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests benchmarks

## The API and user reference (mkdocs + mkdocstrings), warnings as errors; the site lands in site/.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The local HAPI FHIR JPA server (R4) from hapi/: built on first use, started in the background.
hapi-start:
	@bash hapi/ctl.sh start

hapi-stop:
	@bash hapi/ctl.sh stop

## Chromium (Debian) and LHC-Forms (npm, into .cache/lforms) for the browser tests (pytest -m browser).
.PHONY: browser-deps
browser-deps:
	bash scripts/browser-deps.sh

## Benchmarks (figures and ratios, never assertions): scoring in-process, sync against a local HAPI.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.bench_scoring --cli
	$(BIN)/python -m benchmarks.bench_sync

## CI smoke: both scripts in quick mode (well under 2 minutes each), figures not asserted.
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.bench_scoring --quick --cli --out benchmarks/results/scoring-quick.json
	$(BIN)/python -m benchmarks.bench_sync --quick --out benchmarks/results/sync-quick.json

## Regenerate the JSON Schemas (mappings, prompts) after changing their models.
schema: install
	$(BIN)/alliance-fhir instruments schema > mappings/mapping.schema.json
	$(BIN)/alliance-fhir instruments form-map-schema > form-maps/form-map.schema.json
	$(BIN)/alliance-fhir prompts schema > prompts/prompts.schema.json

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis
