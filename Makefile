# chatq's developer tasks. `make test` is what CI runs (.ci/run).

GO          ?= go
BIN         := $(CURDIR)/bin
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck
# PKGS narrows vet, staticcheck and the tests: make test PKGS=./config/...
PKGS        ?= ./...

.PHONY: build test lint vet staticcheck fmtcheck run bench

# build: compile the chatq binary into bin/chatq
build:
	$(GO) build -o bin/chatq ./cmd/chatq

# test: vet, staticcheck, and every test with the race detector
test: vet staticcheck
	$(GO) test -race $(PKGS)

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

# bench: run the benchmarks, no tests
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
