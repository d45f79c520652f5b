package fhir

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/fhirgate/fhirgate/caller"
)

const testBase = "http://fhir.test/fhir/R4"

// secretB is in every resource of project B: no answer to a caller of
// project A may ever contain it.
const secretB = "PROJECT-B-SECRET"

// restEnv is a gin engine serving the REST API over a real SQLite store, with
// a test middleware that authenticates as the caller named in X-Test-As.
type restEnv struct {
	t       *testing.T
	store   Store
	engine  *gin.Engine
	callers map[string]*caller.Caller
}

func newRestEnv(t *testing.T) *restEnv {
	t.Helper()
	gin.SetMode(gin.TestMode)
	ctx := context.Background()
	store, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })

	env := &restEnv{t: t, store: store, callers: map[string]*caller.Caller{}}
	for _, p := range []string{"a", "b"} {
		env.seedProject(p)
	}

	h := NewHandler(store, testBase+"/")
	engine := gin.New()
	engine.GET("/fhir/R4/metadata", h.Metadata)
	group := engine.Group("/fhir/R4", func(c *gin.Context) {
		if cl, ok := env.callers[c.GetHeader("X-Test-As")]; ok {
			c.Request = c.Request.WithContext(caller.With(c.Request.Context(), cl))
		}
		c.Next()
	})
	h.Register(group)
	env.engine = engine
	return env
}

// seedProject stores project p: a Practitioner member, another Practitioner,
// a Patient member, a RelatedPerson, and memberships for an admin client, the
// practitioner and the patient. Ids are prefixed with p ("a-prac"). Both
// projects use the same identifiers, names and externalIds on purpose.
func (env *restEnv) seedProject(p string) {
	env.t.Helper()
	marker := "project-" + p
	if p == "b" {
		marker = secretB
	}
	proj := "proj-" + p
	resources := []struct{ typ, id, body string }{
		{TypeProject, proj, `{"name":"` + marker + `"}`},
		{TypePractitioner, p + "-prac", `{"resourceType":"Practitioner","identifier":[{"system":"http://npi","value":"111"}],` +
			`"name":[{"family":"Smith","given":["Alice"],"text":"` + marker + `"}]}`},
		{TypePractitioner, p + "-other", `{"resourceType":"Practitioner","identifier":[{"value":"222"}],` +
			`"name":[{"family":"Jones","text":"` + marker + `"}]}`},
		{TypePatient, p + "-pat", `{"resourceType":"Patient","identifier":[{"system":"http://mrn","value":"MRN-1"}],` +
			`"name":[{"family":"Doe","text":"` + marker + `"}]}`},
		{TypePatient, p + "-pat2", `{"resourceType":"Patient","identifier":[{"system":"http://mrn","value":"MRN-2"}],` +
			`"name":[{"family":"Roe","text":"` + marker + `"}]}`},
		{TypeRelatedPerson, p + "-rp", `{"resourceType":"RelatedPerson","patient":{"reference":"Patient/` + p + `-pat"},` +
			`"name":[{"family":"Doe","text":"` + marker + `"}]}`},
		{TypeProjectMembership, p + "-pm-admin", membershipJSON(proj, "ClientApplication/"+p+"-client", "", true, marker)},
		{TypeProjectMembership, p + "-pm-prac", membershipJSON(proj, "Practitioner/"+p+"-prac", "ext-prac", false, marker)},
		{TypeProjectMembership, p + "-pm-pat", membershipJSON(proj, "Patient/"+p+"-pat", "ext-pat", false, marker)},
	}
	for _, r := range resources {
		rec := &Record{Type: r.typ, ID: r.id, Project: proj, Body: json.RawMessage(r.body)}
		if err := env.store.Create(context.Background(), rec); err != nil {
			env.t.Fatalf("seed %s/%s: %v", r.typ, r.id, err)
		}
	}
	env.callers["admin-"+p] = &caller.Caller{Project: proj, Membership: p + "-pm-admin", Profile: "ClientApplication/" + p + "-client", Admin: true}
	env.callers["prac-"+p] = &caller.Caller{Project: proj, Membership: p + "-pm-prac", Profile: "Practitioner/" + p + "-prac"}
	env.callers["pat-"+p] = &caller.Caller{Project: proj, Membership: p + "-pm-pat", Profile: "Patient/" + p + "-pat"}
}

func membershipJSON(project, profile, externalID string, admin bool, display string) string {
	m := ProjectMembership{
		ResourceType: TypeProjectMembership,
		Project:      models.Reference{Reference: &project},
		Profile:      models.Reference{Reference: &profile, Display: &display},
		ExternalID:   externalID,
		Admin:        admin,
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// do sends one request as the named caller ("" for none). A non-empty body
// is sent as application/fhir+json unless headers set Content-Type.
func (env *restEnv) do(as, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	env.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if as != "" {
		if _, ok := env.callers[as]; !ok {
			env.t.Fatalf("unknown test caller %q", as)
		}
		req.Header.Set("X-Test-As", as)
	}
	w := httptest.NewRecorder()
	env.engine.ServeHTTP(w, req)
	return w
}

// snapshot lists type/id@version of every resource of a project, to prove
// that a refused request wrote nothing.
func (env *restEnv) snapshot(project string) []string {
	env.t.Helper()
	var out []string
	for _, typ := range []string{TypePatient, TypePractitioner, TypeRelatedPerson, TypeProjectMembership} {
		recs, total, err := env.store.Search(context.Background(), Query{Type: typ, Projects: []string{project}, Count: 1000})
		if err != nil {
			env.t.Fatalf("snapshot search %s: %v", typ, err)
		}
		if total != len(recs) {
			env.t.Fatalf("snapshot %s: total %d, got %d records", typ, total, len(recs))
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%s/%s@%d", r.Type, r.ID, r.Version))
		}
	}
	sort.Strings(out)
	return out
}

// assertOutcome checks that w is a FHIR OperationOutcome with the given
// status and first issue code.
func assertOutcome(t *testing.T, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != ContentType {
		t.Fatalf("Content-Type %q, want %q", ct, ContentType)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity string `json:"severity"`
			Code     string `json:"code"`
		} `json:"issue"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &oo); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, w.Body.String())
	}
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("body is not an OperationOutcome with issues: %s", w.Body.String())
	}
	if oo.Issue[0].Code != code || oo.Issue[0].Severity != "error" {
		t.Fatalf("issue[0] = %+v, want code %q severity error", oo.Issue[0], code)
	}
}

// searchIDs runs a search and returns the ids of the entries and the total.
func (env *restEnv) searchIDs(as, path string) (ids []string, total int) {
	env.t.Helper()
	w := env.do(as, http.MethodGet, path, "")
	if w.Code != http.StatusOK {
		env.t.Fatalf("GET %s: %d %s", path, w.Code, w.Body.String())
	}
	var b struct {
		Total int `json:"total"`
		Entry []struct {
			Resource struct {
				ID string `json:"id"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		env.t.Fatalf("GET %s: bad bundle: %v", path, err)
	}
	for _, e := range b.Entry {
		ids = append(ids, e.Resource.ID)
	}
	sort.Strings(ids)
	return ids, b.Total
}

func TestRESTProjectIsolation(t *testing.T) {
	env := newRestEnv(t)
	before := env.snapshot("proj-b")

	patientBody := `{"resourceType":"Patient","id":"b-pat","name":[{"family":"Hijacked"}]}`
	pracBody := `{"resourceType":"Practitioner","id":"b-prac","name":[{"family":"Hijacked"}]}`
	pmBody := membershipJSON("proj-b", "Practitioner/b-prac", "ext-new", true, "x")
	pmBody = strings.Replace(pmBody, `"resourceType"`, `"id":"b-pm-prac","resourceType"`, 1)

	requests := []struct {
		method, path, body string
	}{
		{http.MethodGet, "/fhir/R4/Patient/b-pat", ""},
		{http.MethodGet, "/fhir/R4/Practitioner/b-prac", ""},
		{http.MethodGet, "/fhir/R4/RelatedPerson/b-rp", ""},
		{http.MethodGet, "/fhir/R4/ProjectMembership/b-pm-prac", ""},
		{http.MethodGet, "/fhir/R4/Patient?_id=b-pat", ""},
		{http.MethodGet, "/fhir/R4/Practitioner?_id=b-prac,b-other", ""},
		{http.MethodGet, "/fhir/R4/Patient?identifier=http://mrn|MRN-1", ""},
		{http.MethodGet, "/fhir/R4/Practitioner?identifier=111", ""},
		{http.MethodGet, "/fhir/R4/Practitioner?identifier=http://npi|", ""},
		{http.MethodGet, "/fhir/R4/Practitioner?name=smith", ""},
		{http.MethodGet, "/fhir/R4/Patient?name=project", ""}, // prefix of both projects' markers
		{http.MethodGet, "/fhir/R4/RelatedPerson", ""},
		{http.MethodGet, "/fhir/R4/ProjectMembership?external-id=ext-prac", ""},
		{http.MethodGet, "/fhir/R4/ProjectMembership?profile=Practitioner/b-prac", ""},
		{http.MethodGet, "/fhir/R4/ProjectMembership?_id=b-pm-admin", ""},
		{http.MethodGet, "/fhir/R4/ProjectMembership?active=true", ""},
		{http.MethodPut, "/fhir/R4/Patient/b-pat", patientBody},
		{http.MethodPut, "/fhir/R4/Practitioner/b-prac", pracBody},
		{http.MethodPut, "/fhir/R4/ProjectMembership/b-pm-prac", pmBody},
		{http.MethodDelete, "/fhir/R4/Patient/b-pat", ""},
		{http.MethodDelete, "/fhir/R4/Practitioner/b-prac", ""},
		{http.MethodDelete, "/fhir/R4/ProjectMembership/b-pm-prac", ""},
		{http.MethodGet, "/fhir/R4/Patient/b-pat/_history/1", ""},
	}
	for _, who := range []string{"admin-a", "prac-a", "pat-a"} {
		for _, rq := range requests {
			t.Run(who+" "+rq.method+" "+rq.path, func(t *testing.T) {
				w := env.do(who, rq.method, rq.path, rq.body)
				if strings.Contains(w.Body.String(), secretB) {
					t.Fatalf("answer leaks project B: %d %s", w.Code, w.Body.String())
				}
				switch w.Code {
				case http.StatusNotFound, http.StatusForbidden:
				case http.StatusOK:
					if rq.method != http.MethodGet || !strings.Contains(rq.path, "?") && !strings.HasSuffix(rq.path, "RelatedPerson") {
						t.Fatalf("unexpected 200: %s", w.Body.String())
					}
					// A search may succeed, but only with project A's resources.
					var b models.Bundle
					if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
						t.Fatalf("bad bundle: %v", err)
					}
					for _, e := range b.Entry {
						var r struct {
							ID string `json:"id"`
						}
						_ = json.Unmarshal(e.Resource, &r)
						if !strings.HasPrefix(r.ID, "a-") {
							t.Fatalf("search returned %s from another project", r.ID)
						}
					}
				default:
					t.Fatalf("status %d: %s", w.Code, w.Body.String())
				}
			})
		}
	}
	// The admin's searches for the shared identifiers find project A's copy.
	if ids, total := env.searchIDs("admin-a", "/fhir/R4/Patient?identifier=http://mrn|MRN-1"); total != 1 || !reflect.DeepEqual(ids, []string{"a-pat"}) {
		t.Fatalf("identifier search = %v (total %d), want [a-pat]", ids, total)
	}
	if ids, _ := env.searchIDs("admin-a", "/fhir/R4/ProjectMembership?external-id=ext-prac"); !reflect.DeepEqual(ids, []string{"a-pm-prac"}) {
		t.Fatalf("external-id search = %v, want [a-pm-prac]", ids)
	}
	if after := env.snapshot("proj-b"); !reflect.DeepEqual(after, before) {
		t.Fatalf("project B changed:\nbefore %v\nafter  %v", before, after)
	}
}

func TestRESTBadInput(t *testing.T) {
	env := newRestEnv(t)
	big := `{"resourceType":"Patient","name":[{"text":"` + strings.Repeat("x", MaxBodyBytes) + `"}]}`
	tests := []struct {
		name         string
		method, path string
		body         string
		headers      []string
		status       int
		code         string
	}{
		{"malformed JSON", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient",`, nil, 400, "structure"},
		{"JSON array", "POST", "/fhir/R4/Patient", `[{"resourceType":"Patient"}]`, nil, 400, "structure"},
		{"JSON null", "POST", "/fhir/R4/Patient", `null`, nil, 400, "structure"},
		{"trailing data", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient"} {}`, nil, 400, "structure"},
		{"empty body", "POST", "/fhir/R4/Patient", ``, []string{"Content-Type", "application/fhir+json"}, 400, "required"},
		{"wrong content type", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", "text/plain"}, 415, "not-supported"},
		{"xml content type", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", "application/fhir+xml"}, 415, "not-supported"},
		{"latin1 charset", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", "application/json; charset=iso-8859-1"}, 415, "not-supported"},
		{"malformed content type", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient"}`, []string{"Content-Type", "application/json; ="}, 415, "not-supported"},
		{"content type on update", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient","id":"a-pat"}`, []string{"Content-Type", "text/plain"}, 415, "not-supported"},
		{"body over 1 MiB", "POST", "/fhir/R4/Patient", big[:MaxBodyBytes+1], nil, 413, "too-long"},
		{"body over 1 MiB on update", "PUT", "/fhir/R4/Patient/a-pat", big, nil, 413, "too-long"},
		{"bad id characters on read", "GET", "/fhir/R4/Patient/a_pat", "", nil, 400, "value"},
		{"bad id characters on update", "PUT", "/fhir/R4/Patient/a_pat", `{"resourceType":"Patient","id":"a_pat"}`, nil, 400, "value"},
		{"bad id characters on delete", "DELETE", "/fhir/R4/Patient/a%20pat", "", nil, 400, "value"},
		{"id too long", "GET", "/fhir/R4/Patient/" + strings.Repeat("1", 65), "", nil, 400, "value"},
		{"unknown type read", "GET", "/fhir/R4/Observation/1", "", nil, 404, "not-supported"},
		{"unknown type create", "POST", "/fhir/R4/Observation", `{"resourceType":"Observation"}`, nil, 404, "not-supported"},
		{"internal type read", "GET", "/fhir/R4/ClientApplication/a-client", "", nil, 404, "not-supported"},
		{"internal type search", "GET", "/fhir/R4/Login", "", nil, 404, "not-supported"},
		{"project type", "GET", "/fhir/R4/Project/proj-a", "", nil, 404, "not-supported"},
		{"lower-case type", "GET", "/fhir/R4/patient/a-pat", "", nil, 404, "not-supported"},
		{"resourceType mismatch", "POST", "/fhir/R4/Patient", `{"resourceType":"Practitioner"}`, nil, 400, "invalid"},
		{"resourceType mismatch on update", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Practitioner","id":"a-pat"}`, nil, 400, "invalid"},
		{"resourceType missing", "POST", "/fhir/R4/Patient", `{"name":[{"family":"X"}]}`, nil, 400, "required"},
		{"resourceType not a string", "POST", "/fhir/R4/Patient", `{"resourceType":1}`, nil, 400, "invalid"},
		{"resourceType second spelling", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","ResourceType":"Patient"}`, nil, 400, "structure"},
		{"unknown element", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","nmae":[]}`, nil, 400, "structure"},
		{"unknown nested element", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","name":[{"famly":"X"}]}`, nil, 400, "structure"},
		{"wrong element type", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","name":"X"}`, nil, 400, "structure"},
		{"bad enum code", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","gender":"robot"}`, nil, 400, "structure"},
		{"bad id in body on create", "POST", "/fhir/R4/Patient", `{"resourceType":"Patient","id":"a b"}`, nil, 400, "value"},
		{"RelatedPerson without patient", "POST", "/fhir/R4/RelatedPerson", `{"resourceType":"RelatedPerson"}`, nil, 400, "required"},
		{"update id mismatch", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient","id":"a-pat2"}`, nil, 400, "invalid"},
		{"update without id", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient"}`, nil, 400, "invalid"},
		{"update of missing resource", "PUT", "/fhir/R4/Patient/nope", `{"resourceType":"Patient","id":"nope"}`, nil, 404, "not-found"},
		{"bad If-Match", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient","id":"a-pat"}`, []string{"If-Match", "1"}, 400, "invalid"},
		{"stale If-Match", "PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient","id":"a-pat"}`, []string{"If-Match", `W/"7"`}, 412, "conflict"},
		{"create membership", "POST", "/fhir/R4/ProjectMembership", membershipJSON("proj-a", "Patient/a-pat2", "", false, ""), nil, 405, "not-supported"},
		{"patch", "PATCH", "/fhir/R4/Patient/a-pat", `[]`, nil, 405, "not-supported"},
		{"unknown search parameter", "GET", "/fhir/R4/Patient?birthdate=2000", "", nil, 400, "not-supported"},
		{"search modifier", "GET", "/fhir/R4/Patient?name:exact=Doe", "", nil, 400, "not-supported"},
		{"membership parameter on profile", "GET", "/fhir/R4/Patient?external-id=x", "", nil, 400, "not-supported"},
		{"profile parameter on membership", "GET", "/fhir/R4/ProjectMembership?name=x", "", nil, 400, "not-supported"},
		{"empty search value", "GET", "/fhir/R4/Patient?name=", "", nil, 400, "value"},
		{"empty value in list", "GET", "/fhir/R4/Patient?_id=a-pat,", "", nil, 400, "value"},
		{"bad _id value", "GET", "/fhir/R4/Patient?_id=a_b", "", nil, 400, "value"},
		{"bar-only identifier", "GET", "/fhir/R4/Patient?identifier=|", "", nil, 400, "value"},
		{"bad _count", "GET", "/fhir/R4/Patient?_count=ten", "", nil, 400, "value"},
		{"negative _count", "GET", "/fhir/R4/Patient?_count=-1", "", nil, 400, "value"},
		{"repeated _count", "GET", "/fhir/R4/Patient?_count=1&_count=2", "", nil, 400, "value"},
		{"negative _offset", "GET", "/fhir/R4/Patient?_offset=-5", "", nil, 400, "value"},
		{"xml _format", "GET", "/fhir/R4/Patient?_format=xml", "", nil, 400, "value"},
		{"bad active", "GET", "/fhir/R4/ProjectMembership?active=yes", "", nil, 400, "value"},
		{"bad profile", "GET", "/fhir/R4/ProjectMembership?profile=Observation/1", "", nil, 400, "value"},
		{"malformed query", "GET", "/fhir/R4/Patient?name=%zz", "", nil, 400, "invalid"},
		{"history", "GET", "/fhir/R4/Patient/a-pat/_history/1", "", nil, 404, "not-supported"},
		{"operation", "POST", "/fhir/R4/Patient/a-pat/$everything", "", nil, 404, "not-supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.snapshot("proj-a")
			w := env.do("admin-a", tt.method, tt.path, tt.body, tt.headers...)
			assertOutcome(t, w, tt.status, tt.code)
			if after := env.snapshot("proj-a"); !reflect.DeepEqual(after, before) {
				t.Fatalf("refused request wrote:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestRESTBodyAtLimit(t *testing.T) {
	env := newRestEnv(t)
	head, tail := `{"resourceType":"Patient","name":[{"text":"`, `"}]}`
	body := head + strings.Repeat("x", MaxBodyBytes-len(head)-len(tail)) + tail
	if len(body) != MaxBodyBytes {
		t.Fatalf("test body is %d bytes", len(body))
	}
	w := env.do("admin-a", http.MethodPost, "/fhir/R4/Patient", body)
	if w.Code != http.StatusCreated {
		t.Fatalf("body of exactly %d bytes: status %d %s", MaxBodyBytes, w.Code, truncate(w.Body.String(), 300))
	}
}

func TestRESTUnauthenticated(t *testing.T) {
	env := newRestEnv(t)
	for _, rq := range []struct{ method, path, body string }{
		{"GET", "/fhir/R4/Patient/a-pat", ""},
		{"GET", "/fhir/R4/Patient", ""},
		{"POST", "/fhir/R4/Patient", `{"resourceType":"Patient"}`},
		{"PUT", "/fhir/R4/Patient/a-pat", `{"resourceType":"Patient","id":"a-pat"}`},
		{"DELETE", "/fhir/R4/Patient/a-pat", ""},
		{"GET", "/fhir/R4/Observation/1", ""},
		{"GET", "/fhir/R4/Patient/a-pat/_history/1", ""},
	} {
		t.Run(rq.method+" "+rq.path, func(t *testing.T) {
			w := env.do("", rq.method, rq.path, rq.body)
			assertOutcome(t, w, http.StatusUnauthorized, "login")
			if w.Header().Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if _, err := env.store.Read(context.Background(), "proj-a", TypePatient, "a-pat"); err != nil {
		t.Fatalf("a-pat after unauthenticated requests: %v", err)
	}
}

func TestRESTRoles(t *testing.T) {
	pat := func(id string) string {
		return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"New"}]}`
	}
	prac := func(id string) string {
		return `{"resourceType":"Practitioner","id":"` + id + `","name":[{"family":"New"}]}`
	}
	pm := strings.Replace(membershipJSON("proj-a", "Patient/a-pat", "ext-pat", false, "project-a"),
		`"resourceType"`, `"id":"a-pm-pat","resourceType"`, 1)
	tests := []struct {
		who          string
		method, path string
		body         string
		status       int
	}{
		// A member whose profile is a Patient reads that Patient, nothing else.
		{"pat-a", "GET", "/fhir/R4/Patient/a-pat", "", 200},
		{"pat-a", "GET", "/fhir/R4/Patient/a-pat2", "", 403},
		{"pat-a", "GET", "/fhir/R4/Practitioner/a-prac", "", 403},
		{"pat-a", "GET", "/fhir/R4/RelatedPerson/a-rp", "", 403},
		{"pat-a", "GET", "/fhir/R4/Patient", "", 403},
		{"pat-a", "GET", "/fhir/R4/Patient?_id=a-pat", "", 403},
		{"pat-a", "PUT", "/fhir/R4/Patient/a-pat", pat("a-pat"), 403},
		{"pat-a", "POST", "/fhir/R4/Patient", pat(""), 403},
		{"pat-a", "DELETE", "/fhir/R4/Patient/a-pat", "", 403},
		{"pat-a", "GET", "/fhir/R4/ProjectMembership/a-pm-pat", "", 403},
		{"pat-a", "GET", "/fhir/R4/ProjectMembership", "", 403},
		// Other members read and search the profile types and update their own profile.
		{"prac-a", "GET", "/fhir/R4/Patient/a-pat", "", 200},
		{"prac-a", "GET", "/fhir/R4/Practitioner/a-other", "", 200},
		{"prac-a", "GET", "/fhir/R4/RelatedPerson/a-rp", "", 200},
		{"prac-a", "GET", "/fhir/R4/Patient?name=doe", "", 200},
		{"prac-a", "GET", "/fhir/R4/Practitioner", "", 200},
		{"prac-a", "PUT", "/fhir/R4/Practitioner/a-prac", prac("a-prac"), 200},
		{"prac-a", "PUT", "/fhir/R4/Practitioner/a-other", prac("a-other"), 403},
		{"prac-a", "PUT", "/fhir/R4/Patient/a-pat", pat("a-pat"), 403},
		{"prac-a", "POST", "/fhir/R4/Patient", pat(""), 403},
		{"prac-a", "DELETE", "/fhir/R4/Practitioner/a-prac", "", 403},
		{"prac-a", "DELETE", "/fhir/R4/Patient/a-pat2", "", 403},
		{"prac-a", "GET", "/fhir/R4/ProjectMembership/a-pm-prac", "", 403},
		{"prac-a", "GET", "/fhir/R4/ProjectMembership?external-id=ext-prac", "", 403},
		{"prac-a", "PUT", "/fhir/R4/ProjectMembership/a-pm-pat", pm, 403},
		{"prac-a", "DELETE", "/fhir/R4/ProjectMembership/a-pm-pat", "", 403},
		// Admins may do everything.
		{"admin-a", "GET", "/fhir/R4/Patient/a-pat", "", 200},
		{"admin-a", "GET", "/fhir/R4/Patient", "", 200},
		{"admin-a", "POST", "/fhir/R4/Practitioner", prac(""), 201},
		{"admin-a", "PUT", "/fhir/R4/Patient/a-pat", pat("a-pat"), 200},
		{"admin-a", "GET", "/fhir/R4/ProjectMembership/a-pm-pat", "", 200},
		{"admin-a", "GET", "/fhir/R4/ProjectMembership", "", 200},
		{"admin-a", "PUT", "/fhir/R4/ProjectMembership/a-pm-pat", pm, 200},
		{"admin-a", "DELETE", "/fhir/R4/Patient/a-pat2", "", 204},
	}
	for _, tt := range tests {
		t.Run(tt.who+" "+tt.method+" "+tt.path, func(t *testing.T) {
			env := newRestEnv(t)
			before := env.snapshot("proj-a")
			w := env.do(tt.who, tt.method, tt.path, tt.body)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body.String())
			}
			after := env.snapshot("proj-a")
			if tt.status == http.StatusForbidden {
				assertOutcome(t, w, http.StatusForbidden, "forbidden")
				if !reflect.DeepEqual(after, before) {
					t.Fatalf("forbidden request wrote:\nbefore %v\nafter  %v", before, after)
				}
			}
			if tt.status == http.StatusOK && tt.method == http.MethodPut && reflect.DeepEqual(after, before) {
				t.Fatal("allowed update wrote nothing")
			}
		})
	}
}

func TestRESTLifecycle(t *testing.T) {
	env := newRestEnv(t)
	// Create: 201, Location with version, ETag, body with a server id.
	w := env.do("admin-a", "POST", "/fhir/R4/Patient",
		`{"resourceType":"Patient","id":"client-chosen","identifier":[{"system":"http://mrn","value":"MRN-9"}],"name":[{"family":"Lee","given":["Ann"]}]}`,
		"Content-Type", "application/json; charset=UTF-8")
	if w.Code != http.StatusCreated {
		t.Fatalf("create: %d %s", w.Code, w.Body.String())
	}
	var created struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Meta         struct {
			VersionID   string `json:"versionId"`
			LastUpdated string `json:"lastUpdated"`
		} `json:"meta"`
		Name []struct {
			Family string `json:"family"`
		} `json:"name"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil {
		t.Fatal(err)
	}
	if created.ResourceType != "Patient" || !ValidID(created.ID) || created.ID == "client-chosen" ||
		created.Meta.VersionID != "1" || created.Meta.LastUpdated == "" || len(created.Name) != 1 || created.Name[0].Family != "Lee" {
		t.Fatalf("created body = %s", w.Body.String())
	}
	id := created.ID
	if got, want := w.Header().Get("Location"), testBase+"/Patient/"+id+"/_history/1"; got != want {
		t.Fatalf("Location = %q, want %q", got, want)
	}
	if got := w.Header().Get("ETag"); got != `W/"1"` {
		t.Fatalf("ETag = %q", got)
	}
	if w.Header().Get("Content-Type") != ContentType {
		t.Fatalf("Content-Type = %q", w.Header().Get("Content-Type"))
	}

	// Read, and find it by identifier and name.
	w = env.do("admin-a", "GET", "/fhir/R4/Patient/"+id, "")
	if w.Code != 200 || w.Header().Get("ETag") != `W/"1"` || w.Header().Get("Last-Modified") == "" {
		t.Fatalf("read: %d %v %s", w.Code, w.Header(), w.Body.String())
	}
	if ids, _ := env.searchIDs("prac-a", "/fhir/R4/Patient?identifier=http://mrn|MRN-9"); !reflect.DeepEqual(ids, []string{id}) {
		t.Fatalf("identifier search = %v", ids)
	}
	if ids, _ := env.searchIDs("prac-a", "/fhir/R4/Patient?name=le"); !reflect.DeepEqual(ids, []string{id}) {
		t.Fatalf("name search = %v", ids)
	}

	// Update with the right version, then with a stale one.
	upd := `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"Lee-Smith"}]}`
	w = env.do("admin-a", "PUT", "/fhir/R4/Patient/"+id, upd, "If-Match", `W/"1"`)
	if w.Code != 200 || w.Header().Get("ETag") != `W/"2"` || !strings.Contains(w.Body.String(), "Lee-Smith") {
		t.Fatalf("update: %d %v %s", w.Code, w.Header(), w.Body.String())
	}
	w = env.do("admin-a", "PUT", "/fhir/R4/Patient/"+id, upd, "If-Match", `W/"1"`)
	assertOutcome(t, w, http.StatusPreconditionFailed, "conflict")
	w = env.do("admin-a", "PUT", "/fhir/R4/Patient/"+id, upd, "If-Match", `"2"`)
	if w.Code != 200 || w.Header().Get("ETag") != `W/"3"` {
		t.Fatalf("update with strong If-Match: %d %s", w.Code, w.Body.String())
	}

	// No update-as-create.
	w = env.do("admin-a", "PUT", "/fhir/R4/Patient/brand-new", `{"resourceType":"Patient","id":"brand-new"}`)
	assertOutcome(t, w, http.StatusNotFound, "not-found")
	assertOutcome(t, env.do("admin-a", "GET", "/fhir/R4/Patient/brand-new", ""), http.StatusNotFound, "not-found")

	// Delete: 204, then 410 on read and update, 204 again on a second delete.
	if w = env.do("admin-a", "DELETE", "/fhir/R4/Patient/"+id, ""); w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", w.Code, w.Body.String())
	}
	assertOutcome(t, env.do("admin-a", "GET", "/fhir/R4/Patient/"+id, ""), http.StatusGone, "deleted")
	assertOutcome(t, env.do("admin-a", "PUT", "/fhir/R4/Patient/"+id, upd), http.StatusGone, "deleted")
	if w = env.do("admin-a", "DELETE", "/fhir/R4/Patient/"+id, ""); w.Code != http.StatusNoContent {
		t.Fatalf("second delete: %d %s", w.Code, w.Body.String())
	}
	if ids, total := env.searchIDs("admin-a", "/fhir/R4/Patient?identifier=http://mrn|MRN-9"); len(ids) != 0 || total != 0 {
		t.Fatalf("deleted patient still found: %v", ids)
	}
	assertOutcome(t, env.do("admin-a", "DELETE", "/fhir/R4/Patient/never-was", ""), http.StatusNotFound, "not-found")
}

func TestRESTSearchBundle(t *testing.T) {
	env := newRestEnv(t)
	w := env.do("prac-a", "GET", "/fhir/R4/Practitioner?_count=1", "")
	if w.Code != 200 || w.Header().Get("Content-Type") != ContentType {
		t.Fatalf("search: %d %s", w.Code, w.Body.String())
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Total        *int   `json:"total"`
		Link         []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		} `json:"link"`
		Entry []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
			Search   struct {
				Mode string `json:"mode"`
			} `json:"search"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.ResourceType != "Bundle" || b.Type != "searchset" || b.Total == nil || *b.Total != 2 || len(b.Entry) != 1 {
		t.Fatalf("bundle = %s", w.Body.String())
	}
	e := b.Entry[0]
	var r struct {
		ResourceType, ID string
	}
	if err := json.Unmarshal(e.Resource, &r); err != nil || r.ResourceType != "Practitioner" {
		t.Fatalf("entry resource = %s", e.Resource)
	}
	if e.FullURL != testBase+"/Practitioner/"+r.ID || e.Search.Mode != "match" {
		t.Fatalf("entry = %+v", e)
	}
	links := map[string]string{}
	for _, l := range b.Link {
		links[l.Relation] = l.URL
	}
	if links["self"] != testBase+"/Practitioner?_count=1" || links["next"] != testBase+"/Practitioner?_count=1&_offset=1" {
		t.Fatalf("links = %v", links)
	}

	// Following next gives the other practitioner and no further next link.
	next, _ := url.Parse(links["next"])
	ids1, _ := env.searchIDs("prac-a", "/fhir/R4/Practitioner?_count=1")
	ids2, total := env.searchIDs("prac-a", "/fhir/R4/Practitioner?"+next.RawQuery)
	if total != 2 || len(ids2) != 1 || ids1[0] == ids2[0] {
		t.Fatalf("pages %v and %v (total %d)", ids1, ids2, total)
	}
	w = env.do("prac-a", "GET", "/fhir/R4/Practitioner?"+next.RawQuery, "")
	if strings.Contains(w.Body.String(), `"next"`) || !strings.Contains(w.Body.String(), `"previous"`) {
		t.Fatalf("last page links: %s", w.Body.String())
	}

	tests := []struct {
		path      string
		wantIDs   []string
		wantTotal int
	}{
		{"/fhir/R4/Patient", []string{"a-pat", "a-pat2"}, 2},
		{"/fhir/R4/Patient?_count=0", nil, 2},
		{"/fhir/R4/Patient?_count=5000&_format=json", []string{"a-pat", "a-pat2"}, 2},
		{"/fhir/R4/Patient?_id=a-pat2", []string{"a-pat2"}, 1},
		{"/fhir/R4/Patient?_id=a-pat,a-pat2", []string{"a-pat", "a-pat2"}, 2},
		{"/fhir/R4/Patient?identifier=MRN-2", []string{"a-pat2"}, 1},
		{"/fhir/R4/Patient?identifier=http://mrn|", []string{"a-pat", "a-pat2"}, 2},
		{"/fhir/R4/Patient?identifier=|MRN-1", nil, 0},
		{"/fhir/R4/Practitioner?identifier=|222", []string{"a-other"}, 1},
		{"/fhir/R4/Patient?identifier=http://other|MRN-1", nil, 0},
		{"/fhir/R4/Patient?name=DO", []string{"a-pat"}, 1},
		{"/fhir/R4/Patient?name=doe&identifier=MRN-2", nil, 0},
		{"/fhir/R4/RelatedPerson?name=doe", []string{"a-rp"}, 1},
		{"/fhir/R4/Patient?_offset=5", nil, 2},
		{"/fhir/R4/ProjectMembership?profile=Patient/a-pat", []string{"a-pm-pat"}, 1},
		{"/fhir/R4/ProjectMembership?active=true", []string{"a-pm-admin", "a-pm-pat", "a-pm-prac"}, 3},
		{"/fhir/R4/ProjectMembership?active=false", nil, 0},
		{"/fhir/R4/ProjectMembership?external-id=ext-pat", []string{"a-pm-pat"}, 1},
		{"/fhir/R4/ProjectMembership?_id=a-pm-admin", []string{"a-pm-admin"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			ids, total := env.searchIDs("admin-a", tt.path)
			if !reflect.DeepEqual(ids, tt.wantIDs) || total != tt.wantTotal {
				t.Fatalf("ids %v total %d, want %v total %d", ids, total, tt.wantIDs, tt.wantTotal)
			}
		})
	}
	w = env.do("admin-a", "GET", "/fhir/R4/Patient?_count=5000", "")
	if !strings.Contains(w.Body.String(), "_count=1000") {
		t.Fatalf("_count not capped in self link: %s", w.Body.String())
	}
}

func TestRESTMembershipUpdate(t *testing.T) {
	pm := func(id, project, profile, ext string, admin bool, active string) string {
		s := `{"resourceType":"ProjectMembership","id":"` + id + `","project":{"reference":"` + project +
			`"},"profile":{"reference":"` + profile + `","display":"project-a"},"admin":` + fmt.Sprint(admin)
		if ext != "" {
			s += `,"externalId":"` + ext + `"`
		}
		if active != "" {
			s += `,"active":` + active
		}
		return s + "}"
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string // for errors
		want   ProjectMembership
	}{
		{"deactivate", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-prac", false, "false"), 200, "",
			ProjectMembership{ExternalID: "ext-prac", Active: ptr(false)}},
		{"make admin", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-prac", true, ""), 200, "",
			ProjectMembership{ExternalID: "ext-prac", Admin: true, Active: ptr(true)}},
		{"change externalId", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-new", false, "true"), 200, "",
			ProjectMembership{ExternalID: "ext-new", Active: ptr(true)}},
		{"remove externalId", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "", false, ""), 200, "",
			ProjectMembership{Active: ptr(true)}},
		{"externalId used in project", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-pat", false, ""), 409, "conflict",
			ProjectMembership{}},
		{"change profile", pm("a-pm-prac", "proj-a", "Practitioner/a-other", "ext-prac", false, ""), 400, "business-rule",
			ProjectMembership{}},
		{"change profile display", strings.Replace(pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-prac", false, ""),
			`"display":"project-a"`, `"display":"x"`, 1), 400, "business-rule", ProjectMembership{}},
		{"change project", pm("a-pm-prac", "proj-b", "Practitioner/a-prac", "ext-prac", false, ""), 400, "business-rule",
			ProjectMembership{}},
		{"unknown element", strings.Replace(pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-prac", false, ""),
			`"admin"`, `"role":"owner","admin"`, 1), 400, "structure", ProjectMembership{}},
		{"externalId with control character", pm("a-pm-prac", "proj-a", "Practitioner/a-prac", `a\nb`, false, ""), 400, "value",
			ProjectMembership{}},
		{"id mismatch", pm("a-pm-pat", "proj-a", "Practitioner/a-prac", "ext-prac", false, ""), 400, "invalid",
			ProjectMembership{}},
		{"wrong resourceType", strings.Replace(pm("a-pm-prac", "proj-a", "Practitioner/a-prac", "ext-prac", false, ""),
			`"resourceType":"ProjectMembership"`, `"resourceType":"Patient"`, 1), 400, "invalid", ProjectMembership{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newRestEnv(t)
			before := env.snapshot("proj-a")
			w := env.do("admin-a", "PUT", "/fhir/R4/ProjectMembership/a-pm-prac", tt.body)
			if tt.status != 200 {
				assertOutcome(t, w, tt.status, tt.code)
				if after := env.snapshot("proj-a"); !reflect.DeepEqual(after, before) {
					t.Fatalf("refused update wrote:\nbefore %v\nafter  %v", before, after)
				}
				return
			}
			if w.Code != 200 || w.Header().Get("ETag") != `W/"2"` {
				t.Fatalf("update: %d %s", w.Code, w.Body.String())
			}
			rec, err := env.store.Read(context.Background(), "proj-a", TypeProjectMembership, "a-pm-prac")
			if err != nil {
				t.Fatal(err)
			}
			var got ProjectMembership
			if err := json.Unmarshal(rec.Body, &got); err != nil {
				t.Fatal(err)
			}
			if got.ExternalID != tt.want.ExternalID || got.Admin != tt.want.Admin || !reflect.DeepEqual(got.Active, tt.want.Active) {
				t.Fatalf("stored externalId %q admin %v active %v, want %q %v %v",
					got.ExternalID, got.Admin, got.Active, tt.want.ExternalID, tt.want.Admin, tt.want.Active)
			}
			if got.Profile.Reference == nil || *got.Profile.Reference != "Practitioner/a-prac" ||
				got.Project.Reference == nil || *got.Project.Reference != "proj-a" {
				t.Fatalf("profile or project changed: %s", rec.Body)
			}
			if w.Body.String() != string(rec.Body) {
				t.Fatalf("answer %s differs from stored %s", w.Body.String(), rec.Body)
			}
		})
	}

	t.Run("delete membership", func(t *testing.T) {
		env := newRestEnv(t)
		if w := env.do("admin-a", "DELETE", "/fhir/R4/ProjectMembership/a-pm-pat", ""); w.Code != http.StatusNoContent {
			t.Fatalf("delete: %d %s", w.Code, w.Body.String())
		}
		assertOutcome(t, env.do("admin-a", "GET", "/fhir/R4/ProjectMembership/a-pm-pat", ""), http.StatusGone, "deleted")
		if ids, _ := env.searchIDs("admin-a", "/fhir/R4/ProjectMembership?external-id=ext-pat"); len(ids) != 0 {
			t.Fatalf("deleted membership still found: %v", ids)
		}
	})
}

func ptr[T any](v T) *T { return &v }

func TestRESTMetadata(t *testing.T) {
	env := newRestEnv(t)
	w := env.do("", "GET", "/fhir/R4/metadata", "")
	if w.Code != 200 || w.Header().Get("Content-Type") != ContentType {
		t.Fatalf("metadata: %d %s", w.Code, w.Body.String())
	}
	cs, err := models.UnmarshalCapabilityStatement(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Body.String(), `"resourceType":"CapabilityStatement"`) ||
		cs.FhirVersion != models.FHIRVersion4_0_1 || cs.Kind != models.CapabilityStatementKindInstance ||
		cs.Status != models.PublicationStatusActive || len(cs.Rest) != 1 || cs.Rest[0].Mode != models.RestfulCapabilityModeServer {
		t.Fatalf("capability statement = %s", w.Body.String())
	}
	var types []string
	for _, r := range cs.Rest[0].Resource {
		types = append(types, r.Type.Code())
		if len(r.Interaction) != 5 || len(r.SearchParam) != 3 {
			t.Fatalf("%s: interactions %v search params %v", r.Type.Code(), r.Interaction, r.SearchParam)
		}
	}
	if !reflect.DeepEqual(types, ProfileTypes) {
		t.Fatalf("resources = %v, want %v", types, ProfileTypes)
	}
	if cs.Implementation == nil || cs.Implementation.Url == nil || *cs.Implementation.Url != testBase {
		t.Fatalf("implementation = %+v", cs.Implementation)
	}
}

func TestAllowed(t *testing.T) {
	admin := &caller.Caller{Project: "p", Profile: "ClientApplication/c", Admin: true}
	prac := &caller.Caller{Project: "p", Profile: "Practitioner/me"}
	rp := &caller.Caller{Project: "p", Profile: "RelatedPerson/me"}
	pat := &caller.Caller{Project: "p", Profile: "Patient/me"}
	client := &caller.Caller{Project: "p", Profile: "ClientApplication/c"}
	tests := []struct {
		cl   *caller.Caller
		act  action
		typ  string
		id   string
		want bool
	}{
		{admin, actionDelete, TypeProjectMembership, "x", true},
		{admin, actionCreate, TypePatient, "", true},
		{prac, actionRead, TypePatient, "x", true},
		{prac, actionSearch, TypeRelatedPerson, "", true},
		{prac, actionUpdate, TypePractitioner, "me", true},
		{prac, actionUpdate, TypePractitioner, "other", false},
		{prac, actionUpdate, TypePatient, "me", false},
		{prac, actionCreate, TypePractitioner, "", false},
		{prac, actionDelete, TypePractitioner, "me", false},
		{prac, actionRead, TypeProjectMembership, "x", false},
		{prac, actionSearch, TypeProjectMembership, "", false},
		{rp, actionUpdate, TypeRelatedPerson, "me", true},
		{rp, actionRead, TypePatient, "x", true},
		{client, actionSearch, TypePatient, "", true},
		{client, actionUpdate, TypePatient, "c", false},
		{pat, actionRead, TypePatient, "me", true},
		{pat, actionRead, TypePatient, "other", false},
		{pat, actionRead, TypePractitioner, "me", false},
		{pat, actionSearch, TypePatient, "", false},
		{pat, actionUpdate, TypePatient, "me", false},
		{pat, actionDelete, TypePatient, "me", false},
		{pat, actionRead, TypeProjectMembership, "x", false},
	}
	for i, tt := range tests {
		if got := allowed(tt.cl, tt.act, tt.typ, tt.id); got != tt.want {
			t.Errorf("%d: allowed(%s, %d, %s, %q) = %v, want %v", i, tt.cl.Profile, tt.act, tt.typ, tt.id, got, tt.want)
		}
	}
}

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true},
		{`W/"1"`, 1, true},
		{`"12"`, 12, true},
		{` W/"3" `, 3, true},
		{`W/"0"`, 0, false},
		{`W/"-1"`, 0, false},
		{`W/"x"`, 0, false},
		{`W/""`, 0, false},
		{`1`, 0, false},
		{`*`, 0, false},
		{`W/"1`, 0, false},
	}
	for _, tt := range tests {
		got, err := parseIfMatch(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseIfMatch(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseSearch(t *testing.T) {
	tests := []struct {
		typ    string
		query  string
		want   searchRequest
		errors int // number of issues when refused; 0 means accepted
	}{
		{TypePatient, "", searchRequest{Count: 100}, 0},
		{TypePatient, "name=a&name=b&_count=10&_offset=20", searchRequest{
			Params: []Param{{Name: "name", Value: "a"}, {Name: "name", Value: "b"}}, Count: 10, Offset: 20}, 0},
		{TypePatient, "identifier=s|v,w", searchRequest{Params: []Param{{Name: "identifier", Value: "s|v,w"}}, Count: 100}, 0},
		{TypePatient, "_count=0", searchRequest{Count: 0}, 0},
		{TypePatient, "_count=1001", searchRequest{Count: 1000}, 0},
		{TypePatient, "_format=application/fhir%2Bjson", searchRequest{Count: 100, Format: "application/fhir+json"}, 0},
		{TypePatient, "_format=application/fhir+json", searchRequest{Count: 100, Format: "application/fhir+json"}, 0},
		{TypeProjectMembership, "profile=ClientApplication/c&active=false", searchRequest{
			Params: []Param{{Name: "active", Value: "false"}, {Name: "profile", Value: "ClientApplication/c"}}, Count: 100}, 0},
		{TypePatient, "foo=1&bar=2&name=", searchRequest{}, 3},
		{TypePatient, "_offset=1000000001", searchRequest{}, 1},
		{TypePatient, "_count=1e3", searchRequest{}, 1},
		{TypeProjectMembership, "external-id=a,,b", searchRequest{}, 1},
		{TypeProjectMembership, "profile=Practitioner", searchRequest{}, 1},
		{TypePatient, "name=a%01", searchRequest{}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.typ+"?"+tt.query, func(t *testing.T) {
			values, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseSearch(tt.typ, values)
			if tt.errors > 0 {
				re, ok := err.(*RequestError)
				if !ok || re.Status != 400 || len(re.Issues) != tt.errors {
					t.Fatalf("parseSearch = %+v, %v; want %d issues", got, err, tt.errors)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseSearch = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCheckContentType(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"application/fhir+json", true},
		{"application/json", true},
		{"application/fhir+json; charset=utf-8", true},
		{"Application/JSON; charset=UTF-8", true},
		{"application/fhir+json; fhirVersion=4.0", true},
		{"", false},
		{"text/json", false},
		{"application/fhir+xml", false},
		{"application/json; charset=utf-16", false},
		{"application/json; charset", false},
		{"multipart/form-data; boundary=x", false},
	}
	for _, tt := range tests {
		err := checkContentType(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("checkContentType(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && err.(*RequestError).Status != http.StatusUnsupportedMediaType {
			t.Errorf("checkContentType(%q) status %d, want 415", tt.in, err.(*RequestError).Status)
		}
	}
}

func TestNewSearchset(t *testing.T) {
	recs := []Record{
		{Type: TypePatient, ID: "p1", Body: json.RawMessage(`{"resourceType":"Patient","id":"p1"}`)},
		{Type: TypePatient, ID: "p2", Body: json.RawMessage(`{"resourceType":"Patient","id":"p2"}`)},
	}
	b := NewSearchset("https://h/fhir/R4", recs, 7, SearchLinks{Self: "s", Next: "n"})
	raw, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"resourceType": "Bundle",
		"id":           got["id"],
		"type":         "searchset",
		"total":        float64(7),
		"link": []any{
			map[string]any{"relation": "self", "url": "s"},
			map[string]any{"relation": "next", "url": "n"},
		},
		"entry": []any{
			map[string]any{"fullUrl": "https://h/fhir/R4/Patient/p1", "resource": map[string]any{"resourceType": "Patient", "id": "p1"},
				"search": map[string]any{"mode": "match"}},
			map[string]any{"fullUrl": "https://h/fhir/R4/Patient/p2", "resource": map[string]any{"resourceType": "Patient", "id": "p2"},
				"search": map[string]any{"mode": "match"}},
		},
	}
	if id, _ := got["id"].(string); !ValidID(id) {
		t.Fatalf("bundle id %v", got["id"])
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("bundle = %s", raw)
	}
	empty, _ := NewSearchset("https://h", nil, 0, SearchLinks{Self: "s"}).MarshalJSON()
	if !strings.Contains(string(empty), `"type":"searchset"`) || !strings.Contains(string(empty), `"total":0`) {
		t.Fatalf("empty bundle = %s", empty)
	}
}
