package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/internal/testidp"
	"github.com/fhirgate/fhirgate/internal/testredis"
	"github.com/fhirgate/fhirgate/internal/testserver"
)

// TestIdPDown: cached tokens keep working, new tokens get 503 + Retry-After.
func TestIdPDown(t *testing.T) {
	e := startExt(t)
	cached := e.token(map[string]any{"sub": "alice"})
	if r := e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, cached, nil); r.Status != http.StatusOK {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	fresh := e.token(map[string]any{"sub": "bob"})
	e.idp.Close()
	if r := e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, cached, nil); r.Status != http.StatusOK {
		t.Fatalf("cached token with the IdP down: %d %s", r.Status, r.Body)
	}
	r := e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, fresh, nil)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") != "30" || r.OutcomeCode(t) != "transient" {
		t.Fatalf("new token with the IdP down: %d %q %s", r.Status, r.Header.Get("Retry-After"), r.Body)
	}
}

// TestIdPSlowerThanTimeout: the answer is a 503 within the timeout plus one second.
func TestIdPSlowerThanTimeout(t *testing.T) {
	idp := testidp.New(t)
	env := testserver.Start(t, testserver.WithProviders(config.Provider{
		Issuer: idp.Issuer(), UserInfoURL: idp.UserInfoURL(), UserInfoTimeout: config.Duration{Duration: time.Second},
	}))
	p := env.Bootstrap(t, "Slow")
	env.Invite(t, p, map[string]any{"resourceType": "Practitioner", "firstName": "A", "lastName": "B", "externalId": "alice"})
	idp.SetDelay(10 * time.Second)
	start := time.Now()
	r := env.Do(t, http.MethodGet, "oauth2/userinfo", idp.Token(idp.Claims("alice", time.Hour)), nil)
	elapsed := time.Since(start)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("slow IdP: %d %s", r.Status, r.Body)
	}
	if elapsed > 2*time.Second {
		t.Fatalf("answered after %v, want within the 1s timeout plus one second", elapsed)
	}
}

// TestIdPHugeUserInfoBody: a 10 MiB userinfo answer is refused (503), not buffered.
func TestIdPHugeUserInfoBody(t *testing.T) {
	e := startExt(t)
	e.idp.SetBody([]byte(`{"sub":"alice","pad":"` + strings.Repeat("x", 10<<20) + `"}`))
	r := e.Do(t, http.MethodGet, "oauth2/userinfo", e.token(map[string]any{"sub": "alice"}), nil)
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("10 MiB userinfo body: %d %s", r.Status, r.Body)
	}
}

// TestNoSecretsInLogsOrRedis runs a full scenario with logs captured and
// checks that no token, client secret or signature appears in the logs, nor
// in any Redis key or value.
func TestNoSecretsInLogsOrRedis(t *testing.T) {
	rs := testredis.Start(t)
	e := startExt(t, testserver.WithRedis(rs.URL()))
	ext := e.token(map[string]any{"sub": "alice"})
	r := e.Do(t, http.MethodGet, "oauth2/userinfo", ext, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	local := r.Map(t)["access_token"].(string)
	e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, local, nil)
	e.Do(t, http.MethodGet, "fhir/R4/"+e.alice, ext, nil)
	e.idp.SetStatus(http.StatusUnauthorized, "")
	rejected := e.token(map[string]any{"sub": "bob"})
	e.Do(t, http.MethodGet, "oauth2/userinfo", rejected, nil)
	e.Do(t, http.MethodGet, "oauth2/userinfo", "garbage."+rejected, nil)
	e.Do(t, http.MethodPost, "oauth2/logout", ext, nil)

	secrets := map[string]string{
		"client secret":      e.project.ClientSecret,
		"admin token":        e.project.AdminToken,
		"external token":     ext,
		"rejected token":     rejected,
		"local token":        local,
		"external signature": ext[strings.LastIndex(ext, ".")+1:],
		"local signature":    local[strings.LastIndex(local, ".")+1:],
	}
	logs := e.Logs.String()
	ctx := context.Background()
	shared, err := cache.NewRedis(ctx, rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	keys, err := shared.Client().Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("nothing in Redis: the scenario did not exercise the shared cache")
	}
	var redisDump strings.Builder
	for _, k := range keys {
		v, _ := shared.Client().Get(ctx, k).Result()
		redisDump.WriteString(k + "=" + v + "\n")
	}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the logs", name)
		}
		if strings.Contains(redisDump.String(), s) {
			t.Errorf("the %s appears in Redis", name)
		}
	}
	if !strings.Contains(logs, `"auth_reason"`) {
		t.Fatal("no refusal reasons logged: the log capture is not working")
	}
}
