# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV ?= .venv
WHEELS ?= ../shared/wheels
BIN := $(VENV)/bin
# Prebuilt torch-scatter / torch-sparse wheels when the folder is there; otherwise pip builds them from source.
FIND_LINKS := $(if $(wildcard $(WHEELS)/*.whl),--find-links $(WHEELS),)

.PHONY: demo test fuzz install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
# Without prebuilt wheels, torch-scatter and torch-sparse are built against the torch just installed
# (their builds import it, so not in pip's isolated build environment).
ifeq ($(FIND_LINKS),)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation torch-scatter torch-sparse
endif
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(FIND_LINKS) -e '.[test]'
	touch $@

demo: install
	$(BIN)/tide demo

test: install
	$(BIN)/python -m pytest

# The long fuzz of the wire format: EXAMPLES batches of drawn records through the real broker and
# 20 × EXAMPLES drawn records through each decoder test (the suite draws 5 and 300).
EXAMPLES ?= 150
fuzz: install
	TIDE_FUZZ_EXAMPLES=$(EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider --timeout 3600 -s tests/integration/test_fuzz.py tests/schemas/test_decode_fuzz.py

clean:
	rm -rf $(VENV) .tide
