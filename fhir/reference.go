package fhir

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxFHIRUserLength is the longest fhirUser claim ParseFHIRUser accepts, in bytes.
const MaxFHIRUserLength = 4096

// ErrInvalidReference is returned (wrapped, with a reason meant for logs, not
// for clients) by ParseFHIRUser for every claim it refuses.
var ErrInvalidReference = errors.New("fhir: invalid fhirUser reference")

// Token is a FHIR search token ("system|value", "|value", "value" or
// "system|") as used by the identifier search parameter.
//
// HasSystem distinguishes the bare "value" form (any system) from "|value"
// (an identifier without a system): both have System == "". An empty Value
// with HasSystem set is the "system|" form (any value in that system).
// System and Value hold the unescaped text: FHIR search escapes ("\|", "\,",
// "\$", "\\") are removed by ParseToken and added back by String.
type Token struct {
	System    string
	HasSystem bool
	Value     string
}

// ParseToken parses a token search value. It splits on the first unescaped
// "|" and removes the FHIR search escapes from both halves, the way the stores
// interpret an identifier parameter. It never fails: every string is a token,
// although "" and "|" match nothing useful and callers should refuse them.
func ParseToken(s string) Token {
	if i := indexUnescaped(s, '|'); i >= 0 {
		return Token{System: unescapeSearch(s[:i]), HasSystem: true, Value: unescapeSearch(s[i+1:])}
	}
	return Token{Value: unescapeSearch(s)}
}

// String returns the token in search syntax, escaping "\", "|", "," and "$"
// in system and value, so ParseToken(t.String()) == t. This is the value to
// pass as an identifier Param.
func (t Token) String() string {
	if !t.HasSystem {
		return escapeSearch(t.Value)
	}
	return escapeSearch(t.System) + "|" + escapeSearch(t.Value)
}

// FHIRUserRef is a parsed fhirUser claim: either a direct reference to a
// profile resource (ID set) or an identifier search over one profile type
// (Identifier set). Exactly one of ID and Identifier is set.
type FHIRUserRef struct {
	// Type is one of ProfileTypes.
	Type string
	// ID is the resource id of the Type/id, Type/id/_history/n and Type?_id=id forms.
	ID string
	// Version is n of the Type/id/_history/n form (informational: the
	// current version of the resource is what a login resolves to).
	Version string
	// Identifier is the token of the Type?identifier=... form.
	Identifier *Token
	// Base is the absolute URL in front of the reference ("https://host/fhir"),
	// empty for a relative reference. It is informational: any base is accepted.
	Base string
}

// Params returns the search parameters that find the referenced resource:
// _id for a direct reference, identifier for an identifier search.
func (r FHIRUserRef) Params() []Param {
	if r.Identifier != nil {
		return []Param{{Name: "identifier", Value: r.Identifier.String()}}
	}
	return []Param{{Name: "_id", Value: r.ID}}
}

// String returns the reference in canonical form; ParseFHIRUser(r.String())
// yields r again. A Type?_id=id claim comes back as Type/id.
func (r FHIRUserRef) String() string {
	var rel string
	switch {
	case r.Identifier != nil:
		rel = r.Type + "?identifier=" + url.QueryEscape(r.Identifier.String())
	case r.Version != "":
		rel = r.Type + "/" + r.ID + "/_history/" + r.Version
	default:
		rel = r.Type + "/" + r.ID
	}
	if r.Base != "" {
		return r.Base + "/" + rel
	}
	return rel
}

// ParseFHIRUser parses a fhirUser claim (SPEC §5 step 6). Accepted forms, each
// also behind an absolute http(s) URL with any base path:
//
//	Type/id
//	Type/id/_history/n
//	Type?identifier=system|value   (also |value, value and system|)
//	Type?_id=id
//
// Type must be Patient, Practitioner or RelatedPerson and ids must satisfy
// ValidID. Everything else is refused with an error wrapping
// ErrInvalidReference: other types, other, extra or repeated search
// parameters, modifiers, dot segments, empty segments, percent-encoding
// outside the query (so no encoded slashes), fragments, userinfo, other
// schemes, control characters, whitespace, invalid UTF-8, an empty or
// multi-valued identifier, and claims over MaxFHIRUserLength bytes. The query
// value is percent-decoded exactly once.
func ParseFHIRUser(s string) (FHIRUserRef, error) {
	if s == "" {
		return FHIRUserRef{}, invalidRef("empty")
	}
	if len(s) > MaxFHIRUserLength {
		return FHIRUserRef{}, invalidRef("longer than %d bytes", MaxFHIRUserLength)
	}
	if !utf8.ValidString(s) {
		return FHIRUserRef{}, invalidRef("not UTF-8")
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return FHIRUserRef{}, invalidRef("control character or whitespace")
		}
	}
	if strings.ContainsRune(s, '#') {
		return FHIRUserRef{}, invalidRef("fragment")
	}

	pathPart, query, hasQuery := strings.Cut(s, "?")
	if strings.ContainsRune(pathPart, '%') {
		return FHIRUserRef{}, invalidRef("percent-encoding outside the query")
	}

	var ref FHIRUserRef
	var segs []string
	if isAbsolute(pathPart) {
		base, rest, err := splitAbsolute(pathPart)
		if err != nil {
			return FHIRUserRef{}, err
		}
		ref.Base = base
		segs = rest
	} else {
		if strings.HasPrefix(pathPart, "/") || strings.Contains(pathPart, ":") {
			return FHIRUserRef{}, invalidRef("not a relative reference")
		}
		segs = strings.Split(pathPart, "/")
	}
	for _, seg := range segs {
		if seg == "" || seg == "." || seg == ".." {
			return FHIRUserRef{}, invalidRef("empty or dot segment")
		}
		if !validPathSegment(seg) {
			return FHIRUserRef{}, invalidRef("character not allowed in a path segment")
		}
	}

	// The tail of the path is the reference; anything before it is the base
	// path, allowed only behind an absolute URL.
	var tail []string
	switch {
	case hasQuery:
		tail = lastN(segs, 1)
	case len(segs) >= 4 && segs[len(segs)-2] == "_history":
		tail = lastN(segs, 4)
	default:
		tail = lastN(segs, 2)
	}
	if tail == nil {
		return FHIRUserRef{}, invalidRef("too few path segments")
	}
	if ref.Base == "" && len(segs) != len(tail) {
		return FHIRUserRef{}, invalidRef("unexpected path segments")
	}
	if ref.Base != "" && len(segs) > len(tail) {
		ref.Base += "/" + strings.Join(segs[:len(segs)-len(tail)], "/")
	}

	ref.Type = tail[0]
	if !IsProfileType(ref.Type) {
		return FHIRUserRef{}, invalidRef("type %q is not a profile type", ref.Type)
	}
	if hasQuery {
		if err := parseFHIRUserQuery(query, &ref); err != nil {
			return FHIRUserRef{}, err
		}
		return ref, nil
	}
	ref.ID = tail[1]
	if !ValidID(ref.ID) {
		return FHIRUserRef{}, invalidRef("invalid id")
	}
	if len(tail) == 4 {
		ref.Version = tail[3]
		if !validVersion(ref.Version) {
			return FHIRUserRef{}, invalidRef("invalid version")
		}
	}
	return ref, nil
}

// parseFHIRUserQuery reads the single search parameter of a fhirUser claim.
func parseFHIRUserQuery(query string, ref *FHIRUserRef) error {
	if strings.ContainsRune(query, '&') || strings.ContainsRune(query, ';') {
		return invalidRef("more than one search parameter")
	}
	name, raw, ok := strings.Cut(query, "=")
	if !ok {
		return invalidRef("search parameter without a value")
	}
	value, err := url.QueryUnescape(raw)
	if err != nil {
		return invalidRef("bad percent-encoding")
	}
	if value == "" {
		return invalidRef("empty search value")
	}
	if !utf8.ValidString(value) {
		return invalidRef("search value not UTF-8")
	}
	for _, r := range value {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			return invalidRef("control character in search value")
		}
	}
	switch name {
	case "_id":
		if !ValidID(value) {
			return invalidRef("invalid _id")
		}
		ref.ID = value
		return nil
	case "identifier":
		if indexUnescaped(value, ',') >= 0 {
			return invalidRef("identifier with several values")
		}
		if !validEscapes(value) {
			return invalidRef("invalid search escape in identifier")
		}
		tok := ParseToken(value)
		if tok.Value == "" && tok.System == "" {
			return invalidRef("identifier without system and value")
		}
		ref.Identifier = &tok
		return nil
	}
	return invalidRef("search parameter %q not allowed", name)
}

// isAbsolute reports whether s starts with a URL scheme ("x:" before any "/").
func isAbsolute(s string) bool {
	i := strings.IndexAny(s, ":/")
	return i > 0 && s[i] == ':'
}

// splitAbsolute splits an absolute http(s) URL without query or fragment into
// its scheme and authority ("https://host") and its path segments.
func splitAbsolute(s string) (string, []string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", nil, invalidRef("unparsable URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", nil, invalidRef("scheme %q not allowed", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return "", nil, invalidRef("URL without host")
	}
	if u.User != nil || strings.ContainsRune(u.Host, '@') {
		return "", nil, invalidRef("userinfo in URL")
	}
	if u.RawPath != "" || !strings.HasPrefix(u.Path, "/") {
		return "", nil, invalidRef("URL without a plain path")
	}
	base := u.Scheme + "://" + u.Host
	// The path must be exactly what followed the authority, so that String
	// reproduces the claim.
	if len(s) < len(base) || !strings.EqualFold(s[:len(base)], base) || s[len(base):] != u.Path {
		return "", nil, invalidRef("URL not in canonical form")
	}
	return base, strings.Split(u.Path[1:], "/"), nil
}

// validPathSegment reports whether seg uses only RFC 3986 path characters
// without percent-encoding (unreserved, sub-delims, ":" and "@").
func validPathSegment(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// lastN returns the last n elements of s, or nil when s is shorter.
func lastN(s []string, n int) []string {
	if len(s) < n {
		return nil
	}
	return s[len(s)-n:]
}

// validVersion reports whether v is a positive decimal version id without
// leading zeros.
func validVersion(v string) bool {
	if v == "" || len(v) > 18 || v[0] == '0' {
		return false
	}
	_, err := strconv.ParseInt(v, 10, 64)
	return err == nil && strings.Trim(v, "0123456789") == ""
}

// indexUnescaped returns the index of the first sep in s not escaped with a
// backslash, or -1.
func indexUnescaped(s string, sep byte) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			return i
		}
	}
	return -1
}

// splitSearchValues splits a search value on every comma not escaped with a
// backslash (several values of one parameter are OR'ed), keeping the escapes.
func splitSearchValues(s string) []string {
	var parts []string
	for {
		i := indexUnescaped(s, ',')
		if i < 0 {
			return append(parts, s)
		}
		parts = append(parts, s[:i])
		s = s[i+1:]
	}
}

// validEscapes reports whether every backslash in s starts one of the FHIR
// search escapes "\\", "\|", "\," or "\$".
func validEscapes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if i+1 >= len(s) || !strings.ContainsRune(`\|,$`, rune(s[i+1])) {
			return false
		}
		i++
	}
	return true
}

// unescapeSearch removes FHIR search escapes: a backslash keeps the byte after it.
func unescapeSearch(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// searchEscaper adds FHIR search escapes.
var searchEscaper = strings.NewReplacer(`\`, `\\`, `|`, `\|`, `,`, `\,`, `$`, `\$`)

// escapeSearch adds FHIR search escapes to s.
func escapeSearch(s string) string { return searchEscaper.Replace(s) }

// ExactValue turns an arbitrary string into a search parameter value that
// matches exactly that string: the FHIR search escapes are added, so a comma
// in s is not an OR and a backslash is not an escape.
func ExactValue(s string) string { return escapeSearch(s) }

func invalidRef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidReference, fmt.Sprintf(format, args...))
}
