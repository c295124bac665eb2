package modelsig_test

import (
	"crypto/sha256"
	"math/big"
)

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

func bigOne() *big.Int { return big.NewInt(1) }
