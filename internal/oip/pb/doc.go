// Package pb holds the generated gRPC types of the Open Inference Protocol
// (KServe v2): the messages of package inference and the
// GRPCInferenceService client and server. The source is
// grpc_predict_v2.proto in this directory; regenerate the *.pb.go files with
// scripts/gen-proto.sh and do not edit them by hand.
package pb
