# The two commands of the README: `make demo` and `make test`. Everything else supports them.
.PHONY: demo test setup lint controlplane cluster-up cluster-down bench crds

PYTHON ?= python3

setup:
	scripts/setup.sh

demo: setup
	$(PYTHON) -m swell_cli demo

test: setup
	scripts/test.sh

lint:
	ruff check . && ruff format --check . && mypy && lint-imports

controlplane:
	tests/tooling/controlplane/build.sh

cluster-up: controlplane
	$(PYTHON) -m tests.tooling.controlplane.cluster up

cluster-down:
	$(PYTHON) -m tests.tooling.controlplane.cluster down

crds:
	$(PYTHON) -m swell_operator.crdgen

bench:
	$(PYTHON) -m bench
