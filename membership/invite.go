package membership

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/fhirgate/fhirgate/fhir"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// MaxExternalIDLength bounds an externalId (an IdP subject).
const MaxExternalIDLength = 255

// InviteRequest is the body of POST /admin/projects/{projectId}/invite.
type InviteRequest struct {
	ResourceType string `json:"resourceType"`
	FirstName    string `json:"firstName"`
	LastName     string `json:"lastName"`
	ExternalID   string `json:"externalId,omitempty"`
	Email        string `json:"email,omitempty"`
	Admin        bool   `json:"admin,omitempty"`
}

// FieldError names one invalid field of a request.
type FieldError struct {
	Field   string
	Message string
}

// ValidationError lists every invalid field of a request.
type ValidationError struct{ Fields []FieldError }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// DecodeInvite decodes and validates an invite body, reporting every invalid
// field at once (unknown fields and wrong JSON types included).
func DecodeInvite(body []byte) (*InviteRequest, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &ValidationError{Fields: []FieldError{{Field: "body", Message: "must be a JSON object"}}}
	}
	var req InviteRequest
	var errs []FieldError
	strField := func(name string, dst *string) {
		v, ok := raw[name]
		if !ok {
			return
		}
		delete(raw, name)
		if err := json.Unmarshal(v, dst); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			errs = append(errs, FieldError{name, "must be a string"})
		}
	}
	strField("resourceType", &req.ResourceType)
	strField("firstName", &req.FirstName)
	strField("lastName", &req.LastName)
	strField("externalId", &req.ExternalID)
	strField("email", &req.Email)
	if v, ok := raw["admin"]; ok {
		delete(raw, "admin")
		if err := json.Unmarshal(v, &req.Admin); err != nil || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			errs = append(errs, FieldError{"admin", "must be true or false"})
		}
	}
	for name := range raw {
		errs = append(errs, FieldError{name, "unknown field"})
	}
	errs = append(errs, req.validate()...)
	if len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	return &req, nil
}

func (r *InviteRequest) validate() []FieldError {
	var errs []FieldError
	if !fhir.IsProfileType(r.ResourceType) {
		errs = append(errs, FieldError{"resourceType", "must be Patient, Practitioner or RelatedPerson"})
	}
	if !printable(r.FirstName) || strings.TrimSpace(r.FirstName) == "" || len(r.FirstName) > 200 {
		errs = append(errs, FieldError{"firstName", "must be a non-blank name of at most 200 characters"})
	}
	if !printable(r.LastName) || strings.TrimSpace(r.LastName) == "" || len(r.LastName) > 200 {
		errs = append(errs, FieldError{"lastName", "must be a non-blank name of at most 200 characters"})
	}
	if r.ExternalID == "" && r.Email == "" {
		errs = append(errs, FieldError{"externalId", "externalId or email is required"})
	}
	if r.ExternalID != "" && (len(r.ExternalID) > MaxExternalIDLength || !printable(r.ExternalID) || strings.TrimSpace(r.ExternalID) != r.ExternalID) {
		errs = append(errs, FieldError{"externalId", fmt.Sprintf("must be the IdP subject exactly: printable, no surrounding spaces, at most %d bytes", MaxExternalIDLength)})
	}
	if r.Email != "" {
		if a, err := mail.ParseAddress(r.Email); err != nil || a.Address != r.Email {
			errs = append(errs, FieldError{"email", "must be a plain e-mail address such as jane@example.com"})
		}
	}
	return errs
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// Invite creates the profile and its membership in one transaction. It returns
// ErrProjectNotFound for an unknown project and fhir.ErrConflict when the
// externalId is already used in the project; in both cases nothing is written.
func (s *Service) Invite(ctx context.Context, projectID string, req *InviteRequest) (*fhir.ProjectMembership, error) {
	if errs := req.validate(); len(errs) > 0 {
		return nil, &ValidationError{Fields: errs}
	}
	var out *fhir.ProjectMembership
	err := s.store.WithTx(ctx, func(tx fhir.Ops) error {
		projectRec, err := tx.ReadAny(ctx, fhir.TypeProject, projectID)
		if errors.Is(err, fhir.ErrNotFound) || errors.Is(err, fhir.ErrGone) {
			return ErrProjectNotFound
		}
		if err != nil {
			return err
		}
		var project fhir.Project
		if err := json.Unmarshal(projectRec.Body, &project); err != nil {
			return err
		}
		profileBody, err := newProfile(req)
		if err != nil {
			return err
		}
		profile := &fhir.Record{Type: req.ResourceType, Project: projectID, Body: profileBody}
		if err := tx.Create(ctx, profile); err != nil {
			return err
		}
		m := fhir.ProjectMembership{
			ResourceType: fhir.TypeProjectMembership,
			Project:      reference(fhir.TypeProject, projectID, project.Name),
			Profile:      reference(req.ResourceType, profile.ID, strings.TrimSpace(req.FirstName)+" "+strings.TrimSpace(req.LastName)),
			ExternalID:   req.ExternalID,
			Admin:        req.Admin,
		}
		rec := &fhir.Record{Type: fhir.TypeProjectMembership, Project: projectID}
		if err := createJSON(ctx, tx, rec, m); err != nil {
			return err
		}
		out, err = decodeMembership(rec)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// newProfile builds the R4 profile resource of an invite.
func newProfile(req *InviteRequest) (json.RawMessage, error) {
	name := []models.HumanName{{Given: []string{strings.TrimSpace(req.FirstName)}, Family: ptr(strings.TrimSpace(req.LastName))}}
	var telecom []models.ContactPoint
	if req.Email != "" {
		system := models.ContactPointSystemEmail
		telecom = []models.ContactPoint{{System: &system, Value: ptr(req.Email)}}
	}
	switch req.ResourceType {
	case fhir.TypePatient:
		return json.Marshal(models.Patient{Name: name, Telecom: telecom})
	case fhir.TypePractitioner:
		return json.Marshal(models.Practitioner{Name: name, Telecom: telecom})
	case fhir.TypeRelatedPerson:
		// The model always writes "patient" (a non-pointer Reference); the
		// patient is unknown at invite time, so drop the empty object.
		body, err := json.Marshal(models.RelatedPerson{Name: name, Telecom: telecom})
		if err != nil {
			return nil, err
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			return nil, err
		}
		delete(fields, "patient")
		return json.Marshal(fields)
	}
	return nil, fmt.Errorf("unsupported profile type %q", req.ResourceType)
}

func ptr[T any](v T) *T { return &v }
