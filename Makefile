# Two commands on a fresh machine: `make up` runs opsflow, `make test` passes the tests.
VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed

.PHONY: up test lint system-packages bench clean

# The first install takes a few minutes: say so, and let pip show what it fetches.
$(STAMP): pyproject.toml
	@echo "installing opsflow and its dependencies into $(VENV) (a few minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install --progress-bar off -e '.[test]'
	touch $(STAMP)

# Debian packages the tests and benchmarks talk to (sshd, rsync, rclone, ...); root only.
system-packages:
	sh tests/support/install-system-packages.sh

up: $(STAMP)
	$(VENV)/bin/opsflow up

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) system-packages lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Every benchmark, one after the other (each prints its figures and the ratio to its peer);
# not the 30-minute soak (bench/soak.py), which is run on its own beside a test suite.
bench: $(STAMP) system-packages
	for script in bench/*.py; do name=$$(basename $$script .py); \
	  case $$name in soak|running_up) continue;; esac; \
	  $(VENV)/bin/python -m bench.$$name || exit 1; done

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
