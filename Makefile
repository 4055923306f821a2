# One environment in .venv/; `make demo` is the main job, `make test` the test suite.
#
# oqcompile is installed in editable mode: the Python files of oqcompile/, passes/ and models/
# are imported from this checkout (an edit is what the next run uses), while the op library is
# built by CMake into build/ and installed into .venv. `make setup` reinstalls only when
# pyproject.toml or a file under runtime_ops/ changed (CMake then recompiles only what changed),
# or when Python modules were added or removed (the install maps every module to its file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT := out
DEPS_STAMP := $(VENV)/.deps-installed
LIBRARY_STAMP := $(VENV)/.oq-library-built
LIBRARY_SOURCES := $(shell find runtime_ops -type f) CMakeLists.txt
MODULE_LIST := $(VENV)/.python-modules

.PHONY: setup demo test clean FORCE

$(DEPS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch pinned to the CPU build; a bare requirement may pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0 scikit-build-core
	$(BIN)/pip install -q --no-build-isolation -e ".[test]"
	touch $@

$(LIBRARY_STAMP): $(DEPS_STAMP) $(LIBRARY_SOURCES) $(MODULE_LIST)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# Rewritten only when the set of Python files changes.
$(MODULE_LIST): FORCE | $(DEPS_STAMP)
	@find oqcompile passes models -name '*.py' | sort > $@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

setup: $(LIBRARY_STAMP)

demo: setup
	$(BIN)/python benchmarks/demo.py --out $(OUT)

# One worker per core (at most 4: a real-model module holds a few GiB), a module per worker at a
# time, so module-scoped compiles are made once; the real-model modules are collected first.
test: setup
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(OUT) build
