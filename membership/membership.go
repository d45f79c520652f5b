// Package membership manages who belongs to which project: projects,
// ProjectMemberships, client applications and their secrets, Login records,
// the admin invite, and the resolution of an external identity (fhirUser or
// sub) to exactly one membership.
package membership

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/fhir"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// ErrInvalidClient is returned when a client id or secret does not match.
var ErrInvalidClient = errors.New("membership: invalid client credentials")

// ErrProjectNotFound is returned when an operation names an unknown project.
var ErrProjectNotFound = errors.New("membership: project not found")

// Service implements the membership operations on top of a fhir.Store.
type Service struct {
	store fhir.Store // a watchedStore over the database
	now   func() time.Time
	state cache.Cache // state records of the auth chain; nil: none
}

// New returns a Service. now may be nil (time.Now).
func New(store fhir.Store, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{now: now}
	s.store = watchedStore{Store: store, s: s}
	return s
}

// Bootstrapped is what Bootstrap returns; the secret is shown once and only
// its hash is stored.
type Bootstrapped struct {
	ProjectID    string `json:"projectId"`
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

// Bootstrap creates a project, an admin client application and the client's
// admin membership in one transaction.
func (s *Service) Bootstrap(ctx context.Context, projectName string) (*Bootstrapped, error) {
	projectName = strings.TrimSpace(projectName)
	if projectName == "" {
		return nil, errors.New("project name must not be blank")
	}
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	out := &Bootstrapped{ClientSecret: secret}
	err = s.store.WithTx(ctx, func(tx fhir.Ops) error {
		project := &fhir.Record{Type: fhir.TypeProject}
		if err := createJSON(ctx, tx, project, fhir.Project{ResourceType: fhir.TypeProject, Name: projectName}); err != nil {
			return err
		}
		client := &fhir.Record{Type: fhir.TypeClientApplication, Project: project.ID}
		app := fhir.ClientApplication{ResourceType: fhir.TypeClientApplication, Name: projectName + " admin client", SecretHash: hashSecret(secret)}
		if err := createJSON(ctx, tx, client, app); err != nil {
			return err
		}
		m := fhir.ProjectMembership{
			ResourceType: fhir.TypeProjectMembership,
			Project:      reference(fhir.TypeProject, project.ID, projectName),
			Profile:      reference(fhir.TypeClientApplication, client.ID, app.Name),
			Admin:        true,
		}
		if err := createJSON(ctx, tx, &fhir.Record{Type: fhir.TypeProjectMembership, Project: project.ID}, m); err != nil {
			return err
		}
		out.ProjectID, out.ClientID = project.ID, client.ID
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AuthenticateClient checks a client id and secret in constant time and
// returns the client's membership. Any mismatch is ErrInvalidClient.
func (s *Service) AuthenticateClient(ctx context.Context, clientID, secret string) (*fhir.ProjectMembership, error) {
	if !fhir.ValidID(clientID) || secret == "" {
		return nil, ErrInvalidClient
	}
	rec, err := s.store.ReadAny(ctx, fhir.TypeClientApplication, clientID)
	if errors.Is(err, fhir.ErrNotFound) || errors.Is(err, fhir.ErrGone) {
		// Hash anyway so an unknown id costs the same as a wrong secret.
		subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(hashSecret(clientID)))
		return nil, ErrInvalidClient
	}
	if err != nil {
		return nil, err
	}
	var app fhir.ClientApplication
	if err := json.Unmarshal(rec.Body, &app); err != nil {
		return nil, fmt.Errorf("decode ClientApplication/%s: %w", clientID, err)
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(app.SecretHash)) != 1 {
		return nil, ErrInvalidClient
	}
	members, err := s.activeMemberships(ctx, []string{rec.Project}, fhir.Param{Name: "profile", Value: fhir.TypeClientApplication + "/" + clientID})
	if err != nil {
		return nil, err
	}
	if len(members) != 1 {
		return nil, ErrInvalidClient
	}
	return &members[0], nil
}

// Membership reads a membership by id, whatever its project.
func (s *Service) Membership(ctx context.Context, id string) (*fhir.ProjectMembership, error) {
	rec, err := s.store.ReadAny(ctx, fhir.TypeProjectMembership, id)
	if err != nil {
		return nil, err
	}
	return decodeMembership(rec)
}

// Profile reads the profile resource a membership points to, as raw JSON.
func (s *Service) Profile(ctx context.Context, m *fhir.ProjectMembership) (*fhir.Record, error) {
	typ, id, ok := splitReference(m.Profile)
	if !ok {
		return nil, fmt.Errorf("membership %s has a malformed profile reference", m.ID)
	}
	return s.store.Read(ctx, ProjectOf(m), typ, id)
}

// ProjectExists reports whether a project with that id exists.
func (s *Service) ProjectExists(ctx context.Context, id string) (bool, error) {
	if !fhir.ValidID(id) {
		return false, nil
	}
	_, err := s.store.ReadAny(ctx, fhir.TypeProject, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fhir.ErrNotFound), errors.Is(err, fhir.ErrGone):
		return false, nil
	}
	return false, err
}

// ProjectOf returns the id of the project a membership belongs to.
func ProjectOf(m *fhir.ProjectMembership) string {
	_, id, _ := splitReference(m.Project)
	return id
}

// activeMemberships searches active memberships matching p in projects (nil = all).
func (s *Service) activeMemberships(ctx context.Context, projects []string, p ...fhir.Param) ([]fhir.ProjectMembership, error) {
	q := fhir.Query{
		Type:        fhir.TypeProjectMembership,
		Projects:    projects,
		AllProjects: projects == nil,
		Params:      append(p, fhir.Param{Name: "active", Value: "true"}),
		Count:       2, // one match is all we accept; two prove ambiguity
	}
	recs, _, err := s.store.Search(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]fhir.ProjectMembership, 0, len(recs))
	for i := range recs {
		m, err := decodeMembership(&recs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *m)
	}
	return out, nil
}

func decodeMembership(rec *fhir.Record) (*fhir.ProjectMembership, error) {
	var m fhir.ProjectMembership
	if err := json.Unmarshal(rec.Body, &m); err != nil {
		return nil, fmt.Errorf("decode ProjectMembership/%s: %w", rec.ID, err)
	}
	m.ID = rec.ID
	return &m, nil
}

// createJSON marshals v into rec.Body and creates it.
func createJSON(ctx context.Context, tx fhir.Ops, rec *fhir.Record, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rec.Body = body
	return tx.Create(ctx, rec)
}

func reference(typ, id, display string) models.Reference {
	ref := typ + "/" + id
	r := models.Reference{Reference: &ref}
	if display != "" {
		r.Display = &display
	}
	return r
}

func refString(r models.Reference) string {
	if r.Reference == nil {
		return ""
	}
	return *r.Reference
}

func splitReference(r models.Reference) (typ, id string, ok bool) {
	if r.Reference == nil {
		return "", "", false
	}
	typ, id, ok = strings.Cut(*r.Reference, "/")
	return typ, id, ok && typ != "" && fhir.ValidID(id)
}

// newSecret returns 256 random bits, base64url encoded.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashSecret hashes a high-entropy client secret. A plain SHA-256 is enough
// for 256-bit random secrets (there is nothing to brute-force), and keeps the
// token endpoint fast.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
