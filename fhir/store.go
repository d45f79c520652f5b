package fhir

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Resource type names the store knows. The first three are the profile types a
// membership may point to; the others are fhirgate's own administrative
// resources, stored the same way but never served to non-admins.
const (
	TypePatient           = "Patient"
	TypePractitioner      = "Practitioner"
	TypeRelatedPerson     = "RelatedPerson"
	TypeProject           = "Project"
	TypeProjectMembership = "ProjectMembership"
	TypeClientApplication = "ClientApplication"
	TypeLogin             = "Login"
)

// ProfileTypes are the resource types a ProjectMembership.profile may reference.
var ProfileTypes = []string{TypePatient, TypePractitioner, TypeRelatedPerson}

// IsProfileType reports whether t is one of ProfileTypes.
func IsProfileType(t string) bool {
	return t == TypePatient || t == TypePractitioner || t == TypeRelatedPerson
}

// Errors returned by a Store. Handlers map them to HTTP status codes.
var (
	// ErrNotFound: no such resource in the given project (also when it exists in another project).
	ErrNotFound = errors.New("fhir: resource not found")
	// ErrGone: the resource existed and was deleted.
	ErrGone = errors.New("fhir: resource deleted")
	// ErrConflict: a uniqueness rule of the database refused the write (e.g. externalId per project).
	ErrConflict = errors.New("fhir: conflicting resource")
	// ErrVersionConflict: an update named a version that is no longer current.
	ErrVersionConflict = errors.New("fhir: version conflict")
	// ErrUnavailable: the database could not be reached; the request may be retried.
	ErrUnavailable = errors.New("fhir: database unavailable")
)

// Record is one stored resource: its identity, its project and its JSON body.
// The body always carries resourceType, id and meta (versionId, lastUpdated),
// which the store sets on every write.
type Record struct {
	Type        string
	ID          string
	Project     string
	Version     int64
	LastUpdated time.Time
	Body        json.RawMessage
}

// Param is one search parameter as it appeared in a query string.
type Param struct {
	Name  string
	Value string
}

// Query selects resources of one type inside an explicit set of projects.
// Supported parameter names: _id; identifier (token: "system|value", "|value",
// "value", "system|"); name (case-insensitive prefix on any name part);
// for ProjectMembership also profile ("Type/id"), external-id (exact) and
// active ("true"/"false"); for Login: membership, token-hash (exact) and
// revoked ("true"/"false"). Several values of one
// parameter separated by commas are OR'ed; several parameters are AND'ed.
type Query struct {
	Type string
	// Projects limits the search; it must not be empty (the store refuses a
	// query without projects unless AllProjects is set).
	Projects []string
	// AllProjects searches every project: only for the global externalId and
	// profile look-ups of the authentication chain.
	AllProjects bool
	Params      []Param
	// Count caps the number of records returned (0 means the default, 100).
	Count int
	// Offset skips that many matches (for paging).
	Offset int
}

// Ops are the operations available both on a Store and inside a transaction.
type Ops interface {
	// Create stores a new resource. If rec.ID is empty a new id is assigned.
	// The store sets id, meta.versionId and meta.lastUpdated in the body and in rec.
	Create(ctx context.Context, rec *Record) error
	// Read returns the current version of a resource of the given project.
	Read(ctx context.Context, project, typ, id string) (*Record, error)
	// ReadAny returns a resource by type and id whatever its project (for
	// look-ups that are global by design: Project, ClientApplication, Login).
	ReadAny(ctx context.Context, typ, id string) (*Record, error)
	// Update replaces an existing resource. When rec.Version is non-zero it must
	// equal the current version (ErrVersionConflict otherwise).
	Update(ctx context.Context, rec *Record) error
	// Delete removes a resource; later reads return ErrGone.
	Delete(ctx context.Context, project, typ, id string) error
	// Search returns one page of matches and the total number of matches.
	Search(ctx context.Context, q Query) (recs []Record, total int, err error)
}

// Store is the persistence interface implemented by the SQLite (embedded
// default) and PostgreSQL stores.
type Store interface {
	Ops
	// WithTx runs fn in one transaction: it commits when fn returns nil and
	// rolls back otherwise.
	WithTx(ctx context.Context, fn func(tx Ops) error) error
	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
	Close() error
}
