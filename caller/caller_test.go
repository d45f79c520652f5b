package caller

import (
	"context"
	"testing"
)

func TestProfileParts(t *testing.T) {
	tests := []struct{ profile, typ, id string }{
		{"Practitioner/123", "Practitioner", "123"},
		{"ClientApplication/a-b.c", "ClientApplication", "a-b.c"},
		{"Patient", "Patient", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		c := &Caller{Profile: tt.profile}
		if c.ProfileType() != tt.typ || c.ProfileID() != tt.id {
			t.Errorf("%q: type %q id %q, want %q %q", tt.profile, c.ProfileType(), c.ProfileID(), tt.typ, tt.id)
		}
	}
}

func TestContext(t *testing.T) {
	if From(context.Background()) != nil {
		t.Fatal("an empty context has a caller")
	}
	c := &Caller{Project: "p"}
	if got := From(With(context.Background(), c)); got != c {
		t.Fatalf("From(With(c)) = %v", got)
	}
}
