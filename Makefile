# Commands for users: `make demo` (the pipeline, once), `make up` (the Airflow UI) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo up test lint install system-deps clean

demo: install system-deps
	$(BIN)/python scripts/demo.py

up: install system-deps
	$(BIN)/python scripts/up.py

test: install system-deps
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check plugins dev dags tests bench scripts

install: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e . -e dev  # the runtime package, and the development tools (dev/)
	touch $@

system-deps:
	scripts/system-deps.sh

# The state of `make demo` and `make up`: $CCAT_STATE_DIR, else .ccat (where `ccat devdb` finds it too).
# Only what they create there is removed, in case CCAT_STATE_DIR names a directory holding more.
STATE_DIR := $(or $(CCAT_STATE_DIR),.ccat)

clean:
	-$(BIN)/ccat devdb stop
	rm -rf $(addprefix $(STATE_DIR)/,postgres data s3 airflow ui topology.yaml)
	-[ ! -d $(STATE_DIR) ] || rmdir $(STATE_DIR)
