package server_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/extauth"
	"github.com/fhirgate/fhirgate/internal/testidp"
	"github.com/fhirgate/fhirgate/internal/testredis"
	"github.com/fhirgate/fhirgate/internal/testserver"
	"github.com/golang-jwt/jwt/v5"
)

// extEnv is a server trusting one in-process IdP, with a project holding a
// few invited users.
type extEnv struct {
	*testserver.Env
	idp     *testidp.IdP
	project *testserver.Project
	// profiles by role
	alice, bob, admin string // "Practitioner/<id>" etc.
}

func startExt(t *testing.T, opts ...testserver.Option) *extEnv { return startExtB(t, opts...) }

func startExtB(t testing.TB, opts ...testserver.Option) *extEnv {
	t.Helper()
	idp := testidp.New(t)
	provider := config.Provider{Issuer: idp.Issuer(), UserInfoURL: idp.UserInfoURL()}
	env := testserver.Start(t, append([]testserver.Option{testserver.WithProviders(provider)}, opts...)...)
	e := &extEnv{Env: env, idp: idp}
	e.project = env.Bootstrap(t, "Ext")
	_, e.alice = env.Invite(t, e.project, map[string]any{"resourceType": "Practitioner", "firstName": "Alice", "lastName": "Smith", "externalId": "alice", "email": "alice@example.com"})
	_, e.bob = env.Invite(t, e.project, map[string]any{"resourceType": "Practitioner", "firstName": "Bob", "lastName": "Jones", "externalId": "bob"})
	_, e.admin = env.Invite(t, e.project, map[string]any{"resourceType": "Practitioner", "firstName": "Ada", "lastName": "Admin", "externalId": "ada", "admin": true})
	// Alice's profile carries an NPI for the identifier forms of fhirUser.
	r := env.Do(t, http.MethodGet, "fhir/R4/"+e.alice, e.project.AdminToken, nil)
	var prof map[string]any
	r.JSON(t, &prof)
	prof["identifier"] = []map[string]string{{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"}}
	if r := env.Do(t, http.MethodPut, "fhir/R4/"+e.alice, e.project.AdminToken, prof); r.Status != http.StatusOK {
		t.Fatalf("update alice: %d %s", r.Status, r.Body)
	}
	idp.ResetCounts()
	return e
}

// membership returns the stored ProjectMembership whose externalId is sub.
func (e *extEnv) membership(t testing.TB, sub string) map[string]any {
	t.Helper()
	r := e.Do(t, http.MethodGet, "fhir/R4/ProjectMembership?external-id="+sub, e.project.AdminToken, nil)
	var bundle struct {
		Entry []struct{ Resource map[string]any }
	}
	r.JSON(t, &bundle)
	if len(bundle.Entry) != 1 {
		t.Fatalf("membership search for %s: %s", sub, r.Body)
	}
	return bundle.Entry[0].Resource
}

// putMembership stores m through the FHIR API, as the project admin.
func (e *extEnv) putMembership(t testing.TB, m map[string]any) {
	t.Helper()
	if r := e.Do(t, http.MethodPut, "fhir/R4/ProjectMembership/"+m["id"].(string), e.project.AdminToken, m); r.Status != http.StatusOK {
		t.Fatalf("update membership: %d %s", r.Status, r.Body)
	}
}

// token mints an IdP token for claims on top of iss/iat/exp (one hour).
func (e *extEnv) token(claims map[string]any) string {
	base := map[string]any{"iss": e.idp.Issuer(), "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(), "jti": rand.Text()}
	for k, v := range claims {
		if v == nil {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return e.idp.Token(base)
}

func assertRefused(t *testing.T, r *testserver.Response) {
	t.Helper()
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: %s", r.Status, r.Body)
	}
	if got := r.Header.Get("WWW-Authenticate"); got != `Bearer realm="fhirgate", error="invalid_token"` {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
	if code := r.OutcomeCode(t); code != "login" {
		t.Fatalf("issue code %q", code)
	}
	if !strings.Contains(string(r.Body), `"diagnostics":"authentication failed"`) {
		t.Fatalf("401 body is not the generic text: %s", r.Body)
	}
}

// TestExternalAcceptance is the acceptance list of the external-authentication issue.
func TestExternalAcceptance(t *testing.T) {
	e := startExt(t)
	tests := []struct {
		name      string
		token     func() string
		setup     func()
		wantUser  string // profile reference on success
		wantCalls int64  // userinfo calls for this one request; -1: don't care
	}{
		{name: "not a JWT", token: func() string { return "not-a-jwt" }, wantCalls: 0},
		{name: "no iss", token: func() string { return e.token(map[string]any{"iss": nil, "sub": "alice"}) }, wantCalls: 0},
		{name: "unknown issuer", token: func() string { return e.token(map[string]any{"iss": "https://evil.example.com", "sub": "alice"}) }, wantCalls: 0},
		{name: "issuer with trailing slash", token: func() string { return e.token(map[string]any{"iss": e.idp.Issuer() + "/", "sub": "alice"}) }, wantCalls: 0},
		{name: "neither fhirUser nor sub", token: func() string { return e.token(map[string]any{}) }, wantCalls: 0},
		{name: "expired", token: func() string {
			return e.token(map[string]any{"sub": "alice", "exp": time.Now().Add(-2 * time.Hour).Unix(), "iat": time.Now().Add(-3 * time.Hour).Unix()})
		}, wantCalls: 0},
		{name: "non-string fhirUser", token: func() string { return e.token(map[string]any{"sub": "alice", "fhirUser": 42}) }, wantCalls: 0},
		{name: "userinfo rejects", token: func() string { return e.token(map[string]any{"sub": "alice"}) },
			setup: func() { e.idp.SetStatus(http.StatusUnauthorized, "") }, wantCalls: 1},
		{name: "userinfo sub differs", token: func() string { return e.token(map[string]any{"sub": "alice"}) },
			setup: func() { e.idp.SetSubOverride("mallory") }, wantCalls: 1},
		{name: "fhirUser profile not found", token: func() string { return e.token(map[string]any{"fhirUser": "Practitioner/nope"}) }, wantCalls: 1},
		{name: "unknown externalId", token: func() string { return e.token(map[string]any{"sub": "carol"}) }, wantCalls: 1},
		{name: "externalId case differs", token: func() string { return e.token(map[string]any{"sub": "Alice"}) }, wantCalls: 1},
		{name: "sub with a comma is not a list", token: func() string { return e.token(map[string]any{"sub": "carol,alice"}) }, wantCalls: 1},
		{name: "sub with a backslash is not an escape", token: func() string { return e.token(map[string]any{"sub": `al\ice`}) }, wantCalls: 1},
		{name: "by sub", token: func() string { return e.token(map[string]any{"sub": "alice"}) }, wantUser: "alice", wantCalls: 1},
		{name: "by reference", token: func() string { return e.token(map[string]any{"fhirUser": e.alice}) }, wantUser: "alice", wantCalls: 1},
		{name: "by search string", token: func() string {
			return e.token(map[string]any{"fhirUser": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567890"})
		}, wantUser: "alice", wantCalls: 1},
		{name: "by absolute URL", token: func() string { return e.token(map[string]any{"fhirUser": "https://idp.example.com/fhir/" + e.alice}) }, wantUser: "alice", wantCalls: 1},
		{name: "by absolute search URL", token: func() string {
			return e.token(map[string]any{"fhirUser": "https://idp.example.com/fhir/Practitioner?identifier=1234567890"})
		}, wantUser: "alice", wantCalls: 1},
		{name: "by ext.fhirUser", token: func() string { return e.token(map[string]any{"ext": map[string]any{"fhirUser": e.alice}}) }, wantUser: "alice", wantCalls: 1},
		{name: "fhirUser wins over sub", token: func() string { return e.token(map[string]any{"sub": "bob", "fhirUser": e.alice}) }, wantUser: "alice", wantCalls: 1},
		{name: "fhirUser does not fall back to sub", token: func() string { return e.token(map[string]any{"sub": "alice", "fhirUser": "Practitioner/nope"}) }, wantCalls: 1},
	}
	users := map[string]string{"alice": e.alice}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.idp.SetStatus(http.StatusOK, "")
			e.idp.SetSubOverride("")
			if tt.setup != nil {
				tt.setup()
			}
			e.idp.ResetCounts()
			r := e.Do(t, http.MethodGet, "oauth2/userinfo", tt.token(), nil)
			if calls := e.idp.UserInfoCalls(); tt.wantCalls >= 0 && calls != tt.wantCalls {
				t.Errorf("userinfo calls %d, want %d", calls, tt.wantCalls)
			}
			if tt.wantUser == "" {
				assertRefused(t, r)
				return
			}
			if r.Status != http.StatusOK {
				t.Fatalf("status %d: %s", r.Status, r.Body)
			}
			if got := r.Map(t)["profile"]; got != users[tt.wantUser] {
				t.Fatalf("profile %v, want %s", got, users[tt.wantUser])
			}
		})
	}
}

func TestExternalCachedAndNegativeCached(t *testing.T) {
	e := startExt(t)
	good := e.token(map[string]any{"sub": "alice"})
	for i := 0; i < 3; i++ {
		if r := e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, good, nil); r.Status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.Status, r.Body)
		}
	}
	if n := e.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("three requests with one token made %d userinfo calls, want 1", n)
	}

	e.idp.SetStatus(http.StatusUnauthorized, "")
	e.idp.ResetCounts()
	bad := e.token(map[string]any{"sub": "bob"})
	for i := 0; i < 10; i++ {
		assertRefused(t, e.Do(t, http.MethodGet, "oauth2/userinfo", bad, nil))
	}
	if n := e.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("one bad token sent 10 times made %d userinfo calls, want 1", n)
	}
}

func TestExternalSameExternalIDInTwoProjects(t *testing.T) {
	e := startExt(t)
	other := e.Bootstrap(t, "Other")
	e.Invite(t, other, map[string]any{"resourceType": "Patient", "firstName": "Alice", "lastName": "Smith", "externalId": "alice"})
	assertRefused(t, e.Do(t, http.MethodGet, "oauth2/userinfo", e.token(map[string]any{"sub": "alice"}), nil))
	if !strings.Contains(e.Logs.String(), "membership_ambiguous") {
		t.Fatal("the ambiguity is not logged")
	}
}

func TestExternalProfileWithoutMembership(t *testing.T) {
	e := startExt(t)
	r := e.Do(t, http.MethodPost, "fhir/R4/Practitioner", e.project.AdminToken, map[string]any{"resourceType": "Practitioner", "name": []map[string]any{{"family": "Loner"}}})
	if r.Status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	id := r.Map(t)["id"].(string)
	assertRefused(t, e.Do(t, http.MethodGet, "oauth2/userinfo", e.token(map[string]any{"fhirUser": "Practitioner/" + id}), nil))
}

func TestExternalIdPUnavailable(t *testing.T) {
	e := startExt(t)
	for _, tt := range []struct {
		status     int
		retryAfter string
		want       string
	}{
		{http.StatusServiceUnavailable, "", "30"},
		{http.StatusTooManyRequests, "7", "7"},
		{http.StatusBadGateway, "120", "120"},
	} {
		e.idp.SetStatus(tt.status, tt.retryAfter)
		tok := e.token(map[string]any{"sub": "alice"})
		r := e.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") != tt.want || r.OutcomeCode(t) != "transient" {
			t.Fatalf("IdP %d: got %d Retry-After %q: %s", tt.status, r.Status, r.Header.Get("Retry-After"), r.Body)
		}
		// Not cached: once the IdP is back the same token works.
		e.idp.SetStatus(http.StatusOK, "")
		if r := e.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil); r.Status != http.StatusOK {
			t.Fatalf("after the IdP recovered: %d %s", r.Status, r.Body)
		}
	}
}

// TestExternalLocalCredentials checks /oauth2/userinfo's local credentials,
// the external token on the FHIR API and on /admin, and role rules.
func TestExternalLocalCredentials(t *testing.T) {
	e := startExt(t)
	exp := time.Now().Add(20 * time.Minute).Truncate(time.Second)
	ext := e.token(map[string]any{"sub": "alice", "exp": exp.Unix()})
	r := e.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	info := r.Map(t)
	id := strings.TrimPrefix(e.alice, "Practitioner/")
	want := map[string]any{"sub": id, "profile": e.alice, "fhirUser": e.URL + "fhir/R4/" + e.alice, "project": e.project.ID,
		"name": "Alice Smith", "given_name": "Alice", "family_name": "Smith", "email": "alice@example.com", "token_type": "Bearer"}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("userinfo %s = %v, want %v", k, info[k], v)
		}
	}
	local, _ := info["access_token"].(string)
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(local, claims); err != nil {
		t.Fatalf("access_token: %v", err)
	}
	if lexp, _ := claims.GetExpirationTime(); lexp == nil || lexp.After(exp) {
		t.Fatalf("local exp %v is after the external exp %v", lexp, exp)
	}
	if ein := info["expires_in"].(float64); ein <= 0 || ein > 20*60 {
		t.Fatalf("expires_in %v", ein)
	}
	// Both tokens work on the FHIR API.
	for name, tok := range map[string]string{"local": local, "external": ext} {
		if r := e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, tok, nil); r.Status != http.StatusOK {
			t.Fatalf("%s token on FHIR read: %d %s", name, r.Status, r.Body)
		}
	}
	// A non-admin may not invite; an admin invited with admin:true may, with the IdP token.
	invite := map[string]any{"resourceType": "Patient", "firstName": "Pat", "lastName": "Doe", "externalId": "pat"}
	if r := e.Do(t, http.MethodPost, "admin/projects/"+e.project.ID+"/invite", ext, invite); r.Status != http.StatusForbidden {
		t.Fatalf("non-admin invite: %d %s", r.Status, r.Body)
	}
	adminTok := e.token(map[string]any{"sub": "ada"})
	if r := e.Do(t, http.MethodPost, "admin/projects/"+e.project.ID+"/invite", adminTok, invite); r.Status != http.StatusCreated {
		t.Fatalf("admin invite with IdP token: %d %s", r.Status, r.Body)
	}
}

func TestExternalConcurrentFirstRequests(t *testing.T) {
	e := startExt(t)
	e.idp.SetDelay(50 * time.Millisecond)
	tok := e.token(map[string]any{"sub": "alice"})
	var wg sync.WaitGroup
	statuses := make([]int, 100)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, tok, nil).Status
		}()
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
	if n := e.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("100 concurrent first requests made %d userinfo calls, want 1", n)
	}
}

// TestExternalWithRedis: the cache TTL read back from Redis is at most exp −
// now, and when Redis goes away requests are still served (no 500s).
func TestExternalWithRedis(t *testing.T) {
	rs := testredis.Start(t)
	e := startExt(t, testserver.WithRedis(rs.URL()))
	exp := time.Now().Add(10 * time.Minute)
	tok := e.token(map[string]any{"sub": "alice", "exp": exp.Unix()})
	if r := e.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil); r.Status != http.StatusOK {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	shared, err := cache.NewRedis(context.Background(), rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	ttl, err := shared.TTL(context.Background(), cacheKey(e.idp.Issuer(), tok))
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > time.Until(exp)+time.Second {
		t.Fatalf("Redis TTL %v, want within (0, %v]", ttl, time.Until(exp))
	}

	rs.Stop()
	fresh := e.token(map[string]any{"sub": "bob"})
	for i, tk := range []string{tok, fresh, fresh} {
		r := e.Do(t, http.MethodGet, "oauth2/userinfo", tk, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("request %d with Redis down: %d %s", i, r.Status, r.Body)
		}
	}
}

func cacheKey(issuer, token string) string {
	sum := sha256.Sum256([]byte(token))
	return extauth.CacheKeyPrefix + issuer + ":" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestMetrics: /metrics reports requests by route, auth results by reason,
// cache lookups, userinfo calls by provider and status, and collapses.
func TestMetrics(t *testing.T) {
	e := startExt(t)
	tok := e.token(map[string]any{"sub": "alice"})
	e.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil)
	e.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil)
	e.Do(t, http.MethodGet, "oauth2/userinfo", "", nil)
	e.Do(t, http.MethodGet, "oauth2/userinfo", e.token(map[string]any{"sub": "carol"}), nil)
	r := e.Do(t, http.MethodGet, "metrics", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("metrics: %d", r.Status)
	}
	body := string(r.Body)
	for _, want := range []string{
		`fhirgate_http_requests_total{method="GET",route="/oauth2/userinfo",status="200"} 2`,
		`fhirgate_auth_results_total{kind="external",result="ok"} 2`,
		`fhirgate_auth_results_total{kind="none",result="no_credentials"} 1`,
		`fhirgate_auth_results_total{kind="external",result="membership_not_found"} 1`,
		`fhirgate_extauth_cache_lookups_total{result="hit"}`,
		`fhirgate_extauth_userinfo_requests_total{provider="` + e.idp.Issuer() + `",status="200"} 2`,
		`fhirgate_extauth_userinfo_duration_seconds_count{provider="` + e.idp.Issuer() + `"} 2`,
		`fhirgate_extauth_singleflight_collapsed_total`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(body, tok) {
		t.Fatal("a token in the metrics")
	}
}

// TestUserInfoWithinLeeway: an external token past its exp but inside the
// provider's leeway still authenticates, but can no longer yield local
// credentials: /oauth2/userinfo answers 401, not 500.
func TestUserInfoWithinLeeway(t *testing.T) {
	now := time.Now()
	clock := now
	idp := testidp.New(t)
	env := testserver.Start(t, testserver.WithNow(func() time.Time { return clock }),
		testserver.WithProviders(config.Provider{Issuer: idp.Issuer(), UserInfoURL: idp.UserInfoURL()}))
	p := env.Bootstrap(t, "Leeway")
	_, profile := env.Invite(t, p, map[string]any{"resourceType": "Practitioner", "firstName": "A", "lastName": "B", "externalId": "alice"})
	idp.SetStatus(http.StatusOK, "") // the IdP keeps accepting the token
	tok := idp.Token(map[string]any{"iss": idp.Issuer(), "sub": "alice", "iat": now.Unix(), "exp": now.Add(time.Minute).Unix()})
	clock = now.Add(90 * time.Second) // past exp, inside the default 60s leeway
	if r := env.Do(t, http.MethodGet, "fhir/R4/"+profile, tok, nil); r.Status != http.StatusOK {
		t.Fatalf("the token no longer authenticates at all: %d %s", r.Status, r.Body)
	}
	r := env.Do(t, http.MethodGet, "oauth2/userinfo", tok, nil)
	if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") != `Bearer realm="fhirgate", error="invalid_token"` {
		t.Fatalf("userinfo within the leeway: %d %s", r.Status, r.Body)
	}
}

// TestMembershipChangeEndsCachedToken: a cached token stops working at its
// next request when its membership is deactivated, deleted, or no longer
// names its subject, and its cache entry is removed (SPEC §5 step 4).
func TestMembershipChangeEndsCachedToken(t *testing.T) {
	rs := testredis.Start(t)
	e := startExt(t, testserver.WithRedis(rs.URL()))
	shared, err := cache.NewRedis(context.Background(), rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	tests := []struct {
		name   string
		change func(t *testing.T, m map[string]any)
	}{
		{"deactivated", func(t *testing.T, m map[string]any) {
			m["active"] = false
			e.putMembership(t, m)
		}},
		{"deleted", func(t *testing.T, m map[string]any) {
			if r := e.Do(t, http.MethodDelete, "fhir/R4/ProjectMembership/"+m["id"].(string), e.project.AdminToken, nil); r.Status != http.StatusNoContent {
				t.Fatalf("delete: %d %s", r.Status, r.Body)
			}
		}},
		{"externalId moved to another subject", func(t *testing.T, m map[string]any) {
			m["externalId"] = m["externalId"].(string) + "-at-another-idp"
			e.putMembership(t, m)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := fmt.Sprintf("changing-%d", i)
			e.Invite(t, e.project, map[string]any{"resourceType": "Practitioner", "firstName": "C", "lastName": "D", "externalId": sub})
			ext := e.token(map[string]any{"sub": sub})
			e.idp.ResetCounts()
			if r := e.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil); r.Status != http.StatusOK {
				t.Fatalf("before: %d %s", r.Status, r.Body)
			}
			key := cacheKey(e.idp.Issuer(), ext)
			if n, _ := shared.Client().Exists(context.Background(), key).Result(); n != 1 {
				t.Fatal("the validation was not cached")
			}
			tt.change(t, e.membership(t, sub))
			assertRefused(t, e.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil))
			if n := e.idp.UserInfoCalls(); n != 1 {
				t.Fatalf("userinfo calls %d, want 1 (the refusal came from the cache hit)", n)
			}
			if n, _ := shared.Client().Exists(context.Background(), key).Result(); n != 0 {
				t.Fatal("the cache entry of the refused token is still there")
			}
		})
	}
}
