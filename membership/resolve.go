package membership

import (
	"context"
	"log/slog"

	"github.com/fhirgate/fhirgate/fhir"
)

// ResolveError says why an external identity maps to no single membership.
// Reason is a short machine word for logs and metrics; it never contains the
// identity itself.
type ResolveError struct{ Reason string }

func (e *ResolveError) Error() string { return "membership: " + e.Reason }

// Reasons of a ResolveError.
const (
	ReasonBadFHIRUser         = "fhiruser_malformed"
	ReasonProfileNotFound     = "profile_not_found"
	ReasonProfileAmbiguous    = "profile_ambiguous"
	ReasonNoMembership        = "membership_not_found"
	ReasonMembershipAmbiguous = "membership_ambiguous"
)

// ResolveFHIRUser maps a fhirUser claim (a reference, a search string, or
// either behind an absolute URL) to exactly one active membership whose
// profile is the one resource the claim designates. projects limits the
// search; nil means every project.
func (s *Service) ResolveFHIRUser(ctx context.Context, claim string, projects []string) (*fhir.ProjectMembership, error) {
	ref, err := fhir.ParseFHIRUser(claim)
	if err != nil {
		return nil, &ResolveError{ReasonBadFHIRUser}
	}
	recs, _, err := s.store.Search(ctx, fhir.Query{
		Type:        ref.Type,
		Projects:    projects,
		AllProjects: projects == nil,
		Params:      ref.Params(),
		Count:       2,
	})
	if err != nil {
		return nil, err
	}
	switch len(recs) {
	case 0:
		return nil, &ResolveError{ReasonProfileNotFound}
	case 1:
	default:
		return nil, &ResolveError{ReasonProfileAmbiguous}
	}
	profile := recs[0]
	members, err := s.activeMemberships(ctx, []string{profile.Project}, fhir.Param{Name: "profile", Value: profile.Type + "/" + profile.ID})
	if err != nil {
		return nil, err
	}
	return s.single(ctx, members)
}

// ResolveSubject maps an IdP subject to exactly one active membership whose
// externalId equals it (exact, case-sensitive). projects limits the search;
// nil means every project.
func (s *Service) ResolveSubject(ctx context.Context, sub string, projects []string) (*fhir.ProjectMembership, error) {
	if sub == "" {
		return nil, &ResolveError{ReasonNoMembership}
	}
	// The subject is any string the IdP chose: escaped, a comma or a
	// backslash in it cannot turn the exact match into a list or an escape.
	members, err := s.activeMemberships(ctx, projects, fhir.Param{Name: "external-id", Value: fhir.ExactValue(sub)})
	if err != nil {
		return nil, err
	}
	return s.single(ctx, members)
}

func (s *Service) single(ctx context.Context, members []fhir.ProjectMembership) (*fhir.ProjectMembership, error) {
	switch len(members) {
	case 0:
		return nil, &ResolveError{ReasonNoMembership}
	case 1:
		return &members[0], nil
	}
	ids := make([]string, len(members))
	for i := range members {
		ids[i] = members[i].ID
	}
	slog.WarnContext(ctx, "external identity matches several memberships; refusing the login", "memberships", ids)
	return nil, &ResolveError{ReasonMembershipAmbiguous}
}
