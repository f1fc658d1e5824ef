# training-filter developer commands. Every target uses the project's virtual environment (.venv).
PYTHON ?= .venv/bin/python
VENV_STAMP := .venv/.installed
# The compiled fast path is built in place by the editable install; rebuilt when its source changes
# (the import would otherwise keep loading the stale shared library without a word).
BUILT := .venv/.fastpath-built
# The README recipes' tools (pyspark, apache-flink, pyarrow: the [recipes] extra), installed by make recipes-test only.
RECIPES_STAMP := .venv/.recipes-installed

.PHONY: help install demo test unit integration faults bench recipes-test deploy-check image image-test image-clean lint kafka-start kafka-stop registry-start registry-stop clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $(VENV_STAMP) $(BUILT)

$(BUILT): $(VENV_STAMP) consumer/fastpath.py consumer/fastpath.pxd setup.py
	$(PYTHON) setup.py -q build_ext --inplace > /dev/null
	touch $(BUILT)

install: $(VENV_STAMP)  ## create .venv and install the project with its dev tools

demo: $(BUILT)  ## run the whole pipeline on a local Kafka with a generated stream
	$(PYTHON) -m consumer.cli demo

test: $(BUILT)  ## all tests but the image's and the recipes': unit, integration against the real Kafka and schema registry, faults, deploy
	$(PYTHON) -m pytest -q tests --ignore=tests/image --ignore=tests/recipes

unit: $(BUILT)  ## the unit tests only (no broker)
	$(PYTHON) -m pytest -q tests/unit

integration: $(BUILT)  ## the integration tests only
	$(PYTHON) -m pytest -q tests/integration

faults: $(BUILT)  ## the fault-injection suite, long form (prints the table; CI runs the short form)
	$(PYTHON) -m tests.faults.run

bench: $(BUILT)  ## the benchmark (a few minutes; writes tests/benchmarks/results/latest.json)
	$(PYTHON) -m pip install -q -e '.[bench]'
	$(PYTHON) -m tests.benchmarks.bench
	taskset -c 0 $(PYTHON) -m tests.benchmarks.bloom_candidates tests/benchmarks/results/bloom-candidates.json

$(RECIPES_STAMP): $(VENV_STAMP)
	.venv/bin/pip install -q -e '.[dev,recipes]'
	touch $(RECIPES_STAMP) $(BUILT)

recipes-test: $(RECIPES_STAMP) $(BUILT)  ## the README's reader recipes (Python, Spark, Flink, Java) run as written against the real service; installs [recipes]
	$(PYTHON) -m pytest -q tests/recipes

deploy-check: $(VENV_STAMP)  ## validate manifests, CRs, alert rules, dashboard and Dockerfile (part of make test)
	$(PYTHON) -m pytest -q tests/deploy

image: $(BUILT)  ## build the container image with podman on a debootstrap base (root; installs podman if missing)
	$(PYTHON) -m deploy.image.build --install-tools

image-test: $(BUILT)  ## build the image if needed, then test it: help, check, run against the local Kafka
	$(PYTHON) -m deploy.image.build --install-tools
	$(PYTHON) -m pytest -q tests/image

image-clean: $(VENV_STAMP)  ## remove the image, the stand-in base and the project's podman storage
	$(PYTHON) -m deploy.image.build --clean

lint: $(VENV_STAMP)  ## ruff and mypy
	$(PYTHON) -m ruff check consumer rules tests deploy/image
	$(PYTHON) -m mypy

kafka-start: $(VENV_STAMP)  ## start the local broker and print its address (stays up)
	PYTHON=$(PYTHON) deploy/local-kafka/kafka.sh start

kafka-stop: $(VENV_STAMP)  ## stop the local broker started by kafka-start
	PYTHON=$(PYTHON) deploy/local-kafka/kafka.sh stop

registry-start: $(VENV_STAMP)  ## start the local schema registry (built on first use) and print its URL
	PYTHON=$(PYTHON) deploy/schema-registry/registry.sh start

registry-stop: $(VENV_STAMP)  ## stop the local schema registry started by registry-start
	PYTHON=$(PYTHON) deploy/schema-registry/registry.sh stop

clean:  ## remove the virtual environment and caches
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
