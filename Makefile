# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench clean

demo: $(VENV)/.demo
	$(BIN)/jupyter-compute demo

test: $(VENV)/.installed lint
	scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check jupyter_compute tests benchmarks
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_submit.py
	$(BIN)/python benchmarks/bench_snapshot.py
	$(BIN)/python benchmarks/bench_docker.py

# Re-install only when the project's metadata changes; compile once so that
# PYTHONDONTWRITEBYTECODE does not make every start recompile the package.
# The JupyterLab extension (labextension/) is built by that install, so its sources count.
$(VENV)/.installed: pyproject.toml labextension/package.json labextension/yarn.lock \
		$(wildcard labextension/src/*.ts labextension/style/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q jupyter_compute
	touch $@

# The demo needs the package alone: not the test weight (Ray, JupyterLab, Chromium) nor
# the sidebar's JavaScript build, so a fresh machine runs it in seconds, not minutes.
$(VENV)/.demo: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -f $(VENV)/.installed || SKIP_JUPYTER_BUILDER=1 $(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q jupyter_compute
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
