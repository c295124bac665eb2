//go:build !(linux && amd64)

package sandbox

// Apply is unsupported here.
func Apply() error { return ErrUnsupported }
