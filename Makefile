# okta-jwt-filter: build, test and run. `make test` needs only Rust (rustup) and Python 3.

SHELL       := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO       ?= cargo
PYTHON3     ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
WASM_TARGET := wasm32-wasip1
WASM        := $(TARGET_DIR)/$(WASM_TARGET)/release/okta_jwt_filter.wasm
# What rustc enables by default for wasm32-wasip1 (and Envoy's V8 runs).
WASM_FEATURES := --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
                 --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types
# Extra pytest arguments, e.g. `make test-integration PYTEST_ARGS="-k paths -x"`.
PYTEST_ARGS ?=

.PHONY: all setup rust-setup build build-tools cli run test test-unit test-integration \
        fmt lint compose-config compose-render compose-test images oci clean distclean \
        bench bench-memory bench-crates bench-unitcost bench-hostcalls

all: build

## setup: the wasm target, rustfmt/clippy, and the Python venv (Envoy, pytest, requests)
setup: rust-setup $(VENV)/.installed

# Idempotent and offline when everything is there already.
rust-setup:
	@if command -v rustup >/dev/null; then \
	  rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET); \
	  installed=$$(rustup component list --installed); \
	  for c in rustfmt clippy; do grep -q "^$$c" <<<"$$installed" || rustup component add $$c; done; \
	else \
	  echo "rustup not found: assuming the toolchain already has $(WASM_TARGET), rustfmt and clippy"; \
	fi

# A file target: redone only when the requirements change.
$(VENV)/.installed: tests/integration/requirements.txt
	$(PYTHON3) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	touch $@

## build: the filter, release at opt-level 3 (wasm-opt too, if it is on PATH)
build: rust-setup
	$(CARGO) build --release --target $(WASM_TARGET) -p okta-jwt-filter --lib
	@if command -v wasm-opt >/dev/null; then \
	  wasm-opt -Oz --strip-debug $(WASM_FEATURES) -o $(WASM).opt $(WASM) && mv $(WASM).opt $(WASM) \
	    || { rm -f $(WASM).opt; echo "wasm-opt failed; keeping cargo's output"; }; \
	fi
	@ls -l $(WASM)

## cli: the okta-jwt command-line tool (native), target/release/okta-jwt
cli:
	$(CARGO) build --release -p okta-jwt-filter --bin okta-jwt

## build-tools: the mock Okta IdP and the echo upstream
build-tools:
	$(CARGO) build --release -p mock-idp

## run: the demo stack on ports 10000 (Envoy), 9901 (admin), 8080 (IdP), 8081 (upstream)
run: setup build build-tools cli
	$(PY) demo/stack.py

## test: unit tests, then the integration suite
test: test-unit test-integration

test-unit:
	$(CARGO) test --workspace

test-integration: setup build build-tools
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

## bench: the filter next to Envoy's jwt_authn (with and without its token cache) and the
## wasm floor (benches/floor) in one Envoy, under wrk; prints a table and writes
## target/bench/latest.json. BENCH_QUICK=1 for a smoke run; BENCH_SECONDS, BENCH_TOKENS,
## BENCH_WASM_ALT and the rest are described in tests/bench/bench.py.
bench: setup build build-tools bench-crates bench-wrk
	$(PY) tests/bench/bench.py

## bench-crates: the bench's own proxy-wasm modules (benches/floor, benches/unitcost), each
## its own Cargo workspace, into $(TARGET_DIR)/bench-crates
bench-crates: rust-setup
	for crate in floor unitcost; do \
	  CARGO_TARGET_DIR=$(abspath $(TARGET_DIR))/bench-crates $(CARGO) build --release \
	    --target $(WASM_TARGET) --manifest-path benches/$$crate/Cargo.toml; \
	done

## bench-unitcost: the V8 cost of one host call of each kind (tests/bench/unitcost.py)
bench-unitcost: setup bench-crates bench-wrk
	$(PY) tests/bench/unitcost.py

## bench-hostcalls: the host calls and VM callbacks of one request, counted from Envoy's
## wasm trace log (tests/bench/hostcalls.py)
bench-hostcalls: setup build build-tools bench-crates
	$(PY) tests/bench/hostcalls.py

.PHONY: bench-wrk
bench-wrk:
	@command -v wrk >/dev/null || { \
	  if [[ $$(id -u) == 0 ]] && command -v apt-get >/dev/null; then \
	    echo "installing wrk"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends wrk >/dev/null \
	      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk >/dev/null; }; \
	  else \
	    echo "make bench needs wrk: install it (Debian: sudo apt-get install wrk) or put it on PATH" >&2; \
	    exit 1; \
	  fi; }

## bench-memory: issue 5's memory check (100k distinct tokens, then BENCH_MEMORY_SECONDS=300)
bench-memory:
	$(MAKE) bench BENCH_MEMORY=1

## fuzz: every cargo-fuzz target (fuzz/) for FUZZ_SECONDS each, one after the other on one
## core, from fuzz/seeds and the corpus earlier runs grew; a crash stops it, its input saved
## under fuzz/artifacts/TARGET/ (fuzz/README.md). FUZZ_TARGETS picks some; fuzz-smoke is CI's.
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 10
FUZZ_TARGETS       ?= token jwks config path_match query_cookie records crypto dpop introspection \
                      decision
.PHONY: fuzz fuzz-build fuzz-smoke
# Stable Rust without a sanitizer (-s none); cargo fuzz keeps debug assertions and overflow
# checks on.
fuzz-build:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(CARGO) fuzz build -s none

fuzz: fuzz-build
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t artifacts/$$t seeds/$$t; \
	  log=artifacts/$$t/last-run.log; \
	  if $(CARGO) fuzz run -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
	       -print_final_stats=1 -artifact_prefix=artifacts/$$t/ >$$log 2>&1; then \
	    echo "fuzz $$t: $$(grep -E '^#[0-9]+[[:space:]]+DONE' $$log | tail -1)"; \
	  else \
	    tail -n 40 $$log; \
	    echo "fuzz $$t FAILED: log fuzz/$$log, input under fuzz/artifacts/$$t/" >&2; exit 1; \
	  fi; \
	done

fuzz-smoke:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

## fuzz-envoy: random and mutated requests at the filter in real Envoy for FUZZ_ENVOY_SECONDS
## (FUZZ_ENVOY_SEED to repeat a run); fails on a pass without a valid token, a 5xx, a hang or a
## VM failure (tests/hardening/fuzz_envoy.py, docs/hardening.md)
FUZZ_ENVOY_SECONDS ?= 60
.PHONY: fuzz-envoy
fuzz-envoy: setup build build-tools
	FUZZ_ENVOY_SECONDS=$(FUZZ_ENVOY_SECONDS) $(PY) tests/hardening/fuzz_envoy.py

## soak: valid tokens at half the filter's peak rate for SOAK_SECONDS, keys rotated every 60 s
## and a 20 s JWKS outage; zero non-2xx, flat RSS, key fetches as the cache rules predict
## (tests/hardening/soak.py, docs/hardening.md; writes target/soak/)
SOAK_SECONDS ?= 600
.PHONY: soak
soak: setup build build-tools
	@command -v wrk >/dev/null || { echo "make soak needs wrk (Debian: apt-get install wrk)" >&2; exit 1; }
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) tests/hardening/soak.py

fmt:
	$(CARGO) fmt --all

lint: rust-setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) -p okta-jwt-filter -- -D warnings

## compose-config: docker-compose.yml is valid and docker/envoy.yaml is current
compose-config:
	docker/compose.sh config

## compose-render: regenerate docker/envoy.yaml (commit it) after an envoy/*.tmpl change
compose-render:
	$(PYTHON3) docker/render_compose.py

## images: the compose stack's images from local build outputs, no registry (docs/compose.md)
images: setup build-tools
	docker/compose.sh images

## compose-test: the stack in containers: images, up, the basic scenarios from the tests
## service, the compose-only scenarios from the host, teardown (docs/compose.md)
compose-test: setup build build-tools
	WASM=$(WASM) docker/compose.sh test

## oci: the filter as a one-layer Wasm OCI image (Istio, Envoy Gateway); prints its sha256
oci: setup build
	WASM=$(WASM) docker/compose.sh oci

clean:
	$(CARGO) clean
	rm -rf .pytest_cache tests/integration/.pytest_cache
	find tests envoy -name __pycache__ -type d -prune -exec rm -rf {} +

## distclean: clean, and the venv too
distclean: clean
	rm -rf $(VENV)
