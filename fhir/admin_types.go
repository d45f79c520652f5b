package fhir

import models "github.com/samply/golang-fhir-models/fhir-models/fhir"

// Project groups resources; every resource belongs to exactly one project.
type Project struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id,omitempty"`
	Meta         *models.Meta `json:"meta,omitempty"`
	Name         string       `json:"name"`
}

// ProjectMembership links a profile (Patient, Practitioner, RelatedPerson or
// ClientApplication) to a project. It is not an R4 resource; its shape follows
// the one users of other FHIR servers know.
type ProjectMembership struct {
	ResourceType string           `json:"resourceType"`
	ID           string           `json:"id,omitempty"`
	Meta         *models.Meta     `json:"meta,omitempty"`
	Project      models.Reference `json:"project"`
	Profile      models.Reference `json:"profile"`
	// ExternalID is the subject ("sub") the user has at an external IdP.
	ExternalID string `json:"externalId,omitempty"`
	Admin      bool   `json:"admin"`
	// Active defaults to true when absent.
	Active *bool `json:"active,omitempty"`
}

// IsActive reports whether the membership may be used to log in.
func (m *ProjectMembership) IsActive() bool { return m.Active == nil || *m.Active }

// ClientApplication is a confidential OAuth client of one project. Only a hash
// of its secret is stored.
type ClientApplication struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id,omitempty"`
	Meta         *models.Meta `json:"meta,omitempty"`
	Name         string       `json:"name"`
	// SecretHash is the hex SHA-256 of the client secret (a 256-bit random value).
	SecretHash string `json:"secretHash"`
}

// Login records one successful authentication.
type Login struct {
	ResourceType string       `json:"resourceType"`
	ID           string       `json:"id,omitempty"`
	Meta         *models.Meta `json:"meta,omitempty"`
	Membership   string       `json:"membership"` // ProjectMembership id
	AuthMethod   string       `json:"authMethod"`
	// Issuer is the external token's iss (external logins only).
	Issuer string `json:"issuer,omitempty"`
	// SubjectHash is the hex SHA-256 of the external token's sub (external logins only).
	SubjectHash string `json:"subjectHash,omitempty"`
	// TokenHash is the base64url SHA-256 of the external token (external
	// logins only), so that a revoked token stays refused.
	TokenHash     string `json:"tokenHash,omitempty"`
	Time          string `json:"time"` // RFC 3339
	RemoteAddress string `json:"remoteAddress,omitempty"`
	UserAgent     string `json:"userAgent,omitempty"`
	Revoked       bool   `json:"revoked"`
}
