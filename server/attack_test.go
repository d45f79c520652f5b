package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/internal/testidp"
	"github.com/fhirgate/fhirgate/internal/testredis"
	"github.com/fhirgate/fhirgate/internal/testserver"
)

// TestAttackCorpus sends crafted tokens over real HTTP to a provider with
// jwksUri, audience and acceptedTypes. Each must be refused with the right
// status and challenge, cost no userinfo call, fetch nothing from attacker
// URLs, and write nothing: no Login, no cache entry.
func TestAttackCorpus(t *testing.T) {
	rs := testredis.Start(t)
	idp := testidp.New(t)
	var attackerHits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		attackerHits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(attacker.Close)

	const audience = "fhirgate-api"
	provider := config.Provider{
		Issuer: idp.Issuer(), UserInfoURL: idp.UserInfoURL(), JWKSURI: idp.JWKSURL(),
		Audience: config.StringList{audience}, AcceptedTypes: []string{"at+jwt"},
	}
	env := testserver.Start(t, testserver.WithProviders(provider), testserver.WithRedis(rs.URL()))
	p := env.Bootstrap(t, "Attack")
	_, alice := env.Invite(t, p, map[string]any{"resourceType": "Practitioner", "firstName": "Alice", "lastName": "Smith", "externalId": "alice"})

	ctx := context.Background()
	store, err := fhir.Open(ctx, env.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	shared, err := cache.NewRedis(ctx, rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	written := func() (logins int, keys int) {
		_, logins, err := store.Search(ctx, fhir.Query{Type: fhir.TypeLogin, AllProjects: true, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		found, err := shared.Client().Keys(ctx, "fhirgate:ext:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return logins, len(found)
	}

	now := time.Now()
	claims := func(extra map[string]any) map[string]any {
		c := map[string]any{"iss": idp.Issuer(), "sub": "alice", "aud": audience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": fmt.Sprint(time.Now().UnixNano())}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	at := testidp.WithHeader("typ", "at+jwt")
	mint := func(extra map[string]any, opts ...testidp.TokenOption) string {
		return idp.Token(claims(extra), append([]testidp.TokenOption{at}, opts...)...)
	}
	header := fmt.Sprintf(`{"alg":"RS256","typ":"at+jwt","kid":%q}`, idp.RSAKeyID())
	payload := func(body string) string {
		return fmt.Sprintf(`{"iss":%q,"aud":%q,"iat":%d,"exp":%d,%s}`, idp.Issuer(), audience, now.Unix(), now.Add(time.Hour).Unix(), body)
	}
	raw := func(h, body string) string { return idp.SignRaw([]byte(h), []byte(payload(body))) }
	valid := mint(nil)
	segs := strings.Split(valid, ".")
	tampered := func() string {
		b, _ := base64.RawURLEncoding.DecodeString(segs[1])
		b = []byte(strings.Replace(string(b), `"sub":"alice"`, `"sub":"alicf"`, 1))
		return segs[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + segs[2]
	}()
	hb, _ := base64.RawURLEncoding.DecodeString(segs[0])

	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"alg none", mint(nil, testidp.WithAlgNone()), 401},
		{"HS256 keyed with the RSA public key", mint(nil, testidp.WithHS256(idp.RSAPublicKeyPEM())), 401},
		{"foreign key under a real kid", mint(nil, testidp.WithForeignKey()), 401},
		{"crit header", mint(nil, testidp.WithHeader("crit", []string{"exp"})), 401},
		{"jku to attacker keys", mint(nil, testidp.WithForeignKey(), testidp.WithHeader("jku", attacker.URL+"/jwks")), 401},
		{"x5u to attacker certificate", mint(nil, testidp.WithForeignKey(), testidp.WithHeader("x5u", attacker.URL+"/cert.pem")), 401},
		{"embedded jwk", mint(nil, testidp.WithForeignKey(), testidp.WithHeader("jwk", map[string]string{"kty": "RSA", "n": "sXch", "e": "AQAB"})), 401},
		{"embedded x5c", mint(nil, testidp.WithForeignKey(), testidp.WithHeader("x5c", []string{"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"})), 401},
		{"kid path traversal", mint(nil, testidp.WithKID("../../../../etc/passwd")), 401},
		{"duplicate claim", raw(header, `"sub":"alice","sub":"mallory"`), 401},
		{"case-variant iss", raw(header, `"sub":"alice","ISS":"https://evil.example.com"`), 401},
		{"missing exp", mint(map[string]any{"exp": nil}), 401},
		{"exp as a string", idp.SignRaw([]byte(header), []byte(fmt.Sprintf(`{"iss":%q,"aud":%q,"sub":"alice","exp":"%d"}`, idp.Issuer(), audience, now.Add(time.Hour).Unix()))), 401},
		{"iat in the future", mint(map[string]any{"iat": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()}), 401},
		{"nbf in the future", mint(map[string]any{"nbf": now.Add(time.Hour).Unix()}), 401},
		{"expired", mint(map[string]any{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()}), 401},
		{"wrong aud", mint(map[string]any{"aud": "another-api"}), 401},
		{"iss with trailing slash", mint(map[string]any{"iss": idp.Issuer() + "/"}), 401},
		{"tampered payload", tampered, 401},
		{"four segments", valid + ".AAAA", 401},
		{"padded base64", base64.URLEncoding.EncodeToString(append(hb, ' ')) + "." + segs[1] + "." + segs[2], 401},
		{"lower-case rs256", idp.SignRaw([]byte(fmt.Sprintf(`{"alg":"rs256","typ":"at+jwt","kid":%q}`, idp.RSAKeyID())), []byte(payload(`"sub":"alice"`))), 401},
		{"over 8 KiB", mint(map[string]any{"pad": strings.Repeat("x", 9000)}), 400},
		{"invalid UTF-8", raw(header, "\"sub\":\"ali\xffce\""), 401},
		{"10 000-character sub (over 8 KiB encoded)", mint(map[string]any{"sub": strings.Repeat("a", 10000)}), 400},
		{"5 000-character sub", mint(map[string]any{"sub": strings.Repeat("a", 5000)}), 401},
		{"non-string fhirUser", mint(map[string]any{"fhirUser": 42}), 401},
		{"fhirUser with extra search parameters", mint(map[string]any{"fhirUser": "Practitioner?identifier=x&_include=*"}), 401},
		{"fhirUser path trick", mint(map[string]any{"fhirUser": "Practitioner/../ProjectMembership/x"}), 401},
		{"ID token where an access token is expected", mint(nil, testidp.WithHeader("typ", "JWT")), 401},
		{"refresh token where an access token is expected", mint(nil, testidp.WithHeader("typ", "Refresh")), 401},
		{"no typ", mint(nil, testidp.WithHeader("typ", nil)), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idp.ResetCounts()
			logins, keys := written()
			r := env.Do(t, http.MethodGet, "fhir/R4/"+alice, "", nil, "Authorization", "Bearer "+tt.token)
			if r.Status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.status, r.Body)
			}
			wantChallenge := `Bearer realm="fhirgate", error="invalid_token"`
			if tt.status == 400 {
				wantChallenge = `Bearer realm="fhirgate", error="invalid_request"`
			}
			if got := r.Header.Get("WWW-Authenticate"); got != wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, wantChallenge)
			}
			if n := idp.UserInfoCalls(); n != 0 {
				t.Errorf("%d userinfo calls, want 0", n)
			}
			if l, k := written(); l != logins || k != keys {
				t.Errorf("wrote %d Logins and %d cache keys", l-logins, k-keys)
			}
		})
	}
	if n := attackerHits.Load(); n != 0 {
		t.Fatalf("the server fetched attacker URLs %d times", n)
	}

	// Control: the untouched token passes, proving the measurements above can
	// see a call, a Login and a cache entry.
	idp.ResetCounts()
	logins, keys := written()
	if r := env.Do(t, http.MethodGet, "fhir/R4/"+alice, valid, nil); r.Status != http.StatusOK {
		t.Fatalf("control token: %d %s", r.Status, r.Body)
	}
	if l, k := written(); idp.UserInfoCalls() != 1 || l != logins+1 || k != keys+1 {
		t.Fatalf("control token: %d userinfo calls, %d Logins, %d keys written", idp.UserInfoCalls(), l-logins, k-keys)
	}
	var leaked []string
	for _, tt := range tests {
		if len(tt.token) > 20 && strings.Contains(env.Logs.String(), tt.token[len(tt.token)-20:]) {
			leaked = append(leaked, tt.name)
		}
	}
	if len(leaked) > 0 {
		t.Fatalf("token material in the logs for %v", leaked)
	}
}
