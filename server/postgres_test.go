package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/fhirgate/fhirgate/internal/testdb"
	"github.com/fhirgate/fhirgate/internal/testproxy"
	"github.com/fhirgate/fhirgate/internal/testserver"
)

// TestPostgresUnavailable: with PostgreSQL unreachable /readyz fails and
// requests get 503 + Retry-After; when it is back everything recovers without
// a restart, and the writes refused meanwhile left nothing behind.
func TestPostgresUnavailable(t *testing.T) {
	dsn := testdb.PostgresURL(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testproxy.Start(t, u.Host)
	u.Host = proxy.Addr()
	env := testserver.Start(t, testserver.WithDatabase(u.String()))
	p := env.Bootstrap(t, "PG")
	invite := map[string]any{"resourceType": "Practitioner", "firstName": "Ann", "lastName": "Lee", "externalId": "ann"}

	proxy.Cut()
	if r := env.Do(t, http.MethodGet, "readyz", "", nil); r.Status != http.StatusServiceUnavailable || r.Map(t)["database"] != "unavailable" {
		t.Fatalf("readyz with the database down: %d %s", r.Status, r.Body)
	}
	for _, req := range []struct{ method, path string }{
		{http.MethodGet, "fhir/R4/Practitioner"},
		{http.MethodPost, "admin/projects/" + p.ID + "/invite"},
	} {
		var body any
		if req.method == http.MethodPost {
			body = invite
		}
		r := env.Do(t, req.method, req.path, p.AdminToken, body)
		if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || r.OutcomeCode(t) != "transient" {
			t.Fatalf("%s %s with the database down: %d %q %s", req.method, req.path, r.Status, r.Header.Get("Retry-After"), r.Body)
		}
	}
	tokenResp := env.Do(t, http.MethodGet, "healthz", "", nil)
	if tokenResp.Status != http.StatusOK {
		t.Fatalf("healthz must not depend on the database: %d", tokenResp.Status)
	}

	proxy.Restore()
	if r := env.Do(t, http.MethodGet, "readyz", "", nil); r.Status != http.StatusOK {
		t.Fatalf("readyz after recovery: %d %s", r.Status, r.Body)
	}
	env.Invite(t, p, invite)
	r := env.Do(t, http.MethodGet, "fhir/R4/Practitioner?name=ann", p.AdminToken, nil)
	if r.Status != http.StatusOK || r.Map(t)["total"].(float64) != 1 {
		t.Fatalf("after recovery: want exactly one Practitioner Ann: %d %s", r.Status, r.Body)
	}
}

// TestInviteRaceAcrossInstances: the same invite sent to two instances at
// once gives one 201 and one 409, and one membership is stored.
func TestInviteRaceAcrossInstances(t *testing.T) {
	for _, db := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"postgres", func(t *testing.T) string { return testdb.PostgresURL(t) }},
		{"sqlite", func(t *testing.T) string { return "" }},
	} {
		t.Run(db.name, func(t *testing.T) {
			var opts []testserver.Option
			if dsn := db.dsn(t); dsn != "" {
				opts = append(opts, testserver.WithDatabase(dsn))
			}
			a := testserver.Start(t, opts...)
			b := testserver.Start(t, testserver.SharedWith(a))
			p := a.Bootstrap(t, "Race")
			invite := map[string]any{"resourceType": "Patient", "firstName": "Ray", "lastName": "Sing", "externalId": "same-sub"}
			for round := 0; round < 5; round++ {
				invite["externalId"] = "same-sub-" + string(rune('a'+round))
				statuses := make(chan int, 2)
				for _, env := range []*testserver.Env{a, b} {
					go func() {
						statuses <- env.Do(t, http.MethodPost, "admin/projects/"+p.ID+"/invite", p.AdminToken, invite).Status
					}()
				}
				got := map[int]int{<-statuses: 1}
				got[<-statuses]++
				if got[http.StatusCreated] != 1 || got[http.StatusConflict] != 1 {
					t.Fatalf("round %d: statuses %v, want one 201 and one 409", round, got)
				}
				r := a.Do(t, http.MethodGet, "fhir/R4/ProjectMembership?external-id="+invite["externalId"].(string), p.AdminToken, nil)
				if total := r.Map(t)["total"].(float64); total != 1 {
					t.Fatalf("round %d: %v memberships stored, want 1", round, total)
				}
			}
			r := a.Do(t, http.MethodGet, "fhir/R4/Patient?name=ray", p.AdminToken, nil)
			if total := r.Map(t)["total"].(float64); total != 5 {
				t.Fatalf("%v Patients stored for 5 rounds, want 5 (a 409 must leave no profile)", total)
			}
		})
	}
}
