#!/usr/bin/env bash
# Prints working examples for the demo server started by `make run`.
http=${1:-127.0.0.1:8000}
grpc=${2:-127.0.0.1:8001}
cat <<MSG

Aegis is starting on the digits demo model (REST http://$http, gRPC $grpc).
In another terminal:

  curl -s http://$http/v2/models/digits
  curl -s -X POST http://$http/v2/models/digits/infer -H 'Content-Type: application/json' \\
       -d @testdata/digits/sample.json

  build/bin/grpcurl -plaintext -import-path internal/oip/pb -proto grpc_predict_v2.proto \\
       -d '{"name":"digits"}' $grpc inference.GRPCInferenceService/ModelMetadata
  build/bin/grpcurl -plaintext -import-path internal/oip/pb -proto grpc_predict_v2.proto \\
       -d @ $grpc inference.GRPCInferenceService/ModelInfer < testdata/digits/sample-grpc.json

Stop with Ctrl-C (SIGINT/SIGTERM drain in-flight requests first).

MSG
