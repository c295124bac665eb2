package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/aegis-inference/aegis/internal/audit"
)

const auditUsage = "usage: aegis audit verify [--key FILE] [--allow-torn-tail] [--start-mid-chain] FILE..."

// auditCmd is `aegis audit verify`: it checks audit log files with
// audit.Verify, prints a short report, and fails on the first problem.
func auditCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return errors.New(auditUsage)
	}
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "the audit public key `file` (PEM, audit-signing.pub); without it signatures are not checked")
	torn := fs.Bool("allow-torn-tail", false, "accept an incomplete last line (the server was killed mid-write; the next start removes it)")
	mid := fs.Bool("start-mid-chain", false, "accept a first file that does not start the chain (older files removed by retention)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New(auditUsage + "\n(files in chain order: the rotated files, oldest first, then the active file)")
	}
	var pub ed25519.PublicKey
	if *keyFile != "" {
		var err error
		if pub, err = audit.LoadPublicKey(*keyFile); err != nil {
			return fmt.Errorf("audit verify: %w", err)
		}
	}
	rep, err := audit.Verify(fs.Args(), pub, audit.VerifyOptions{AllowTornTail: *torn, AllowMidChainStart: *mid})
	if ve := (*audit.VerifyError)(nil); errors.As(err, &ve) {
		fmt.Fprintf(stdout, "audit log BROKEN after %d good records in %d files\n", rep.Records, rep.Files)
	}
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	writeAuditReport(stdout, &rep)
	return nil
}

func writeAuditReport(w io.Writer, r *audit.Report) {
	fmt.Fprintf(w, "audit log OK: %d files, seq %d..%d: %d requests, %d checkpoints, %d outages (%d records lost), %d crash recoveries\n",
		r.Files, r.FirstSeq, r.LastSeq, r.Requests, r.Checkpoints, r.Outages, r.Lost, r.Recoveries)
	if r.SignaturesChecked {
		fmt.Fprintf(w, "signatures: %d checkpoints verified with key %s\n", r.Checkpoints, r.KeyID)
	} else {
		fmt.Fprintln(w, "signatures: NOT checked (no --key): a log rewritten by someone with write access would pass")
	}
	fmt.Fprintf(w, "last checkpoint: seq %d (%s); %d records after it are protected by the hash chain only\n",
		r.LastCheckpointSeq, r.LastCheckpointReason, r.Unsigned)
	if r.TornBytes > 0 {
		fmt.Fprintf(w, "torn last line: %d bytes, accepted with --allow-torn-tail\n", r.TornBytes)
	}
	if r.Closed() {
		fmt.Fprintln(w, "ends with the checkpoint of a clean shutdown")
	} else {
		fmt.Fprintln(w, "does not end with a clean shutdown's checkpoint: the server is running, crashed, or the tail was cut")
	}
}
