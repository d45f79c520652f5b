package extauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/fhirgate/fhirgate/config"
)

const (
	// MaxJWKSBody caps a JWKS response, in bytes (jwkset itself reads any size).
	MaxJWKSBody = 1 << 20
	// jwksRefreshInterval is how often a JWKS is fetched in the background.
	jwksRefreshInterval = time.Hour
	// jwksUnknownKIDEvery is the least time between two fetches caused by a
	// token whose kid is unknown.
	jwksUnknownKIDEvery = time.Minute
	// jwksHTTPTimeout bounds one JWKS fetch. It is also the longest a request
	// waits for a refresh caused by an unknown kid (keyfunc's
	// RateLimitWaitMax): being far below jwksUnknownKIDEvery, a storm of
	// unknown kids never queues behind the limiter; all but one fail at once.
	jwksHTTPTimeout = 5 * time.Second
	// minRSABits is the smallest RSA key accepted for a signature.
	minRSABits = 2048
)

// jwksVerifier checks token signatures against one provider's JWKS, fetched
// with keyfunc on first use and refreshed hourly and on unknown kids.
type jwksVerifier struct {
	a      *Authenticator
	cfg    *config.Provider
	parser *jwt.Parser

	once sync.Once
	kf   keyfunc.Keyfunc
	err  error
}

func newJWKSVerifier(a *Authenticator, cfg *config.Provider) *jwksVerifier {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway.Duration),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(a.now),
	}
	if len(cfg.Audience) > 0 {
		opts = append(opts, jwt.WithAudience(cfg.Audience...))
	}
	return &jwksVerifier{a: a, cfg: cfg, parser: jwt.NewParser(opts...)}
}

// keyfunc returns the provider's keyfunc, creating it (and making the first
// fetch, bounded by jwksHTTPTimeout) on first use. The background refresh
// lives until the Authenticator is closed.
func (v *jwksVerifier) keyfunc() (keyfunc.Keyfunc, error) {
	v.once.Do(func() {
		noErr := true // a failed first fetch leaves an empty set: tokens get 503 until a fetch works
		v.kf, v.err = keyfunc.NewDefaultOverrideCtx(v.a.ctx, []string{v.cfg.JWKSURI}, keyfunc.Override{
			Client:                    cappedClient(v.a.client, MaxJWKSBody),
			HTTPTimeout:               jwksHTTPTimeout,
			NoErrorReturnFirstHTTPReq: &noErr,
			RateLimitWaitMax:          jwksHTTPTimeout,
			RefreshInterval:           jwksRefreshInterval,
			RefreshUnknownKID:         rate.NewLimiter(rate.Every(jwksUnknownKIDEvery), 1),
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					v.a.log.WarnContext(ctx, "extauth: JWKS fetch failed", "provider", v.cfg.Issuer, "error", err)
				}
			},
		})
	})
	return v.kf, v.err
}

// verify checks tok's signature and registered claims with golang-jwt.
func (v *jwksVerifier) verify(ctx context.Context, tok *Token) error {
	err := v.check(ctx, tok)
	result := "ok"
	if err != nil {
		result = err.Reason
	}
	v.a.metrics.signatures.WithLabelValues(v.cfg.Issuer, result).Inc()
	if err != nil {
		return err
	}
	return nil
}

func (v *jwksVerifier) check(ctx context.Context, tok *Token) *Error {
	kf, err := v.keyfunc()
	if err != nil {
		return unavailable(ReasonJWKSUnavailable, DefaultRetryAfter, err)
	}
	_, err = v.parser.Parse(tok.raw, bindKeyToAlg(kf.KeyfuncCtx(ctx)))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return invalid(ReasonSignature)
	case errors.Is(err, errKeyMismatch):
		return invalid(ReasonKeyMismatch)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		// No key fits. With an empty key set, the JWKS could not be
		// loaded: that is the IdP's trouble, not the token's.
		if keys, kerr := kf.Storage().KeyReadAll(ctx); kerr != nil || len(keys) == 0 {
			return unavailable(ReasonJWKSUnavailable, DefaultRetryAfter, nil)
		}
		return invalid(ReasonUnknownKey)
	case errors.Is(err, jwt.ErrTokenExpired):
		return invalid(ReasonExpired)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return invalid(ReasonNotYetValid)
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return invalid(ReasonIssuedInFuture)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return invalid(ReasonAudience)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return invalid(ReasonUnknownIssuer)
	default:
		return invalid(ReasonMalformed)
	}
}

var errKeyMismatch = errors.New("key type does not fit the token's alg")

// bindKeyToAlg wraps a keyfunc so that only a key of the type (and curve,
// and size) that the token's alg requires is ever used: RSA for RS*/PS*,
// ECDSA on the matching curve for ES*, Ed25519 for EdDSA. The token's
// jku/x5u/jwk/x5c headers are never read (Parse refuses them anyway).
func bindKeyToAlg(inner jwt.Keyfunc) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		key, err := inner(t)
		if err != nil {
			return nil, err
		}
		alg := t.Method.Alg()
		switch k := key.(type) {
		case jwt.VerificationKeySet:
			var fit jwt.VerificationKeySet
			for _, kk := range k.Keys {
				if keyFitsAlg(kk, alg) {
					fit.Keys = append(fit.Keys, kk)
				}
			}
			if len(fit.Keys) == 0 {
				return nil, errKeyMismatch
			}
			return fit, nil
		default:
			if !keyFitsAlg(key, alg) {
				return nil, errKeyMismatch
			}
			return key, nil
		}
	}
}

type keyKind int

const (
	keyUnknown keyKind = iota
	keyRSA
	keyEC
	keyEd25519
)

// keyKindForAlg returns the key type an asymmetric alg needs.
func keyKindForAlg(alg string) keyKind {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return keyRSA
	case "ES256", "ES384", "ES512":
		return keyEC
	case "EdDSA":
		return keyEd25519
	default:
		return keyUnknown
	}
}

// keyFitsAlg reports whether key may verify a signature made with alg.
func keyFitsAlg(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return keyKindForAlg(alg) == keyRSA && k.N != nil && k.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve == elliptic.P256()
		case "ES384":
			return k.Curve == elliptic.P384()
		case "ES512":
			return k.Curve == elliptic.P521()
		}
		return false
	case ed25519.PublicKey:
		return alg == "EdDSA"
	default:
		return false
	}
}

// cappedClient returns a copy of c whose responses fail to read past max bytes.
func cappedClient(c *http.Client, max int64) *http.Client {
	out := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	out.Transport = capTransport{base: base, max: max}
	return &out
}

// capTransport limits every response body to max bytes.
type capTransport struct {
	base http.RoundTripper
	max  int64
}

func (t capTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > t.max {
		resp.Body.Close()
		return nil, &http.MaxBytesError{Limit: t.max}
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, t.max)
	return resp, nil
}
