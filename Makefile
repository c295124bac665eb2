# Aegis: `make run` sets up and serves the demo model; `make test` runs the tests.
GO       ?= go
ORT_LIB  := build/onnxruntime/libonnxruntime.so.1
BIN      := build/aegis
GRPCURL  := build/bin/grpcurl
DEMO     := build/demo-models
HTTP_ADDR ?= 127.0.0.1:8000
GRPC_ADDR ?= 127.0.0.1:8001

export AEGIS_ONNXRUNTIME_LIB ?= $(CURDIR)/$(ORT_LIB)

.PHONY: run test setup build deps tools fixtures proto conformance bench fuzz lint clean

DEMO_KEYS := build/demo-keys

## run: fetch and verify ONNX Runtime, build, and serve the digits demo model,
## signed (OpenSSF model signing) and encrypted at rest with demo keys; the
## server refuses it unless the signature verifies, and decrypts it only in memory
run: build $(GRPCURL)
	@mkdir -p $(DEMO_KEYS) && chmod 700 $(DEMO_KEYS)
	@test -f $(DEMO_KEYS)/recipient.txt || $(BIN) keys generate --out $(DEMO_KEYS)/identity.txt > $(DEMO_KEYS)/recipient.txt
	@test -f $(DEMO_KEYS)/signing.pem || $(BIN) keys generate --signing --out $(DEMO_KEYS)/signing.pem >/dev/null
	@rm -rf $(DEMO) && mkdir -p $(DEMO)/digits/1
	@cp testdata/models/digits/1/model.onnx $(DEMO)/digits/1/
	@$(BIN) model sign --key $(DEMO_KEYS)/signing.pem $(DEMO)/digits/1 >/dev/null
	@$(BIN) model encrypt --recipients-file $(DEMO_KEYS)/recipient.txt $(DEMO)/digits/1/model.onnx >/dev/null 2>&1
	@rm $(DEMO)/digits/1/model.onnx
	@scripts/demo-usage.sh $(HTTP_ADDR) $(GRPC_ADDR)
	exec $(BIN) serve --model-repository $(DEMO) --identity-file $(DEMO_KEYS)/identity.txt \
		--require-signature --trusted-key $(DEMO_KEYS)/signing.pem.pub \
		--http-addr $(HTTP_ADDR) --grpc-addr $(GRPC_ADDR)

## test: vet and run every test with the race detector
test: setup $(GRPCURL)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

## setup: the ONNX Runtime library, fetched from npm and checked against the pinned digest
setup: $(ORT_LIB)

$(ORT_LIB): scripts/setup-onnxruntime.sh internal/runtime/onnx/libonnxruntime.sha256
	scripts/setup-onnxruntime.sh

build: setup
	$(GO) build -o $(BIN) ./cmd/aegis

## grpcurl, the real gRPC client the README and tests use (version pinned in go.mod)
$(GRPCURL): go.mod
	GOBIN=$(CURDIR)/build/bin $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl

## fixtures: regenerate the committed ONNX fixtures (needs Debian python3-onnx, python3-sklearn)
fixtures:
	/usr/bin/python3 scripts/fixtures/gen_fixtures.py
	/usr/bin/python3 scripts/fixtures/train_digits.py

## proto: regenerate the gRPC code (needs Debian protobuf-compiler)
proto:
	scripts/gen-proto.sh

clean:
	rm -rf build

## bench: serving benchmarks against bare ONNX Runtime and a transport floor (see docs/benchmarks.md);
## BENCH_FLAGS=-quick for a smoke run. Writes build/bench/results.md and the server's CPU profiles.
bench: setup
	@mkdir -p build/bench
	$(GO) run ./bench/serving -o build/bench/results.md $(BENCH_FLAGS)

## conformance: the whole ONNX backend test data (Debian libonnx-testdata: node, simple,
## pytorch-converted) in-process and over REST JSON, REST binary, gRPC typed and gRPC raw;
## writes build/conformance-report.md and fails if a case passing in-process fails over a transport.
conformance: setup
	@mkdir -p build
	$(GO) test -count=1 -timeout 60m -run '^TestConformance$$' ./conformance \
		-args -conformance.full -conformance.report=$(CURDIR)/build/conformance-report.md
	@cat build/conformance-summary.txt
