package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"
)

// Defaults of SPEC §2.
const (
	DefaultBaseURL             = "http://localhost:8080/"
	DefaultListen              = ":8080"
	DefaultDatabase            = "sqlite:data/fhirgate.db"
	DefaultSigningKeyFile      = "data/signing-key.pem"
	DefaultAccessTokenLifetime = time.Hour
	DefaultLeeway              = 60 * time.Second
	MaxLeeway                  = 5 * time.Minute
	DefaultUserInfoTimeout     = 5 * time.Second
	DefaultCacheTTL            = time.Hour
)

// DefaultAlgorithms are the JOSE algorithms accepted when a provider names none.
var DefaultAlgorithms = []string{"RS256", "ES256"}

// supportedAlgorithms are the asymmetric algorithms a provider may allow.
var supportedAlgorithms = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
	"EdDSA": true,
}

// Environment variables that override the matching keys.
const (
	EnvListen   = "FHIRGATE_LISTEN"
	EnvDatabase = "FHIRGATE_DATABASE"
	EnvRedisURL = "FHIRGATE_REDIS_URL"
)

// Load reads the file at path, applies getenv overrides (os.Getenv in
// production; nil means no overrides), fills defaults and validates. Every
// error is one line naming the offending key.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if getenv != nil {
		cfg.applyEnv(getenv)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a configuration strictly (unknown keys and trailing data are
// errors, and keys match exactly, not case-insensitively) and fills defaults. It does not validate; call Validate.
func Parse(data []byte) (*Config, error) {
	var generic any
	if err := json.Unmarshal(data, &generic); err != nil {
		return nil, describeDecodeError(err)
	}
	if err := checkKeys(generic, reflect.TypeOf(Config{}), ""); err != nil {
		return nil, err
	}
	cfg := &Config{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		return nil, describeDecodeError(err)
	}
	cfg.applyDefaults()
	return cfg, nil
}

func describeDecodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		return fmt.Errorf("key %q: expected %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s (check the spelling; unknown keys are refused so a typo cannot disable a setting)",
			strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return err
}

func (c *Config) applyDefaults() {
	setString(&c.BaseURL, DefaultBaseURL)
	setString(&c.Listen, DefaultListen)
	setString(&c.Database, DefaultDatabase)
	setString(&c.SigningKeyFile, DefaultSigningKeyFile)
	setDuration(&c.AccessTokenLifetime, DefaultAccessTokenLifetime)
	for i := range c.ExternalAuthProviders {
		p := &c.ExternalAuthProviders[i]
		if p.Algorithms == nil {
			p.Algorithms = append([]string(nil), DefaultAlgorithms...)
		}
		if !p.Leeway.set {
			p.Leeway.Duration = DefaultLeeway
		}
		setDuration(&p.UserInfoTimeout, DefaultUserInfoTimeout)
		setDuration(&p.CacheTTL, DefaultCacheTTL)
	}
}

func (c *Config) applyEnv(getenv func(string) string) {
	if v := getenv(EnvListen); v != "" {
		c.Listen = v
	}
	if v := getenv(EnvDatabase); v != "" {
		c.Database = v
	}
	if v := getenv(EnvRedisURL); v != "" {
		c.RedisURL = v
	}
}

func setString(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func setDuration(d *Duration, def time.Duration) {
	if !d.set {
		d.Duration = def
	}
}

// Validate checks every rule of SPEC §2 and returns the first violation.
func (c *Config) Validate() error {
	base, err := checkURL("baseUrl", c.BaseURL)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(base.Path, "/") {
		return fmt.Errorf("key baseUrl: %q must end with a slash", c.BaseURL)
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return fmt.Errorf("key baseUrl: %q must not have a query or fragment", c.BaseURL)
	}
	if c.Listen == "" {
		return errors.New("key listen: must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("key listen: %q is not host:port", c.Listen)
	}
	if err := checkDatabase(c.Database); err != nil {
		return err
	}
	if c.RedisURL != "" {
		u, err := url.Parse(c.RedisURL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			return fmt.Errorf("key redisUrl: %q is not a redis://host:port/db URL", c.RedisURL)
		}
	}
	if c.SigningKeyFile == "" {
		return errors.New("key signingKeyFile: must not be empty")
	}
	if c.AccessTokenLifetime.Duration < time.Minute || c.AccessTokenLifetime.Duration > 24*time.Hour {
		return fmt.Errorf("key accessTokenLifetime: %s is outside 1m..24h", c.AccessTokenLifetime.Duration)
	}
	seen := map[string]bool{}
	for i := range c.ExternalAuthProviders {
		p := &c.ExternalAuthProviders[i]
		if err := p.validate(); err != nil {
			return fmt.Errorf("key externalAuthProviders[%d].%w", i, err)
		}
		if strings.TrimSuffix(p.Issuer, "/") == strings.TrimSuffix(c.BaseURL, "/") {
			return fmt.Errorf("key externalAuthProviders[%d].issuer: %q is this server's own baseUrl, whose tokens are verified with its own key", i, p.Issuer)
		}
		if seen[p.Issuer] {
			return fmt.Errorf("key externalAuthProviders[%d].issuer: duplicate issuer %q", i, p.Issuer)
		}
		seen[p.Issuer] = true
	}
	return nil
}

func checkDatabase(dsn string) error {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		if strings.TrimPrefix(dsn, "sqlite:") == "" {
			return errors.New("key database: sqlite: needs a file path, e.g. sqlite:data/fhirgate.db")
		}
		return nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return errors.New("key database: the postgres URL does not parse")
		}
		return nil
	}
	return errors.New("key database: must start with sqlite: or postgres://")
}

func (p *Provider) validate() error {
	if p.Issuer == "" {
		return errors.New("issuer: required")
	}
	if _, err := checkURL("issuer", p.Issuer); err != nil {
		return err
	}
	if p.UserInfoURL == "" {
		return errors.New("userInfoUrl: required")
	}
	if _, err := checkURL("userInfoUrl", p.UserInfoURL); err != nil {
		return err
	}
	if p.JWKSURI != "" {
		if _, err := checkURL("jwksUri", p.JWKSURI); err != nil {
			return err
		}
	}
	if len(p.Algorithms) == 0 {
		return errors.New("algorithms: must list at least one algorithm")
	}
	for _, alg := range p.Algorithms {
		if !supportedAlgorithms[alg] {
			return fmt.Errorf("algorithms: %q is not allowed (none and HS* are refused; use e.g. RS256, ES256)", alg)
		}
	}
	for _, a := range p.Audience {
		if a == "" {
			return errors.New("audience: empty value")
		}
	}
	for _, t := range p.AcceptedTypes {
		if t == "" {
			return errors.New("acceptedTypes: empty value")
		}
	}
	for _, id := range p.Projects {
		if id == "" {
			return errors.New("projects: empty project id")
		}
	}
	if p.Leeway.Duration < 0 || p.Leeway.Duration > MaxLeeway {
		return fmt.Errorf("leeway: %s is outside 0..%s", p.Leeway.Duration, MaxLeeway)
	}
	if p.UserInfoTimeout.Duration <= 0 || p.UserInfoTimeout.Duration > time.Minute {
		return fmt.Errorf("userInfoTimeout: %s is outside 0..1m", p.UserInfoTimeout.Duration)
	}
	if p.CacheTTL.Duration <= 0 || p.CacheTTL.Duration > time.Hour {
		return fmt.Errorf("cacheTtl: %s is outside 0..1h", p.CacheTTL.Duration)
	}
	return nil
}

// checkURL parses an absolute http(s) URL and requires https unless the host
// is a loopback address.
func checkURL(key, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%s: %q is not an absolute http(s) URL", key, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s: %q must not contain credentials", key, raw)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%s: %q must use https (plain http is allowed only on loopback)", key, raw)
	}
	return u, nil
}

// IsLoopback reports whether host is localhost or a loopback IP address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("expected a duration string such as \"90s\" or \"1h\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"90s\" or \"1h\"", s)
	}
	d.Duration, d.set = v, true
	return nil
}

// MarshalJSON writes the duration as a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a string or a list of strings.
func (l *StringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("expected a string or a list of strings")
	}
	*l = many
	return nil
}
