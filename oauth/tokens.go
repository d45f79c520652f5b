// Package oauth is fhirgate's own OAuth 2.0 issuer: the signing key and its
// JWKS, OpenID discovery, local access tokens (ES256, typ at+jwt), and the
// token and userinfo endpoints.
package oauth

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/fhirgate/fhirgate/cache"
	"github.com/golang-jwt/jwt/v5"
)

// TokenType is the JOSE typ of our access tokens (RFC 9068).
const TokenType = "at+jwt"

// verifyLeeway is the clock skew tolerated between our own instances.
const verifyLeeway = 30 * time.Second

// ErrInvalidToken is returned for any local token that fails verification.
var ErrInvalidToken = errors.New("oauth: invalid local token")

// ErrExpired is returned by Sign when the grant's NotAfter has passed: the
// credential it would derive from is no longer valid (a token accepted
// within its clock-skew leeway).
var ErrExpired = errors.New("oauth: the credential has expired")

// Claims are the claims of a local access token (SPEC §6).
type Claims struct {
	jwt.RegisteredClaims
	ClientID   string `json:"client_id,omitempty"`
	LoginID    string `json:"login_id"`
	Project    string `json:"project"`
	Membership string `json:"membership"`
	Profile    string `json:"profile"`
}

// verifiedMemoEntries bounds the memo of verified tokens.
const verifiedMemoEntries = 100_000

// Issuer signs and verifies local access tokens.
type Issuer struct {
	// verified memoizes successful verifications by SHA-256 of the token:
	// an ES256 check costs about 100 µs, a memo hit well under 1 µs.
	verified *cache.Local[*Claims]
	key      *ecdsa.PrivateKey
	jwk      jwkset.JWKMarshal
	issuer   string // our iss, the configured baseUrl
	// payloadPrefix is how the payload segment of every token we sign
	// begins: base64url of `{"iss":"<issuer>",` cut to whole 3-byte groups.
	payloadPrefix string
	audience      string // {baseUrl}fhir/R4
	lifetime      time.Duration
	now           func() time.Time
}

// NewIssuer returns an Issuer for baseURL (ending in "/") signing with key;
// tokens live at most lifetime. now may be nil (time.Now).
func NewIssuer(key *ecdsa.PrivateKey, baseURL string, lifetime time.Duration, now func() time.Time) (*Issuer, error) {
	jwk, err := publicJWK(key)
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	head, err := json.Marshal(baseURL)
	if err != nil {
		return nil, err
	}
	prefix := `{"iss":` + string(head) + ","
	prefix = prefix[:len(prefix)-len(prefix)%3]
	return &Issuer{
		payloadPrefix: base64.RawURLEncoding.EncodeToString([]byte(prefix)),
		verified:      cache.NewLocal[*Claims](verifiedMemoEntries, now),
		key:           key, jwk: jwk, issuer: baseURL, audience: baseURL + "fhir/R4", lifetime: lifetime, now: now,
	}, nil
}

// LooksLocal reports, without decoding anything, whether raw is shaped like
// one of our tokens: its payload segment starts the way every payload we sign
// does. It routes a token to Verify or to the external path; it proves
// nothing, and a wrong answer only sends a token to a check it fails.
func (i *Issuer) LooksLocal(raw string) bool {
	_, rest, ok := strings.Cut(raw, ".")
	return ok && strings.HasPrefix(rest, i.payloadPrefix)
}

// IssuerURL is the iss of our tokens.
func (i *Issuer) IssuerURL() string { return i.issuer }

// Audience is the aud of our tokens: the FHIR base URL.
func (i *Issuer) Audience() string { return i.audience }

// KeyID is the RFC 7638 thumbprint of the signing key.
func (i *Issuer) KeyID() string { return i.jwk.KID }

// Grant describes who a token is for.
type Grant struct {
	Subject    string // profile id
	Profile    string // "Practitioner/123"
	ClientID   string
	LoginID    string
	Project    string
	Membership string
	// NotAfter, when set, caps the expiry (an external token's exp).
	NotAfter time.Time
}

// Sign issues an access token for g and returns it with its lifetime.
func (i *Issuer) Sign(g Grant) (token string, expiresIn time.Duration, err error) {
	now := i.now().Truncate(time.Second)
	exp := now.Add(i.lifetime)
	if !g.NotAfter.IsZero() && g.NotAfter.Before(exp) {
		exp = g.NotAfter.Truncate(time.Second)
	}
	if !exp.After(now) {
		return "", 0, ErrExpired
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", 0, err
	}
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   g.Subject,
			Audience:  jwt.ClaimStrings{i.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
			ID:        hex.EncodeToString(jti),
		},
		ClientID:   g.ClientID,
		LoginID:    g.LoginID,
		Project:    g.Project,
		Membership: g.Membership,
		Profile:    g.Profile,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = i.jwk.KID
	t.Header["typ"] = TokenType
	signed, err := t.SignedString(i.key)
	if err != nil {
		return "", 0, err
	}
	return signed, exp.Sub(now), nil
}

// Verify checks a local access token: ES256 with our key, typ at+jwt, our
// kid, no crit header, our issuer and audience, exp required, iat not in the
// future. Every failure is ErrInvalidToken (wrapped with the reason).
//
// A token verified once is remembered (by its SHA-256) until it expires; a
// remembered token is accepted again after its expiry is checked. Revocation
// is not a property of the token: the caller checks the Login.
func (i *Issuer) Verify(raw string) (*Claims, error) {
	c, memoKey := i.remembered(raw)
	if c != nil {
		return c, nil
	}
	claims, err := i.verify(raw)
	if err != nil {
		return nil, err
	}
	memo := *claims
	i.verified.Set(memoKey, &memo, claims.ExpiresAt.Time.Add(verifyLeeway).Sub(i.now()))
	return claims, nil
}

func (i *Issuer) remembered(raw string) (claims *Claims, memoKey string) {
	sum := sha256.Sum256([]byte(raw))
	memoKey = string(sum[:])
	c, ok := i.verified.Get(memoKey)
	if !ok || !i.now().Before(c.ExpiresAt.Time.Add(verifyLeeway)) {
		return nil, memoKey
	}
	copied := *c
	return &copied, memoKey
}

func (i *Issuer) verify(raw string) (*Claims, error) {
	claims := &Claims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != TokenType {
			return nil, errors.New("typ is not at+jwt")
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header")
		}
		if kid, _ := t.Header["kid"].(string); kid != i.jwk.KID {
			return nil, errors.New("unknown kid")
		}
		return &i.key.PublicKey, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(i.issuer),
		jwt.WithAudience(i.audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(verifyLeeway),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(i.now),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if claims.LoginID == "" || claims.Membership == "" || claims.Project == "" {
		return nil, fmt.Errorf("%w: missing login, membership or project", ErrInvalidToken)
	}
	return claims, nil
}
