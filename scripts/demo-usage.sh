#!/usr/bin/env bash
# Prints working examples for the demo server started by `make run`:
#   demo-usage.sh HTTP_ADDR GRPC_ADDR CA_FILE API_KEY_FILE ADMIN_KEY_FILE
http=${1:-127.0.0.1:8000}
grpc=${2:-127.0.0.1:8001}
ca=${3:-build/demo-pki/ca.crt}
keyfile=${4:-build/demo-keys/api-key}
adminfile=${5:-build/demo-keys/admin-api-key}
cat <<MSG

Aegis is starting on the digits demo model: REST https://$http, gRPC $grpc, TLS 1.3 with
the local demo CA ($ca), every request authenticated, authorized and audited.

The demo API key (role "demo": inference and metadata on digits), shown once more here:

  export AEGIS_API_KEY=$(cat "$keyfile")

then, in that terminal:

  curl -s --cacert $ca -H "Authorization: Bearer \$AEGIS_API_KEY" https://$http/v2/models/digits
  curl -s --cacert $ca -H "Authorization: Bearer \$AEGIS_API_KEY" -X POST https://$http/v2/models/digits/infer \\
       -H 'Content-Type: application/json' -d @testdata/digits/sample.json

  build/bin/grpcurl -cacert $ca -H "authorization: Bearer \$AEGIS_API_KEY" \\
       -import-path internal/oip/pb -proto grpc_predict_v2.proto \\
       -d '{"name":"digits"}' $grpc inference.GRPCInferenceService/ModelMetadata
  build/bin/grpcurl -cacert $ca -H "authorization: Bearer \$AEGIS_API_KEY" \\
       -import-path internal/oip/pb -proto grpc_predict_v2.proto \\
       -d @ $grpc inference.GRPCInferenceService/ModelInfer < testdata/digits/sample-grpc.json

Without the key, or with a wrong one, both answer 401 / Unauthenticated. The operator key in
$adminfile manages keys through the admin API:

  AEGIS_API_KEY=\$(cat $adminfile) build/aegis keys list --cacert $ca --server https://$http

Stop with Ctrl-C (SIGINT/SIGTERM drain in-flight requests first). The audit log is in
build/demo-state/audit; check it with
  build/aegis audit verify --key build/demo-state/audit-signing.pub build/demo-state/audit/*.log

MSG
