package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
	"github.com/fhirgate/fhirgate/internal/testserver"
)

func TestLogoutRevokesLocalToken(t *testing.T) {
	env := testserver.Start(t)
	p := env.Bootstrap(t, "Demo")
	other := env.ClientToken(t, p.ClientID, p.ClientSecret) // a second Login of the same client
	if r := env.Do(t, http.MethodPost, "oauth2/logout", p.AdminToken, nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	assertRefused(t, env.Do(t, http.MethodGet, "oauth2/userinfo", p.AdminToken, nil))
	if r := env.Do(t, http.MethodGet, "oauth2/userinfo", other, nil); r.Status != http.StatusOK {
		t.Fatalf("logout revoked another Login: %d %s", r.Status, r.Body)
	}
}

// TestLogoutRevokesExternalTokenEverywhere: two instances share Redis and the
// database; a logout on one stops the external token and the local token
// derived from it on both, without another IdP call.
func TestLogoutRevokesExternalTokenEverywhere(t *testing.T) {
	rs := testredis.Start(t)
	a := startExt(t, testserver.WithRedis(rs.URL()))
	b := testserver.Start(t, testserver.SharedWith(a.Env))

	ext := a.token(map[string]any{"sub": "alice"})
	r := a.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	local := r.Map(t)["access_token"].(string)
	for name, env := range map[string]*testserver.Env{"a": a.Env, "b": b} {
		for _, tok := range []string{ext, local} {
			if r := env.Do(t, http.MethodGet, "fhir/R4/"+a.alice, tok, nil); r.Status != http.StatusOK {
				t.Fatalf("instance %s before logout: %d %s", name, r.Status, r.Body)
			}
		}
	}
	if n := a.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("userinfo calls %d before logout, want 1 (instance b must use the shared cache)", n)
	}
	if r := b.Do(t, http.MethodPost, "oauth2/logout", ext, nil); r.Status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	for _, env := range []*testserver.Env{a.Env, b} {
		for _, tok := range []string{ext, local} {
			assertRefused(t, env.Do(t, http.MethodGet, "fhir/R4/"+a.alice, tok, nil))
		}
	}
	if n := a.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("userinfo calls %d after logout, want still 1", n)
	}

	// The revocation is durable: with the shared cache flushed, a fresh
	// instance still refuses the token although the IdP accepts it.
	shared, err := cache.NewRedis(context.Background(), rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	if err := shared.Client().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	c := testserver.Start(t, testserver.SharedWith(a.Env))
	assertRefused(t, c.Do(t, http.MethodGet, "fhir/R4/"+a.alice, ext, nil))
	if !strings.Contains(c.Logs.String(), `"auth_reason":"login_revoked"`) {
		t.Fatalf("refused for another reason than the revocation:\n%s", c.Logs.String())
	}
}

// TestDeactivationReachesEveryInstance: two instances share Redis and the
// database; both have the token's validation and the membership's state in
// their in-process caches; a deactivation through one is honoured by the
// other within one second.
func TestDeactivationReachesEveryInstance(t *testing.T) {
	rs := testredis.Start(t)
	a := startExt(t, testserver.WithRedis(rs.URL()))
	b := testserver.Start(t, testserver.SharedWith(a.Env))
	ext := a.token(map[string]any{"sub": "bob"})
	for _, env := range []*testserver.Env{a.Env, b, a.Env, b} {
		if r := env.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil); r.Status != http.StatusOK {
			t.Fatalf("before deactivation: %d %s", r.Status, r.Body)
		}
	}
	m := a.membership(t, "bob")
	m["active"] = false
	a.putMembership(t, m)
	assertRefused(t, a.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil))
	deadline := time.Now().Add(time.Second)
	for {
		r := b.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
		if r.Status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance b still accepts the token of a deactivated membership after 1s: %d", r.Status)
		}
	}
}

// TestLogoutEndsEveryLoginOfTheToken: an external token validated twice (its
// cache entry gone in between) has two Logins; a logout with either the
// external token or a local token derived from it ends both.
func TestLogoutEndsEveryLoginOfTheToken(t *testing.T) {
	rs := testredis.Start(t)
	a := startExt(t, testserver.WithRedis(rs.URL()))
	shared, err := cache.NewRedis(context.Background(), rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for _, logoutWith := range []string{"external", "local"} {
		t.Run(logoutWith, func(t *testing.T) {
			ext := a.token(map[string]any{"sub": "alice"})
			r := a.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
			if r.Status != http.StatusOK {
				t.Fatalf("userinfo: %d %s", r.Status, r.Body)
			}
			local := r.Map(t)["access_token"].(string)
			// A second validation of the same token, by an instance whose
			// caches are empty: a second Login.
			if err := shared.Client().FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			b := testserver.Start(t, testserver.SharedWith(a.Env))
			if r := b.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil); r.Status != http.StatusOK {
				t.Fatalf("second validation: %d %s", r.Status, r.Body)
			}
			tok := map[string]string{"external": ext, "local": local}[logoutWith]
			if r := b.Do(t, http.MethodPost, "oauth2/logout", tok, nil); r.Status != http.StatusNoContent {
				t.Fatalf("logout: %d %s", r.Status, r.Body)
			}
			for _, env := range []*testserver.Env{a.Env, b} {
				assertRefused(t, env.Do(t, http.MethodGet, "fhir/R4/"+a.alice, ext, nil))
				assertRefused(t, env.Do(t, http.MethodGet, "fhir/R4/"+a.alice, local, nil))
			}
		})
	}
}

// TestDeactivationWithRedisDown: with Redis down, invalidations cannot travel,
// so instances read session state from the database: a deactivation through
// one instance is honoured by the other within about a second (the time to
// notice the lost subscription), and nothing answers 500.
func TestDeactivationWithRedisDown(t *testing.T) {
	rs := testredis.Start(t)
	a := startExt(t, testserver.WithRedis(rs.URL()))
	b := testserver.Start(t, testserver.SharedWith(a.Env))
	ext := a.token(map[string]any{"sub": "bob"})
	for _, env := range []*testserver.Env{a.Env, b, b} {
		if r := env.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil); r.Status != http.StatusOK {
			t.Fatalf("before: %d %s", r.Status, r.Body)
		}
	}
	m := a.membership(t, "bob")
	m["active"] = false
	rs.Stop()
	a.putMembership(t, m)
	deadline := time.Now().Add(3 * time.Second)
	for {
		r := b.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
		if r.Status == http.StatusUnauthorized {
			break
		}
		if r.Status != http.StatusOK {
			t.Fatalf("with Redis down: %d %s", r.Status, r.Body)
		}
		if time.Now().After(deadline) {
			t.Fatal("instance b still accepts a deactivated membership 3s after the change, with Redis down")
		}
	}
}
