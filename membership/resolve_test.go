package membership

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fhirgate/fhirgate/fhir"
)

type fixture struct {
	svc   *Service
	store fhir.Store
	// project ids
	a, b string
	// profiles in project a
	practitioner, patient, related, orphan, twinA string
	// membership ids
	practitionerM, inactiveM, commaM, backslashM string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	store, err := fhir.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{svc: New(store, nil), store: store}
	f.a = f.project(t, "A")
	f.b = f.project(t, "B")

	invite := func(project, typ, externalID string) *fhir.ProjectMembership {
		m, err := f.svc.Invite(ctx, project, &InviteRequest{ResourceType: typ, FirstName: "F", LastName: "L", ExternalID: externalID, Email: "f@example.com"})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	pm := invite(f.a, fhir.TypePractitioner, "sub-practitioner")
	f.practitionerM = pm.ID
	_, f.practitioner, _ = splitReference(pm.Profile)
	f.setIdentifier(t, f.a, fhir.TypePractitioner, f.practitioner, "http://hl7.org/fhir/sid/us-npi", "1234567890")
	_, f.patient, _ = splitReference(invite(f.a, fhir.TypePatient, "sub-patient").Profile)
	_, f.related, _ = splitReference(invite(f.a, fhir.TypeRelatedPerson, "sub-related").Profile)
	f.commaM = invite(f.a, fhir.TypePractitioner, "CN=Alice,O=Org").ID
	f.backslashM = invite(f.a, fhir.TypePractitioner, `DOMAIN\user`).ID

	inactive := invite(f.a, fhir.TypePractitioner, "sub-inactive")
	f.inactiveM = inactive.ID
	f.deactivate(t, inactive.ID)

	// A profile without any membership.
	rec := &fhir.Record{Type: fhir.TypePractitioner, Project: f.a, Body: json.RawMessage(`{"resourceType":"Practitioner","identifier":[{"system":"urn:x","value":"orphan"}]}`)}
	if err := store.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	f.orphan = rec.ID

	// The same externalId in two projects, and the same identifier on two profiles.
	invite(f.a, fhir.TypePatient, "sub-twice")
	invite(f.b, fhir.TypePatient, "sub-twice")
	_, f.twinA, _ = splitReference(invite(f.a, fhir.TypePatient, "twin-a").Profile)
	f.setIdentifier(t, f.a, fhir.TypePatient, f.twinA, "urn:twin", "7")
	_, twinB, _ := splitReference(invite(f.b, fhir.TypePatient, "twin-b").Profile)
	f.setIdentifier(t, f.b, fhir.TypePatient, twinB, "urn:twin", "7")
	return f
}

func (f *fixture) project(t testing.TB, name string) string {
	out, err := f.svc.Bootstrap(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return out.ProjectID
}

func (f *fixture) setIdentifier(t testing.TB, project, typ, id, system, value string) {
	ctx := context.Background()
	rec, err := f.store.Read(ctx, project, typ, id)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.Unmarshal(rec.Body, &body)
	body["identifier"] = []map[string]string{{"system": system, "value": value}}
	rec.Body, _ = json.Marshal(body)
	rec.Version = 0
	if err := f.store.Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) deactivate(t testing.TB, membershipID string) {
	ctx := context.Background()
	rec, err := f.store.ReadAny(ctx, fhir.TypeProjectMembership, membershipID)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.Unmarshal(rec.Body, &body)
	body["active"] = false
	rec.Body, _ = json.Marshal(body)
	rec.Version = 0
	if err := f.store.Update(ctx, rec); err != nil {
		t.Fatal(err)
	}
}

func TestResolveFHIRUser(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tests := []struct {
		name     string
		claim    string
		projects []string
		want     string // membership id, or "" when refused
		reason   string
	}{
		{"reference", "Practitioner/" + f.practitioner, nil, f.practitionerM, ""},
		{"history reference", "Practitioner/" + f.practitioner + "/_history/1", nil, f.practitionerM, ""},
		{"_id search", "Practitioner?_id=" + f.practitioner, nil, f.practitionerM, ""},
		{"identifier system|value", "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567890", nil, f.practitionerM, ""},
		{"identifier value", "Practitioner?identifier=1234567890", nil, f.practitionerM, ""},
		{"identifier system|", "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|", nil, f.practitionerM, ""},
		{"identifier |value has no system", "Practitioner?identifier=|1234567890", nil, "", ReasonProfileNotFound},
		{"absolute reference", "https://idp.example.com/any/base/Practitioner/" + f.practitioner, nil, f.practitionerM, ""},
		{"absolute search", "https://idp.example.com/fhir/Practitioner?identifier=1234567890", nil, f.practitionerM, ""},
		{"allowed project", "Practitioner/" + f.practitioner, []string{f.a}, f.practitionerM, ""},
		{"project not allowed", "Practitioner/" + f.practitioner, []string{f.b}, "", ReasonProfileNotFound},
		{"wrong type for id", "Patient/" + f.practitioner, nil, "", ReasonProfileNotFound},
		{"profile not found", "Practitioner/does-not-exist", nil, "", ReasonProfileNotFound},
		{"profile without membership", "Practitioner/" + f.orphan, nil, "", ReasonNoMembership},
		{"identifier on two profiles", "Patient?identifier=urn:twin|7", nil, "", ReasonProfileAmbiguous},
		{"identifier ambiguity removed by allow-list", "Patient?identifier=urn:twin|7", []string{f.a}, "", ""},
		{"unsupported type", "Organization/" + f.practitioner, nil, "", ReasonBadFHIRUser},
		{"extra search parameter", "Practitioner?identifier=1234567890&_include=*", nil, "", ReasonBadFHIRUser},
		{"path trick", "Practitioner/../ProjectMembership/" + f.practitionerM, nil, "", ReasonBadFHIRUser},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := f.svc.ResolveFHIRUser(ctx, tt.claim, tt.projects)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tt.want != "" && m.ID != tt.want {
					t.Fatalf("membership %s, want %s", m.ID, tt.want)
				}
				return
			}
			var re *ResolveError
			if !errors.As(err, &re) || re.Reason != tt.reason {
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

func TestResolveSubject(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tests := []struct {
		name, sub string
		projects  []string
		want      string
		reason    string
	}{
		{"exact match", "sub-practitioner", nil, f.practitionerM, ""},
		{"comma is not a list", "attacker,sub-practitioner", nil, "", ReasonNoMembership},
		{"backslash is not an escape", `sub\-practitioner`, nil, "", ReasonNoMembership},
		{"trailing comma", "sub-practitioner,", nil, "", ReasonNoMembership},
		{"subject with commas", "CN=Alice,O=Org", nil, f.commaM, ""},
		{"subject with a backslash", `DOMAIN\user`, nil, f.backslashM, ""},
		{"case differs", "SUB-practitioner", nil, "", ReasonNoMembership},
		{"prefix only", "sub-pract", nil, "", ReasonNoMembership},
		{"unknown", "nobody", nil, "", ReasonNoMembership},
		{"inactive membership", "sub-inactive", nil, "", ReasonNoMembership},
		{"two projects", "sub-twice", nil, "", ReasonMembershipAmbiguous},
		{"two projects, allow-list picks one", "sub-twice", []string{f.b}, "", ""},
		{"project not allowed", "sub-practitioner", []string{f.b}, "", ReasonNoMembership},
		{"empty", "", nil, "", ReasonNoMembership},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := f.svc.ResolveSubject(ctx, tt.sub, tt.projects)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tt.want != "" && m.ID != tt.want {
					t.Fatalf("membership %s, want %s", m.ID, tt.want)
				}
				if tt.projects != nil && ProjectOf(m) != tt.projects[0] {
					t.Fatalf("membership of project %s outside the allow-list", ProjectOf(m))
				}
				return
			}
			var re *ResolveError
			if !errors.As(err, &re) || re.Reason != tt.reason {
				t.Fatalf("err = %v, want reason %s", err, tt.reason)
			}
		})
	}
}

func TestInactiveFHIRUserIsRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	m, err := f.svc.Membership(ctx, f.inactiveM)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.ResolveFHIRUser(ctx, *m.Profile.Reference, nil)
	var re *ResolveError
	if !errors.As(err, &re) || re.Reason != ReasonNoMembership {
		t.Fatalf("inactive membership resolved: %v", err)
	}
}

func TestAuthenticateClient(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	out, err := f.svc.Bootstrap(ctx, "C")
	if err != nil {
		t.Fatal(err)
	}
	m, err := f.svc.AuthenticateClient(ctx, out.ClientID, out.ClientSecret)
	if err != nil || !m.Admin || ProjectOf(m) != out.ProjectID {
		t.Fatalf("client auth: %v %+v", err, m)
	}
	for _, bad := range [][2]string{{out.ClientID, out.ClientSecret + "x"}, {out.ClientID, ""}, {"nope", out.ClientSecret}, {"../x", out.ClientSecret}} {
		if _, err := f.svc.AuthenticateClient(ctx, bad[0], bad[1]); !errors.Is(err, ErrInvalidClient) {
			t.Errorf("AuthenticateClient(%q, …) = %v, want ErrInvalidClient", bad[0], err)
		}
	}
	rec, err := f.store.ReadAny(ctx, fhir.TypeClientApplication, out.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Body) == 0 || strings.Contains(string(rec.Body), out.ClientSecret) {
		t.Fatal("the client secret is stored in clear")
	}
}
