package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/internal/loadtest"
	"github.com/fhirgate/fhirgate/internal/testidp"
	"github.com/fhirgate/fhirgate/internal/testredis"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/fhirgate/fhirgate/server"
)

// benchSubject is the IdP subject of the benchmark user, stored as the
// externalId of its membership.
const benchSubject = "bench-practitioner"

// instance is one fhirgate server listening on loopback.
type instance struct {
	url  string // base URL, ending in "/"
	srv  *server.Server
	http *http.Server
	cfg  *config.Config
}

// env is everything one benchmark run starts.
type env struct {
	dir    string
	redis  *testredis.Server // nil with -redis
	idp    *testidp.IdP
	jwks   *testidp.IdP // the provider configured with jwksUri
	main   *instance
	second *instance // local cache layer off; nil until needed

	log       *slog.Logger
	idpClient *http.Client
	caller    atomic.Pointer[caller.Caller]

	practitioner string // id of the benchmark user's Practitioner
}

// start brings up Redis (unless redisURL is given), both IdPs and the main
// fhirgate instance, and creates the benchmark project and user.
func start(ctx context.Context, dir string, f *flags) (e *env, err error) {
	e = &env{dir: dir, log: slog.New(slog.NewJSONHandler(io.Discard, nil))}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if f.serverLog != nil {
		e.log = slog.New(slog.NewJSONHandler(f.serverLog, nil))
	}
	redisURL := f.redis
	if redisURL == "" {
		if e.redis, err = testredis.StartProcess(dir); err != nil {
			return e, err
		}
		redisURL = e.redis.URL()
	}
	if e.idp, err = testidp.NewServer(); err != nil {
		return e, err
	}
	if e.jwks, err = testidp.NewServer(); err != nil {
		return e, err
	}
	e.idp.SetDelay(f.idpLatency)
	e.jwks.SetDelay(f.idpLatency)
	// The server's calls to the IdP keep their connections alive, as a tuned
	// deployment would; see the report for the default client's behaviour.
	e.idpClient = loadtest.NewClient(max(256, f.concurrency))

	database := f.database
	if database == "" {
		database = "sqlite:" + filepath.Join(dir, "fhirgate.db")
	}
	raw, err := json.Marshal(map[string]any{
		"database":       database,
		"redisUrl":       redisURL,
		"signingKeyFile": filepath.Join(dir, "signing-key.pem"),
		"externalAuthProviders": []map[string]any{
			{"issuer": e.idp.Issuer(), "userInfoUrl": e.idp.UserInfoURL()},
			{"issuer": e.jwks.Issuer(), "userInfoUrl": e.jwks.UserInfoURL(), "jwksUri": e.jwks.JWKSURL()},
		},
	})
	if err != nil {
		return e, err
	}
	if e.main, err = e.listen(ctx, raw, false); err != nil {
		return e, err
	}
	return e, e.bootstrap(ctx)
}

// listen starts one fhirgate instance from the configuration raw (baseUrl
// and listen are set here) on a fresh loopback port.
func (e *env) listen(ctx context.Context, raw []byte, noLocalCache bool) (*instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	base := "http://" + ln.Addr().String() + "/"
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		ln.Close()
		return nil, err
	}
	m["baseUrl"], m["listen"] = base, ln.Addr().String()
	raw, _ = json.Marshal(m)
	cfg, err := config.Parse(raw)
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	opts := server.Options{Logger: e.log, HTTPClient: e.idpClient}
	if noLocalCache {
		opts.DisableLocalCache = true
	} else {
		opts.BenchmarkCaller = func() *caller.Caller { return e.caller.Load() }
	}
	srv, err := server.New(ctx, cfg, opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return &instance{url: base, srv: srv, http: hs, cfg: cfg}, nil
}

// startSecond starts an instance sharing the main one's database, signing
// key, Redis and providers, with the in-process cache layer off.
func (e *env) startSecond(ctx context.Context) (*instance, error) {
	if e.second != nil {
		return e.second, nil
	}
	raw, err := json.Marshal(e.main.cfg)
	if err != nil {
		return nil, err
	}
	if e.second, err = e.listen(ctx, raw, true); err != nil {
		return nil, err
	}
	return e.second, nil
}

// bootstrap creates the project, invites the benchmark Practitioner with
// its externalId, records a Login for it and makes it the no-auth caller.
func (e *env) bootstrap(ctx context.Context) error {
	members := e.main.srv.Members()
	p, err := members.Bootstrap(ctx, "fhirgate-bench")
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	m, err := members.Invite(ctx, p.ProjectID, &membership.InviteRequest{
		ResourceType: "Practitioner", FirstName: "Bench", LastName: "Practitioner", ExternalID: benchSubject,
	})
	if err != nil {
		return fmt.Errorf("invite: %w", err)
	}
	login, err := members.RecordLogin(ctx, membership.LoginInput{
		Membership: m, AuthMethod: caller.MethodExternal, Issuer: e.idp.Issuer(), Subject: benchSubject,
		UserAgent: "fhirgate-bench",
	})
	if err != nil {
		return fmt.Errorf("record login: %w", err)
	}
	profile := ""
	if m.Profile.Reference != nil {
		profile = *m.Profile.Reference
	}
	c := &caller.Caller{
		Project: p.ProjectID, Membership: m.ID, Profile: profile, Login: login,
		Admin: false, AuthMethod: caller.MethodExternal, Expires: time.Now().Add(24 * time.Hour),
	}
	if c.ProfileType() != "Practitioner" || c.ProfileID() == "" {
		return fmt.Errorf("invite returned profile %q", profile)
	}
	e.practitioner = c.ProfileID()
	e.caller.Store(c)
	return nil
}

// close stops everything start started, in reverse order.
func (e *env) close() {
	for _, in := range []*instance{e.second, e.main} {
		if in == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = in.http.Shutdown(ctx)
		cancel()
		_ = in.srv.Close()
	}
	if e.jwks != nil {
		e.jwks.Close()
	}
	if e.idp != nil {
		e.idp.Close()
	}
	if e.redis != nil {
		e.redis.Close()
	}
}
