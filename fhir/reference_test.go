package fhir

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func tok(system string, hasSystem bool, value string) *Token {
	return &Token{System: system, HasSystem: hasSystem, Value: value}
}

func TestParseFHIRUserAccepts(t *testing.T) {
	tests := []struct {
		in   string
		want FHIRUserRef
	}{
		{"Practitioner/123", FHIRUserRef{Type: "Practitioner", ID: "123"}},
		{"Patient/a-b.C9", FHIRUserRef{Type: "Patient", ID: "a-b.C9"}},
		{"RelatedPerson/" + strings.Repeat("x", 64), FHIRUserRef{Type: "RelatedPerson", ID: strings.Repeat("x", 64)}},
		{"Practitioner/123/_history/7", FHIRUserRef{Type: "Practitioner", ID: "123", Version: "7"}},
		{"Practitioner?_id=123", FHIRUserRef{Type: "Practitioner", ID: "123"}},
		{"Practitioner?_id=12%33", FHIRUserRef{Type: "Practitioner", ID: "123"}},
		{"Practitioner?identifier=http://npi.org|1234567890",
			FHIRUserRef{Type: "Practitioner", Identifier: tok("http://npi.org", true, "1234567890")}},
		{"Practitioner?identifier=http%3A%2F%2Fnpi.org%7C1234567890",
			FHIRUserRef{Type: "Practitioner", Identifier: tok("http://npi.org", true, "1234567890")}},
		{"Patient?identifier=|MRN-1", FHIRUserRef{Type: "Patient", Identifier: tok("", true, "MRN-1")}},
		{"Patient?identifier=MRN-1", FHIRUserRef{Type: "Patient", Identifier: tok("", false, "MRN-1")}},
		{"Patient?identifier=urn:sys|", FHIRUserRef{Type: "Patient", Identifier: tok("urn:sys", true, "")}},
		{"Patient?identifier=a+b", FHIRUserRef{Type: "Patient", Identifier: tok("", false, "a b")}},
		{`Patient?identifier=s|a\,b`, FHIRUserRef{Type: "Patient", Identifier: tok("s", true, "a,b")}},
		{`Patient?identifier=s|a\|b`, FHIRUserRef{Type: "Patient", Identifier: tok("s", true, "a|b")}},
		{"Patient?identifier=s|a|b", FHIRUserRef{Type: "Patient", Identifier: tok("s", true, "a|b")}},
		// Percent-decoding happens once: %2541 stays "%41".
		{"Patient?identifier=%2541", FHIRUserRef{Type: "Patient", Identifier: tok("", false, "%41")}},
		{"Patient?identifier=%C3%A9", FHIRUserRef{Type: "Patient", Identifier: tok("", false, "é")}},
		{"https://host/any/base/Practitioner/123",
			FHIRUserRef{Type: "Practitioner", ID: "123", Base: "https://host/any/base"}},
		{"https://host/Practitioner/123", FHIRUserRef{Type: "Practitioner", ID: "123", Base: "https://host"}},
		{"http://localhost:8080/fhir/R4/Patient/1/_history/2",
			FHIRUserRef{Type: "Patient", ID: "1", Version: "2", Base: "http://localhost:8080/fhir/R4"}},
		{"https://host/fhir/Practitioner?identifier=1234567890",
			FHIRUserRef{Type: "Practitioner", Identifier: tok("", false, "1234567890"), Base: "https://host/fhir"}},
		{"https://host/fhir/RelatedPerson?_id=9", FHIRUserRef{Type: "RelatedPerson", ID: "9", Base: "https://host/fhir"}},
		{"HTTPS://host/Practitioner/1", FHIRUserRef{Type: "Practitioner", ID: "1", Base: "https://host"}},
		{"https://[::1]:8443/Practitioner/1", FHIRUserRef{Type: "Practitioner", ID: "1", Base: "https://[::1]:8443"}},
		// The base path is free: a type name there is just part of the base.
		{"https://host/ProjectMembership/x/Practitioner/1",
			FHIRUserRef{Type: "Practitioner", ID: "1", Base: "https://host/ProjectMembership/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseFHIRUser(tt.in)
			if err != nil {
				t.Fatalf("ParseFHIRUser(%q) error: %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseFHIRUser(%q) = %+v (identifier %+v), want %+v (identifier %+v)",
					tt.in, got, got.Identifier, tt.want, tt.want.Identifier)
			}
			again, err := ParseFHIRUser(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip of %q via %q = %+v, %v", tt.in, got.String(), again, err)
			}
		})
	}
}

func TestParseFHIRUserRefuses(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"type only", "Practitioner"},
		{"other type", "Organization/1"},
		{"membership type", "ProjectMembership/1"},
		{"client type", "ClientApplication/1"},
		{"lower-case type", "practitioner/1"},
		{"empty id", "Practitioner/"},
		{"leading slash", "/Practitioner/1"},
		{"trailing slash", "Practitioner/1/"},
		{"extra segment", "Practitioner/1/x"},
		{"extra relative prefix", "fhir/Practitioner/1"},
		{"dot-dot", "Practitioner/../ProjectMembership/x"},
		{"dot-dot in base", "https://host/a/../Practitioner/1"},
		{"dot prefix", "./Practitioner/1"},
		{"dot in base", "https://host/./Practitioner/1"},
		{"double slash", "Practitioner//1"},
		{"double slash in base", "https://host//Practitioner/1"},
		{"encoded slash", "Practitioner%2F1"},
		{"encoded slash in id", "Practitioner/1%2F..%2FProjectMembership"},
		{"encoded slash in base", "https://host/a%2Fb/Practitioner/1"},
		{"percent in host", "https://ho%73t/Practitioner/1"},
		{"bad id chars", "Practitioner/a_b"},
		{"id too long", "Practitioner/" + strings.Repeat("x", 65)},
		{"colon in id", "Practitioner/a:b"},
		{"history without version", "Practitioner/1/_history"},
		{"history empty version", "Practitioner/1/_history/"},
		{"history zero", "Practitioner/1/_history/0"},
		{"history not numeric", "Practitioner/1/_history/x"},
		{"history plus sign", "Practitioner/1/_history/+1"},
		{"history leading zero", "Practitioner/1/_history/01"},
		{"other parameter", "Practitioner?name=x"},
		{"extra parameter", "Practitioner?identifier=x&_include=*"},
		{"repeated parameter", "Practitioner?identifier=x&identifier=y"},
		{"trailing ampersand", "Practitioner?identifier=x&"},
		{"semicolon separator", "Practitioner?identifier=x;_id=1"},
		{"modifier", "Practitioner?identifier:exact=x"},
		{"encoded parameter name", "Practitioner?%69dentifier=x"},
		{"parameter without value", "Practitioner?identifier"},
		{"empty identifier", "Practitioner?identifier="},
		{"bar only", "Practitioner?identifier=|"},
		{"empty query", "Practitioner?"},
		{"query with id path", "Practitioner/1?_id=1"},
		{"several identifiers", "Practitioner?identifier=a,b"},
		{"encoded comma", "Practitioner?identifier=a%2Cb"},
		{"bad escape", `Practitioner?identifier=a\b`},
		{"trailing backslash", `Practitioner?identifier=a\`},
		{"bad _id", "Practitioner?_id=a_b"},
		{"empty _id", "Practitioner?_id="},
		{"_id with comma", "Practitioner?_id=1,2"},
		{"bad percent escape", "Practitioner?identifier=%zz"},
		{"encoded NUL", "Practitioner?identifier=a%00"},
		{"encoded newline", "Practitioner?identifier=a%0Ab"},
		{"encoded invalid UTF-8", "Practitioner?identifier=%ff"},
		{"raw newline", "Practitioner/1\n"},
		{"raw NUL", "Practitioner/\x001"},
		{"raw space", "Practitioner/ 1"},
		{"raw tab in query", "Practitioner?identifier=a\tb"},
		{"invalid UTF-8", "Practitioner/\xff"},
		{"C1 control", "Practitioner?identifier=a\u0085"},
		{"fragment", "Practitioner/1#x"},
		{"fragment in URL", "https://host/Practitioner/1#frag"},
		{"fragment in query", "Practitioner?identifier=a#b"},
		{"too long", "Practitioner?identifier=" + strings.Repeat("a", MaxFHIRUserLength)},
		{"userinfo", "https://user@host/Practitioner/1"},
		{"userinfo with password", "https://user:pw@host/Practitioner/1"},
		{"empty userinfo", "https://@host/Practitioner/1"},
		{"ftp scheme", "ftp://host/Practitioner/1"},
		{"urn", "urn:uuid:Practitioner/1"},
		{"javascript", "javascript:Practitioner/1"},
		{"no host", "https:///Practitioner/1"},
		{"scheme without slashes", "https:Practitioner/1"},
		{"one slash", "https:/host/Practitioner/1"},
		{"URL without path", "https://host"},
		{"URL root", "https://host/"},
		{"URL type only", "https://host/fhir/Practitioner"},
		{"URL trailing slash before query", "https://host/fhir/Practitioner/?identifier=1"},
		{"URL query without type", "https://host?identifier=1"},
		{"URL other type", "https://host/fhir/Organization/1"},
		{"backslash in base", `https://host/a\b/Practitioner/1`},
		{"quote in base", `https://host/a"b/Practitioner/1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFHIRUser(tt.in)
			if err == nil {
				t.Fatalf("ParseFHIRUser(%q) = %+v, want an error", tt.in, got)
			}
			if !errors.Is(err, ErrInvalidReference) {
				t.Fatalf("ParseFHIRUser(%q) error %v does not wrap ErrInvalidReference", tt.in, err)
			}
		})
	}
}

func TestParseFHIRUserLengthLimit(t *testing.T) {
	prefix := "Practitioner?identifier="
	ok := prefix + strings.Repeat("a", MaxFHIRUserLength-len(prefix))
	if _, err := ParseFHIRUser(ok); err != nil {
		t.Fatalf("claim of exactly %d bytes refused: %v", MaxFHIRUserLength, err)
	}
	if _, err := ParseFHIRUser(ok + "a"); err == nil {
		t.Fatalf("claim of %d bytes accepted", MaxFHIRUserLength+1)
	}
}

func TestFHIRUserRefParams(t *testing.T) {
	tests := []struct {
		in   string
		want []Param
	}{
		{"Practitioner/123", []Param{{Name: "_id", Value: "123"}}},
		{"Practitioner/123/_history/4", []Param{{Name: "_id", Value: "123"}}},
		{"Patient?_id=9", []Param{{Name: "_id", Value: "9"}}},
		{"Patient?identifier=sys|v", []Param{{Name: "identifier", Value: "sys|v"}}},
		{"Patient?identifier=|v", []Param{{Name: "identifier", Value: "|v"}}},
		{"Patient?identifier=v", []Param{{Name: "identifier", Value: "v"}}},
		{"Patient?identifier=sys|", []Param{{Name: "identifier", Value: "sys|"}}},
		// Characters with a meaning in search values are escaped for the store.
		{`Patient?identifier=s|a\,b`, []Param{{Name: "identifier", Value: `s|a\,b`}}},
		{"Patient?identifier=s|a|b", []Param{{Name: "identifier", Value: `s|a\|b`}}},
		{"Patient?identifier=a%24b", []Param{{Name: "identifier", Value: `a\$b`}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			ref, err := ParseFHIRUser(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := ref.Params(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Params() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		in   string
		want Token
	}{
		{"v", Token{Value: "v"}},
		{"|v", Token{HasSystem: true, Value: "v"}},
		{"s|", Token{System: "s", HasSystem: true}},
		{"s|v", Token{System: "s", HasSystem: true, Value: "v"}},
		{"http://x.org/a|b|c", Token{System: "http://x.org/a", HasSystem: true, Value: "b|c"}},
		{`a\|b`, Token{Value: "a|b"}},
		{`s\|x|v\,w`, Token{System: "s|x", HasSystem: true, Value: "v,w"}},
		{`a\\|b`, Token{System: `a\`, HasSystem: true, Value: "b"}},
		{"", Token{}},
		{"|", Token{HasSystem: true}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := ParseToken(tt.in)
			if got != tt.want {
				t.Fatalf("ParseToken(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if back := ParseToken(got.String()); back != got {
				t.Fatalf("ParseToken(%q.String() = %q) = %+v, want %+v", tt.in, got.String(), back, got)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a", true},
		{"A-z.0-9", true},
		{strings.Repeat("1", 64), true},
		{"", false},
		{strings.Repeat("1", 65), false},
		{"a_b", false},
		{"a/b", false},
		{"a b", false},
		{"é", false},
		{"a%2F", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.in); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
