package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aegis-inference/aegis/internal/authn"
	"github.com/aegis-inference/aegis/internal/config"
	"github.com/aegis-inference/aegis/internal/pipeline"
	"github.com/aegis-inference/aegis/internal/state"
	"github.com/aegis-inference/aegis/internal/transport/adminapi"
)

const apiKeysUsage = `usage:
  aegis keys create --name NAME [--role ROLE]... [--model PATTERN]... [--max-batch N] [--max-rate R]
                    [--output-detail full|top_k|label] [--top-k K] [--ttl 720h] [--quiet] CONNECTION
  aegis keys list CONNECTION
  aegis keys revoke CONNECTION ID

CONNECTION is either the running server's admin API:
  --server https://127.0.0.1:8000 (env AEGIS_SERVER) --cacert FILE (env AEGIS_CACERT)
  with the caller's API key or JWT in the environment variable named by --credential-env
  (default AEGIS_API_KEY), and --cert/--key for a client certificate;
or, with the server stopped, the state directory itself (to make the first admin key):
  --offline --config aegis.yaml | --state-dir DIR [--pepper-file FILE]`

// apiKeysCmd runs `aegis keys create|list|revoke`.
func apiKeysCmd(args []string, stdout, stderr io.Writer) error {
	op := args[0]
	fs := flag.NewFlagSet("keys "+op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, apiKeysUsage) }
	conn := addConnFlags(fs)
	var req adminapi.CreateKeyRequest
	var roles, models stringList
	var quiet *bool
	if op == "create" {
		fs.StringVar(&req.Name, "name", "", "a name for the key (who or what holds it)")
		fs.Var(&roles, "role", "a role the key grants, as defined in the policy (repeatable)")
		fs.Var(&models, "model", "restrict the key to models matching this `pattern` (repeatable)")
		fs.Int64Var(&req.Scopes.MaxBatch, "max-batch", 0, "largest batch per request (0: no limit)")
		fs.Float64Var(&req.Scopes.MaxRate, "max-rate", 0, "most requests per second (0: no limit)")
		detail := fs.String("output-detail", "", "cap on output detail: full, top_k or label")
		fs.IntVar(&req.Scopes.TopK, "top-k", 0, "k for --output-detail top_k")
		fs.StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 720h (default: no expiry)")
		quiet = fs.Bool("quiet", false, "print only the key")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		req.Scopes.OutputDetail = pipeline.OutputDetail(*detail)
		req.Roles, req.Scopes.Models = roles, models
		if req.Name == "" || fs.NArg() > 0 {
			return errors.New(apiKeysUsage)
		}
	} else if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var keysAPI keyClient
	if conn.offline {
		ks, closeFn, err := conn.openOffline()
		if err != nil {
			return err
		}
		defer closeFn()
		keysAPI = offlineKeys{ks}
	} else {
		c, err := conn.client()
		if err != nil {
			return err
		}
		keysAPI = c
	}
	switch op {
	case "create":
		res, err := keysAPI.create(req)
		if err != nil {
			return err
		}
		if *quiet {
			fmt.Fprintln(stdout, res.Key)
			return nil
		}
		fmt.Fprintf(stdout, "%s\n", res.Key)
		fmt.Fprintf(stderr, "created key %s (%q); the key above is shown once and stored only as a keyed hash\n", res.Record.ID, res.Record.Name)
		return nil
	case "list":
		if fs.NArg() > 0 {
			return errors.New(apiKeysUsage)
		}
		recs, err := keysAPI.list()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLES\tCREATED\tEXPIRES\tLAST USED\tSTATE")
		for _, r := range recs {
			st := "active"
			switch {
			case !r.Revoked.IsZero():
				st = "revoked"
			case !r.Expires.IsZero() && time.Now().After(r.Expires):
				st = "expired"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, strings.Join(r.Roles, ","),
				stamp(r.Created), stamp(r.Expires), stamp(r.LastUsed), st)
		}
		return tw.Flush()
	case "revoke":
		if fs.NArg() != 1 {
			return errors.New(apiKeysUsage)
		}
		if err := keysAPI.revoke(fs.Arg(0)); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "revoked key %s\n", fs.Arg(0))
		return nil
	}
	return errors.New(apiKeysUsage)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

type keyClient interface {
	create(adminapi.CreateKeyRequest) (adminapi.CreateKeyResponse, error)
	list() ([]authn.KeyRecord, error)
	revoke(id string) error
}

type connFlags struct {
	server, cacert, certFile, keyFile, credEnv string
	offline                                    bool
	config, stateDir, pepperFile               string
}

func addConnFlags(fs *flag.FlagSet) *connFlags {
	c := &connFlags{}
	fs.StringVar(&c.server, "server", envOr("AEGIS_SERVER", "https://127.0.0.1:8000"), "the server's REST `URL` (env AEGIS_SERVER)")
	fs.StringVar(&c.cacert, "cacert", os.Getenv("AEGIS_CACERT"), "CA certificate `file` to verify the server with (env AEGIS_CACERT)")
	fs.StringVar(&c.certFile, "cert", "", "client certificate `file` (mTLS)")
	fs.StringVar(&c.keyFile, "key", "", "client key `file` (mTLS)")
	fs.StringVar(&c.credEnv, "credential-env", "AEGIS_API_KEY", "environment `variable` holding the caller's API key or JWT")
	fs.BoolVar(&c.offline, "offline", false, "work on the state directory directly (the server must be stopped)")
	fs.StringVar(&c.config, "config", "", "with --offline: the server's configuration `file`")
	fs.StringVar(&c.stateDir, "state-dir", "", "with --offline: the state `directory`")
	fs.StringVar(&c.pepperFile, "pepper-file", "", "with --offline: the API key pepper `file` (default STATE_DIR/apikey-pepper)")
	return c
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// openOffline opens the key store in the state directory.
func (c *connFlags) openOffline() (*authn.KeyStore, func(), error) {
	dir, pepperFile := c.stateDir, c.pepperFile
	if c.config != "" {
		cfg, err := config.Load(c.config)
		if err != nil {
			return nil, nil, err
		}
		if dir == "" {
			dir = cfg.StateDir
		}
		if pepperFile == "" {
			cfg.StateDir = dir
			pepperFile = cfg.PepperPath()
		}
	}
	if dir == "" {
		return nil, nil, errors.New("keys --offline: set --config or --state-dir")
	}
	if pepperFile == "" {
		pepperFile = (&config.Config{StateDir: dir}).PepperPath()
	}
	store, err := state.OpenBolt(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is the server running? stop it, or use the admin API)", err)
	}
	pepper, err := authn.LoadOrCreatePepper(pepperFile)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	ks, err := authn.OpenKeyStore(store.DB(), pepper)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return ks, func() { ks.Close(); store.Close() }, nil
}

type offlineKeys struct{ ks *authn.KeyStore }

func (o offlineKeys) create(r adminapi.CreateKeyRequest) (adminapi.CreateKeyResponse, error) {
	var ttl time.Duration
	if r.TTL != "" {
		d, err := time.ParseDuration(r.TTL)
		if err != nil || d <= 0 {
			return adminapi.CreateKeyResponse{}, errors.New("--ttl must be a positive duration such as 720h")
		}
		ttl = d
	}
	key, rec, err := o.ks.Create(r.Name, r.Roles, r.Scopes, ttl)
	return adminapi.CreateKeyResponse{Key: key, Record: rec}, err
}

func (o offlineKeys) list() ([]authn.KeyRecord, error) { return o.ks.List(), nil }
func (o offlineKeys) revoke(id string) error           { return o.ks.Revoke(id) }

// adminClient calls the admin API.
type adminClient struct {
	base string
	cred string
	http *http.Client
}

func (c *connFlags) client() (*adminClient, error) {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("--server: %q is not an http(s) URL", c.server)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.cacert != "" {
		pem, err := os.ReadFile(c.cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert: no certificate in %s", c.cacert)
		}
		tc.RootCAs = pool
	}
	if c.certFile != "" || c.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	cred := os.Getenv(c.credEnv)
	if cred == "" && len(tc.Certificates) == 0 {
		return nil, fmt.Errorf("no credential: set $%s to an admin API key or JWT, or give --cert and --key", c.credEnv)
	}
	return &adminClient{
		base: strings.TrimSuffix(c.server, "/"),
		cred: cred,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}},
	}, nil
}

func (a *adminClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return err
	}
	if a.cred != "" {
		req.Header.Set("Authorization", "Bearer "+a.cred)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b, &e)
		return fmt.Errorf("%s %s: %s: %s (request id %s)", method, path, resp.Status, e.Error, resp.Header.Get("X-Request-Id"))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (a *adminClient) create(r adminapi.CreateKeyRequest) (adminapi.CreateKeyResponse, error) {
	var out adminapi.CreateKeyResponse
	err := a.do(http.MethodPost, "/admin/v1/keys", r, &out)
	return out, err
}

func (a *adminClient) list() ([]authn.KeyRecord, error) {
	var out struct {
		Keys []authn.KeyRecord `json:"keys"`
	}
	err := a.do(http.MethodGet, "/admin/v1/keys", nil, &out)
	return out.Keys, err
}

func (a *adminClient) revoke(id string) error {
	return a.do(http.MethodDelete, "/admin/v1/keys/"+url.PathEscape(id), nil, nil)
}
