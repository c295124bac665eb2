# Aegis: `make run` sets up and serves the demo model; `make test` runs the tests.
GO       ?= go
ORT_LIB  := build/onnxruntime/libonnxruntime.so.1
BIN      := build/aegis
GRPCURL  := build/bin/grpcurl
DEMO     := build/demo-models
HTTP_ADDR ?= 127.0.0.1:8000
GRPC_ADDR ?= 127.0.0.1:8001

export AEGIS_ONNXRUNTIME_LIB ?= $(CURDIR)/$(ORT_LIB)

.PHONY: run doctor test setup build deps tools fixtures proto conformance bench fuzz lint clean

DEMO_KEYS    := build/demo-keys
DEMO_SIGNING := build/demo-signing
DEMO_PKI     := build/demo-pki
DEMO_STATE   := build/demo-state
# As root, the demo server runs as nobody: it can read its models, its
# decryption key and its TLS key, write only its state directory (API keys,
# audit log), and it never sees the signing key.
RUNAS := $(if $(filter 0,$(shell id -u)),setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs,)
DEMO_FLAGS = --model-repository $(DEMO) --identity-file $(DEMO_KEYS)/identity.txt \
	--require-signature --trusted-key $(DEMO_KEYS)/trusted-signer.pub \
	--tls-cert $(DEMO_PKI)/server.crt --tls-key $(DEMO_PKI)/server.key \
	--state-dir $(DEMO_STATE) --policy scripts/demo-policy.yaml --sandbox

## run: fetch and verify ONNX Runtime, build, and serve the digits demo model,
## signed (OpenSSF model signing) and encrypted at rest with demo keys, over
## TLS (a local demo CA in build/demo-pki) to callers with an API key (it
## prints one), auditing every request to build/demo-state/audit. The server
## refuses the model unless its signature verifies, decrypts it only in
## memory, runs sandboxed (no_new_privs, seccomp) and, with --strict, refuses
## to start unless every `aegis doctor` check passes.
run: build $(GRPCURL)
	@mkdir -p $(DEMO_KEYS) $(DEMO_SIGNING) $(DEMO_STATE) && chmod 700 $(DEMO_KEYS) $(DEMO_SIGNING) $(DEMO_STATE)
	@test -f $(DEMO_KEYS)/recipient.txt || $(BIN) keys generate --out $(DEMO_KEYS)/identity.txt > $(DEMO_KEYS)/recipient.txt
	@test -f $(DEMO_SIGNING)/signing.pem || $(BIN) keys generate --signing --out $(DEMO_SIGNING)/signing.pem >/dev/null
	@$(BIN) certs init --dir $(DEMO_PKI) >/dev/null
	@rm -rf $(DEMO) && mkdir -p $(DEMO)/digits/1
	@cp testdata/models/digits/1/model.onnx $(DEMO)/digits/1/
	@$(BIN) model sign --key $(DEMO_SIGNING)/signing.pem $(DEMO)/digits/1 >/dev/null
	@$(BIN) model encrypt --recipients-file $(DEMO_KEYS)/recipient.txt $(DEMO)/digits/1/model.onnx >/dev/null 2>&1
	@rm $(DEMO)/digits/1/model.onnx
	@cp $(DEMO_SIGNING)/signing.pem.pub $(DEMO_KEYS)/trusted-signer.pub && chmod 644 $(DEMO_KEYS)/trusted-signer.pub
	@if [ -n "$(RUNAS)" ]; then chown -R nobody:nogroup $(DEMO_KEYS) $(DEMO_STATE) $(DEMO_PKI) && chgrp -R nogroup $(DEMO) && chmod -R g+rX,g-w,o-w $(DEMO); fi
	@test -s $(DEMO_KEYS)/api-key || { $(RUNAS) $(BIN) keys create --offline --state-dir $(DEMO_STATE) \
		--name demo --role demo --quiet > $(DEMO_KEYS)/api-key.new && mv $(DEMO_KEYS)/api-key.new $(DEMO_KEYS)/api-key; }
	@test -s $(DEMO_KEYS)/admin-api-key || { $(RUNAS) $(BIN) keys create --offline --state-dir $(DEMO_STATE) \
		--name demo-admin --role operator --quiet > $(DEMO_KEYS)/admin-api-key.new && mv $(DEMO_KEYS)/admin-api-key.new $(DEMO_KEYS)/admin-api-key; }
	@chmod 600 $(DEMO_KEYS)/api-key $(DEMO_KEYS)/admin-api-key
	@scripts/demo-usage.sh $(HTTP_ADDR) $(GRPC_ADDR) $(DEMO_PKI)/ca.crt $(DEMO_KEYS)/api-key $(DEMO_KEYS)/admin-api-key
	exec $(RUNAS) $(BIN) serve $(DEMO_FLAGS) --strict --http-addr $(HTTP_ADDR) --grpc-addr $(GRPC_ADDR)

## doctor: check the environment the demo server runs in (strict)
doctor: build
	$(RUNAS) $(BIN) doctor --strict $(DEMO_FLAGS)

## test: vet and run every test with the race detector (installing the
## Debian packages the tests use first, if any is missing)
test: deps setup $(GRPCURL)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

## deps: the Debian packages the tests use (npm, curl, age, softhsm2, libonnx-testdata)
deps:
	scripts/install-deps.sh

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

## bench-load: load performance of a 1 GiB encrypted, signed model against `age -d` and sha256sum
## on this machine (see docs/benchmarks.md); BENCH_LOAD_FLAGS=-size=64MiB for a quicker run.
## Writes build/bench/load/results.md and CPU profiles; needs about 4.1 GiB of disk while it runs, removed after.
.PHONY: bench-load
bench-load: setup
	@mkdir -p build/bench/load
	$(GO) run ./bench/load $(BENCH_LOAD_FLAGS)

## bench-access: what TLS, authentication, authorization and the audit log add per request
## (see docs/benchmarks.md); BENCH_ACCESS_FLAGS=-quick for a smoke run. Writes build/bench/access.md,
## the server's CPU profiles under build/bench/access/, and leaves the audit logs it verified there.
.PHONY: bench-access
bench-access: setup
	@mkdir -p build/bench
	$(GO) run ./bench/access -o build/bench/access.md $(BENCH_ACCESS_FLAGS)

## bench-extraction: model-extraction attacks and defences against the digits victims, over the
## real server's API, under every policy in bench/extraction/policies (see docs/extraction.md);
## BENCH_EXTRACTION_FLAGS=-quick for a smoke run. Writes build/bench/extraction.md.
.PHONY: bench-extraction
bench-extraction: setup
	@mkdir -p build/bench
	$(GO) run ./bench/extraction -o build/bench/extraction.md $(BENCH_EXTRACTION_FLAGS)

## soak: overload behaviour of the real server (see docs/ratelimit.md, "Overload on the real server"):
## its capacity, then Poisson arrivals at three times it for 10 minutes, checking refusal latency,
## admitted p99 and memory; SOAK_FLAGS=-duration=30s for a quicker run. Not part of `make test`.
## Writes build/soak/soak.md and the per-second record build/soak/soak.csv; fails if a target is missed.
.PHONY: soak
soak: setup
	@mkdir -p build/soak
	$(GO) run ./bench/soak -o build/soak/soak.md -csv build/soak/soak.csv $(SOAK_FLAGS)
