// Package storetest is the conformance table every fhir.Store implementation
// must pass. The SQLite and PostgreSQL stores run it from their own tests, so
// both databases are held to exactly the same rules.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/fhir"
)

// Run runs the conformance table. open must return a new, empty store for
// each subtest; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) fhir.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s fhir.Store)
	}{
		{"CreateAssignsIDAndMeta", testCreateAssignsIDAndMeta},
		{"CreateRules", testCreateRules},
		{"ProjectBelongsToItself", testProjectBelongsToItself},
		{"Update", testUpdate},
		{"Delete", testDelete},
		{"ReadIsolation", testReadIsolation},
		{"SearchIsolation", testSearchIsolation},
		{"SearchID", testSearchID},
		{"SearchIdentifier", testSearchIdentifier},
		{"SearchName", testSearchName},
		{"SearchMembership", testSearchMembership},
		{"SearchLogin", testSearchLogin},
		{"SearchRefused", testSearchRefused},
		{"SearchPaging", testSearchPaging},
		{"IndexFollowsUpdates", testIndexFollowsUpdates},
		{"ExternalIDUniquePerProject", testExternalIDUnique},
		{"TxRollback", testTxRollback},
		{"ConcurrentReadThenWrite", testConcurrentReadThenWrite},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

var (
	uuidPattern        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	lastUpdatedPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
)

// --- helpers -----------------------------------------------------------------

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustCreate(t *testing.T, s fhir.Ops, project, typ, id, body string) *fhir.Record {
	t.Helper()
	rec := &fhir.Record{Type: typ, ID: id, Project: project, Body: json.RawMessage(body)}
	if err := s.Create(ctx(t), rec); err != nil {
		t.Fatalf("create %s/%s in %s: %v", typ, id, project, err)
	}
	return rec
}

func practitioner(family string, given ...string) string {
	g, _ := json.Marshal(given)
	return fmt.Sprintf(`{"resourceType":"Practitioner","name":[{"family":%q,"given":%s}]}`, family, g)
}

func membership(project, profile, externalID string, active *bool) string {
	m := map[string]any{
		"resourceType": "ProjectMembership",
		"project":      map[string]string{"reference": "Project/" + project},
		"profile":      map[string]string{"reference": profile},
		"admin":        false,
	}
	if externalID != "" {
		m["externalId"] = externalID
	}
	if active != nil {
		m["active"] = *active
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func boolPtr(b bool) *bool { return &b }

// object decodes a body into a generic map.
func object(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, body)
	}
	return m
}

// ids returns the sorted ids of recs.
func ids(recs []fhir.Record) []string {
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		out = append(out, r.ID)
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// searchIDs runs q and checks that the total equals the number of matches.
func searchIDs(t *testing.T, s fhir.Ops, q fhir.Query) []string {
	t.Helper()
	recs, total, err := s.Search(ctx(t), q)
	if err != nil {
		t.Fatalf("search %+v: %v", q, err)
	}
	if total != len(recs) {
		t.Fatalf("search %+v: total %d, %d records", q, total, len(recs))
	}
	return ids(recs)
}

func params(kv ...string) []fhir.Param {
	var ps []fhir.Param
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, fhir.Param{Name: kv[i], Value: kv[i+1]})
	}
	return ps
}

// --- tests -------------------------------------------------------------------

func testCreateAssignsIDAndMeta(t *testing.T, s fhir.Store) {
	before := time.Now().Add(-time.Second)
	rec := mustCreate(t, s, "p1", fhir.TypePatient, "",
		`{"resourceType":"Patient","gender":"female","meta":{"tag":[{"code":"x"}],"versionId":"77"},"extension":[{"url":"u","valueString":"v"}]}`)
	if !uuidPattern.MatchString(rec.ID) {
		t.Errorf("assigned id %q is not a UUID", rec.ID)
	}
	if rec.Version != 1 {
		t.Errorf("version = %d, want 1", rec.Version)
	}
	if rec.LastUpdated.Before(before) || rec.LastUpdated.After(time.Now().Add(time.Second)) {
		t.Errorf("lastUpdated %v not now", rec.LastUpdated)
	}
	body := object(t, rec.Body)
	meta, _ := body["meta"].(map[string]any)
	checks := []struct {
		what      string
		got, want any
	}{
		{"resourceType", body["resourceType"], "Patient"},
		{"id", body["id"], rec.ID},
		{"gender kept", body["gender"], "female"},
		{"extension kept", fmt.Sprint(body["extension"]), "[map[url:u valueString:v]]"},
		{"meta.versionId", meta["versionId"], "1"},
		{"meta.tag kept", fmt.Sprint(meta["tag"]), "[map[code:x]]"},
		{"meta.lastUpdated", meta["lastUpdated"], rec.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z")},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if lu, _ := meta["lastUpdated"].(string); !lastUpdatedPattern.MatchString(lu) {
		t.Errorf("meta.lastUpdated %q is not RFC 3339 UTC with milliseconds", lu)
	}

	got, err := s.Read(ctx(t), "p1", fhir.TypePatient, rec.ID)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got.Version != 1 || got.Project != "p1" || !got.LastUpdated.Equal(rec.LastUpdated) {
		t.Errorf("read = %+v, want version 1 project p1 lastUpdated %v", got, rec.LastUpdated)
	}
	if !jsonEqual(t, got.Body, rec.Body) {
		t.Errorf("read body %s, want %s", got.Body, rec.Body)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("decode %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func testCreateRules(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypePatient, "dup", `{}`)
	tests := []struct {
		name    string
		rec     fhir.Record
		wantErr error // nil: any error
		ok      bool
	}{
		{"explicit id", fhir.Record{Type: fhir.TypePatient, ID: "A-b.9", Project: "p1"}, nil, true},
		{"64 chars", fhir.Record{Type: fhir.TypePatient, ID: strRepeat("a", 64), Project: "p1"}, nil, true},
		{"65 chars", fhir.Record{Type: fhir.TypePatient, ID: strRepeat("a", 65), Project: "p1"}, nil, false},
		{"bad char", fhir.Record{Type: fhir.TypePatient, ID: "a/b", Project: "p1"}, nil, false},
		{"space", fhir.Record{Type: fhir.TypePatient, ID: "a b", Project: "p1"}, nil, false},
		{"no project", fhir.Record{Type: fhir.TypePatient, ID: "x1"}, nil, false},
		{"no type", fhir.Record{ID: "x2", Project: "p1"}, nil, false},
		{"duplicate id", fhir.Record{Type: fhir.TypePatient, ID: "dup", Project: "p1"}, fhir.ErrConflict, false},
		{"duplicate id other project", fhir.Record{Type: fhir.TypePatient, ID: "dup", Project: "p2"}, fhir.ErrConflict, false},
		{"resourceType mismatch", fhir.Record{Type: fhir.TypePatient, ID: "x3", Project: "p1",
			Body: json.RawMessage(`{"resourceType":"Practitioner"}`)}, nil, false},
		{"not an object", fhir.Record{Type: fhir.TypePatient, ID: "x4", Project: "p1", Body: json.RawMessage(`[1]`)}, nil, false},
		{"same id other type", fhir.Record{Type: fhir.TypePractitioner, ID: "dup", Project: "p1"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			err := s.Create(ctx(t), &rec)
			if tc.ok {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if _, err := s.Read(ctx(t), rec.Project, rec.Type, rec.ID); err != nil {
					t.Fatalf("read back: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("create %+v succeeded, want error", tc.rec)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
		})
	}
	// A failed create must not leave a row behind.
	if _, err := s.ReadAny(ctx(t), fhir.TypePatient, "x3"); !errors.Is(err, fhir.ErrNotFound) {
		t.Errorf("refused create left a row: %v", err)
	}
}

func strRepeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

func testProjectBelongsToItself(t *testing.T, s fhir.Store) {
	rec := &fhir.Record{Type: fhir.TypeProject, Body: json.RawMessage(`{"name":"demo"}`)}
	if err := s.Create(ctx(t), rec); err != nil {
		t.Fatalf("create project: %v", err)
	}
	if rec.ID == "" || rec.Project != rec.ID {
		t.Fatalf("project id %q, project %q: want equal and non-empty", rec.ID, rec.Project)
	}
	if _, err := s.Read(ctx(t), rec.ID, fhir.TypeProject, rec.ID); err != nil {
		t.Errorf("read project in itself: %v", err)
	}
	bad := &fhir.Record{Type: fhir.TypeProject, ID: "pa", Project: "pb"}
	if err := s.Create(ctx(t), bad); err == nil {
		t.Errorf("project in another project accepted")
	}
}

func testUpdate(t *testing.T, s fhir.Store) {
	orig := mustCreate(t, s, "p1", fhir.TypePatient, "u1", `{"gender":"male","meta":{"source":"#a"}}`)
	mustCreate(t, s, "p1", fhir.TypePatient, "gone", `{}`)
	if err := s.Delete(ctx(t), "p1", fhir.TypePatient, "gone"); err != nil {
		t.Fatal(err)
	}

	upd := &fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p1", Version: 1,
		Body: json.RawMessage(`{"resourceType":"Patient","gender":"female","meta":{"source":"#b","versionId":"1"}}`)}
	if err := s.Update(ctx(t), upd); err != nil {
		t.Fatalf("update: %v", err)
	}
	if upd.Version != 2 || upd.LastUpdated.Before(orig.LastUpdated) {
		t.Errorf("after update: version %d lastUpdated %v", upd.Version, upd.LastUpdated)
	}
	got, err := s.Read(ctx(t), "p1", fhir.TypePatient, "u1")
	if err != nil {
		t.Fatal(err)
	}
	b := object(t, got.Body)
	meta := b["meta"].(map[string]any)
	if got.Version != 2 || b["gender"] != "female" || meta["versionId"] != "2" || meta["source"] != "#b" || b["id"] != "u1" {
		t.Errorf("read after update: version %d body %s", got.Version, got.Body)
	}

	tests := []struct {
		name string
		rec  fhir.Record
		want error // nil: any error
	}{
		{"stale version", fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p1", Version: 1}, fhir.ErrVersionConflict},
		{"future version", fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p1", Version: 9}, fhir.ErrVersionConflict},
		{"missing", fhir.Record{Type: fhir.TypePatient, ID: "nope", Project: "p1"}, fhir.ErrNotFound},
		{"other type", fhir.Record{Type: fhir.TypePractitioner, ID: "u1", Project: "p1"}, fhir.ErrNotFound},
		{"other project", fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p2"}, fhir.ErrNotFound},
		{"deleted", fhir.Record{Type: fhir.TypePatient, ID: "gone", Project: "p1"}, fhir.ErrGone},
		{"no id", fhir.Record{Type: fhir.TypePatient, Project: "p1"}, nil},
		{"type mismatch", fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p1",
			Body: json.RawMessage(`{"resourceType":"Practitioner"}`)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := tc.rec
			err := s.Update(ctx(t), &rec)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("update error %v, want %v", err, tc.want)
			}
		})
	}
	// Nothing of the refused updates was written.
	if got, _ := s.Read(ctx(t), "p1", fhir.TypePatient, "u1"); got == nil || got.Version != 2 {
		t.Errorf("refused update changed the resource: %+v", got)
	}
	// Version 0 means "no check".
	blind := &fhir.Record{Type: fhir.TypePatient, ID: "u1", Project: "p1", Body: json.RawMessage(`{}`)}
	if err := s.Update(ctx(t), blind); err != nil || blind.Version != 3 {
		t.Errorf("unchecked update: version %d, err %v", blind.Version, err)
	}
}

func testDelete(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypePractitioner, "d1", practitioner("Doe", "Jane"))
	tests := []struct {
		name           string
		project, id    string
		want           error
		stillReadable  bool
		afterReadError error
	}{
		{"other project", "p2", "d1", fhir.ErrNotFound, true, nil},
		{"missing", "p1", "nope", fhir.ErrNotFound, false, fhir.ErrNotFound},
		{"delete", "p1", "d1", nil, false, fhir.ErrGone},
		{"again", "p1", "d1", fhir.ErrGone, false, fhir.ErrGone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Delete(ctx(t), tc.project, fhir.TypePractitioner, tc.id)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("delete: %v, want %v", err, tc.want)
			}
			_, rerr := s.Read(ctx(t), "p1", fhir.TypePractitioner, tc.id)
			if tc.stillReadable && rerr != nil {
				t.Fatalf("read after refused delete: %v", rerr)
			}
			if !tc.stillReadable && !errors.Is(rerr, tc.afterReadError) {
				t.Fatalf("read after delete: %v, want %v", rerr, tc.afterReadError)
			}
		})
	}
	if _, err := s.ReadAny(ctx(t), fhir.TypePractitioner, "d1"); !errors.Is(err, fhir.ErrGone) {
		t.Errorf("ReadAny after delete: %v, want ErrGone", err)
	}
	if got := searchIDs(t, s, fhir.Query{Type: fhir.TypePractitioner, Projects: []string{"p1"}, Params: params("name", "doe")}); len(got) != 0 {
		t.Errorf("deleted resource still found by name: %v", got)
	}
	if got := searchIDs(t, s, fhir.Query{Type: fhir.TypePractitioner, Projects: []string{"p1"}}); len(got) != 0 {
		t.Errorf("deleted resource still found: %v", got)
	}
	if err := s.Update(ctx(t), &fhir.Record{Type: fhir.TypePractitioner, ID: "d1", Project: "p1"}); !errors.Is(err, fhir.ErrGone) {
		t.Errorf("update after delete: %v, want ErrGone", err)
	}
}

func testReadIsolation(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "pA", fhir.TypePatient, "r1", `{}`)
	tests := []struct {
		project, typ, id string
		want             error
	}{
		{"pA", fhir.TypePatient, "r1", nil},
		{"pB", fhir.TypePatient, "r1", fhir.ErrNotFound},
		{"", fhir.TypePatient, "r1", fhir.ErrNotFound},
		{"pA", fhir.TypePractitioner, "r1", fhir.ErrNotFound},
		{"pA", fhir.TypePatient, "r2", fhir.ErrNotFound},
	}
	for _, tc := range tests {
		_, err := s.Read(ctx(t), tc.project, tc.typ, tc.id)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("Read(%q, %s/%s) = %v, want %v", tc.project, tc.typ, tc.id, err, tc.want)
		}
	}
	if rec, err := s.ReadAny(ctx(t), fhir.TypePatient, "r1"); err != nil || rec.Project != "pA" {
		t.Errorf("ReadAny = %+v, %v", rec, err)
	}
}

func testSearchIsolation(t *testing.T, s fhir.Store) {
	body := `{"identifier":[{"system":"s","value":"v"}],"name":[{"family":"Same"}]}`
	mustCreate(t, s, "pA", fhir.TypePatient, "a1", body)
	mustCreate(t, s, "pB", fhir.TypePatient, "b1", body)
	mustCreate(t, s, "pC", fhir.TypePatient, "c1", body)
	tests := []struct {
		name     string
		projects []string
		all      bool
		params   []fhir.Param
		want     []string
	}{
		{"one project", []string{"pA"}, false, nil, []string{"a1"}},
		{"two projects", []string{"pA", "pB"}, false, nil, []string{"a1", "b1"}},
		{"unknown project", []string{"pZ"}, false, nil, nil},
		{"identifier in one", []string{"pB"}, false, params("identifier", "s|v"), []string{"b1"}},
		{"name in one", []string{"pC"}, false, params("name", "same"), []string{"c1"}},
		{"_id of another project", []string{"pA"}, false, params("_id", "b1"), nil},
		{"all projects", nil, true, params("identifier", "s|v"), []string{"a1", "b1", "c1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchIDs(t, s, fhir.Query{Type: fhir.TypePatient, Projects: tc.projects, AllProjects: tc.all, Params: tc.params})
			if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func testSearchID(t *testing.T, s fhir.Store) {
	for _, id := range []string{"i1", "i2", "i3"} {
		mustCreate(t, s, "p1", fhir.TypeRelatedPerson, id, `{}`)
	}
	tests := []struct {
		value string
		want  []string
	}{
		{"i1", []string{"i1"}},
		{"i1,i3", []string{"i1", "i3"}},
		{"i4", nil},
		{"I1", nil},
	}
	for _, tc := range tests {
		got := searchIDs(t, s, fhir.Query{Type: fhir.TypeRelatedPerson, Projects: []string{"p1"}, Params: params("_id", tc.value)})
		if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("_id=%s: got %v, want %v", tc.value, got, tc.want)
		}
	}
}

func testSearchIdentifier(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypePractitioner, "npi", `{"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1234567890"}]}`)
	mustCreate(t, s, "p1", fhir.TypePractitioner, "nosys", `{"identifier":[{"value":"1234567890"}]}`)
	mustCreate(t, s, "p1", fhir.TypePractitioner, "other", `{"identifier":[{"system":"urn:other","value":"42"},{"system":"urn:x","value":"a,b|c"}]}`)
	mustCreate(t, s, "p1", fhir.TypePractitioner, "none", `{"name":[{"family":"NoIdent"}]}`)
	mustCreate(t, s, "p1", fhir.TypePatient, "patient", `{"identifier":[{"system":"urn:other","value":"42"}]}`)
	tests := []struct {
		name  string
		value string
		want  []string
	}{
		{"system|value", "http://hl7.org/fhir/sid/us-npi|1234567890", []string{"npi"}},
		{"|value (no system)", "|1234567890", []string{"nosys"}},
		{"value (any system)", "1234567890", []string{"nosys", "npi"}},
		{"system| (any value)", "urn:other|", []string{"other"}},
		{"wrong system", "urn:other|1234567890", nil},
		{"wrong value", "http://hl7.org/fhir/sid/us-npi|1", nil},
		{"or", "urn:other|42,|1234567890", []string{"nosys", "other"}},
		{"escaped comma and bar", `urn:x|a\,b\|c`, []string{"other"}},
		{"value case-sensitive", "urn:x|A,B|C", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchIDs(t, s, fhir.Query{Type: fhir.TypePractitioner, Projects: []string{"p1"}, Params: params("identifier", tc.value)})
			if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("identifier=%s: got %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

func testSearchName(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypePatient, "jane", `{"name":[{"family":"Doe","given":["Jane","Ann"]}]}`)
	mustCreate(t, s, "p1", fhir.TypePatient, "jose", `{"name":[{"text":"José Álvarez"}]}`)
	mustCreate(t, s, "p1", fhir.TypePatient, "pct", `{"name":[{"family":"100%_real"}]}`)
	mustCreate(t, s, "p1", fhir.TypePatient, "john", `{"name":[{"family":"Smith","given":["John"]},{"family":"Doherty"}]}`)
	tests := []struct {
		value string
		want  []string
	}{
		{"doe", []string{"jane"}},
		{"DO", []string{"jane", "john"}},
		{"ann", []string{"jane"}},
		{"jane", []string{"jane"}},
		{"an", []string{"jane"}},
		{"oe", nil},
		{"josé á", []string{"jose"}},
		{"JOSÉ", []string{"jose"}},
		{"álvarez", nil}, // text is one part: prefix of the whole text only
		{"100%", []string{"pct"}},
		{"1%", nil},   // % is not a wildcard
		{"100_", nil}, // neither is _
		{"smith,ann", []string{"jane", "john"}},
		{"doherty", []string{"john"}},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			got := searchIDs(t, s, fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}, Params: params("name", tc.value)})
			if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("name=%s: got %v, want %v", tc.value, got, tc.want)
			}
		})
	}
}

func testSearchMembership(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m1", membership("p1", "Practitioner/a", "sub-A", nil))
	mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m2", membership("p1", "Practitioner/b", "sub-a", boolPtr(false)))
	mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m3", membership("p1", "Patient/a", "", boolPtr(true)))
	mustCreate(t, s, "p2", fhir.TypeProjectMembership, "m4", membership("p2", "Practitioner/a", "sub-A", nil))
	tests := []struct {
		name   string
		params []fhir.Param
		want   []string
	}{
		{"profile", params("profile", "Practitioner/a"), []string{"m1"}},
		{"profile or", params("profile", "Practitioner/a,Patient/a"), []string{"m1", "m3"}},
		{"profile wrong type", params("profile", "RelatedPerson/a"), nil},
		{"external-id exact", params("external-id", "sub-A"), []string{"m1"}},
		{"external-id case-sensitive", params("external-id", "sub-a"), []string{"m2"}},
		{"external-id no prefix match", params("external-id", "sub"), nil},
		{"active true (default)", params("active", "true"), []string{"m1", "m3"}},
		{"active false", params("active", "false"), []string{"m2"}},
		{"and", params("external-id", "sub-A,sub-a", "active", "true"), []string{"m1"}},
		{"_id", params("_id", "m2"), []string{"m2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := searchIDs(t, s, fhir.Query{Type: fhir.TypeProjectMembership, Projects: []string{"p1"}, Params: tc.params})
			if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Fatalf("%v: got %v, want %v", tc.params, got, tc.want)
			}
		})
	}
	got := searchIDs(t, s, fhir.Query{Type: fhir.TypeProjectMembership, AllProjects: true, Params: params("external-id", "sub-A")})
	if !equal(got, []string{"m1", "m4"}) {
		t.Errorf("external-id across all projects: got %v, want [m1 m4]", got)
	}
}

func testSearchLogin(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypeLogin, "l1", `{"membership":"m1","authMethod":"external","time":"2024-01-01T00:00:00Z"}`)
	mustCreate(t, s, "p1", fhir.TypeLogin, "l2", `{"membership":"m2","authMethod":"client_credentials","time":"2024-01-01T00:00:00Z"}`)
	mustCreate(t, s, "p1", fhir.TypeLogin, "l3", `{"membership":"m1","authMethod":"external","tokenHash":"h-1","revoked":true,"time":"2024-01-01T00:00:00Z"}`)
	tests := []struct {
		param, value string
		want         []string
	}{
		{"membership", "m1", []string{"l1", "l3"}},
		{"membership", "ProjectMembership/m2", []string{"l2"}},
		{"membership", "m1,m2", []string{"l1", "l2", "l3"}},
		{"membership", "m3", nil},
		{"token-hash", "h-1", []string{"l3"}},
		{"token-hash", "h-2", nil},
		{"revoked", "true", []string{"l3"}},
		{"revoked", "false", []string{"l1", "l2"}},
	}
	for _, tc := range tests {
		got := searchIDs(t, s, fhir.Query{Type: fhir.TypeLogin, Projects: []string{"p1"}, Params: params(tc.param, tc.value)})
		if !equal(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
			t.Errorf("%s=%s: got %v, want %v", tc.param, tc.value, got, tc.want)
		}
	}
	// The revoked column follows updates.
	rec, err := s.ReadAny(context.Background(), fhir.TypeLogin, "l1")
	if err != nil {
		t.Fatal(err)
	}
	rec.Body = []byte(`{"resourceType":"Login","membership":"m1","authMethod":"external","revoked":true,"time":"2024-01-01T00:00:00Z"}`)
	rec.Version = 0
	if err := s.Update(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if got := searchIDs(t, s, fhir.Query{Type: fhir.TypeLogin, Projects: []string{"p1"}, Params: params("revoked", "true")}); !equal(got, []string{"l1", "l3"}) {
		t.Errorf("revoked=true after update: %v", got)
	}
	if _, _, err := s.Search(context.Background(), fhir.Query{Type: fhir.TypeLogin, Projects: []string{"p1"}, Params: params("revoked", "yes")}); !errors.Is(err, fhir.ErrUnsupportedParam) {
		t.Errorf("revoked=yes: %v, want ErrUnsupportedParam", err)
	}
}

func testSearchRefused(t *testing.T, s fhir.Store) {
	tests := []struct {
		name        string
		q           fhir.Query
		unsupported bool // the error must wrap ErrUnsupportedParam
	}{
		{"no projects", fhir.Query{Type: fhir.TypePatient}, false},
		{"empty projects", fhir.Query{Type: fhir.TypePatient, Projects: []string{}}, false},
		{"unknown parameter", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("birthdate", "2000")}, true},
		{"identifier on membership", fhir.Query{Type: fhir.TypeProjectMembership, Projects: []string{"p"}, Params: params("identifier", "x")}, true},
		{"external-id on patient", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("external-id", "x")}, true},
		{"membership on patient", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("membership", "x")}, true},
		{"active not boolean", fhir.Query{Type: fhir.TypeProjectMembership, Projects: []string{"p"}, Params: params("active", "yes")}, true},
		{"empty value", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("name", "")}, true},
		{"empty or-value", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("_id", "a,")}, true},
		{"bare bar", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("identifier", "|")}, true},
		{"negative count", fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Count: -1}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.Search(ctx(t), tc.q)
			if err == nil {
				t.Fatalf("search %+v accepted", tc.q)
			}
			if tc.unsupported != errors.Is(err, fhir.ErrUnsupportedParam) {
				t.Fatalf("error %v: wraps ErrUnsupportedParam = %v, want %v", err, !tc.unsupported, tc.unsupported)
			}
		})
	}
	_, _, err := s.Search(ctx(t), fhir.Query{Type: fhir.TypePatient, Projects: []string{"p"}, Params: params("birthdate", "2000")})
	if err == nil || !regexp.MustCompile(`birthdate`).MatchString(err.Error()) {
		t.Errorf("error %v does not name the parameter", err)
	}
}

func testSearchPaging(t *testing.T, s fhir.Store) {
	// 105 resources in one transaction: they may share a lastUpdated
	// millisecond, so the id breaks ties.
	var created []string
	err := s.WithTx(ctx(t), func(tx fhir.Ops) error {
		for i := range 105 {
			rec := &fhir.Record{Type: fhir.TypePatient, ID: fmt.Sprintf("pg%03d", 104-i), Project: "p1"}
			if err := tx.Create(ctx(t), rec); err != nil {
				return err
			}
			created = append(created, rec.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	all, total, err := s.Search(ctx(t), fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}, Count: 1000})
	if err != nil || total != 105 || len(all) != 105 {
		t.Fatalf("all: %d records, total %d, err %v", len(all), total, err)
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.LastUpdated.After(b.LastUpdated) || (a.LastUpdated.Equal(b.LastUpdated) && a.ID >= b.ID) {
			t.Fatalf("order broken at %d: %s@%v then %s@%v", i, a.ID, a.LastUpdated, b.ID, b.LastUpdated)
		}
	}
	tests := []struct {
		name          string
		count, offset int
		wantLen       int
		wantFirst     int // index into all
	}{
		{"default count", 0, 0, 100, 0},
		{"count capped", 5000, 0, 105, 0},
		{"first page", 10, 0, 10, 0},
		{"second page", 10, 10, 10, 10},
		{"last partial page", 10, 100, 5, 100},
		{"past the end", 10, 200, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs, total, err := s.Search(ctx(t), fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}, Count: tc.count, Offset: tc.offset})
			if err != nil {
				t.Fatal(err)
			}
			if total != 105 || len(recs) != tc.wantLen {
				t.Fatalf("total %d len %d, want 105 and %d", total, len(recs), tc.wantLen)
			}
			for i, r := range recs {
				if r.ID != all[tc.wantFirst+i].ID {
					t.Fatalf("record %d = %s, want %s", i, r.ID, all[tc.wantFirst+i].ID)
				}
			}
		})
	}
}

func testIndexFollowsUpdates(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypePatient, "x", `{"identifier":[{"system":"s","value":"old"}],"name":[{"family":"Before"}]}`)
	if err := s.Update(ctx(t), &fhir.Record{Type: fhir.TypePatient, ID: "x", Project: "p1",
		Body: json.RawMessage(`{"identifier":[{"system":"s","value":"new"}],"name":[{"family":"After"}]}`)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value string
		want        int
	}{
		{"identifier", "s|old", 0},
		{"identifier", "s|new", 1},
		{"name", "before", 0},
		{"name", "after", 1},
	}
	for _, tc := range tests {
		got := searchIDs(t, s, fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}, Params: params(tc.name, tc.value)})
		if len(got) != tc.want {
			t.Errorf("%s=%s: %d matches, want %d", tc.name, tc.value, len(got), tc.want)
		}
	}
}

func testExternalIDUnique(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m1", membership("p1", "Practitioner/a", "sub-1", nil))

	t.Run("duplicate in project", func(t *testing.T) {
		rec := &fhir.Record{Type: fhir.TypeProjectMembership, ID: "m2", Project: "p1",
			Body: json.RawMessage(membership("p1", "Practitioner/b", "sub-1", nil))}
		if err := s.Create(ctx(t), rec); !errors.Is(err, fhir.ErrConflict) {
			t.Fatalf("duplicate externalId: %v, want ErrConflict", err)
		}
		if _, err := s.ReadAny(ctx(t), fhir.TypeProjectMembership, "m2"); !errors.Is(err, fhir.ErrNotFound) {
			t.Fatalf("refused membership was stored: %v", err)
		}
	})

	t.Run("transaction writes nothing", func(t *testing.T) {
		err := s.WithTx(ctx(t), func(tx fhir.Ops) error {
			mustCreate(t, tx, "p1", fhir.TypePractitioner, "orphan", practitioner("Orphan"))
			return tx.Create(ctx(t), &fhir.Record{Type: fhir.TypeProjectMembership, ID: "m3", Project: "p1",
				Body: json.RawMessage(membership("p1", "Practitioner/orphan", "sub-1", nil))})
		})
		if !errors.Is(err, fhir.ErrConflict) {
			t.Fatalf("WithTx: %v, want ErrConflict", err)
		}
		if _, err := s.Read(ctx(t), "p1", fhir.TypePractitioner, "orphan"); !errors.Is(err, fhir.ErrNotFound) {
			t.Fatalf("practitioner of the refused transaction remains: %v", err)
		}
		if got := searchIDs(t, s, fhir.Query{Type: fhir.TypePractitioner, Projects: []string{"p1"}, Params: params("name", "orphan")}); len(got) != 0 {
			t.Fatalf("name index of the refused transaction remains: %v", got)
		}
	})

	t.Run("other project allowed", func(t *testing.T) {
		mustCreate(t, s, "p2", fhir.TypeProjectMembership, "m4", membership("p2", "Practitioner/a", "sub-1", nil))
	})

	t.Run("without externalId no conflict", func(t *testing.T) {
		mustCreate(t, s, "p1", fhir.TypeProjectMembership, "n1", membership("p1", "Practitioner/x", "", nil))
		mustCreate(t, s, "p1", fhir.TypeProjectMembership, "n2", membership("p1", "Practitioner/y", "", nil))
	})

	t.Run("update into conflict", func(t *testing.T) {
		mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m5", membership("p1", "Practitioner/c", "sub-5", nil))
		err := s.Update(ctx(t), &fhir.Record{Type: fhir.TypeProjectMembership, ID: "m5", Project: "p1",
			Body: json.RawMessage(membership("p1", "Practitioner/c", "sub-1", nil))})
		if !errors.Is(err, fhir.ErrConflict) {
			t.Fatalf("update to a used externalId: %v, want ErrConflict", err)
		}
		got := searchIDs(t, s, fhir.Query{Type: fhir.TypeProjectMembership, Projects: []string{"p1"}, Params: params("external-id", "sub-5")})
		if !equal(got, []string{"m5"}) {
			t.Fatalf("refused update lost the old index row: %v", got)
		}
	})

	t.Run("reuse after update", func(t *testing.T) {
		if err := s.Update(ctx(t), &fhir.Record{Type: fhir.TypeProjectMembership, ID: "m5", Project: "p1",
			Body: json.RawMessage(membership("p1", "Practitioner/c", "sub-6", nil))}); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m6", membership("p1", "Practitioner/d", "sub-5", nil))
	})

	t.Run("reuse after delete", func(t *testing.T) {
		if err := s.Delete(ctx(t), "p1", fhir.TypeProjectMembership, "m1"); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, s, "p1", fhir.TypeProjectMembership, "m7", membership("p1", "Practitioner/e", "sub-1", nil))
		got := searchIDs(t, s, fhir.Query{Type: fhir.TypeProjectMembership, Projects: []string{"p1"}, Params: params("external-id", "sub-1")})
		if !equal(got, []string{"m7"}) {
			t.Fatalf("external-id=sub-1 after reuse: %v, want [m7]", got)
		}
	})
}

func testTxRollback(t *testing.T, s fhir.Store) {
	errBoom := errors.New("boom")
	tests := []struct {
		name    string
		fn      func(tx fhir.Ops) error
		panics  bool
		wantErr error
		kept    bool
	}{
		{"commit", func(tx fhir.Ops) error {
			return tx.Create(context.Background(), &fhir.Record{Type: fhir.TypePatient, ID: "commit", Project: "p1"})
		}, false, nil, true},
		{"error", func(tx fhir.Ops) error {
			if err := tx.Create(context.Background(), &fhir.Record{Type: fhir.TypePatient, ID: "error", Project: "p1"}); err != nil {
				return err
			}
			return errBoom
		}, false, errBoom, false},
		{"panic", func(tx fhir.Ops) error {
			if err := tx.Create(context.Background(), &fhir.Record{Type: fhir.TypePatient, ID: "panic", Project: "p1"}); err != nil {
				return err
			}
			panic("boom")
		}, true, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			panicked := func() (p bool) {
				defer func() {
					if recover() != nil {
						p = true
					}
				}()
				err = s.WithTx(ctx(t), tc.fn)
				return false
			}()
			if panicked != tc.panics {
				t.Fatalf("panicked = %v, want %v", panicked, tc.panics)
			}
			if !tc.panics && err != tc.wantErr {
				t.Fatalf("WithTx = %v, want %v (unchanged)", err, tc.wantErr)
			}
			_, rerr := s.Read(ctx(t), "p1", fhir.TypePatient, tc.name)
			if tc.kept != (rerr == nil) {
				t.Fatalf("after WithTx: read error %v, kept = %v", rerr, tc.kept)
			}
		})
	}
	// The store is still usable after a panic (no connection or lock leaked).
	mustCreate(t, s, "p1", fhir.TypePatient, "after", `{}`)
}

func testConcurrentReadThenWrite(t *testing.T, s fhir.Store) {
	mustCreate(t, s, "p1", fhir.TypeProject, "p1", `{"name":"counter","count":0}`)
	const workers = 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.WithTx(context.Background(), func(tx fhir.Ops) error {
				cur, err := tx.Read(context.Background(), "p1", fhir.TypeProject, "p1")
				if err != nil {
					return fmt.Errorf("read: %w", err)
				}
				var body struct {
					Count int `json:"count"`
				}
				if err := json.Unmarshal(cur.Body, &body); err != nil {
					return err
				}
				if _, _, err := tx.Search(context.Background(), fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}}); err != nil {
					return fmt.Errorf("search: %w", err)
				}
				if err := tx.Create(context.Background(), &fhir.Record{Type: fhir.TypePatient, Project: "p1",
					Body: json.RawMessage(`{"name":[{"family":"Worker` + strconv.Itoa(w) + `"}]}`)}); err != nil {
					return fmt.Errorf("create: %w", err)
				}
				cur.Body = json.RawMessage(fmt.Sprintf(`{"name":"counter","count":%d}`, body.Count+1))
				if err := tx.Update(context.Background(), cur); err != nil {
					return fmt.Errorf("update: %w", err)
				}
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	got, err := s.Read(ctx(t), "p1", fhir.TypeProject, "p1")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal(got.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Count != workers || got.Version != workers+1 {
		t.Errorf("counter %d at version %d, want %d at %d (lost updates)", body.Count, got.Version, workers, workers+1)
	}
	_, total, err := s.Search(ctx(t), fhir.Query{Type: fhir.TypePatient, Projects: []string{"p1"}})
	if err != nil || total != workers {
		t.Errorf("patients created: %d (err %v), want %d", total, err, workers)
	}
}

func testPing(t *testing.T, s fhir.Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Fatalf("ping: %v", err)
	}
}
