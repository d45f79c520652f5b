// Package testserver runs a real fhirgate server on a loopback port for
// HTTP tests, with a temporary SQLite database and signing key, and offers
// small helpers to call it. It is a test helper only.
package testserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/server"
)

// Env is one running server.
type Env struct {
	// URL is the address this instance listens on, ending in "/". It is
	// also the configured baseUrl unless the instance shares another's.
	URL    string
	Config *config.Config
	Server *server.Server
	// Logs holds everything the server logged.
	Logs *SyncBuffer
	http *httptest.Server
}

// Option adjusts the configuration before the server starts.
type Option func(*config.Config, *server.Options)

// WithProviders sets externalAuthProviders (defaults are filled in).
func WithProviders(providers ...config.Provider) Option {
	return func(c *config.Config, _ *server.Options) { c.ExternalAuthProviders = providers }
}

// WithRedis makes the server share the Redis at url.
func WithRedis(url string) Option {
	return func(c *config.Config, _ *server.Options) { c.RedisURL = url }
}

// WithDatabase uses the given database DSN instead of a fresh SQLite file.
func WithDatabase(dsn string) Option {
	return func(c *config.Config, _ *server.Options) { c.Database = dsn }
}

// SharedWith makes a second instance use other's database and signing key,
// as instances of one deployment do.
func SharedWith(other *Env) Option {
	return func(c *config.Config, o *server.Options) {
		c.BaseURL = other.Config.BaseURL // the load balancer's URL in a deployment
		c.Database = other.Config.Database
		c.SigningKeyFile = other.Config.SigningKeyFile
		c.RedisURL = other.Config.RedisURL
		c.ExternalAuthProviders = other.Config.ExternalAuthProviders
	}
}

// WithBenchmarkCaller mounts the no-auth benchmark routes (server.Options.BenchmarkCaller).
func WithBenchmarkCaller(f func() *caller.Caller) Option {
	return func(_ *config.Config, o *server.Options) { o.BenchmarkCaller = f }
}

// Quiet discards the server's logs (benchmarks: Logs then stays empty).
func Quiet() Option {
	return func(_ *config.Config, o *server.Options) { o.Logger = slog.New(slog.DiscardHandler) }
}

// WithNow injects the server clock.
func WithNow(now func() time.Time) Option {
	return func(_ *config.Config, o *server.Options) { o.Now = now }
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String() + "/"
	dir := t.TempDir()
	raw, _ := json.Marshal(map[string]any{
		"baseUrl":        base,
		"listen":         ln.Addr().String(),
		"database":       "sqlite:" + filepath.Join(dir, "fhirgate.db"),
		"signingKeyFile": filepath.Join(dir, "signing-key.pem"),
	})
	cfg, err := config.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	logs := &SyncBuffer{}
	sopts := server.Options{Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(cfg, &sopts)
	}
	// Re-parse so provider defaults are applied to providers set by options.
	raw, _ = json.Marshal(cfg)
	if cfg, err = config.Parse(raw); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), cfg, sopts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return &Env{URL: base, Config: cfg, Server: srv, Logs: logs, http: hs}
}

// Response is a completed request.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test on error.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the body as a JSON object.
func (r *Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.JSON(t, &m)
	return m
}

// OutcomeCode returns issue[0].code of an OperationOutcome body.
func (r *Response) OutcomeCode(t testing.TB) string {
	t.Helper()
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Code string `json:"code"`
		} `json:"issue"`
	}
	r.JSON(t, &oo)
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("not an OperationOutcome: %s", r.Body)
	}
	return oo.Issue[0].Code
}

// Do sends a request; body may be nil, a []byte, a string or a value to
// encode as JSON. token, when not empty, is sent as a bearer token.
func (e *Env) Do(t testing.TB, method, path, token string, body any, header ...string) *Response {
	t.Helper()
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, contentType = bytes.NewReader(b), "application/fhir+json"
	case string:
		rd, contentType = strings.NewReader(b), "application/fhir+json"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, contentType = bytes.NewReader(data), "application/fhir+json"
	}
	req, err := http.NewRequest(method, e.URL+strings.TrimPrefix(path, "/"), rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// Project is a bootstrapped project with its admin client.
type Project struct {
	ID, ClientID, ClientSecret string
	// AdminToken is a client-credentials access token of the admin client.
	AdminToken string
}

// Bootstrap creates a project through the same code path as `fhirgate
// bootstrap` and fetches an admin token for its client.
func (e *Env) Bootstrap(t testing.TB, name string) *Project {
	t.Helper()
	out, err := e.Server.Members().Bootstrap(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	p := &Project{ID: out.ProjectID, ClientID: out.ClientID, ClientSecret: out.ClientSecret}
	p.AdminToken = e.ClientToken(t, p.ClientID, p.ClientSecret)
	return p
}

// ClientToken runs the client_credentials grant with HTTP Basic.
func (e *Env) ClientToken(t testing.TB, id, secret string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	req, _ := http.NewRequest(http.MethodPost, e.URL+"oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("token endpoint: %d %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		t.Fatalf("token endpoint gave no access_token: %v", err)
	}
	return out.AccessToken
}

// Invite invites a user into project p with p's admin token and returns the
// created membership's id and profile reference.
func (e *Env) Invite(t testing.TB, p *Project, body map[string]any) (membershipID, profile string) {
	t.Helper()
	resp := e.Do(t, http.MethodPost, "admin/projects/"+p.ID+"/invite", p.AdminToken, body)
	if resp.Status != http.StatusCreated {
		t.Fatalf("invite: %d %s", resp.Status, resp.Body)
	}
	var m struct {
		ID      string `json:"id"`
		Profile struct {
			Reference string `json:"reference"`
		} `json:"profile"`
	}
	resp.JSON(t, &m)
	return m.ID, m.Profile.Reference
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
