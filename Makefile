# Behavemail: `make demo` runs the demo on 127.0.0.1, `make test` runs the test suite.
# Both create .venv and install what they need; see docs/demo.md.

SHELL := /bin/bash
PYTEST_FLAGS ?= -q -ra --timeout=600

.PHONY: demo test venv test-venv clean-demo

demo:
	scripts/demo.sh

test: test-venv
	scripts/ensure_packages.sh prometheus=prometheus promtool=prometheus chromium=chromium
	.venv/bin/python -m pytest $(PYTEST_FLAGS)

venv:
	scripts/ensure_venv.sh requirements.txt

test-venv:
	scripts/ensure_venv.sh requirements-test.txt

# Remove everything `make demo` generated; data/accounts.csv and data/starter_rules.yaml stay.
clean-demo:
	rm -rf data/prometheus data/logs data/outbox data/demo_history.om
	rm -f data/accounts.db data/behavemail.db data/behavemail.db-journal data/secret_key
