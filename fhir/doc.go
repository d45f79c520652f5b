// Package fhir is fhirgate's FHIR R4 layer: the resource types, the REST API
// under /fhir/R4, and the store that keeps every resource inside exactly one
// project. Everything above it (authentication, OAuth, invitations) reaches
// resources only through the Store interface and the helpers here.
//
// # Types
//
// Patient, Practitioner and RelatedPerson (the profile types a membership may
// point to) use the R4 structs of the samply models, imported as models. The
// administrative resources Project, ProjectMembership, ClientApplication and
// Login are not R4 types and are defined in admin_types.go on top of
// models.Reference and models.Meta. The models ignore resourceType and drop
// unknown fields, and their enums have meaningful zero values, so this
// package checks resourceType itself, decodes request bodies strictly and
// always sets enum fields explicitly.
//
// # Helpers
//
//   - NewOutcome, WriteOutcome, WriteError: OperationOutcome answers with
//     severity error and an IssueType code; ContentType is the media type of
//     every answer.
//   - NewSearchset: searchset Bundles with total, self/next/previous links,
//     fullUrl {base}/{Type}/{id} and search.mode match.
//   - ParseFHIRUser: the fhirUser claim forms of SPEC §5 step 6, turned into
//     search Params; ParseToken and Token for identifier search tokens.
//   - ValidID, ReadBody, DecodeResource: request validation (ids, media type,
//     1 MiB limit, resourceType, strict shape).
//
// # REST API
//
// Handler (NewHandler, Register, Metadata) serves read, search, create,
// update and delete for the profile types, and read, search, update and
// delete for ProjectMembership. The decisions it makes where the
// specification is silent:
//
//   - The caller's project is passed to every store call; a resource of
//     another project answers 404, exactly like one that never existed.
//   - Role rules are checked before the id and the body: admins may do
//     everything; a member whose profile is a Patient may only read that
//     Patient (all else 403); other members may read and search the profile
//     types and update their own profile; ProjectMembership is admin-only.
//     ClientApplication, Project and Login are not served (404 not-supported).
//   - Create ignores a (well-formed) id in the body: the server assigns ids. Update
//     requires the body id to equal the URL id, never creates (404), honours
//     If-Match W/"n" (412 on mismatch) and reads then writes in one
//     transaction. Deleting a deleted resource answers 204 again; reads of it
//     answer 410.
//   - ProjectMembership is created through invitations, not POST (405). An
//     update may change only active, admin and externalId; a changed project
//     or profile is 400, a duplicate externalId 409. Fields of the stored
//     membership the request cannot express are kept.
//   - Bodies: Content-Type application/fhir+json or application/json with an
//     optional UTF-8 charset (else 415); at most 1 MiB (else 413); JSON that
//     decodes into the R4 model with no unknown element at any level (else
//     400 listing the problem). The stored body is the model's re-encoding.
//     Primitive extensions (_birthDate) are therefore not supported.
//   - Search: _id, identifier (system|value, |value, value, system|) and name
//     (case-insensitive prefix) for the profile types; _id, profile,
//     external-id and active for ProjectMembership; _count (capped at 1000;
//     0 returns the total only), _offset and _format (JSON only) for all.
//     Commas OR values, repeated parameters AND them; unknown parameters,
//     modifiers and empty values are 400.
//   - Store errors map to 404 not-found, 410 deleted, 409 conflict, 412
//     conflict, 503 transient with Retry-After: 5; anything else is logged and
//     answered 500 exception without details.
//
// # Store
//
// Store is implemented for SQLite (the embedded default, "sqlite:<path>") and
// PostgreSQL ("postgres://..."), both opened with Open. Records carry their
// project; Query always names the projects it searches, except the global
// look-ups of the authentication chain (AllProjects).
package fhir
