package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/internal/testserver"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/golang-jwt/jwt/v5"
)

func TestHealthAndReadiness(t *testing.T) {
	env := testserver.Start(t)
	for _, path := range []string{"healthz", "readyz"} {
		if r := env.Do(t, http.MethodGet, path, "", nil); r.Status != http.StatusOK {
			t.Errorf("%s: %d %s", path, r.Status, r.Body)
		}
	}
	r := env.Do(t, http.MethodGet, "fhir/R4/metadata", "", nil)
	if r.Status != http.StatusOK || r.Map(t)["resourceType"] != "CapabilityStatement" {
		t.Fatalf("metadata: %d %s", r.Status, r.Body)
	}
}

// TestLocalTokenVerifiesWithPublishedJWKS checks discovery, the JWKS and the
// claims of a client-credentials token as SPEC §6 lists them.
func TestLocalTokenVerifiesWithPublishedJWKS(t *testing.T) {
	env := testserver.Start(t)
	p := env.Bootstrap(t, "Demo")

	disc := env.Do(t, http.MethodGet, ".well-known/openid-configuration", "", nil).Map(t)
	if disc["issuer"] != env.URL || disc["jwks_uri"] != env.URL+".well-known/jwks.json" || disc["token_endpoint"] != env.URL+"oauth2/token" {
		t.Fatalf("discovery: %v", disc)
	}
	var set struct {
		Keys []struct{ Kty, Crv, X, Y, Kid, Alg, D string }
	}
	env.Do(t, http.MethodGet, ".well-known/jwks.json", "", nil).JSON(t, &set)
	if len(set.Keys) != 1 || set.Keys[0].Kty != "EC" || set.Keys[0].Alg != "ES256" || set.Keys[0].D != "" {
		t.Fatalf("jwks: %+v", set)
	}
	k := set.Keys[0]
	x, _ := base64.RawURLEncoding.DecodeString(k.X)
	y, _ := base64.RawURLEncoding.DecodeString(k.Y)
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}

	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(p.AdminToken, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(env.URL), jwt.WithAudience(env.URL+"fhir/R4"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token does not verify with the published key: %v", err)
	}
	if tok.Header["kid"] != k.Kid || tok.Header["typ"] != "at+jwt" {
		t.Fatalf("header: %v", tok.Header)
	}
	for _, name := range []string{"iss", "aud", "sub", "client_id", "login_id", "project", "membership", "profile", "iat", "exp", "jti"} {
		if _, ok := claims[name]; !ok {
			t.Errorf("claim %s missing", name)
		}
	}
	if claims["project"] != p.ID || claims["client_id"] != p.ClientID || claims["profile"] != "ClientApplication/"+p.ClientID {
		t.Fatalf("claims: %v", claims)
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	env := testserver.Start(t)
	p := env.Bootstrap(t, "Demo")
	post := func(form url.Values, user, pass string) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, env.URL+"oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	tests := []struct {
		name       string
		form       url.Values
		user, pass string
		status     int
		errCode    string
	}{
		{"basic ok", cc, p.ClientID, p.ClientSecret, 200, ""},
		{"form ok", url.Values{"grant_type": {"client_credentials"}, "client_id": {p.ClientID}, "client_secret": {p.ClientSecret}}, "", "", 200, ""},
		{"wrong secret", cc, p.ClientID, p.ClientSecret + "x", 401, "invalid_client"},
		{"unknown client", cc, "00000000-0000-0000-0000-000000000000", p.ClientSecret, 401, "invalid_client"},
		{"no credentials", cc, "", "", 400, "invalid_request"},
		{"basic and form secret", url.Values{"grant_type": {"client_credentials"}, "client_secret": {p.ClientSecret}}, p.ClientID, p.ClientSecret, 400, "invalid_request"},
		{"no grant type", url.Values{}, p.ClientID, p.ClientSecret, 400, "invalid_request"},
		{"unsupported grant", url.Values{"grant_type": {"password"}}, p.ClientID, p.ClientSecret, 400, "unsupported_grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(tt.form, tt.user, tt.pass)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (%v)", resp.StatusCode, tt.status, body)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", resp.Header.Get("Cache-Control"))
			}
			if tt.errCode == "" {
				if body["access_token"] == "" || body["token_type"] != "Bearer" || body["project"] != p.ID || body["expires_in"] == nil {
					t.Fatalf("success body: %v", body)
				}
				return
			}
			if body["error"] != tt.errCode {
				t.Fatalf("error = %v, want %s", body["error"], tt.errCode)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without Basic challenge")
			}
		})
	}
}

func TestBearerExtraction(t *testing.T) {
	env := testserver.Start(t)
	p := env.Bootstrap(t, "Demo")
	tests := []struct {
		name      string
		header    []string
		status    int
		challenge string
		code      string
	}{
		{"no credentials", nil, 401, `Bearer realm="fhirgate"`, "login"},
		{"other scheme", []string{"Authorization", "Basic YTpi"}, 401, `Bearer realm="fhirgate"`, "login"},
		{"lower-case scheme works", []string{"Authorization", "bearer " + p.AdminToken}, 200, "", ""},
		{"empty token", []string{"Authorization", "Bearer "}, 400, `Bearer realm="fhirgate", error="invalid_request"`, "invalid"},
		{"bad characters", []string{"Authorization", "Bearer a b"}, 400, `Bearer realm="fhirgate", error="invalid_request"`, "invalid"},
		{"too large", []string{"Authorization", "Bearer " + strings.Repeat("a", 8<<10+1)}, 400, `Bearer realm="fhirgate", error="invalid_request"`, "invalid"},
		{"garbage token", []string{"Authorization", "Bearer abc.def.ghi"}, 401, `Bearer realm="fhirgate", error="invalid_token"`, "login"},
		{"tampered local token", []string{"Authorization", "Bearer " + p.AdminToken[:len(p.AdminToken)-4] + "AAAA"}, 401, `Bearer realm="fhirgate", error="invalid_token"`, "login"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := env.Do(t, http.MethodGet, "oauth2/userinfo", "", nil, tt.header...)
			if r.Status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.status, r.Body)
			}
			if tt.status == 200 {
				return
			}
			if got := r.Header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.challenge)
			}
			if got := r.OutcomeCode(t); got != tt.code {
				t.Errorf("issue code %q, want %q", got, tt.code)
			}
		})
	}
	// A token in the query string is never read.
	if r := env.Do(t, http.MethodGet, "oauth2/userinfo?access_token="+p.AdminToken, "", nil); r.Status != 401 {
		t.Fatalf("query-string token accepted: %d", r.Status)
	}
}

func TestInvite(t *testing.T) {
	env := testserver.Start(t)
	a := env.Bootstrap(t, "A")
	b := env.Bootstrap(t, "B")
	invitePath := "admin/projects/" + a.ID + "/invite"
	valid := map[string]any{"resourceType": "Practitioner", "firstName": "Jane", "lastName": "Smith", "externalId": "idp|jane", "email": "jane@example.com"}

	r := env.Do(t, http.MethodPost, invitePath, a.AdminToken, valid)
	if r.Status != http.StatusCreated {
		t.Fatalf("invite: %d %s", r.Status, r.Body)
	}
	var m fhir.ProjectMembership
	r.JSON(t, &m)
	if r.Header.Get("Location") != env.URL+"fhir/R4/ProjectMembership/"+m.ID || m.ExternalID != "idp|jane" || m.Admin ||
		m.ResourceType != "ProjectMembership" || *m.Project.Reference != "Project/"+a.ID || !strings.HasPrefix(*m.Profile.Reference, "Practitioner/") {
		t.Fatalf("membership %s, Location %q", r.Body, r.Header.Get("Location"))
	}
	prof := env.Do(t, http.MethodGet, "fhir/R4/"+*m.Profile.Reference, a.AdminToken, nil)
	if prof.Status != 200 || !strings.Contains(string(prof.Body), `"family":"Smith"`) || !strings.Contains(string(prof.Body), `"given":["Jane"]`) ||
		!strings.Contains(string(prof.Body), `"value":"jane@example.com"`) {
		t.Fatalf("profile: %d %s", prof.Status, prof.Body)
	}

	countPractitioners := func() float64 {
		s := env.Do(t, http.MethodGet, "fhir/R4/Practitioner", a.AdminToken, nil).Map(t)
		return s["total"].(float64)
	}
	before := countPractitioners()

	tests := []struct {
		name   string
		path   string
		token  string
		body   any
		status int
		fields []string
	}{
		{"duplicate externalId", invitePath, a.AdminToken, map[string]any{"resourceType": "Patient", "firstName": "X", "lastName": "Y", "externalId": "idp|jane"}, 409, []string{"externalId"}},
		{"every invalid field listed", invitePath, a.AdminToken, map[string]any{"resourceType": "Observation", "firstName": " ", "lastName": 3, "email": "not mail", "admin": "yes", "extra": 1},
			400, []string{"resourceType", "firstName", "lastName", "email", "admin", "extra"}},
		{"externalId or email required", invitePath, a.AdminToken, map[string]any{"resourceType": "Patient", "firstName": "X", "lastName": "Y"}, 400, []string{"externalId"}},
		{"malformed JSON", invitePath, a.AdminToken, `{"resourceType":`, 400, nil},
		{"another project's admin", invitePath, b.AdminToken, valid, 403, nil},
		{"unknown project", "admin/projects/00000000-0000-0000-0000-000000000000/invite", a.AdminToken, valid, 404, nil},
		{"no token", invitePath, "", valid, 401, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := env.Do(t, http.MethodPost, tt.path, tt.token, tt.body)
			if r.Status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tt.status, r.Body)
			}
			var oo struct {
				ResourceType string
				Issue        []struct{ Expression []string }
			}
			r.JSON(t, &oo)
			if oo.ResourceType != "OperationOutcome" {
				t.Fatalf("not an OperationOutcome: %s", r.Body)
			}
			got := map[string]bool{}
			for _, is := range oo.Issue {
				for _, e := range is.Expression {
					got[e] = true
				}
			}
			for _, f := range tt.fields {
				if !got[f] {
					t.Errorf("field %s not listed in %s", f, r.Body)
				}
			}
		})
	}
	if after := countPractitioners(); after != before {
		t.Fatalf("refused invites left profiles behind: %v practitioners, want %v", after, before)
	}
	patients := env.Do(t, http.MethodGet, "fhir/R4/Patient", a.AdminToken, nil).Map(t)
	if patients["total"].(float64) != 0 {
		t.Fatalf("the 409 invite left a Patient behind: %v", patients)
	}
	// The same externalId in another project is allowed.
	env.Invite(t, b, map[string]any{"resourceType": "Patient", "firstName": "Jane", "lastName": "Smith", "externalId": "idp|jane"})
}

// TestBootstrapWhileServing runs the bootstrap command's code path on a second
// connection to the database the server is using.
func TestBootstrapWhileServing(t *testing.T) {
	env := testserver.Start(t)
	ctx := context.Background()
	store, err := fhir.Open(ctx, env.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	out, err := membership.New(store, nil).Bootstrap(ctx, "Second")
	if err != nil {
		t.Fatal(err)
	}
	token := env.ClientToken(t, out.ClientID, out.ClientSecret)
	info := env.Do(t, http.MethodGet, "oauth2/userinfo", token, nil).Map(t)
	if info["project"] != out.ProjectID || info["profile"] != "ClientApplication/"+out.ClientID {
		t.Fatalf("userinfo: %v", info)
	}
	if _, ok := info["access_token"]; ok {
		t.Fatal("a local caller must not get new credentials from userinfo")
	}
	if strings.Contains(env.Logs.String(), out.ClientSecret) || strings.Contains(env.Logs.String(), token) {
		t.Fatal("a secret or token reached the logs")
	}
}

func TestSigningKeyFileMode(t *testing.T) {
	env := testserver.Start(t)
	info, err := os.Stat(filepath.Clean(env.Config.SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("signing key mode %v, want 0600", info.Mode().Perm())
	}
}

// TestLoginRecordsPeerAddress: a Login records the peer's address, not a
// forged X-Forwarded-For, and never the secret.
func TestLoginRecordsPeerAddress(t *testing.T) {
	env := testserver.Start(t)
	p := env.Bootstrap(t, "Demo")
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {p.ClientID}, "client_secret": {p.ClientSecret}}
	req, _ := http.NewRequest(http.MethodPost, env.URL+"oauth2/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", "203.0.113.66")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("token: %v %v", resp, err)
	}
	resp.Body.Close()
	ctx := context.Background()
	store, err := fhir.Open(ctx, env.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	recs, _, err := store.Search(ctx, fhir.Query{Type: fhir.TypeLogin, AllProjects: true, Count: 10})
	if err != nil || len(recs) != 2 { // the bootstrap token's Login and this one
		t.Fatalf("logins: %d %v", len(recs), err)
	}
	for _, rec := range recs {
		body := string(rec.Body)
		if strings.Contains(body, "203.0.113.66") || !strings.Contains(body, `"remoteAddress":"127.0.0.1"`) {
			t.Fatalf("Login remote address: %s", body)
		}
		if strings.Contains(body, p.ClientSecret) {
			t.Fatal("a Login holds the client secret")
		}
	}
}
