// Package server assembles fhirgate from a configuration: it opens the store
// and the cache, builds the issuer, the authentication chain and the
// handlers, and mounts them on one gin engine. It holds wiring only; every
// rule lives in the package it belongs to.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/extauth"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/fhirgate/fhirgate/middleware"
	"github.com/fhirgate/fhirgate/oauth"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// LocalCacheEntries bounds the in-process cache layer (validated tokens and
// the auth chain's state records).
const LocalCacheEntries = 100_000

// Options are the parts a caller may supply instead of the defaults.
type Options struct {
	// Logger for request and error logs; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// HTTPClient makes the calls to external IdPs; default: a plain client.
	HTTPClient *http.Client
	// BenchmarkCaller, when set, mounts the FHIR API a second time under
	// /_bench/noauth/fhir/R4 with authentication replaced by the caller it
	// returns: the no-auth baseline of the load tool. Only the benchmark sets
	// it; no configuration key or flag can turn it on.
	BenchmarkCaller func() *caller.Caller
	// DisableLocalCache leaves out the in-process layer in front of Redis
	// (every cached request then costs a Redis round trip): only the load
	// tool sets it, to show what the layer buys.
	DisableLocalCache bool
	// Registerer receives the metrics and, when it is also a Gatherer (a
	// *prometheus.Registry), is served at /metrics; default: a new registry
	// with the Go and process collectors.
	Registerer prometheus.Registerer
}

// Server is a configured fhirgate instance.
type Server struct {
	cfg      *config.Config
	store    fhir.Store
	cache    cache.Cache
	external *extauth.Authenticator
	members  *membership.Service
	engine   *gin.Engine
	gatherer prometheus.Gatherer
	log      *slog.Logger
}

// New opens the database and the cache named by cfg and builds the HTTP
// handler. Errors name the configuration key at fault.
func New(ctx context.Context, cfg *config.Config, opts Options) (srv *Server, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Registerer == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		opts.Registerer = reg
	}
	s := &Server{cfg: cfg, log: opts.Logger}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	key, err := oauth.LoadOrCreateKey(cfg.SigningKeyFile)
	if err != nil {
		return nil, err
	}
	issuer, err := oauth.NewIssuer(key, cfg.BaseURL, cfg.AccessTokenLifetime.Duration, opts.Now)
	if err != nil {
		return nil, err
	}
	if s.store, err = fhir.Open(ctx, cfg.Database); err != nil {
		return nil, fmt.Errorf("key database: %w", err)
	}
	local := cache.NewMemory(LocalCacheEntries, opts.Now)
	s.cache = local
	var locker extauth.Locker
	if cfg.RedisURL != "" {
		shared, err := cache.NewRedis(ctx, cfg.RedisURL)
		if err != nil {
			local.Close()
			return nil, fmt.Errorf("key redisUrl: %w", err)
		}
		s.cache = cache.NewLayered(local, shared, cache.WithInvalidation(""), cache.WithLogger(opts.Logger))
		if opts.DisableLocalCache {
			local.Close()
			s.cache = shared
		}
		locker = shared
	}
	s.external, err = extauth.New(cfg.ExternalAuthProviders, extauth.Options{
		Cache: s.cache, Locker: locker, HTTPClient: opts.HTTPClient, Now: opts.Now, Logger: opts.Logger, Registerer: opts.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("key externalAuthProviders: %w", err)
	}
	members := membership.New(s.store, opts.Now).WithCache(s.cache)
	s.members = members
	oauthHandler, err := oauth.NewHandler(issuer, members, opts.Logger)
	if err != nil {
		return nil, err
	}
	metrics, err := middleware.NewMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	chain := middleware.NewChain(issuer, s.external, members, opts.Logger, metrics)
	fhirBase := cfg.BaseURL + "fhir/R4"
	s.gatherer = gathererOf(opts.Registerer)
	// The FHIR API writes memberships through the membership service's
	// store, so the auth chain's cached state follows every change.
	rest := fhir.NewHandler(members.Store(), fhirBase)
	s.engine = s.routes(chain, metrics, oauthHandler, membership.NewAdminHandler(members, fhirBase, opts.Logger), rest)
	if opts.BenchmarkCaller != nil {
		rest.Register(s.engine.Group("/_bench/noauth/fhir/R4", func(c *gin.Context) {
			c.Request = c.Request.WithContext(caller.With(c.Request.Context(), opts.BenchmarkCaller()))
		}))
	}
	return s, nil
}

func (s *Server) routes(chain *middleware.Chain, metrics *middleware.Metrics, oauthHandler *oauth.Handler, admin *membership.AdminHandler, rest *fhir.Handler) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// X-Forwarded-For is trusted from nobody: the remote address recorded in
	// a Login is the peer's, never a header a client can forge.
	_ = r.SetTrustedProxies(nil)
	r.ContextWithFallback = true
	r.HandleMethodNotAllowed = true
	r.Use(middleware.RequestLog(s.log), metrics.Handler, middleware.Recover(s.log))
	r.NoRoute(middleware.NotFound)
	r.NoMethod(middleware.MethodNotAllowed)

	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", s.ready)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{})))
	oauthHandler.RegisterPublic(r)
	r.GET("/fhir/R4/metadata", rest.Metadata)

	protected := r.Group("/", chain.Authenticate)
	protected.GET("/oauth2/userinfo", oauthHandler.UserInfo)
	protected.POST("/oauth2/userinfo", oauthHandler.UserInfo)
	protected.POST("/oauth2/logout", chain.Logout)
	admin.Register(protected)
	rest.Register(protected.Group("/fhir/R4"))
	return r
}

// ready answers 200 when the database and, when configured, Redis answer.
func (s *Server) ready(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	checks := gin.H{}
	status := http.StatusOK
	if err := s.store.Ping(ctx); err != nil {
		checks["database"] = "unavailable"
		status = http.StatusServiceUnavailable
	} else {
		checks["database"] = "ok"
	}
	if s.cfg.RedisURL != "" {
		if err := s.cache.Ping(ctx); err != nil {
			checks["redis"] = "unavailable"
			status = http.StatusServiceUnavailable
		} else {
			checks["redis"] = "ok"
		}
	}
	c.JSON(status, checks)
}

// gathererOf returns the registry behind reg when it can be read, else the
// default gatherer.
func gathererOf(reg prometheus.Registerer) prometheus.Gatherer {
	if g, ok := reg.(prometheus.Gatherer); ok {
		return g
	}
	return prometheus.DefaultGatherer
}

// Members returns the membership service (for the bootstrap command and tests).
func (s *Server) Members() *membership.Service { return s.members }

// Handler returns the HTTP handler of the server.
func (s *Server) Handler() http.Handler { return s.engine }

// Close releases the database, the cache and the JWKS fetchers.
func (s *Server) Close() error {
	var errs []error
	if s.external != nil {
		errs = append(errs, s.external.Close())
	}
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	return errors.Join(errs...)
}
