# `make demo` and `make test` work from a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

.PHONY: demo test test-keras3 test-keras3-main test-keras3-late test-tf-keras test-tf-keras-main test-tf-keras-late clean

$(INSTALLED): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(INSTALLED)

demo: $(INSTALLED)
	TF_CPP_MIN_LOG_LEVEL=3 $(BIN)/keras-smart demo

# The suite runs in both Keras flavours, Keras 3 (default) and tf_keras, two processes at a time
# (one per core), each flavour in two parts so that the two cores stay busy to the end: tf_keras's
# run is the longer (Keras 3 resets its session faster), so its late part also takes the slow
# training and evaluation files. Each part's output is printed as a whole when it finishes; any part
# failing fails `test`. `make test-keras3` / `make test-tf-keras` run one flavour.
LATE := tests/test_cli.py tests/test_examples.py tests/test_readme.py
TF_KERAS_LATE := $(LATE) tests/test_training.py tests/test_multi_exit_training.py tests/test_evaluation.py \
	tests/test_evaluation_exits.py

test: $(INSTALLED)
	$(MAKE) --no-print-directory -j2 --output-sync=target \
		test-tf-keras-main test-keras3-main test-tf-keras-late test-keras3-late

test-keras3: test-keras3-main test-keras3-late

test-tf-keras: test-tf-keras-main test-tf-keras-late

test-keras3-main: $(INSTALLED)
	TF_USE_LEGACY_KERAS=0 $(PYTEST) tests $(addprefix --ignore=,$(LATE))

test-keras3-late: $(INSTALLED)
	TF_USE_LEGACY_KERAS=0 $(PYTEST) $(LATE)

test-tf-keras-main: $(INSTALLED)
	TF_USE_LEGACY_KERAS=1 $(PYTEST) tests $(addprefix --ignore=,$(TF_KERAS_LATE))

test-tf-keras-late: $(INSTALLED)
	TF_USE_LEGACY_KERAS=1 $(PYTEST) $(TF_KERAS_LATE)

clean:
	rm -rf $(VENV) *.egg-info
