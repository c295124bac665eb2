#!/usr/bin/env bash
# Regenerates the Go code of the Open Inference Protocol gRPC API:
# internal/oip/pb/grpc_predict_v2.proto -> grpc_predict_v2.pb.go and
# grpc_predict_v2_grpc.pb.go beside it. The generated files are committed;
# run this after editing the .proto.
#
# Needs protoc (Debian package protobuf-compiler) and go. Installs the pinned
# protoc-gen-go and protoc-gen-go-grpc into build/bin with `go install`
# (skipped when the pinned versions are already there). Keep the pins in step
# with google.golang.org/protobuf and google.golang.org/grpc in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."

protoc_gen_go_version=v1.36.12     # google.golang.org/protobuf
protoc_gen_go_grpc_version=v1.6.2  # google.golang.org/grpc/cmd/protoc-gen-go-grpc

bin="$PWD/build/bin"
mkdir -p "$bin"

if ! command -v protoc >/dev/null 2>&1; then
  echo "gen-proto: protoc is required (Debian package protobuf-compiler)" >&2
  exit 1
fi

# install_plugin NAME PACKAGE VERSION: go install PACKAGE@VERSION into build/bin
# unless build/bin/NAME already reports VERSION.
install_plugin() {
  local name=$1 pkg=$2 version=$3 have=""
  if [ -x "$bin/$name" ]; then
    have=$("$bin/$name" --version 2>/dev/null | awk '{print $NF}')
  fi
  if [ "$have" != "$version" ] && [ "v$have" != "$version" ]; then
    echo "gen-proto: installing $pkg@$version" >&2
    GOBIN="$bin" go install "$pkg@$version"
  fi
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$protoc_gen_go_version"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$protoc_gen_go_grpc_version"

dir=internal/oip/pb
rm -f "$dir"/*.pb.go
PATH="$bin:$PATH" protoc \
  --proto_path="$dir" \
  --go_out="$dir" --go_opt=paths=source_relative \
  --go-grpc_out="$dir" --go-grpc_opt=paths=source_relative \
  "$dir"/*.proto

echo "gen-proto: regenerated $(cd "$dir" && ls *.pb.go | tr '\n' ' ')" >&2
