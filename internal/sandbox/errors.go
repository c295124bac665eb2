package sandbox

import "errors"

// ErrUnsupported is returned on platforms without the filter.
var ErrUnsupported = errors.New("sandbox: not supported on this platform")
