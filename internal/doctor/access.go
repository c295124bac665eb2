package doctor

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aegis-inference/aegis/internal/config"
)

// certWarning is how close to expiry a server certificate is flagged.
const certWarning = 30 * 24 * time.Hour

// checkTLS flags plain HTTP, and a server certificate that is expired or
// about to expire.
func checkTLS(t config.TLS, now time.Time) Check {
	const name = "tls"
	if t.Plaintext {
		return Check{name, Warn, "TLS is off (tls.plaintext): requests, API keys and tokens travel in clear; for development only"}
	}
	if t.CertFile == "" {
		return Check{name, Fail, "no server certificate: set tls.cert_file and tls.key_file"}
	}
	b, err := os.ReadFile(t.CertFile)
	if err != nil {
		return Check{name, Fail, fmt.Sprintf("tls.cert_file: %v", err)}
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return Check{name, Fail, "tls.cert_file: no PEM certificate"}
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Check{name, Fail, fmt.Sprintf("tls.cert_file: %v", err)}
	}
	mtls := "client certificates not requested"
	switch t.ClientAuth {
	case "require":
		mtls = "client certificates required (mTLS)"
	case "optional":
		mtls = "client certificates verified when presented (optional mTLS: callers without one must use another credential)"
	}
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		return Check{name, Fail, fmt.Sprintf("server certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	case left < certWarning:
		return Check{name, Warn, fmt.Sprintf("server certificate expires in %d days (%s); %s", int(left.Hours()/24), leaf.NotAfter.UTC().Format(time.RFC3339), mtls)}
	}
	return Check{name, OK, fmt.Sprintf("TLS %s+, certificate valid until %s; %s", t.MinVersion, leaf.NotAfter.UTC().Format("2006-01-02"), mtls)}
}

// checkAccess flags authentication or audit turned off, and a missing
// authorization policy.
func checkAccess(cfg config.Config) Check {
	const name = "access"
	var warns []string
	if cfg.Auth.Disabled {
		warns = append(warns, "authentication is off (auth.disabled): every caller has every permission")
	} else if cfg.Auth.PolicyFile == "" {
		warns = append(warns, "no authorization policy (auth.policy_file): every request will be denied")
	}
	if cfg.Audit.Disabled {
		warns = append(warns, "the audit log is off (audit.disabled)")
	}
	if len(warns) > 0 {
		return Check{name, Warn, strings.Join(warns, "; ")}
	}
	mode := "records handed to the OS before each response"
	if cfg.Audit.Durable {
		mode = "records fsynced before each response"
	}
	return Check{name, OK, fmt.Sprintf("authentication on, policy %s, audit log %s (%s)", cfg.Auth.PolicyFile, cfg.AuditPath(), mode)}
}
