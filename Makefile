# fhirgate — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
FUZZTIME ?= 5m

.PHONY: run test build bench bench-postgres fuzz devidp clean

## run: build and serve with config.example.json on the embedded default (SQLite, in-process cache)
run: build
	./bin/fhirgate serve -config config.example.json

## build: build bin/fhirgate and bin/fhirgate-devidp
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/fhirgate ./cmd/fhirgate
	$(GO) build -o bin/fhirgate-devidp ./cmd/fhirgate-devidp

## test: vet and run every test with the race detector, starting the services the tests need
test:
	$(GO) vet ./...
	./scripts/test-env.sh $(GO) test -race -count=1 ./...

## bench: the load tool: server, test IdP (20 ms) and a private Redis on loopback; prints one table.
##        BENCHFLAGS passes flags, e.g. BENCHFLAGS="-json bench.json -memory-tokens 100000"
bench:
	$(GO) run ./cmd/fhirgate-bench $(BENCHFLAGS)

## bench-postgres: the same on a throwaway PostgreSQL database (provided like `make test` does)
bench-postgres:
	./scripts/test-env.sh ./scripts/bench-postgres.sh $(BENCHFLAGS)

## fuzz: run each fuzz target for FUZZTIME (default 5m)
fuzz:
	$(GO) test ./fhir -run '^$$' -fuzz '^FuzzParseFHIRUser$$' -fuzztime $(FUZZTIME)
	$(GO) test ./extauth -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

## devidp: run the development IdP on 127.0.0.1:8090
devidp: build
	./bin/fhirgate-devidp serve

clean:
	rm -rf bin
