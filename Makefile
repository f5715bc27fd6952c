# OpenClaw Gateway — `make run` starts the embedded stack, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# LiteLLM Proxy, the peer in `make bench` (docs/benchmarks.md): its own virtual environment,
# never the project's. Installed once, again when bench/peer-requirements.txt changes.
PEER_DIR := var/bench-peer
PEER_VENV := $(PEER_DIR)/venv
PEER_STAMP := $(PEER_DIR)/.installed
# PostgreSQL and Redis for the second test pass (the machine's own services).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/openclaw
TEST_REDIS_URL ?= redis://127.0.0.1:6379/7

.PHONY: run test imports test-embedded test-services bench bench-dashboard bench-billing lock peer-lock clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py run_gateway

# The whole suite twice: on the embedded default (SQLite, in-memory layer), then on
# PostgreSQL + Redis. With CI set, the second pass is required and a missing
# service is a failure; without it, the pass is skipped when the services are down.
test: imports test-embedded test-services

# The import contracts (docs/architecture.md, "Layers"): an upward import or a cycle fails.
imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

test-embedded: $(STAMP)
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest

test-services: $(STAMP)
	@if [ -n "$$CI" ] || $(PY) -m tests.support.services --quiet; then \
		$(PY) -c "import redis; redis.from_url('$(TEST_REDIS_URL)').flushdb()" && \
		DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest; \
	else \
		echo "PostgreSQL or Redis not reachable: skipping the services pass (CI=1 makes it required)"; \
	fi

bench: $(STAMP) $(PEER_STAMP)
	$(PY) -m bench.run

# A failed install never fails `make bench`: its log is kept in $(PEER_DIR)/install-failed.log,
# the benchmark runs the other rows and says why the peer's row is missing, and the next
# `make bench` tries the install again.
$(PEER_STAMP): bench/peer-requirements.txt
	@mkdir -p $(PEER_DIR)
	@rm -rf $(PEER_VENV) $(PEER_DIR)/install-failed.log
	@echo "Installing LiteLLM Proxy into $(PEER_VENV) for the benchmark's peer row (once; log: $(PEER_DIR)/install.log)"
	@if $(PYTHON) -m venv $(PEER_VENV) > $(PEER_DIR)/install.log 2>&1 && \
		$(PEER_VENV)/bin/python -m pip install --disable-pip-version-check --no-input --require-hashes \
			-r bench/peer-requirements.txt >> $(PEER_DIR)/install.log 2>&1; then \
		touch $@; \
	else \
		mv $(PEER_DIR)/install.log $(PEER_DIR)/install-failed.log; \
		echo "LiteLLM Proxy could not be installed (see $(PEER_DIR)/install-failed.log); make bench runs without its row"; \
	fi

# The dashboard's log pages on 1,000,000 audit events and usage records (docs/benchmarks.md).
# PostgreSQL only: it creates and drops its own database on DATABASE_URL's server.
bench-dashboard: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m bench.dashboard

# The usage rollups on 1,000,000 usage records of 50 orgs, SQLite then PostgreSQL (docs/benchmarks.md).
# On PostgreSQL it creates and drops its own database on DATABASE_URL's server.
bench-billing: $(STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m bench.billing

# Recompile the pinned, hashed requirement files after editing the .in files.
lock: $(STAMP)
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras -o requirements.txt requirements.in
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras -o requirements-dev.txt requirements-dev.in

# The benchmark's peer (LiteLLM Proxy, bench/peer-requirements.in): not part of `make lock`.
peer-lock: $(STAMP)
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links -o bench/peer-requirements.txt bench/peer-requirements.in

clean:
	rm -rf $(VENV) .pytest_cache $(PEER_DIR)
