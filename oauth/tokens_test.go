package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const base = "https://fhir.example.com/"

func newTestIssuer(t *testing.T, now func() time.Time) *Issuer {
	t.Helper()
	key, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(key, base, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

var grant = Grant{Subject: "p1", Profile: "Practitioner/p1", LoginID: "l1", Project: "proj", Membership: "m1"}

func TestSignAndVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	iss := newTestIssuer(t, func() time.Time { return now })
	tok, expiresIn, err := iss.Sign(grant)
	if err != nil {
		t.Fatal(err)
	}
	if expiresIn != time.Hour {
		t.Fatalf("expiresIn %v", expiresIn)
	}
	c, err := iss.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != base || c.Audience[0] != base+"fhir/R4" || c.LoginID != "l1" || c.Membership != "m1" || c.Project != "proj" ||
		c.Profile != "Practitioner/p1" || c.Subject != "p1" || c.ID == "" {
		t.Fatalf("claims %+v", c)
	}
}

func TestSignCapsExpiryAtNotAfter(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	iss := newTestIssuer(t, func() time.Time { return now })
	g := grant
	g.NotAfter = now.Add(10 * time.Minute)
	tok, expiresIn, err := iss.Sign(g)
	if err != nil {
		t.Fatal(err)
	}
	c, err := iss.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if expiresIn != 10*time.Minute || !c.ExpiresAt.Time.Equal(g.NotAfter) {
		t.Fatalf("exp %v (in %v), want %v", c.ExpiresAt, expiresIn, g.NotAfter)
	}
	g.NotAfter = now.Add(-time.Second)
	if _, _, err := iss.Sign(g); !errors.Is(err, ErrExpired) {
		t.Fatalf("Sign for an expired credential = %v, want ErrExpired", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	iss := newTestIssuer(t, func() time.Time { return clock })
	other := newTestIssuer(t, func() time.Time { return clock })
	good, _, err := iss.Sign(grant)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, header map[string]any, mutate func(jwt.MapClaims)) string {
		claims := jwt.MapClaims{"iss": base, "aud": base + "fhir/R4", "sub": "p1", "login_id": "l1", "project": "proj",
			"membership": "m1", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		if mutate != nil {
			mutate(claims)
		}
		tk := jwt.NewWithClaims(method, claims)
		tk.Header["kid"] = iss.KeyID()
		tk.Header["typ"] = TokenType
		for k, v := range header {
			if v == nil {
				delete(tk.Header, k)
			} else {
				tk.Header[k] = v
			}
		}
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name  string
		token string
		clock time.Time
	}{
		{"expired", good, now.Add(2 * time.Hour)},
		{"issued in the future", good, now.Add(-10 * time.Minute)},
		{"other issuer's key", func() string { s, _, _ := other.Sign(grant); return s }(), now},
		{"tampered payload", good[:strings.Index(good, ".")+3] + "x" + good[strings.Index(good, ".")+4:], now},
		{"wrong typ", sign(jwt.SigningMethodES256, iss.key, map[string]any{"typ": "JWT"}, nil), now},
		{"no typ", sign(jwt.SigningMethodES256, iss.key, map[string]any{"typ": nil}, nil), now},
		{"unknown kid", sign(jwt.SigningMethodES256, iss.key, map[string]any{"kid": "other"}, nil), now},
		{"crit header", sign(jwt.SigningMethodES256, iss.key, map[string]any{"crit": []string{"exp"}}, nil), now},
		{"RS256", sign(jwt.SigningMethodRS256, rsaKey, nil, nil), now},
		{"ES384", sign(jwt.SigningMethodES384, p384, nil, nil), now},
		{"HS256 with a guessable key", sign(jwt.SigningMethodHS256, []byte("secret"), nil, nil), now},
		{"wrong audience", sign(jwt.SigningMethodES256, iss.key, nil, func(c jwt.MapClaims) { c["aud"] = "https://other/" }), now},
		{"wrong issuer", sign(jwt.SigningMethodES256, iss.key, nil, func(c jwt.MapClaims) { c["iss"] = "https://other/" }), now},
		{"no exp", sign(jwt.SigningMethodES256, iss.key, nil, func(c jwt.MapClaims) { delete(c, "exp") }), now},
		{"no login", sign(jwt.SigningMethodES256, iss.key, nil, func(c jwt.MapClaims) { delete(c, "login_id") }), now},
		{"no membership", sign(jwt.SigningMethodES256, iss.key, nil, func(c jwt.MapClaims) { delete(c, "membership") }), now},
		{"alg none", strings.Join([]string{b64(`{"alg":"none","typ":"at+jwt","kid":"` + iss.KeyID() + `"}`), strings.Split(good, ".")[1], ""}, "."), now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock = tt.clock
			if _, err := iss.Verify(tt.token); !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
	clock = now
	if _, err := iss.Verify(sign(jwt.SigningMethodES256, iss.key, nil, nil)); err != nil {
		t.Fatalf("the control token is refused: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "key.pem")
	// Concurrent first starts agree on one key.
	keys := make([]*ecdsa.PrivateKey, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if k == nil || !k.Equal(keys[0]) {
			t.Fatal("concurrent starts produced different keys")
		}
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", info.Mode(), err)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !again.Equal(keys[0]) {
		t.Fatalf("reload: %v", err)
	}

	bad := filepath.Join(dir, "bad.pem")
	_ = os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, err := LoadOrCreateKey(bad); err == nil || !strings.Contains(err.Error(), "signingKeyFile") {
		t.Fatalf("garbage key file: %v", err)
	}
	if _, err := LoadOrCreateKey(filepath.Join(dir, "bad.pem", "x")); err == nil {
		t.Fatal("unusable path accepted")
	}
}

func TestKeyIDIsRFC7638Thumbprint(t *testing.T) {
	// RFC 7638 has no EC example, so check the defining property: the kid
	// depends on the public key only and differs between keys.
	a := newTestIssuer(t, nil)
	b := newTestIssuer(t, nil)
	a2, err := NewIssuer(a.key, "https://elsewhere.example/", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.KeyID() != a2.KeyID() || a.KeyID() == b.KeyID() || len(a.KeyID()) != 43 {
		t.Fatalf("kids %q %q %q", a.KeyID(), a2.KeyID(), b.KeyID())
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestVerifyMemoRespectsExpiry: a token verified (and memoized) once is
// refused once it has expired.
func TestVerifyMemoRespectsExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	iss := newTestIssuer(t, func() time.Time { return clock })
	tok, _, err := iss.Sign(grant)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := iss.Verify(tok); err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
	}
	clock = now.Add(time.Hour + verifyLeeway + time.Second)
	if _, err := iss.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("an expired memoized token was accepted: %v", err)
	}
}

func TestLooksLocal(t *testing.T) {
	iss := newTestIssuer(t, nil)
	tok, _, err := iss.Sign(grant)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewIssuer(iss.key, "https://other.example.com/", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _ := other.Sign(grant)
	for _, tt := range []struct {
		raw  string
		want bool
	}{
		{tok, true},
		{foreign, false},
		{"abc", false},
		{"", false},
		{"x." + b64(`{"iss":"https://fhir.example.com/","sub":"x"}`) + ".sig", true},
		{"x." + b64(`{"sub":"x","iss":"https://fhir.example.com/"}`) + ".sig", false},
	} {
		if got := iss.LooksLocal(tt.raw); got != tt.want {
			t.Errorf("LooksLocal(%.40q) = %v, want %v", tt.raw, got, tt.want)
		}
	}
}
