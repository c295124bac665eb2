package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/aegis-inference/aegis/internal/keys"
	"github.com/aegis-inference/aegis/internal/seal"
)

func keysCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "create", "list", "revoke":
			return apiKeysCmd(args, stdout, stderr)
		}
	}
	if len(args) == 0 || args[0] != "generate" {
		return errors.New("usage: aegis keys generate [--signing] --out FILE\n" + apiKeysUsage)
	}
	fs := flag.NewFlagSet("keys generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "key `file` to create (mode 0600; never overwritten)")
	signing := fs.Bool("signing", false, "make an ECDSA P-256 model-signing key (FILE, and its public key FILE.pub) instead of an age identity")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return errors.New("usage: aegis keys generate [--signing] --out FILE")
	}
	if *signing {
		if err := keys.GenerateSigningKey(*out, *out+".pub"); err != nil {
			return fmt.Errorf("keys generate: %w", err)
		}
		fmt.Fprintln(stdout, *out+".pub")
		fmt.Fprintf(stderr, "wrote signing key %s; give %s.pub to verifiers (deploy.trusted_keys)\n", *out, *out)
		return nil
	}
	g, err := keys.GenerateIdentityFile(*out)
	if err != nil {
		return fmt.Errorf("keys generate: %w", err)
	}
	fmt.Fprintln(stdout, g.Recipient)
	fmt.Fprintf(stderr, "wrote identity to %s; its public recipient is on stdout\n", *out)
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func modelCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: aegis model encrypt ...")
	}
	switch args[0] {
	case "encrypt":
		return modelEncrypt(args[1:], stdout, stderr)
	case "sign":
		return modelSign(args[1:], stdout, stderr)
	case "verify":
		return modelVerify(args[1:], stdout, stderr)
	case "inspect":
		return modelInspect(args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown model command %q", args[0])
}

func modelEncrypt(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("model encrypt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rcpts, files stringList
	fs.Var(&rcpts, "recipient", "age recipient (age1...); repeatable")
	fs.Var(&files, "recipients-file", "`file` of age recipients, one per line; repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		return errors.New("usage: aegis model encrypt --recipient age1... IN [OUT]")
	}
	in := fs.Arg(0)
	out := in + seal.Suffix
	if fs.NArg() == 2 {
		out = fs.Arg(1)
	}
	var recipients []age.Recipient
	for _, r := range rcpts {
		rc, err := keys.ParseRecipient(r)
		if err != nil {
			return fmt.Errorf("--recipient: %w", err)
		}
		recipients = append(recipients, rc)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		rs, err := keys.ParseRecipients(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("--recipients-file %s: %w", f, err)
		}
		recipients = append(recipients, rs...)
	}
	if len(recipients) == 0 {
		return errors.New("model encrypt: no recipients (--recipient or --recipients-file)")
	}
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("model encrypt: %s exists", out)
	}
	if err := seal.EncryptFile(in, out, recipients...); err != nil {
		return fmt.Errorf("model encrypt: %w", err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	fmt.Fprintf(stderr, "encrypted %s for %d recipient(s); remove the plaintext %s from the model repository\n", in, len(recipients), in)
	return nil
}
