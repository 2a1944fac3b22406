# glm-gateway — developer entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv from requirements/lock.txt (exact pins, hash-checked) on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The interpreter .venv is built on: Debian's CPython 3.11 (/usr/bin/python3.11, with
# python3.11-venv) when it is there, else python3. Debian's interpreter has libpython linked
# in; a build against the shared library without --enable-optimizations (pyenv's default)
# runs the gateway's own code ~20% slower (bench/inproc.py). Choose another:
# `make install PYTHON=/path/to/python3.11` (3.11 or newer).
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip, venv' >/dev/null 2>&1 \
	&& echo /usr/bin/python3.11 || echo python3)
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

# Every downloaded file is checked against the lock's sha256 (--require-hashes), the locked
# pip first (requirements/pip.txt: the venv's own may be too old for the rest). The project
# itself is then built from the work tree with the locked setuptools: no build isolation, no
# index, nothing unhashed fetched.
$(STAMP): pyproject.toml requirements/lock.txt requirements/pip.txt
	@echo "glm-gateway: creating $(VENV) on $(PYTHON) (first run only, ~30 s)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/pip.txt
	@echo "glm-gateway: installing the pinned, hash-checked dependencies (requirements/lock.txt)"
	$(PY) -m pip install -q --require-hashes -r requirements/lock.txt
	$(PY) -m pip install -q --no-index --no-build-isolation --no-deps -e .
	touch $(STAMP)
	@echo "glm-gateway: $(VENV) ready"

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/glm-gateway serve --demo

test: $(STAMP)
	bash tests/support/system-deps.sh
	bash tests/agents/install.sh
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
