package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// check sends every workload once to every instance over both transports:
// every answer must be byte-identical to the baseline's (whose sizes every
// later response must have). Then every instance that authenticates must
// refuse a request without a credential, on both transports.
func (b *bench) check() error {
	for _, w := range b.rep.work {
		var wantJSON []byte
		var wantRaw [][]byte
		for _, in := range instances {
			name := fmt.Sprintf("%s, %s", in.name, w)
			rd, err := newRESTDriver(b.target(in.name, restJSON), w, -1)
			if err != nil {
				return err
			}
			body, err := rd.doStatus()
			body = bytes.Clone(body)
			b.sent[in.name] += rd.sent()
			rd.close()
			if err != nil {
				return fmt.Errorf("%s, REST: %w", name, err)
			}
			if rd.proto != "HTTP/1.1" {
				return fmt.Errorf("%s, REST: answered over %s, want HTTP/1.1 as on every path", name, rd.proto)
			}
			gd, err := newGRPCDriver(b.target(in.name, grpcRaw), w, -1)
			if err != nil {
				return err
			}
			err = gd.do()
			b.sent[in.name] += gd.sent()
			gd.close()
			if err != nil {
				return fmt.Errorf("%s, gRPC: %w", name, err)
			}
			if wantJSON == nil {
				wantJSON, wantRaw = body, gd.last.RawOutputContents
				w.jsonRespLen, w.grpcRespLen = len(body), rawBytes(gd.last)
				continue
			}
			if !bytes.Equal(body, wantJSON) {
				return fmt.Errorf("%s, REST: answer differs from the baseline's:\n%.300s\n%.300s", name, body, wantJSON)
			}
			if len(gd.last.RawOutputContents) != len(wantRaw) {
				return fmt.Errorf("%s, gRPC: %d outputs, baseline %d", name, len(gd.last.RawOutputContents), len(wantRaw))
			}
			for i := range wantRaw {
				if !bytes.Equal(gd.last.RawOutputContents[i], wantRaw[i]) {
					return fmt.Errorf("%s, gRPC: output %d differs from the baseline's", name, i)
				}
			}
		}
	}
	w := b.rep.work[0]
	for _, in := range instances {
		if in.auth == "" {
			continue
		}
		t := b.target(in.name, restJSON)
		t.authorization = ""
		rd, err := newRESTDriver(t, w, -1)
		if err != nil {
			return err
		}
		_, err = rd.doStatus()
		b.sent[in.name] += rd.sent()
		rd.close()
		if se := (*statusError)(nil); !errors.As(err, &se) || se.code != http.StatusUnauthorized {
			return fmt.Errorf("%s: REST request without credential: got %v, want status 401", in.name, err)
		}
		t = b.target(in.name, grpcRaw)
		t.authorization = ""
		gd, err := newGRPCDriver(t, w, -1)
		if err != nil {
			return err
		}
		err = gd.do()
		b.sent[in.name] += gd.sent()
		gd.close()
		if status.Code(err) != codes.Unauthenticated {
			return fmt.Errorf("%s: gRPC request without credential: got %v, want Unauthenticated", in.name, err)
		}
		b.refused[in.name] += 2
	}
	return nil
}
