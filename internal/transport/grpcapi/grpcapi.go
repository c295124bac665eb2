// Package grpcapi serves the Open Inference Protocol over gRPC
// (inference.GRPCInferenceService), with raw and typed tensor contents.
//
// It is one of the two places (with httpapi) that map errors to status
// codes; clients get a code and a short public message, never a cause.
package grpcapi

import (
	"context"
	"log/slog"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/infer"
	"github.com/aegis-inference/aegis/internal/oip"
	"github.com/aegis-inference/aegis/internal/oip/pb"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/repository"
	"github.com/aegis-inference/aegis/internal/transport/httpapi"
)

// Options configure the gRPC service.
type Options struct {
	Registry *repository.Registry
	Handler  pipeline.Handler
	Limits   oip.Limits
	Ready    *atomic.Bool
	Logger   *slog.Logger
}

// Service implements pb.GRPCInferenceServiceServer.
type Service struct {
	pb.UnimplementedGRPCInferenceServiceServer
	Options
}

var _ pb.GRPCInferenceServiceServer = (*Service)(nil)

// New returns the service.
func New(opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Service{Options: opts}
}

// ServerOptions returns the grpc.Server options that enforce Aegis's limits
// and keep the server up when a handler panics.
func ServerOptions(maxMessageBytes int64, log *slog.Logger) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(maxMessageBytes)),
		grpc.MaxSendMsgSize(int(maxMessageBytes) * 4),
		grpc.ChainUnaryInterceptor(recoverInterceptor(log)),
	}
}

func recoverInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				log.Error("panic serving request", "method", info.FullMethod, "panic", v)
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(ctx, req)
	}
}

// ServerLive implements the RPC.
func (s *Service) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

// ServerReady implements the RPC.
func (s *Service) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.Ready == nil || s.Ready.Load()}, nil
}

// ServerMetadata implements the RPC.
func (s *Service) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: httpapi.ServerName, Version: httpapi.ServerVersion, Extensions: httpapi.Extensions}, nil
}

func (s *Service) resolve(name, version string) (*repository.Model, *repository.Version, error) {
	m, ok := s.Registry.Get(name)
	if !ok {
		return nil, nil, toStatus(infer.NotFound(name, version))
	}
	v, err := s.Registry.Resolve(name, version)
	if err != nil {
		return nil, nil, toStatus(infer.NotFound(name, version))
	}
	return m, v, nil
}

// ModelReady implements the RPC.
func (s *Service) ModelReady(ctx context.Context, r *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	if _, _, err := s.resolve(r.GetName(), r.GetVersion()); err != nil {
		return nil, err
	}
	return &pb.ModelReadyResponse{Ready: true}, nil
}

// ModelMetadata implements the RPC.
func (s *Service) ModelMetadata(ctx context.Context, r *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, v, err := s.resolve(r.GetName(), r.GetVersion())
	if err != nil {
		return nil, err
	}
	md := httpapi.MetadataOf(m, v)
	out := &pb.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform, Properties: md.Properties}
	for _, t := range md.Inputs {
		out.Inputs = append(out.Inputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range md.Outputs {
		out.Outputs = append(out.Outputs, &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	return out, nil
}

// ModelInfer implements the RPC.
func (s *Service) ModelInfer(ctx context.Context, r *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	req, raw, err := decodeRequest(r, s.Limits)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	resp, err := s.Handler.Infer(ctx, req)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	defer resp.Release()
	out, err := encodeResponse(resp, raw)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return out, nil
}

// fail logs err under a new request id, sends the id as the x-request-id
// header, and returns err's status.
func (s *Service) fail(ctx context.Context, err error) error {
	id := pipeline.NewRequestID()
	grpc.SetHeader(ctx, metadata.Pairs("x-request-id", id))
	kind, _ := apierr.Public(err)
	level := slog.LevelInfo
	if kind == apierr.Internal {
		level = slog.LevelError
	}
	s.Logger.Log(ctx, level, "request failed", "request_id", id, "kind", kind.String(), "err", err)
	return toStatus(err)
}

// toStatus maps an error to a gRPC status with its public message.
func toStatus(err error) error {
	kind, msg := apierr.Public(err)
	return status.Error(CodeOf(kind), msg)
}

// CodeOf maps an error kind to a gRPC code.
func CodeOf(k apierr.Kind) codes.Code {
	switch k {
	case apierr.InvalidArgument:
		return codes.InvalidArgument
	case apierr.NotFound:
		return codes.NotFound
	case apierr.Unavailable:
		return codes.Unavailable
	case apierr.Unimplemented:
		return codes.Unimplemented
	case apierr.Unauthenticated:
		return codes.Unauthenticated
	case apierr.PermissionDenied:
		return codes.PermissionDenied
	case apierr.ResourceExhausted, apierr.TooLarge:
		return codes.ResourceExhausted
	case apierr.DeadlineExceeded:
		return codes.DeadlineExceeded
	case apierr.Canceled:
		return codes.Canceled
	}
	return codes.Internal
}
