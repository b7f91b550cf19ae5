# Two entry points for a fresh machine (see README.md):
#   make demo   set up, then explain and fix the example project's failing tests
#   make test   set up, then run the whole test suite
VENV ?= .venv

.PHONY: setup demo test test-long bench
setup:
	scripts/setup.sh

# exit 1 only means some failure has no verified fix (expected of the tiny default model)
demo: setup
	$(VENV)/bin/ledex fix examples/inventory || [ $$? -eq 1 ]

# two pytest-xdist workers, a test file each at a time (module-scoped fixtures stay whole): the
# suite waits on sandboxes, editors and model processes more than it computes (CI at ff8bc1e:
# 11 min of CPU in 21 min of wall on 2 cores)
test: setup
	$(VENV)/bin/python -m pytest -ra --durations=25 -n 2 --dist loadfile
	@if [ -x extension/ci.sh ]; then extension/ci.sh; fi

# the tests marked long (a whole train-gate-promote loop, real-model extra cases): ~10 min more
test-long: setup
	$(VENV)/bin/python -m pytest -ra -m long

bench: setup
	$(VENV)/bin/python bench/run_all.py
