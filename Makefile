# throng — common tasks. `make run` to try it, `make test` for everything CI runs.

CARGO ?= cargo

.PHONY: run build test test-deps lint fmt fuzz bench bench-quick bench-idle bench-agent bench-downlink clean

run: ## Build and start `throng dev` (MQTT on 127.0.0.1:1883, admin on 127.0.0.1:9090)
	$(CARGO) run --release -p throng -- dev

build:
	$(CARGO) build --release -p throng

test-deps: ## Install what the tests need (Mosquitto clients and broker, Redis)
	./scripts/install-test-deps.sh

test: test-deps ## Every test in the workspace, real peers included
	$(CARGO) test --workspace --all-targets

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

fuzz: ## Run each fuzz target for 60 s (needs cargo-fuzz and a nightly toolchain)
	cd fuzz && for t in codec proxy_header handoff_frame; do cargo fuzz run $$t -- -max_total_time=60 || exit 1; done

bench: ## Every standard scenario against throng and Mosquitto, writes BENCHMARKS.md (under 30 minutes)
	./loadtest/bench.sh --write

bench-quick: ## Smoke run of every scenario with small counts (under 3 minutes): no losses allowed
	./loadtest/bench.sh --quick

bench-idle: build ## Idle memory and connect rate: one handler against Mosquitto, same host, same run
	./loadtest/idle-bench.sh --compare --throng "$(CURDIR)/target/release/throng handler --id h0 --mqtt-listen 127.0.0.1:{port}"

bench-agent: build ## Agent + 2 handlers (proxy and fd hand-off) against Mosquitto, per-tier memory and CPU
	./loadtest/cluster-bench.sh --variants mosquitto,proxy,fd

bench-downlink: build ## Downlink throughput through one distributor (XADD and ingest; also the distributor alone)
	./loadtest/downlink-bench.sh --messages 1000000 --variants redis,ingest,sink,sink-ingest

clean:
	$(CARGO) clean
