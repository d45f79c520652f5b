package membership

import (
	"context"
	"testing"
)

// The resolver runs once per new external token (a cache miss): one indexed
// search for sub, two for fhirUser.

func BenchmarkResolveSubject(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := f.svc.ResolveSubject(ctx, "sub-practitioner", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveFHIRUser(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	claim := "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1234567890"
	for b.Loop() {
		if _, err := f.svc.ResolveFHIRUser(ctx, claim, nil); err != nil {
			b.Fatal(err)
		}
	}
}
