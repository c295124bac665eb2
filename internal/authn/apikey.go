package authn

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// API key format: "aegis_<id>_<secret>", both parts lower-case base32
// (RFC 4648 alphabet a-z2-7) without padding. The id names the key (it is
// not secret); the secret is 32 bytes from crypto/rand. "_" is not in the
// alphabet, so the split is unambiguous. Parsing accepts only exactly this
// shape and length.
const (
	// APIKeyPrefix starts every API key.
	APIKeyPrefix = "aegis_"

	keyIDBytes     = 10 // 80 bits: 16 characters
	keySecretBytes = 32 // 256 bits: 52 characters
	keyIDLen       = (keyIDBytes*8 + 4) / 5
	keySecretLen   = (keySecretBytes*8 + 4) / 5
	apiKeyLen      = len(APIKeyPrefix) + keyIDLen + 1 + keySecretLen
)

var keyEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// inKeyAlphabet reports whether b is in keyEncoding's alphabet.
func inKeyAlphabet(b byte) bool {
	return ('a' <= b && b <= 'z') || ('2' <= b && b <= '7')
}

func allInKeyAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		if !inKeyAlphabet(s[i]) {
			return false
		}
	}
	return true
}

// validKeyID reports whether id has the shape of a generated key id.
func validKeyID(id string) bool {
	return len(id) == keyIDLen && allInKeyAlphabet(id)
}

// parseAPIKey splits a key into its id and secret, checking the shape
// strictly. The secret is returned as its encoded text: that text is what
// is hashed, so no two strings map to one secret.
func parseAPIKey(key string) (id, secret string, ok bool) {
	if len(key) != apiKeyLen || !strings.HasPrefix(key, APIKeyPrefix) {
		return "", "", false
	}
	rest := key[len(APIKeyPrefix):]
	id, secret = rest[:keyIDLen], rest[keyIDLen+1:]
	if rest[keyIDLen] != '_' || !allInKeyAlphabet(id) || !allInKeyAlphabet(secret) {
		return "", "", false
	}
	return id, secret, true
}

// randomText returns n bytes from crypto/rand in keyEncoding.
func randomText(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand crashes the program instead)
	return keyEncoding.EncodeToString(b)
}
