package fhir

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParseFHIRUser checks the invariants of the fhirUser parser: it never
// panics; on success the type is a profile type, exactly one of ID and
// Identifier is set, the ID is a valid id, and the canonical form parses back
// to the same reference.
func FuzzParseFHIRUser(f *testing.F) {
	for _, seed := range []string{
		"Practitioner/123",
		"Practitioner/123/_history/2",
		"Patient?identifier=http://sys|v",
		"Patient?identifier=|v",
		"Patient?identifier=sys|",
		`Patient?identifier=s|a\,b`,
		"RelatedPerson?_id=x",
		"https://host/any/base/Practitioner/123",
		"https://host/fhir/Practitioner?identifier=1234567890",
		"Practitioner/../ProjectMembership/x",
		"Practitioner?identifier=x&_include=*",
		"https://u@host/Practitioner/1",
		"Practitioner%2F1",
		"Patient?identifier=%25%32%46",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseFHIRUser(s)
		if err != nil {
			return
		}
		if !IsProfileType(ref.Type) {
			t.Fatalf("%q: type %q is not a profile type", s, ref.Type)
		}
		if (ref.ID == "") == (ref.Identifier == nil) {
			t.Fatalf("%q: want exactly one of ID and Identifier, got %+v", s, ref)
		}
		if ref.ID != "" && !ValidID(ref.ID) {
			t.Fatalf("%q: invalid id %q accepted", s, ref.ID)
		}
		if ref.Identifier != nil && ref.Identifier.System == "" && ref.Identifier.Value == "" {
			t.Fatalf("%q: empty identifier accepted", s)
		}
		if ref.Base != "" && !strings.HasPrefix(ref.Base, "http://") && !strings.HasPrefix(ref.Base, "https://") {
			t.Fatalf("%q: base %q is not http(s)", s, ref.Base)
		}
		if len(ref.Params()) != 1 {
			t.Fatalf("%q: Params() = %+v, want one parameter", s, ref.Params())
		}
		// The canonical form percent-encodes the search value, so it can be
		// longer than the claim: past the claim size limit it is refused by
		// design and there is nothing to round-trip.
		if len(ref.String()) > MaxFHIRUserLength {
			return
		}
		again, err := ParseFHIRUser(ref.String())
		if err != nil {
			t.Fatalf("%q: canonical form %q refused: %v", s, ref.String(), err)
		}
		if !reflect.DeepEqual(again, ref) {
			t.Fatalf("%q: round trip via %q = %+v, want %+v", s, ref.String(), again, ref)
		}
	})
}
