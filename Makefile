# alliance-fhir developer entry points. The README's two commands are `make demo` and `make test`;
# both create the virtualenv on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-unit schema clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## The main job: score every example response offline and show the scores.
demo: install
	$(BIN)/alliance-fhir instruments list
	$(BIN)/alliance-fhir score examples/*/complete.json examples/*/amended.json --format table
	@echo "Incomplete examples: WAI-SR and HAq-II are prorated (project rule); the 4-line VAS scales are refused:"
	-$(BIN)/alliance-fhir score examples/*/incomplete.json --format table

## The whole test suite (the command CI runs).
test: install
	$(BIN)/python -m pytest

## Chromium (Debian) and LHC-Forms (npm, into .cache/lforms) for the browser tests (pytest -m browser).
.PHONY: browser-deps
browser-deps:
	bash scripts/browser-deps.sh

## Regenerate the mapping JSON Schema after changing alliance_fhir/models.py.
schema: install
	$(BIN)/alliance-fhir instruments schema > mappings/mapping.schema.json

clean:
	rm -rf $(VENV) dist build .pytest_cache .hypothesis
