# r8im — build, test and dependency targets. `make help` lists them.
SHELL := /bin/bash
GO    ?= go

# Binaries built with `go install` (MinIO) are cached here across runs;
# internal/testenv looks here first (R8IM_BIN_DIR).
BIN_DIR ?= $(HOME)/.cache/r8im/bin
export R8IM_BIN_DIR := $(BIN_DIR)

# Pinned, known-good MinIO (internal/testenv.MinIOVersion must match; a test checks).
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
# command:package pairs installed from Debian when the command is missing.
APT_DEPS := redis-server:redis-server docker-registry:docker-registry skopeo:skopeo umoci:umoci docker-compose:docker-compose openssl:openssl curl:curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The same flags as the container image build: static, reproducible paths.
BUILD_FLAGS := -trimpath -ldflags "-s -w"

FUZZTIME ?= 20s

.PHONY: help deps build test lint vet fmt-check compose-check fuzz

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install what the tests run (idempotent): Debian packages, pinned MinIO
	@missing=""; for pair in $(APT_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
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
	@echo "deps: redis-server, docker-registry, skopeo, umoci, docker-compose, openssl, curl and minio are installed"

build: ## build r8im, worker and enqueue into ./bin (static)
	CGO_ENABLED=0 $(GO) build $(BUILD_FLAGS) -o bin/ ./cmd/...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

compose-check: ## validate docker-compose.yml with Debian's docker-compose
	docker-compose -f docker-compose.yml --env-file .env.example config -q

lint: vet fmt-check compose-check ## go vet, gofmt and compose checks

test: deps lint ## install deps, lint, then run every test with the race detector
	$(GO) test -race -count=1 -timeout 20m ./...

fuzz: ## run each fuzz target for FUZZTIME (default 20s) on top of the committed corpus
	$(GO) test -run '^$$' -fuzz '^FuzzRewriteTar$$' -fuzztime $(FUZZTIME) ./imageops/
	$(GO) test -run '^$$' -fuzz '^FuzzParseReference$$' -fuzztime $(FUZZTIME) ./imageops/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSignature$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./events/
	$(GO) test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) ./events/
