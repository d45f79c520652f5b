// Package testidp is an in-process OpenID provider for tests, with real RSA
// and EC keys: it serves discovery, JWKS and a userinfo endpoint over HTTP
// and mints signed tokens, good or deliberately bad. Its userinfo behaviour
// is programmable (status, delay, body) and its calls are counted.
//
// New ties an IdP to a test; NewServer starts one without a testing.TB for
// programs such as the load tool, which call Close themselves.
package testidp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IdP is a running test identity provider. It is safe for concurrent use.
type IdP struct {
	// errorf reports a failure of a method that has no error result (t.Errorf
	// for New, the standard logger for NewServer).
	errorf    func(format string, args ...any)
	srv       *httptest.Server
	now       func() time.Time
	aud       any
	closed    chan struct{} // closed by Close, ends pending delays
	closeOnce sync.Once

	mu          sync.RWMutex
	rsaKey      signingKey
	ecKey       signingKey
	foreign     *rsa.PrivateKey // never published; generated on first use
	handler     http.HandlerFunc
	status      int
	retryAfter  string
	delay       time.Duration
	subOverride string
	body        []byte

	userInfoCalls  atomic.Int64
	jwksCalls      atomic.Int64
	discoveryCalls atomic.Int64
}

type signingKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
}

// Option configures an IdP.
type Option func(*IdP)

// WithClock sets the clock used for Claims and for expiry checks at the
// userinfo endpoint (default time.Now).
func WithClock(now func() time.Time) Option { return func(p *IdP) { p.now = now } }

// WithAudience makes Claims include aud (a string or a []string).
func WithAudience(aud any) Option { return func(p *IdP) { p.aud = aud } }

// New starts an IdP on a loopback httptest server, stopped at t's cleanup.
func New(t testing.TB, opts ...Option) *IdP {
	t.Helper()
	p, err := start(t.Errorf, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewServer starts an IdP on a loopback port without a test; the caller
// must call Close. Failures of methods without an error result (Token,
// RotateKey) go to the standard logger; SignToken returns them instead.
func NewServer(opts ...Option) (*IdP, error) {
	return start(log.Printf, opts)
}

func start(errorf func(string, ...any), opts []Option) (*IdP, error) {
	p := &IdP{errorf: errorf, now: time.Now, closed: make(chan struct{})}
	for _, opt := range opts {
		opt(p)
	}
	rk, err := newRSA()
	if err != nil {
		return nil, err
	}
	p.rsaKey = signingKey{kid: newKID("rsa"), method: jwt.SigningMethodRS256, priv: rk}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testidp: generate EC key: %w", err)
	}
	p.ecKey = signingKey{kid: newKID("ec"), method: jwt.SigningMethodES256, priv: ec}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET /jwks.json", p.serveJWKS)
	mux.HandleFunc("/userinfo", p.serveUserInfo)
	p.srv = httptest.NewServer(mux)
	return p, nil
}

// Close frees delayed userinfo handlers, then stops the server and waits
// for its requests to end. It is safe to call more than once.
func (p *IdP) Close() {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.srv.Close()
	})
}

func newRSA() (*rsa.PrivateKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("testidp: generate RSA key: %w", err)
	}
	return k, nil
}

func newKID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Issuer returns the issuer, which is the server's base URL.
func (p *IdP) Issuer() string { return p.srv.URL }

// UserInfoURL returns the URL of the userinfo endpoint.
func (p *IdP) UserInfoURL() string { return p.srv.URL + "/userinfo" }

// JWKSURL returns the URL of the JSON Web Key Set.
func (p *IdP) JWKSURL() string { return p.srv.URL + "/jwks.json" }

// DiscoveryURL returns the URL of the OpenID configuration document.
func (p *IdP) DiscoveryURL() string { return p.srv.URL + "/.well-known/openid-configuration" }

// Client returns an HTTP client for the server.
func (p *IdP) Client() *http.Client { return p.srv.Client() }

// RSAKeyID returns the kid of the current RSA key.
func (p *IdP) RSAKeyID() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.rsaKey.kid
}

// ECKeyID returns the kid of the EC P-256 key.
func (p *IdP) ECKeyID() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.ecKey.kid
}

// RotateKey replaces the RSA key with a new one under a new kid and returns
// that kid. The old key leaves the JWKS, so tokens it signed stop verifying.
func (p *IdP) RotateKey() string {
	rk, err := newRSA()
	if err != nil {
		p.errorf("%v", err)
		return ""
	}
	k := signingKey{kid: newKID("rsa"), method: jwt.SigningMethodRS256, priv: rk}
	p.mu.Lock()
	p.rsaKey = k
	p.mu.Unlock()
	return k.kid
}

// Claims returns a fresh claim set for sub: iss, sub, iat, exp = now + ttl,
// jti, and aud when the IdP was built WithAudience. Callers add or delete
// keys before passing it to Token.
func (p *IdP) Claims(sub string, ttl time.Duration) map[string]any {
	now := p.now()
	c := map[string]any{
		"iss": p.Issuer(),
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"jti": newKID("jti"),
	}
	if p.aud != nil {
		c["aud"] = p.aud
	}
	return c
}

// tokenSpec is what the TokenOptions decide.
type tokenSpec struct {
	ec      bool
	foreign bool
	noKID   bool
	kid     *string
	none    bool
	hmac    []byte
	header  map[string]any
	deleted map[string]bool
}

// TokenOption changes how Token signs or what header it writes.
type TokenOption func(*tokenSpec)

// ES256 signs with the EC P-256 key instead of the RSA key.
func ES256() TokenOption { return func(s *tokenSpec) { s.ec = true } }

// WithForeignKey signs with an RSA key that is not in the JWKS, while the
// header names the real RSA kid: a forged signature.
func WithForeignKey() TokenOption { return func(s *tokenSpec) { s.foreign = true } }

// WithoutKID leaves kid out of the header.
func WithoutKID() TokenOption { return func(s *tokenSpec) { s.noKID = true } }

// WithKID writes kid into the header instead of the signing key's kid.
func WithKID(kid string) TokenOption { return func(s *tokenSpec) { s.kid = &kid } }

// WithAlgNone produces an unsigned token with alg "none".
func WithAlgNone() TokenOption { return func(s *tokenSpec) { s.none = true } }

// WithHS256 signs with HMAC-SHA256 and secret (an algorithm a resource server
// must refuse for asymmetric issuers).
func WithHS256(secret []byte) TokenOption { return func(s *tokenSpec) { s.hmac = secret } }

// WithHeader sets a JOSE header field, for example "typ" ("at+jwt"), "crit"
// ([]string{"exp"}) or "jku". A nil value removes the field (WithHeader("typ",
// nil) drops the default typ "JWT"). Setting "alg" changes only the header,
// not the algorithm used to sign.
func WithHeader(name string, value any) TokenOption {
	return func(s *tokenSpec) {
		if value == nil {
			s.deleted[name] = true
			delete(s.header, name)
			return
		}
		delete(s.deleted, name)
		s.header[name] = value
	}
}

// Token signs claims (RS256 with the current RSA key and its kid unless an
// option says otherwise) and returns the compact JWT. It reports a failure
// through t.Errorf (the standard logger for NewServer) and returns "".
func (p *IdP) Token(claims map[string]any, opts ...TokenOption) string {
	s, err := p.SignToken(claims, opts...)
	if err != nil {
		p.errorf("%v", err)
		return ""
	}
	return s
}

// SignToken is Token with the failure returned instead of reported.
func (p *IdP) SignToken(claims map[string]any, opts ...TokenOption) (string, error) {
	spec := tokenSpec{header: map[string]any{}, deleted: map[string]bool{}}
	for _, opt := range opts {
		opt(&spec)
	}
	p.mu.Lock()
	k := p.rsaKey
	if spec.ec {
		k = p.ecKey
	}
	if spec.foreign {
		if p.foreign == nil {
			fk, err := newRSA()
			if err != nil {
				p.mu.Unlock()
				return "", err
			}
			p.foreign = fk
		}
		k = signingKey{kid: p.rsaKey.kid, method: jwt.SigningMethodRS256, priv: p.foreign}
	}
	p.mu.Unlock()

	var (
		method  jwt.SigningMethod = k.method
		signKey any               = k.priv
	)
	switch {
	case spec.none:
		method, signKey = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
	case spec.hmac != nil:
		method, signKey = jwt.SigningMethodHS256, spec.hmac
	}
	tok := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	if !spec.noKID && !spec.none && spec.hmac == nil {
		tok.Header["kid"] = k.kid
	}
	if spec.kid != nil {
		tok.Header["kid"] = *spec.kid
	}
	for name, v := range spec.header {
		tok.Header[name] = v
	}
	for name := range spec.deleted {
		delete(tok.Header, name)
	}
	s, err := tok.SignedString(signKey)
	if err != nil {
		return "", fmt.Errorf("testidp: sign token: %w", err)
	}
	return s, nil
}

// SetUserInfoHandler replaces the userinfo behaviour with h (nil restores
// the default). Calls are still counted.
func (p *IdP) SetUserInfoHandler(h http.HandlerFunc) {
	p.mu.Lock()
	p.handler = h
	p.mu.Unlock()
}

// SetStatus makes userinfo answer every call with code, plus a Retry-After
// header when retryAfter is not empty. A code of 200 accepts any bearer token
// without verifying it (its sub is still echoed); 0 restores the default.
func (p *IdP) SetStatus(code int, retryAfter string) {
	p.mu.Lock()
	p.status, p.retryAfter = code, retryAfter
	p.mu.Unlock()
}

// SetDelay makes userinfo wait d before answering (0 removes the delay). The
// wait ends early when the client goes away.
func (p *IdP) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetSubOverride makes a successful userinfo answer carry sub instead of the
// token's ("" restores the token's sub).
func (p *IdP) SetSubOverride(sub string) {
	p.mu.Lock()
	p.subOverride = sub
	p.mu.Unlock()
}

// SetBody makes a successful userinfo answer carry b verbatim as its JSON
// body (nil restores the generated body).
func (p *IdP) SetBody(b []byte) {
	p.mu.Lock()
	p.body = bytes.Clone(b)
	p.mu.Unlock()
}

// UserInfoCalls returns the number of requests to userinfo.
func (p *IdP) UserInfoCalls() int64 { return p.userInfoCalls.Load() }

// JWKSCalls returns the number of requests to the JWKS.
func (p *IdP) JWKSCalls() int64 { return p.jwksCalls.Load() }

// DiscoveryCalls returns the number of requests to the discovery document.
func (p *IdP) DiscoveryCalls() int64 { return p.discoveryCalls.Load() }

// ResetCounts sets every call counter to zero.
func (p *IdP) ResetCounts() {
	p.userInfoCalls.Store(0)
	p.jwksCalls.Store(0)
	p.discoveryCalls.Store(0)
}

func (p *IdP) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	p.discoveryCalls.Add(1)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.Issuer(),
		"jwks_uri":                              p.JWKSURL(),
		"userinfo_endpoint":                     p.UserInfoURL(),
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
	})
}

func (p *IdP) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	p.jwksCalls.Add(1)
	p.mu.RLock()
	keys := []signingKey{p.rsaKey, p.ecKey}
	p.mu.RUnlock()
	set := make([]map[string]string, 0, len(keys))
	for _, k := range keys {
		jwk, err := publicJWK(k)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		set = append(set, jwk)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": set})
}

// publicJWK encodes the public half of k as a JWK (RFC 7517/7518).
func publicJWK(k signingKey) (map[string]string, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch pub := k.priv.Public().(type) {
	case *rsa.PublicKey:
		return map[string]string{
			"kty": "RSA", "kid": k.kid, "use": "sig", "alg": k.method.Alg(),
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
		}, nil
	case *ecdsa.PublicKey:
		pt, err := pub.Bytes() // 0x04 || X || Y, 32 bytes each for P-256
		if err != nil {
			return nil, err
		}
		return map[string]string{
			"kty": "EC", "kid": k.kid, "use": "sig", "alg": k.method.Alg(), "crv": "P-256",
			"x": b64(pt[1:33]), "y": b64(pt[33:]),
		}, nil
	}
	return nil, errors.New("testidp: unsupported key type")
}

func (p *IdP) serveUserInfo(w http.ResponseWriter, r *http.Request) {
	p.userInfoCalls.Add(1)
	p.mu.RLock()
	h, status, retryAfter, delay := p.handler, p.status, p.retryAfter, p.delay
	sub, body := p.subOverride, p.body
	p.mu.RUnlock()

	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return
		case <-p.closed:
			return
		}
	}
	if h != nil {
		h(w, r)
		return
	}
	if status != 0 && status != http.StatusOK {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		writeJSON(w, status, map[string]string{"error": http.StatusText(status)})
		return
	}

	raw, ok := bearer(r)
	var claims jwt.MapClaims
	if ok && status == http.StatusOK {
		claims = jwt.MapClaims{}
		_, _, err := jwt.NewParser().ParseUnverified(raw, claims)
		ok = err == nil
	} else if ok {
		claims, ok = p.verify(raw)
	}
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	if body != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return
	}
	out := map[string]any{}
	for _, name := range []string{"sub", "fhirUser", "name", "given_name", "family_name", "email"} {
		if v, ok := claims[name]; ok {
			out[name] = v
		}
	}
	if sub != "" {
		out["sub"] = sub
	}
	writeJSON(w, http.StatusOK, out)
}

// verify checks raw was signed by one of the published keys (the one named by
// kid, or the key for its alg when there is no kid), is unexpired and carries
// this issuer.
func (p *IdP) verify(raw string) (jwt.MapClaims, bool) {
	p.mu.RLock()
	keys := []signingKey{p.rsaKey, p.ecKey}
	p.mu.RUnlock()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		kid, hasKID := tok.Header["kid"].(string)
		for _, k := range keys {
			// Without a kid, the algorithm alone picks the key.
			if (k.kid == kid || !hasKID) && k.method.Alg() == tok.Method.Alg() {
				return k.priv.Public(), nil
			}
		}
		return nil, errors.New("unknown kid")
	},
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(p.Issuer()),
		jwt.WithTimeFunc(p.now),
	)
	return claims, err == nil
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
