package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/aegis-inference/aegis/internal/tlsconf"
)

const certsUsage = `usage:
  aegis certs init --dir DIR [--hosts HOST,...]
      create a local CA (DIR/ca.crt, DIR/ca.key) and a server certificate
      (DIR/server.crt, DIR/server.key) if absent; safe to run again: keeps
      valid files, reissues a server certificate that expires within 30 days,
      has expired or misses a host (default hosts: localhost,127.0.0.1,::1)
  aegis certs client --dir DIR (--spiffe-id spiffe://DOMAIN/PATH | --cn NAME) [--out PREFIX]
      issue a client certificate from DIR's CA to PREFIX.crt and PREFIX.key
      (default PREFIX: DIR/client); never overwrites
The local CA is for demos and tests; use your own PKI in production (docs/tls.md).`

func certsCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(certsUsage)
	}
	switch args[0] {
	case "init":
		return certsInit(args[1:], stdout, stderr)
	case "client":
		return certsClient(args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown certs command %q\n%s", args[0], certsUsage)
}

func certsInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`directory` for the CA and server certificate (created 0700)")
	var hosts []string
	fs.Func("hosts", "comma-separated DNS names and IP addresses for the server certificate; repeatable (default localhost,127.0.0.1,::1)", func(v string) error {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hosts = append(hosts, h)
			}
		}
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		return errors.New("usage: aegis certs init --dir DIR [--hosts HOST,...]")
	}
	res, err := tlsconf.InitDir(*dir, hosts)
	if err != nil {
		return fmt.Errorf("certs init: %w", err)
	}
	if res.CACreated {
		fmt.Fprintf(stderr, "created local CA %s\n", filepath.Join(*dir, tlsconf.CACertFile))
	}
	if res.ServerIssued {
		fmt.Fprintf(stderr, "issued server certificate %s (%s)\n", filepath.Join(*dir, tlsconf.ServerCertFile), res.Reason)
	} else {
		fmt.Fprintf(stderr, "kept server certificate %s\n", filepath.Join(*dir, tlsconf.ServerCertFile))
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		abs = *dir
	}
	fmt.Fprintf(stdout, "tls:\n  cert_file: %s\n  key_file: %s\n  # for mutual TLS:\n  # client_auth: require\n  # client_ca_file: %s\n",
		filepath.Join(abs, tlsconf.ServerCertFile), filepath.Join(abs, tlsconf.ServerKeyFile), filepath.Join(abs, tlsconf.CACertFile))
	return nil
}

func certsClient(args []string, stdout, stderr io.Writer) error {
	const usage = "usage: aegis certs client --dir DIR (--spiffe-id spiffe://DOMAIN/PATH | --cn NAME) [--out PREFIX]"
	fs := flag.NewFlagSet("certs client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "`directory` of the CA (certs init)")
	spiffeID := fs.String("spiffe-id", "", "SPIFFE ID for the certificate's URI SAN")
	cn := fs.String("cn", "", "common name")
	out := fs.String("out", "", "write `PREFIX`.crt and PREFIX.key (default DIR/client)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || (*spiffeID == "" && *cn == "") || fs.NArg() > 0 {
		return errors.New(usage)
	}
	if *out == "" {
		*out = filepath.Join(*dir, "client")
	}
	caCert, caKey, err := tlsconf.LoadCA(*dir)
	if err != nil {
		return fmt.Errorf("certs client: %w", err)
	}
	outDir, name := filepath.Split(*out)
	if outDir == "" {
		outDir = "."
	}
	if _, err := tlsconf.IssueClient(outDir, name, caCert, caKey, tlsconf.ClientID{SPIFFEID: *spiffeID, CommonName: *cn}); err != nil {
		return fmt.Errorf("certs client: %w", err)
	}
	fmt.Fprintln(stdout, *out+".crt")
	fmt.Fprintf(stderr, "wrote %s.crt and %s.key (0600), valid for %d days\n", *out, *out, int(tlsconf.ClientValidity.Hours()/24))
	return nil
}
