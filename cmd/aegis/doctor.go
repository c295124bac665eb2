package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/doctor"
	"github.com/aegis-inference/aegis/internal/sandbox"
)

// doctorCmd checks the environment `aegis serve` would run in, with the
// same flags, and fails when a check fails (with --strict, when any check
// is not ok).
func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := addConfigFlags(fs)
	strict := fs.Bool("strict", false, "fail on warnings too (what serve refuses to start on in strict mode)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("doctor: unexpected argument %q", fs.Arg(0))
	}
	// Not validated: the config check reports what Validate refuses,
	// alongside everything else.
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if cfg.Sandbox {
		// Check this process as serve would run: sandboxed.
		if err := sandbox.Apply(); err != nil {
			return fmt.Errorf("doctor: %w", err)
		}
	}
	r := doctor.Run(doctor.Env{Config: cfg})
	if *asJSON {
		err = r.WriteJSON(stdout, *strict)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if err := r.Err(*strict); err != nil {
		return fmt.Errorf("doctor: %w", err)
	}
	return nil
}

// configFlags are the flags that make serve's configuration: a file, then
// flags over it. serve and doctor take the same ones, so a serve command
// line checks by changing its verb.
type configFlags struct {
	file, repo, httpAddr, grpcAddr *string
	logFormat, logLevel            *string
	identity, lib                  *string
	requireSig, allowUnpinned      *bool
	sandbox                        *bool
	trustedKeys                    stringList
	stateDir, tlsCert, tlsKey      *string
	policy                         *string
	plaintext, noAuth, noAudit     *bool
}

// addConfigFlags declares the configuration flags on fs.
func addConfigFlags(fs *flag.FlagSet) *configFlags {
	f := &configFlags{
		file:       fs.String("config", "", "YAML configuration `file` (flags override it)"),
		repo:       fs.String("model-repository", "", "model repository `directory`"),
		httpAddr:   fs.String("http-addr", "", "REST listen address (default 127.0.0.1:8000)"),
		grpcAddr:   fs.String("grpc-addr", "", "gRPC listen address (default 127.0.0.1:8001)"),
		logFormat:  fs.String("log-format", "", "log format: text or json"),
		logLevel:   fs.String("log-level", "", "log level: debug, info, warn, error"),
		identity:   fs.String("identity-file", "", "age identity `file` that decrypts model.onnx.age models (mode 0600)"),
		requireSig: fs.Bool("require-signature", false, "serve only models with a valid model.sig from a trusted key"),
		lib:        fs.String("onnxruntime-lib", os.Getenv("AEGIS_ONNXRUNTIME_LIB"), "ONNX Runtime shared library `path` (env AEGIS_ONNXRUNTIME_LIB)"),
		allowUnpinned: fs.Bool("allow-unpinned-onnxruntime", os.Getenv("AEGIS_ONNXRUNTIME_ALLOW_UNPINNED") == "1",
			"load an ONNX Runtime library whose SHA-256 is not the pinned one (env AEGIS_ONNXRUNTIME_ALLOW_UNPINNED=1)"),
	}
	fs.Var(&f.trustedKeys, "trusted-key", "public key `file` whose model signatures are trusted (repeatable)")
	f.stateDir = fs.String("state-dir", "", "state `directory`: API keys, audit log and keys, anti-rollback records")
	f.tlsCert = fs.String("tls-cert", "", "server certificate chain `file` (PEM)")
	f.tlsKey = fs.String("tls-key", "", "server private key `file` (PEM, mode 0600)")
	f.plaintext = fs.Bool("plaintext", false, "serve without TLS (development only; doctor flags it)")
	f.policy = fs.String("policy", "", "authorization policy `file`")
	f.noAuth = fs.Bool("no-auth", false, "serve every request as \"anonymous\" with every permission (development only; doctor flags it)")
	f.noAudit = fs.Bool("no-audit", false, "turn the audit log off (development only; doctor flags it)")
	f.sandbox = fs.Bool("sandbox", false, "set no_new_privs and a seccomp filter refusing exec, ptrace, mounts, namespaces, kernel modules, bpf and other calls a model server never makes")
	return f
}

// load returns the configuration the parsed flags describe: the file (or
// the defaults), then the flags over it. It does not validate.
func (f *configFlags) load() (config.Config, error) {
	cfg := config.Default()
	if *f.file != "" {
		var err error
		if cfg, err = config.Load(*f.file); err != nil {
			return cfg, err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.ModelRepository, *f.repo)
	set(&cfg.HTTPAddr, *f.httpAddr)
	set(&cfg.GRPCAddr, *f.grpcAddr)
	set(&cfg.Log.Format, *f.logFormat)
	set(&cfg.Log.Level, *f.logLevel)
	set(&cfg.ONNXRuntime.Library, *f.lib)
	set(&cfg.Keys.IdentityFile, *f.identity)
	if *f.requireSig {
		cfg.Deploy.RequireSignature = true
	}
	cfg.Deploy.TrustedKeys = append(cfg.Deploy.TrustedKeys, f.trustedKeys...)
	if *f.allowUnpinned {
		cfg.ONNXRuntime.AllowUnpinned = true
	}
	if *f.sandbox {
		cfg.Sandbox = true
	}
	set(&cfg.StateDir, *f.stateDir)
	set(&cfg.TLS.CertFile, *f.tlsCert)
	set(&cfg.TLS.KeyFile, *f.tlsKey)
	set(&cfg.Auth.PolicyFile, *f.policy)
	if *f.plaintext {
		cfg.TLS.Plaintext = true
	}
	if *f.noAuth {
		cfg.Auth.Disabled = true
	}
	if *f.noAudit {
		cfg.Audit.Disabled = true
	}
	return cfg, nil
}
