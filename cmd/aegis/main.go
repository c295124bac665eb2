// Command aegis is the Aegis model server.
//
//	aegis serve --model-repository DIR [--http-addr HOST:PORT] [--grpc-addr HOST:PORT] [--config FILE]
//	aegis certs init|client ...
//	aegis keys create|list|revoke ...
//	aegis audit verify [--key FILE] FILE...
//	aegis watermark verify|list ...
//	aegis keys generate --out FILE
//	aegis model encrypt --recipient age1... [--recipients-file FILE] IN [OUT]
//	aegis audit verify [--key FILE] FILE...
//	aegis watermark verify|list ...
//	aegis version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/runtime/onnx"
	"github.com/aegis-inference/aegis/internal/sandbox"
	"github.com/aegis-inference/aegis/internal/transport/httpapi"
)

const usage = `usage: aegis <command> [flags]

commands:
  serve           serve the models of a model repository over REST and gRPC
  doctor          check the environment serve would run in (--strict: fail on warnings)
  keys generate   create an age identity file (0600) and print its recipient
  keys create|list|revoke
                  manage API keys through the admin API (or --offline, on the state directory)
  certs init      create a local CA and server certificate (for the demo and tests)
  certs client    issue a client certificate from that CA (mTLS)
  audit verify    check an audit log's hash chain and signed checkpoints
  watermark verify|list
                  test a suspect model against a principal's watermarked answers (state directory)
  model encrypt   encrypt a model file with age for one or more recipients
  version         print the version
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "aegis:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "doctor":
		return doctorCmd(args[1:], stdout, stderr)
	case "keys":
		return keysCmd(args[1:], stdout, stderr)
	case "model":
		return modelCmd(args[1:], stdout, stderr)
	case "certs":
		return certsCmd(args[1:], stdout, stderr)
	case "audit":
		return auditCmd(args[1:], stdout, stderr)
	case "watermark":
		return watermarkCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "aegis %s (onnx runtime pinned sha256 %s)\n", httpapi.ServerVersion, onnx.PinnedDigest)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := addConfigFlags(fs)
	strict := fs.Bool("strict", false, "refuse to start unless every environment check (aegis doctor) is ok")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	if *strict {
		cfg.Strict = true
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := newLogger(cfg.Log, stderr)
	if cfg.Sandbox {
		if err := sandbox.Apply(); err != nil {
			return err
		}
		log.Info("sandboxed: no_new_privs and seccomp filter set")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if res, err := srv.Reload(); err != nil {
				log.Error("reload", "err", err)
			} else {
				log.Info("reloaded", "loaded", len(res.Loaded), "retired", len(res.Retired), "failures", len(res.Failures))
			}
			if digest, err := srv.ReloadPolicy(); err == nil {
				log.Info("policy reloaded", "sha256", digest)
			} else if !errors.Is(err, app.ErrNoPolicy) {
				log.Error("policy not reloaded; the previous policy stays in force", "err", err)
			}
			if err := srv.ReloadTLS(); err != nil {
				log.Error("tls certificates not reloaded; the previous ones stay in use", "err", err)
			}
		}
	}()
	return srv.Serve(ctx)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
