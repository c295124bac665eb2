package seal_test

import (
	"fmt"
	"unsafe"
)

func fmtPtr(b []byte) string { return fmt.Sprintf("%x", uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }
