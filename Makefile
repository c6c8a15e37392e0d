# r8im — build, test and dependency targets. `make help` lists them.
SHELL := /bin/bash
GO    ?= go

# Binaries built with `go install` (MinIO) are cached here across runs;
# internal/testenv looks here first (R8IM_BIN_DIR).
BIN_DIR ?= $(HOME)/.cache/r8im/bin
export R8IM_BIN_DIR := $(BIN_DIR)

# Pinned, known-good MinIO (internal/testenv.MinIOVersion must match; a test checks).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
# distribution v3, built into BIN_DIR as `registry` (Debian's 2.8 is
# docker-registry); internal/testenv.RegistryV3Version must match (a test checks).
REGISTRY_V3_VERSION := v3.1.2
# command:package pairs installed from Debian when the command is missing.
# podman + runc run images in tests (internal/testenv.RunImage), storage vfs.
APT_DEPS := redis-server:redis-server docker-registry:docker-registry skopeo:skopeo umoci:umoci docker-compose:docker-compose openssl:openssl curl:curl podman:podman runc:runc
# Debian packages checked by name: the static busybox testenv.RunnableBase
# puts in an image (a dynamic busybox would not run there).
APT_PKGS := busybox-static
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The same flags as the container image build (the Dockerfile runs `make
# build`): static, reproducible paths, the commit for --version (Go's own VCS
# stamp is off under -buildvcs=false and without .git in a build context).
COMMIT      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BUILD_FLAGS := -trimpath -ldflags "-s -w -X github.com/r8im/r8im/internal/cli.commit=$(COMMIT)"

FUZZTIME ?= 20s
# make test runs every fuzz target for this many executions on top of the
# committed corpora. A count, not a duration: Go 1.26's fuzz coordinator can
# fail a duration run with "context deadline exceeded" when the machine is
# busy as the time runs out (go.dev/issue/75804, fixed in Go 1.27).
TEST_FUZZTIME ?= 20000x
# make soak: internal/reliability's TestSoak at full size (make test runs it small).
SOAK_TASKS   ?= 500
SOAK_WORKERS ?= 3
SOAK_KILLS   ?= 5
SOAK_FAULTS  ?= 0.10

# make lint: staticcheck, pinned, installed into BIN_DIR like the other tools.
STATICCHECK_VERSION := v0.8.2

# make bench: tools compared against, pinned (crane at go.mod's go-containerregistry).
CRANE_VERSION  := v0.22.1
REGCTL_VERSION := v0.11.7
# BENCH_SIZES=64MiB BENCH_RUNS=1 make bench for a quick smoke run.
BENCH_SIZES ?= 1GiB,4GiB
BENCH_RUNS  ?= 3
BENCH_OUT   ?= bench/results.json

.PHONY: help deps build test lint vet fmt-check compose-check staticcheck fuzz bench bench-tools

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install what the tests run (idempotent): Debian packages, pinned MinIO and distribution v3
	@missing=""; for pair in $(APT_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	for pkg in $(APT_PKGS); do \
	  dpkg -s "$$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@if [ ! -x "$(BIN_DIR)/minio" ]; then \
	  echo "deps: building MinIO $(MINIO_VERSION) into $(BIN_DIR) (about 4 minutes, once)"; \
	  mkdir -p "$(BIN_DIR)" && cd /tmp && GOFLAGS= GOBIN="$(BIN_DIR)" $(GO) install github.com/minio/minio@$(MINIO_VERSION); \
	fi
	@if ! "$(BIN_DIR)/registry" --version 2>/dev/null | grep -q " $(REGISTRY_V3_VERSION)"; then \
	  echo "deps: building distribution $(REGISTRY_V3_VERSION) into $(BIN_DIR)/registry (about a minute, once)"; \
	  mkdir -p "$(BIN_DIR)" && cd /tmp && GOFLAGS= GOBIN="$(BIN_DIR)" $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_V3_VERSION); \
	fi
	@echo "deps: redis-server, docker-registry, skopeo, umoci, docker-compose, openssl, curl, podman, runc, busybox-static, minio and registry (v3) are installed"

build: ## build r8im, worker and enqueue into ./bin (static)
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/ ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# .env.example leaves the secrets empty: the check fills them from the
# environment, and makes sure compose refuses to start without them.
COMPOSE_SECRETS := MINIO_ROOT_PASSWORD=x R8IM_WORKER_S3_SECRET_KEY=x R8IM_EVENT_SECRETS=x
compose-check: ## validate docker-compose.yml with Debian's docker-compose
	env $(COMPOSE_SECRETS) docker-compose -f docker-compose.yml --env-file .env.example config -q
	@if docker-compose -f docker-compose.yml --env-file .env.example config -q 2>/dev/null; then \
	  echo "compose-check: docker-compose.yml starts without secrets; every secret must be \$${VAR:?…}"; exit 1; fi

staticcheck: ## staticcheck (pinned STATICCHECK_VERSION, installed into BIN_DIR on first use)
	@if ! "$(BIN_DIR)/staticcheck" -version 2>/dev/null | grep -qF "($(patsubst v%,%,$(STATICCHECK_VERSION)))"; then \
	  echo "lint: installing staticcheck $(STATICCHECK_VERSION) into $(BIN_DIR)"; mkdir -p "$(BIN_DIR)"; \
	  cd /tmp && GOFLAGS= GOBIN="$(BIN_DIR)" $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi
	"$(BIN_DIR)/staticcheck" ./...

lint: vet fmt-check compose-check staticcheck ## go vet, gofmt, compose checks and staticcheck

test: deps bench-tools lint build ## install deps, lint, build the binaries as the Dockerfile does, then run every test with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)

fuzz: ## run each fuzz target for FUZZTIME (default 20s) on top of the committed corpus
	$(GO) test -run '^$$' -fuzz '^FuzzRewriteTar$$' -fuzztime $(FUZZTIME) ./imageops/
	$(GO) test -run '^$$' -fuzz '^FuzzResolveLinks$$' -fuzztime $(FUZZTIME) ./imageops/
	$(GO) test -run '^$$' -fuzz '^FuzzParseReference$$' -fuzztime $(FUZZTIME) ./imageops/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSignature$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePayload$$' -fuzztime $(FUZZTIME) ./jobs/
	$(GO) test -run '^$$' -fuzz '^FuzzJSONDepth$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzText$$' -fuzztime $(FUZZTIME) ./internal/untrusted/

.PHONY: soak
soak: deps ## SOAK_TASKS affix tasks (500) on SOAK_WORKERS workers, SOAK_KILLS kills, SOAK_FAULTS registry faults; see docs/reliability.md
	R8IM_SOAK_TASKS=$(SOAK_TASKS) R8IM_SOAK_WORKERS=$(SOAK_WORKERS) R8IM_SOAK_KILLS=$(SOAK_KILLS) R8IM_SOAK_FAULT_RATE=$(SOAK_FAULTS) \
	  $(GO) test -race -count=1 -timeout 90m -run '^TestSoak$$' -v ./internal/reliability/

bench-tools: ## install the pinned crane and regctl that make bench compares against
	@mkdir -p "$(BIN_DIR)"
	@if [ "$$("$(BIN_DIR)/crane" version 2>/dev/null)" != "$(CRANE_VERSION)" ]; then \
	  echo "bench: installing crane $(CRANE_VERSION) into $(BIN_DIR)"; \
	  cd /tmp && GOFLAGS= GOBIN="$(BIN_DIR)" $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION); \
	fi
	@if ! "$(BIN_DIR)/regctl" version --format '{{.VCSTag}}' 2>/dev/null | grep -qx "$(REGCTL_VERSION)"; then \
	  echo "bench: installing regctl $(REGCTL_VERSION) into $(BIN_DIR)"; \
	  cd /tmp && GOFLAGS= GOBIN="$(BIN_DIR)" $(GO) install github.com/regclient/regclient/cmd/regctl@$(REGCTL_VERSION); \
	fi

bench: deps bench-tools ## end-to-end benchmark on loopback services (BENCH_SIZES, BENCH_RUNS, BENCH_OUT); see docs/performance.md
	BENCH_SIZES=$(BENCH_SIZES) BENCH_RUNS=$(BENCH_RUNS) BENCH_OUT=$(BENCH_OUT) $(GO) run ./internal/bench/cmd/r8im-bench

.PHONY: demo
demo: ## publish a demo image end to end with nothing but Go (worker --dev --demo)
	$(GO) run ./cmd/worker --dev --demo
