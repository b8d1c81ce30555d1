# `make demo` and `make test` work from a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

.PHONY: demo test test-keras3 test-tf-keras clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/keras-smart demo

# The suite runs in both Keras flavours, Keras 3 (default) and tf_keras, side by side: one process
# per core. Each flavour's output is printed as a whole when it finishes; either failing fails `test`.
test: $(INSTALLED)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-keras3 test-tf-keras

test-keras3: $(INSTALLED)
	TF_USE_LEGACY_KERAS=0 $(PYTEST) tests

test-tf-keras: $(INSTALLED)
	TF_USE_LEGACY_KERAS=1 $(PYTEST) tests

clean:
	rm -rf $(VENV) *.egg-info
