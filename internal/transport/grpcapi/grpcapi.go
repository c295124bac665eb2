// Package grpcapi serves the Open Inference Protocol over gRPC
// (inference.GRPCInferenceService), with raw and typed tensor contents.
//
// It is one of the two places (with httpapi) that map errors to status
// codes; clients get a code and a short public message, never a cause.
package grpcapi

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/aegis-inference/aegis/internal/access"
	"github.com/aegis-inference/aegis/internal/apierr"
	"github.com/aegis-inference/aegis/internal/authz"
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
	// Gate is consulted for readiness: not ready while the audit log
	// cannot write. (The interceptors in ServerOptions apply it to calls.)
	Gate   *access.Gate
	Logger *slog.Logger
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

// ServerOptions returns the grpc.Server options that enforce Aegis's limits,
// keep the server up when a handler panics, and pass every call but the
// health probes through the gate (unknown methods included, so they are
// authenticated and audited too). arrived, if not nil, tells when the data
// last read from a peer's connection reached the host
// (netstamp.Listener.Arrived), for the gate's shedding.
func ServerOptions(maxMessageBytes int64, gate *access.Gate, log *slog.Logger, arrived func(peer string) time.Time) []grpc.ServerOption {
	g := gated{gate, arrived}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(maxMessageBytes)),
		grpc.MaxSendMsgSize(int(maxMessageBytes) * 4),
		grpc.ChainUnaryInterceptor(recoverInterceptor(log), gateInterceptor(g, log)),
		grpc.UnknownServiceHandler(unknownHandler(g, log)),
	}
}

// gated is the gate and how to tell when a peer's request arrived.
type gated struct {
	gate    *access.Gate
	arrived func(peer string) time.Time
}

// Health probes stay open.
const (
	methodServerLive  = "/inference.GRPCInferenceService/ServerLive"
	methodServerReady = "/inference.GRPCInferenceService/ServerReady"
)

// begin authenticates a call; the error is the status to return.
func begin(ctx context.Context, g gated) (*access.Ticket, error) {
	id := pipeline.NewRequestID()
	call := access.Call{Transport: "grpc", RequestID: id}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) == 1 {
			call.Creds.Authorization = v[0]
		} else if len(v) > 1 {
			call.Creds.Authorization = "\x00multiple" // refused as malformed
		}
	}
	if p, ok := peer.FromContext(ctx); ok {
		call.Client = p.Addr.String()
		if g.arrived != nil {
			call.Arrived = g.arrived(call.Client)
		}
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			call.Creds.PeerCertificates = ti.State.VerifiedChains[0]
		}
	}
	t, err := g.gate.Begin(ctx, call)
	if err != nil {
		md := metadata.Pairs("x-request-id", id)
		if s := apierr.RetryAfterOf(err); s > 0 {
			md.Set("retry-after", strconv.Itoa(s)) // shed
		}
		grpc.SetHeader(ctx, md)
		return nil, toStatus(err)
	}
	return t, nil
}

// finish writes the call's audit record; a call whose record cannot be
// written fails with Unavailable instead of its response.
func finish(ctx context.Context, t *access.Ticket, err error) error {
	code, msg := codes.OK, ""
	if err != nil {
		st, _ := status.FromError(err)
		code, msg = st.Code(), st.Message()
	}
	if ferr := t.Finish(HTTPStatusOf(code), msg); ferr != nil {
		grpc.SetHeader(ctx, metadata.Pairs("x-request-id", t.RequestID()))
		return toStatus(ferr)
	}
	return err
}

func gateInterceptor(gate gated, log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == methodServerLive || info.FullMethod == methodServerReady {
			return h(ctx, req)
		}
		t, err := begin(ctx, gate)
		if err != nil {
			return nil, err
		}
		resp, err := h(access.WithTicket(ctx, t), req)
		if err = finish(ctx, t, err); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// unknownHandler answers methods the server does not implement, after
// authentication, with Unimplemented, and audits them.
func unknownHandler(gate gated, log *slog.Logger) grpc.StreamHandler {
	return func(srv any, stream grpc.ServerStream) error {
		ctx := stream.Context()
		t, err := begin(ctx, gate)
		if err != nil {
			return err
		}
		return finish(ctx, t, status.Error(codes.Unimplemented, "unknown method"))
	}
}

// HTTPStatusOf maps a gRPC code to the HTTP status the audit log records.
func HTTPStatusOf(c codes.Code) int {
	switch c {
	case codes.OK:
		return 200
	case codes.InvalidArgument, codes.OutOfRange, codes.FailedPrecondition:
		return 400
	case codes.Unauthenticated:
		return 401
	case codes.PermissionDenied:
		return 403
	case codes.NotFound:
		return 404
	case codes.ResourceExhausted:
		return 429
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return 501
	case codes.Unavailable:
		return 503
	case codes.DeadlineExceeded:
		return 504
	}
	return 500
}

// ticket returns the call's ticket.
func ticket(ctx context.Context) *access.Ticket { return access.TicketFrom(ctx) }

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
	return &pb.ServerReadyResponse{Ready: (s.Ready == nil || s.Ready.Load()) && s.Gate.Healthy() == nil}, nil
}

// ServerMetadata implements the RPC.
func (s *Service) ServerMetadata(ctx context.Context, _ *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	ticket(ctx).Authenticated("server_metadata")
	return &pb.ServerMetadataResponse{Name: httpapi.ServerName, Version: httpapi.ServerVersion, Extensions: httpapi.Extensions}, nil
}

// resolve authorizes perm on the named model and version, then finds them.
// A caller not allowed to see a model gets PermissionDenied whether or not
// it exists.
func (s *Service) resolve(ctx context.Context, perm authz.Permission, name, version string) (*repository.Model, *repository.Version, error) {
	if err := ticket(ctx).Authorize(perm, name, version); err != nil {
		return nil, nil, s.fail(ctx, err)
	}
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
	if _, _, err := s.resolve(ctx, authz.Metadata, r.GetName(), r.GetVersion()); err != nil {
		return nil, err
	}
	return &pb.ModelReadyResponse{Ready: true}, nil
}

// ModelMetadata implements the RPC.
func (s *Service) ModelMetadata(ctx context.Context, r *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, v, err := s.resolve(ctx, authz.Metadata, r.GetName(), r.GetVersion())
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
	t := ticket(ctx)
	if err := t.Authorize(authz.Infer, r.GetModelName(), r.GetModelVersion()); err != nil {
		return nil, s.fail(ctx, err)
	}
	req, raw, err := decodeRequest(r, s.Limits)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	if err := t.CheckBatch(pipeline.BatchOf(req)); err != nil {
		return nil, s.fail(ctx, err)
	}
	resp, err := s.Handler.Infer(ctx, req)
	for _, f := range req.Flags {
		t.Flag(f)
	}
	if err != nil {
		t.Tensors(req.Inputs, nil)
		return nil, s.fail(ctx, err)
	}
	defer resp.Release()
	t.Tensors(req.Inputs, resp.Tensors())
	out, err := encodeResponse(resp, raw)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return out, nil
}

// fail logs err under the call's request id, sends the id as the
// x-request-id header, and returns err's status.
func (s *Service) fail(ctx context.Context, err error) error {
	id := ticket(ctx).RequestID()
	md := metadata.Pairs("x-request-id", id)
	if s := apierr.RetryAfterOf(err); s > 0 {
		md.Set("retry-after", strconv.Itoa(s))
	}
	grpc.SetHeader(ctx, md)
	kind, _ := apierr.Public(err)
	// Refusals are the client's doing or overload: every one is in the
	// audit log, and logging each at info would let a flood of bad or
	// excess requests flood the log too.
	level := slog.LevelDebug
	if kind == apierr.Internal {
		level = slog.LevelError
	}
	if s.Logger.Enabled(ctx, level) { // spares boxing the arguments when not
		s.Logger.Log(ctx, level, "request failed", "request_id", id, "kind", kind.String(), "err", err)
	}
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
