//go:build linux && (amd64 || arm64)

package netstamp

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, 16+len(data))
	binary.NativeEndian.PutUint64(b, uint64(len(b)))
	binary.NativeEndian.PutUint32(b[8:], uint32(level))
	binary.NativeEndian.PutUint32(b[12:], uint32(typ))
	copy(b[16:], data)
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	return b
}

func timespec(sec, nsec int64) []byte {
	b := make([]byte, 16)
	binary.NativeEndian.PutUint64(b, uint64(sec))
	binary.NativeEndian.PutUint64(b[8:], uint64(nsec))
	return b
}

func TestTimestampParse(t *testing.T) {
	ts := cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(1_700_000_000, 123))
	other := cmsg(unix.SOL_SOCKET, unix.SCM_RIGHTS, []byte{1, 2, 3, 4})
	for name, c := range map[string]struct {
		oob  []byte
		want int64
		ok   bool
	}{
		"timestamp":            {ts, 1_700_000_000*1e9 + 123, true},
		"after another":        {append(other, ts...), 1_700_000_000*1e9 + 123, true},
		"none":                 {other, 0, false},
		"empty":                {nil, 0, false},
		"short":                {make([]byte, 8), 0, false},
		"zeros":                {make([]byte, 40), 0, false},
		"zero time":            {cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(0, 0)), 0, false},
		"truncated data":       {ts[:24], 0, false},
		"length past the end":  {pastEnd(ts), 0, false},
		"other level, same id": {cmsg(unix.SOL_IP, unix.SCM_TIMESTAMPNS, timespec(5, 5)), 0, false},
	} {
		got, ok := timestamp(c.oob)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: timestamp = %d, %v; want %d, %v", name, got, ok, c.want, c.ok)
		}
	}
}

func FuzzTimestamp(f *testing.F) {
	f.Add(cmsg(unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS, timespec(1, 2)))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, oob []byte) { timestamp(oob) })
}

// pastEnd returns c with its length field claiming more than it holds.
func pastEnd(c []byte) []byte {
	b := append([]byte(nil), c...)
	binary.NativeEndian.PutUint64(b, uint64(len(b)+8))
	return b
}
