package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/aegis-inference/aegis/internal/app"
	"github.com/aegis-inference/aegis/internal/audit"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/servertest"
)

// childConfigEnv names the configuration file of a server run in a child
// process (this test binary, re-executed).
const childConfigEnv = "AEGIS_E2E_CHILD_CONFIG"

// serveChild runs a server from the configuration file at path, prints
// "READY <http addr> <grpc addr>" and serves until killed.
func serveChild(path string) {
	cfg, err := config.Load(path)
	if err == nil {
		var srv *app.Server
		if srv, err = app.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))); err == nil {
			fmt.Printf("READY %s %s\n", srv.HTTPAddr(), srv.GRPCAddr())
			err = srv.Serve(context.Background())
		}
	}
	fmt.Fprintln(os.Stderr, "child server:", err)
	os.Exit(1)
}

// startChild starts a server in a child process with cfg and returns it
// with its REST URL.
func startChild(t *testing.T, cfg config.Config) (*exec.Cmd, string) {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "aegis.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		l, _ := r.ReadString('\n')
		line <- l
		io.Copy(io.Discard, r)
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "READY" {
			t.Fatalf("child server: %q", l)
		}
		return cmd, "https://" + f[1]
	case <-time.After(60 * time.Second):
		t.Fatal("child server did not start")
	}
	return nil, ""
}

// TestDurableAuditSurvivesKill: in durable mode a request is answered only
// once its audit record is on stable storage, so after kill -9 in the
// middle of concurrent traffic every answered request has its record, and
// the log verifies (a torn last line, never acknowledged, is allowed and
// repaired at the next start).
func TestDurableAuditSurvivesKill(t *testing.T) {
	cfg, sec := servertest.SecureConfig(t, accessRepo(t), accessPolicy)
	cfg.Audit.Durable = true
	key := servertest.CreateKey(t, cfg, "scorer", []string{"scorer"}, pipeline.Scopes{}, 0)
	cmd, url := startChild(t, cfg)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: sec.ClientTLS(t, nil), MaxIdleConnsPerHost: 16}}

	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", url+servertest.Path("digits", ""), strings.NewReader(string(digitsBody(1))))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := hc.Do(req)
				if err != nil {
					return // the server is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked[resp.Header.Get("X-Request-Id")] = true
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once traffic is flowing, with requests in flight.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d requests answered before the kill", len(acked))
	}

	files, err := audit.Files(cfg.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.LoadPublicKey(filepath.Join(cfg.AuditKeyDir(), audit.PublicKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(files, pub, audit.VerifyOptions{AllowTornTail: true})
	if err != nil {
		t.Fatalf("the log after kill -9 does not verify: %v", err)
	}
	if rep.Closed() {
		t.Error("a killed server's log claims a clean close")
	}
	logged := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, `"request_id":"`); i >= 0 {
				rest := line[i+len(`"request_id":"`):]
				logged[rest[:strings.IndexByte(rest, '"')]] = true
			}
		}
	}
	missing := 0
	for id := range acked {
		if !logged[id] {
			missing++
			if missing <= 5 {
				t.Errorf("answered request %s has no audit record", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d answered requests lack their audit record", missing, len(acked))
	}
	t.Logf("%d requests answered before kill -9, all %d in the log (%d records, torn tail %d bytes)", len(acked), len(acked), rep.Records, rep.TornBytes)

	// The next start repairs the torn tail; after a clean stop the whole
	// log verifies strictly.
	srv := servertest.Start(t, cfg)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	files, _ = audit.Files(cfg.AuditPath())
	if rep, err := audit.Verify(files, pub, audit.VerifyOptions{}); err != nil || !rep.Closed() {
		t.Fatalf("after restart and clean stop: %+v %v", rep, err)
	}
}
