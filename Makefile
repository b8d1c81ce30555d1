# `make demo` and `make test` work from a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

.PHONY: demo test test-keras3 test-keras3-main test-keras3-late test-tf-keras clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/keras-smart demo

# The suite runs in both Keras flavours, Keras 3 (default) and tf_keras, two processes at a time
# (one per core). Keras 3's run is the longer, so its end-to-end files run as a third part, started
# when the first of the other two ends. Each part's output is printed as a whole when it finishes;
# any part failing fails `test`. `make test-keras3` / `make test-tf-keras` run one flavour.
KERAS3_LATE := tests/test_cli.py tests/test_examples.py tests/test_readme.py

test: $(INSTALLED)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-keras3-main test-tf-keras test-keras3-late

test-keras3: test-keras3-main test-keras3-late

test-keras3-main: $(INSTALLED)
	TF_USE_LEGACY_KERAS=0 $(PYTEST) tests $(addprefix --ignore=,$(KERAS3_LATE))

test-keras3-late: $(INSTALLED)
	TF_USE_LEGACY_KERAS=0 $(PYTEST) $(KERAS3_LATE)

test-tf-keras: $(INSTALLED)
	TF_USE_LEGACY_KERAS=1 $(PYTEST) tests

clean:
	rm -rf $(VENV) *.egg-info
