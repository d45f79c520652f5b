package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// signer is the IdP's one RSA key and its kid (the RFC 7638 thumbprint, so
// the kid is the same for every process that loads the same key file).
type signer struct {
	key *rsa.PrivateKey
	kid string
}

// loadOrCreateKey reads the PKCS#8 PEM RSA key at path, creating it (mode
// 0600, parent directories 0700) when the file does not exist. Creation is
// atomic: two processes racing end up using the same key.
func loadOrCreateKey(path string) (*signer, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKey(path); err != nil {
			return nil, err
		}
		raw, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: not a PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an RSA key", path)
	}
	return &signer{key: rk, kid: thumbprint(&rk.PublicKey)}, nil
}

func createKey(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".devidp-key-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link fails when another process created the key first; theirs wins.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an RSA public key.
func thumbprint(pub *rsa.PublicKey) string {
	b64 := base64.RawURLEncoding.EncodeToString
	canon := fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, b64(big.NewInt(int64(pub.E)).Bytes()), b64(pub.N.Bytes()))
	sum := sha256.Sum256([]byte(canon))
	return b64(sum[:])
}

// tokenRequest is what the token subcommand mints.
type tokenRequest struct {
	issuer, audience, sub, fhirUser string
	ttl                             time.Duration
	now                             time.Time
}

// mint signs an RS256 JWT (typ JWT) with claims iss, sub, aud, iat, exp, jti
// and fhirUser when given.
func (s *signer) mint(r tokenRequest) (string, error) {
	if r.sub == "" {
		return "", errors.New("sub is required")
	}
	if r.ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := jwt.MapClaims{
		"iss": r.issuer,
		"sub": r.sub,
		"aud": r.audience,
		"iat": r.now.Unix(),
		"exp": r.now.Add(r.ttl).Unix(),
		"jti": hex.EncodeToString(jti),
	}
	if r.fhirUser != "" {
		claims["fhirUser"] = r.fhirUser
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = s.kid
	return tok.SignedString(s.key)
}

// handler serves discovery, JWKS and userinfo for issuer.
func (s *signer) handler(issuer string, now func() time.Time) http.Handler {
	issuer = strings.TrimSuffix(issuer, "/")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":                                issuer,
			"jwks_uri":                              issuer + "/jwks.json",
			"userinfo_endpoint":                     issuer + "/userinfo",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		b64 := base64.RawURLEncoding.EncodeToString
		pub := &s.key.PublicKey
		writeJSON(w, http.StatusOK, map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": s.kid, "use": "sig", "alg": "RS256",
			"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("/userinfo", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		claims, ok := s.verify(r.Header.Get("Authorization"), issuer, now)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
			return
		}
		out := map[string]any{"sub": claims["sub"]}
		if fu, ok := claims["fhirUser"]; ok {
			out["fhirUser"] = fu
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

// verify accepts an "Authorization: Bearer" token this IdP signed for
// issuer that has not expired.
func (s *signer) verify(authorization, issuer string, now func() time.Time) (jwt.MapClaims, bool) {
	scheme, raw, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(raw) > 8192 {
		return nil, false
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		if kid, ok := tok.Header["kid"]; ok && kid != s.kid {
			return nil, errors.New("unknown kid")
		}
		return &s.key.PublicKey, nil
	},
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(now),
	)
	if err != nil {
		return nil, false
	}
	if _, ok := claims["sub"].(string); !ok {
		return nil, false
	}
	return claims, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
