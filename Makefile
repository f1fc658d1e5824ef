# training-filter developer commands. Every target uses the project's virtual environment (.venv).
PYTHON ?= .venv/bin/python
VENV_STAMP := .venv/.installed
# The compiled fast path is built in place by the editable install; rebuilt when its source changes
# (the import would otherwise keep loading the stale shared library without a word).
BUILT := .venv/.fastpath-built
# The recipes' tools (pyspark, apache-flink, pyarrow: the [recipes] extra), installed by make recipes-test only.
RECIPES_STAMP := .venv/.recipes-installed

.PHONY: help install tools browser demo test unit integration faults bench deploy-check image image-test image-clean recipes-test lint docs kafka-start kafka-stop registry-start registry-stop clean clean-tools

# The external tools the tests run, at pinned versions, built into a project-local, git-ignored folder
# (no sudo, nothing system-wide). Each Go tool is installed into a folder named after its version,
# which is its stamp: a second `make tools` does nothing, and a changed version builds anew.
# .tools/bin holds links to the pinned versions; tests/deploy/tools.py looks there first.
# The Go module and build caches are the user's own (~/go/pkg/mod, ~/.cache/go-build).
TOOLS ?= $(CURDIR)/.tools
TOOLS_BIN := $(TOOLS)/bin
KUSTOMIZE_VERSION := v5.7.1
PROMETHEUS_VERSION := v0.316.0
CYCLONUS_VERSION := v0.5.6
KUBE_SCORE_VERSION := v1.20.0
GO_CHECK = @command -v go >/dev/null || { echo "make tools needs Go (1.26.7 or newer) on PATH" >&2; exit 1; }
GO_INSTALL = GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN=$(dir $@) go install
# promtool and prometheus report the pinned module version (--version, /api/v1/status/buildinfo)
PROMETHEUS_LDFLAGS := -ldflags=-X=github.com/prometheus/common/version.Version=$(PROMETHEUS_VERSION)
GO_TOOLS := kustomize promtool prometheus cyclonus kube-score
NPM_STAMP := deploy/validate/node_modules/.installed

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV_STAMP): pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -e '.[dev]'
	touch $(VENV_STAMP) $(BUILT)

$(BUILT): $(VENV_STAMP) consumer/wire/fastpath.py consumer/wire/fastpath.pxd consumer/consents/fingerprints.py consumer/consents/fingerprints.pxd setup.py
	.venv/bin/pip install -q --no-deps -e . > /dev/null  # an isolated build with Cython, as on first install
	touch $(BUILT)

install: $(VENV_STAMP)  ## create .venv and install the project with its dev tools

$(TOOLS)/kustomize@$(KUSTOMIZE_VERSION)/kustomize:
	$(GO_CHECK)
	$(GO_INSTALL) sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(TOOLS)/promtool@$(PROMETHEUS_VERSION)/promtool:
	$(GO_CHECK)
	$(GO_INSTALL) $(PROMETHEUS_LDFLAGS) github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_VERSION)

# The server, for evaluating the alert rules against the running service. Built without the
# builtinassets tag: the API works, the web UI is not embedded (no Node build of the UI here).
$(TOOLS)/prometheus@$(PROMETHEUS_VERSION)/prometheus:
	$(GO_CHECK)
	$(GO_INSTALL) $(PROMETHEUS_LDFLAGS) github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION)

$(TOOLS)/cyclonus@$(CYCLONUS_VERSION)/cyclonus:
	$(GO_CHECK)
	$(GO_INSTALL) github.com/mattfenwick/cyclonus/cmd/cyclonus@$(CYCLONUS_VERSION)

$(TOOLS)/kube-score@$(KUBE_SCORE_VERSION)/kube-score:
	$(GO_CHECK)
	$(GO_INSTALL) github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION)

$(TOOLS_BIN)/kustomize: $(TOOLS)/kustomize@$(KUSTOMIZE_VERSION)/kustomize
$(TOOLS_BIN)/promtool: $(TOOLS)/promtool@$(PROMETHEUS_VERSION)/promtool
$(TOOLS_BIN)/prometheus: $(TOOLS)/prometheus@$(PROMETHEUS_VERSION)/prometheus
$(TOOLS_BIN)/cyclonus: $(TOOLS)/cyclonus@$(CYCLONUS_VERSION)/cyclonus
$(TOOLS_BIN)/kube-score: $(TOOLS)/kube-score@$(KUBE_SCORE_VERSION)/kube-score
$(addprefix $(TOOLS_BIN)/,$(GO_TOOLS)):
	@mkdir -p $(TOOLS_BIN)
	ln -sfn ../$(patsubst $(TOOLS)/%,%,$<) $@

$(NPM_STAMP): deploy/validate/package.json deploy/validate/package-lock.json
	@command -v npm >/dev/null || { echo "make tools needs Node.js and npm on PATH" >&2; exit 1; }
	npm ci --prefix deploy/validate --no-audit --no-fund --loglevel=error
	touch $@

tools: $(addprefix $(TOOLS_BIN)/,$(GO_TOOLS)) $(NPM_STAMP)  ## build the deploy-check tools into .tools (pinned; cached)

# The report's browser test (tests/integration/test_report.py) renders the page in Debian's chromium, the one
# tool that apt installs (so as root, as the image's tools): nothing to do when a chromium is on PATH or
# TF_TEST_CHROMIUM names one; otherwise, not as root, it says what to run.
browser:  ## install Debian's chromium for the report's browser test if it is missing (apt-get, as root)
	@if [ -n "$$TF_TEST_CHROMIUM" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "browser: apt-get install chromium" >&2; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "the report's browser test needs chromium: run \`make browser\` as root, or apt-get install chromium" >&2; \
		exit 1; \
	fi

demo: $(BUILT)  ## run the whole pipeline on a local Kafka with a generated stream
	$(PYTHON) -m consumer.cli demo

# Two workers (pytest-xdist), each test file on one: most tests wait on the broker, not the CPU.
# TEST_WORKERS=0 runs them in this process, one after the other.
TEST_WORKERS ?= 2

test: $(BUILT) tools browser  ## all tests but the image's and the Spark/Flink/Java recipes': unit, integration against the real Kafka and schema registry, faults, deploy
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests --ignore=tests/image --ignore=tests/recipes

unit: $(BUILT) tools  ## the in-process suite (no broker): pytest -m "not integration", with its coverage floors
	$(PYTHON) -m pytest -q -m "not integration" tests --cov=consumer/service --cov=consumer/datapath \
		--cov-report=term --cov-report=json:.coverage.json
	$(PYTHON) -m tests.coverage_floor .coverage.json

integration: $(BUILT) browser  ## the integration tests only
	$(PYTHON) -m pytest -q tests/integration

faults: $(BUILT) tools  ## the fault-injection suite, long form (prints the table; CI runs the short form)
	$(PYTHON) -m tests.faults.run

bench: $(BUILT)  ## the benchmark (a few minutes; writes tests/benchmarks/results/latest.json)
	$(PYTHON) -m pip install -q -e '.[bench]'
	$(PYTHON) -m tests.benchmarks.bench
	taskset -c 0 $(PYTHON) -m tests.benchmarks.bloom_candidates tests/benchmarks/results/bloom-candidates.json
	taskset -c 0 $(PYTHON) -m tests.benchmarks.consents  # the consent set at 10 and 100 million (about 1.3 GB)

$(RECIPES_STAMP): $(VENV_STAMP)
	.venv/bin/pip install -q -e '.[dev,recipes]'
	touch $(RECIPES_STAMP) $(BUILT)

recipes-test: $(RECIPES_STAMP) $(BUILT)  ## the reader recipes of docs/recipes (Python, Spark, Flink, Java) run as written against the real service; installs [recipes]
	$(PYTHON) -m pytest -q tests/recipes

deploy-check: $(VENV_STAMP) tools  ## validate manifests, CRs, alert rules, dashboard and Dockerfile (part of make test)
	$(PYTHON) -m pytest -q tests/deploy

image: $(BUILT)  ## build the container image with podman on a debootstrap base (root; installs podman if missing)
	$(PYTHON) -m deploy.image.build --install-tools

image-test: $(BUILT)  ## build the image if needed, then test it: help, check, run against the local Kafka
	$(PYTHON) -m deploy.image.build --install-tools
	$(PYTHON) -m pytest -q tests/image

image-clean: $(VENV_STAMP)  ## remove the image, the stand-in base and the project's podman storage
	$(PYTHON) -m deploy.image.build --clean

# The paths ruff checks and formats; CI runs make lint (.ci/run), pre-commit the same ruff on staged files.
LINT_PATHS := consumer rules tests deploy/image

lint: $(VENV_STAMP)  ## ruff check, ruff format --check, mypy, and the generated docs up to date
	$(PYTHON) -m ruff check $(LINT_PATHS)
	$(PYTHON) -m ruff format --check $(LINT_PATHS)
	$(PYTHON) -m mypy
	$(PYTHON) -m consumer.devtools.docs --check

docs: $(VENV_STAMP)  ## rewrite the generated tables of the docs (settings, metrics, alerts, benchmark figures)
	$(PYTHON) -m consumer.devtools.docs

kafka-start: $(VENV_STAMP)  ## start the local broker and print its address (stays up)
	PYTHON=$(PYTHON) deploy/local-kafka/kafka.sh start

kafka-stop: $(VENV_STAMP)  ## stop the local broker started by kafka-start
	PYTHON=$(PYTHON) deploy/local-kafka/kafka.sh stop

registry-start: $(VENV_STAMP)  ## start the local schema registry (built on first use) and print its URL
	PYTHON=$(PYTHON) deploy/schema-registry/registry.sh start

registry-stop: $(VENV_STAMP)  ## stop the local schema registry started by registry-start
	PYTHON=$(PYTHON) deploy/schema-registry/registry.sh stop

clean:  ## remove the virtual environment and caches (not the tools: see clean-tools)
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info

clean-tools:  ## remove the tools built by make tools
	rm -rf $(TOOLS) deploy/validate/node_modules
