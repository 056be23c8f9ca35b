# chatq's developer tasks. `make test` is what CI runs (.ci/run).

GO          ?= go
BIN         := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck
# PKGS narrows vet, staticcheck and the tests: make test PKGS=./config/...
PKGS        ?= ./...

.PHONY: build test test-faults lint vet staticcheck fmtcheck run bench bench-quick bench-deps bench-go bench-ratelimit bench-senders bench-scaleout console test-console

# build: compile the chatq binary into bin/chatq. chatq --version prints
# VERSION (git describe's unless given: make build VERSION=v1.2.0) and COMMIT.
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o bin/chatq ./cmd/chatq

# test: vet, staticcheck, every test with the race detector, then the
# console's browser tests
test: vet staticcheck bench-deps
	$(GO) test -race $(PKGS)
	$(MAKE) test-console

# test-faults: the fault suite (internal/faults): real chatq processes on a
# private redis-server, with a worker, Redis and the API killed mid-run and
# a hostile upstream; prints per case the messages sent, lost, duplicated
# and in the wrong status, and fails if a bound is broken (about three
# minutes; needs redis-server). CHATQ_FAULTS_LOGS=dir keeps the logs.
test-faults:
	CHATQ_TEST_FAULTS=1 $(GO) test -count=1 -v -timeout 15m -run '^TestFaults$$' ./internal/faults/

# The console (internal/console): its sources and npm toolchain in web/,
# its build in dist/, committed and embedded in the binary.
CONSOLE_DIR := internal/console/web
# CONSOLE_ARTIFACTS is where make test-console leaves a screenshot of each
# page (git-ignored).
CONSOLE_ARTIFACTS ?= $(CURDIR)/test-artifacts/console

# console: rebuild the console's embedded files from its sources, with the
# packages package-lock.json pins; commit internal/console/dist after it
# (a Go test fails while the build is older than the sources).
console:
	npm ci --prefix $(CONSOLE_DIR) --no-audit --no-fund
	npm run --prefix $(CONSOLE_DIR) build

# test-console: the console's browser tests: a real chatq dev driven by
# Debian's chromium (apt-get install chromium) through playwright-core,
# with node's test runner. Without node or chromium they are skipped, and
# fail with CI=true.
test-console:
	@if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$CI" = true ]; then echo "test-console: node and npm are required"; exit 1; fi; \
		echo "npm not found: the console's browser tests are skipped"; exit 0; \
	fi; \
	npm ci --prefix $(CONSOLE_DIR) --no-audit --no-fund && \
	CHATQ_CONSOLE_ARTIFACTS=$(CONSOLE_ARTIFACTS) npm test --prefix $(CONSOLE_DIR)

# lint: fail on unformatted files, then vet and staticcheck
lint: fmtcheck vet staticcheck

vet:
	$(GO) vet $(PKGS)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

# Installed into bin/ so that the version is the one pinned here, whatever
# the machine has; it comes through the Go module proxy.
$(STATICCHECK):
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmtcheck:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt needed on:"; echo "$$unformatted"; exit 1; \
	fi

# run: everything in one process, with an embedded Redis and sandbox
run:
	$(GO) run ./cmd/chatq dev

# bench: the performance figures of the README: chatq as deployed (the
# sandbox, api and worker as processes of the chatq binary) beside bare
# asynq and a minimal BullMQ sender on a private redis-server, with Redis
# commands and CPU per message (about twenty minutes; needs redis-server,
# and node for BullMQ). BENCHFLAGS adds flags, e.g.
# BENCHFLAGS="--json bench.json --messages 200000"
bench: bench-deps
	$(GO) run ./cmd/chatq bench $(BENCHFLAGS)

# bench-quick: the same measurements, smaller (about two minutes on a quiet
# machine)
bench-quick: bench-deps
	$(GO) run ./cmd/chatq bench --quick $(BENCHFLAGS)

# bench-deps: BullMQ, which chatq bench measures beside chatq, installed from
# the npm registry at the versions package-lock.json pins. Without npm it is
# left out, and chatq bench says so.
BULLMQ_DIR := internal/bench/bullmq
bench-deps: $(BULLMQ_DIR)/node_modules/.package-lock.json

$(BULLMQ_DIR)/node_modules/.package-lock.json: $(BULLMQ_DIR)/package-lock.json $(BULLMQ_DIR)/package.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $(BULLMQ_DIR) --no-audit --no-fund; \
	else \
		echo "npm not found: chatq bench will leave BullMQ out"; \
	fi

# bench-go: the Go benchmarks of the hot paths (validation, status updates,
# webhooks, limiter calls), no tests
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# bench-ratelimit: flow control under load (4 workers sharing an 80/s limit
# for 30 s behind a bulk backlog) and the cost of asynq's polling intervals;
# needs redis-server
bench-ratelimit:
	$(GO) test -run '^$$' -bench '^Benchmark(FlowControl|PollingIntervals)$$' -benchtime 1x -timeout 10m ./worker/

# bench-senders: fairness between two tenants' senders at 50/s each, chatq
# as deployed: tenant A queues 100,000 bulk messages, then tenant B 1,000
# and a transactional one every 100 ms; prints B's rate against its limit,
# A's meanwhile, and B's transactional latency (about a minute; needs
# redis-server). BENCHFLAGS adds flags, e.g. BENCHFLAGS="--backlog 20000"
bench-senders:
	$(GO) run ./cmd/chatq bench senders $(BENCHFLAGS)

# bench-scaleout: send throughput of two workers on one Redis against a
# three-master Redis Cluster, with the bulk queue in one shard and in three
# (README, Scaling out; a few minutes; needs redis-server and redis-cli)
bench-scaleout:
	$(GO) test -run '^$$' -bench '^BenchmarkSendThroughput$$' -benchtime 1x -count 3 -timeout 30m -v ./internal/scaleout/
