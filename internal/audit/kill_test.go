package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment of the child process TestDurableSurvivesKill starts.
const (
	childDirEnv = "AEGIS_AUDIT_KILL_CHILD_DIR"
	childKeyEnv = "AEGIS_AUDIT_KILL_CHILD_KEY"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childDirEnv); dir != "" {
		killChild(dir, os.Getenv(childKeyEnv))
		return
	}
	os.Exit(m.Run())
}

// killChild writes records from several goroutines in durable mode and
// prints "seq request-id" for each acknowledged one, until it is killed.
func killChild(dir, keyHex string) {
	seed, err := hex.DecodeString(keyHex)
	if err != nil || len(seed) != ed25519.SeedSize {
		fmt.Fprintln(os.Stderr, "child: bad key")
		os.Exit(3)
	}
	l, err := Open(Config{Path: filepath.Join(dir, "audit.log"), SigningKey: ed25519.NewKeyFromSeed(seed),
		Durable: true, CheckpointEvery: 25, MaxFileBytes: 32 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	// A parent that died must not leave the child writing forever.
	time.AfterFunc(time.Minute, func() { os.Exit(4) })
	prefix := strconv.Itoa(os.Getpid())
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				r := sample(i)
				r.RequestID = fmt.Sprintf("%s-%d-%d", prefix, w, i)
				if err := l.Write(r); err != nil {
					fmt.Fprintln(os.Stderr, "child: write:", err)
					os.Exit(5)
				}
				// One write(2) per line: an ack either reaches the pipe
				// whole or not at all.
				os.Stdout.WriteString(fmt.Sprintf("%d %s\n", r.Seq, r.RequestID))
			}
		})
	}
	wg.Wait()
}

// TestDurableSurvivesKill kills, with SIGKILL, a process writing in
// durable mode, three times over the same log, and checks that every
// record it acknowledged is in the log, and that the log verifies (with
// the torn last line a kill may leave accepted, and strictly once Open has
// repaired it).
func TestDurableSurvivesKill(t *testing.T) {
	pub, priv := newKey(t)
	dir := t.TempDir()
	acked := map[uint64]string{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childKeyEnv+"="+hex.EncodeToString(priv.Seed()))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		target := 200 + rand.IntN(300)
		sc := bufio.NewScanner(out)
		n := 0
		killed := false
		deadline := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
		for sc.Scan() {
			var seq uint64
			var id string
			if _, err := fmt.Sscanf(sc.Text(), "%d %s", &seq, &id); err != nil {
				t.Fatalf("child printed %q", sc.Text())
			}
			if prev, dup := acked[seq]; dup {
				t.Fatalf("seq %d acknowledged twice (%s, %s)", seq, prev, id)
			}
			acked[seq] = id
			if n++; n == target && !killed {
				killed = true
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				// Keep reading: acks already in the pipe count.
			}
		}
		deadline.Stop()
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, not by SIGKILL, after %d acks; stderr:\n%s", round, err, n, stderr.String())
		}
		t.Logf("round %d: killed after %d acks (%d read)", round, target, n)
	}

	path := filepath.Join(dir, "audit.log")
	check := func(opts VerifyOptions) Report {
		t.Helper()
		files, err := Files(path)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := Verify(files, pub, opts)
		if err != nil {
			t.Fatalf("Verify %+v: %v", opts, err)
		}
		have := map[uint64]string{}
		for _, ln := range readLog(t, files) {
			if ln.e.Type == TypeRequest {
				have[ln.e.Seq] = ln.e.RequestID
			}
		}
		for seq, id := range acked {
			if have[seq] != id {
				t.Errorf("acknowledged seq %d (%s) holds %q in the log", seq, id, have[seq])
			}
		}
		return rep
	}
	rep := check(VerifyOptions{AllowTornTail: true})
	t.Logf("after the kills: %d records, %d acknowledged, %d recoveries, torn tail %d bytes, %d files",
		rep.Records, len(acked), rep.Recoveries, rep.TornBytes, rep.Files)
	if rep.Files < 2 {
		t.Errorf("no rotation happened (%d files); the test means to kill across rotations", rep.Files)
	}

	l := openLog(t, Config{Path: path, SigningKey: priv, CheckpointEvery: 25, MaxFileBytes: 32 << 10})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep = check(VerifyOptions{})
	if !rep.Closed() {
		t.Errorf("report %+v: want closed", rep)
	}
}
