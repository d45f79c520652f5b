package extauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/fhir"
)

// MaxTokenSize is the largest token accepted, in bytes (SPEC §5 step 1).
const MaxTokenSize = 8 << 10

// MaxSubjectLength is the longest sub accepted, in bytes.
const MaxSubjectLength = 255

// CacheKeyPrefix starts every cache key written by this package; the key is
// CacheKeyPrefix + issuer + ":" + base64url(SHA-256(token)).
const CacheKeyPrefix = "fhirgate:ext:v1:"

// maxNumericDate bounds exp, nbf and iat (9999-12-31T23:59:59Z) so that every
// accepted value converts to a time.Time without overflow.
const maxNumericDate = 253402300799

// Header and claim names that must appear with exactly this spelling: a key
// that equals one of them case-insensitively but not exactly is refused, so
// that no library that matches keys case-insensitively can read a different
// value than the one checked here.
var (
	headerNames = []string{"alg", "typ", "cty", "kid", "crit", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "b64", "zip", "enc"}
	claimNames  = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "fhirUser", "ext"}
	extNames    = []string{"fhirUser"}
)

// Token is an external token that passed the pre-checks of SPEC §5 step 3.
// Its signature and its acceptance by the IdP are not established by Parse;
// Authenticate establishes them. Token never prints or logs the raw token.
type Token struct {
	// Provider is the configured IdP whose issuer the token names. It is
	// shared by every token of that IdP: callers must not modify it.
	Provider *config.Provider
	// Issuer is the token's iss (equal to Provider.Issuer).
	Issuer string
	// Subject is the token's sub, or "" when absent.
	Subject string
	// FHIRUser is the fhirUser claim, else ext.fhirUser, else "".
	FHIRUser string
	// HasFHIRUser reports whether FHIRUser came from the token.
	HasFHIRUser bool
	// Expires is the token's exp.
	Expires time.Time
	// CacheKey is the key of this token's validation in the cache.
	CacheKey string

	raw  string
	hash [sha256.Size]byte
	alg  string
	kid  string
}

// Fingerprint returns a short hex prefix of the token's SHA-256, for
// correlating log lines without logging the token.
func (t Token) Fingerprint() string { return hex.EncodeToString(t.hash[:6]) }

// String describes the token by issuer and fingerprint only.
func (t Token) String() string {
	return "extauth.Token{iss=" + t.Issuer + " fp=" + t.Fingerprint() + "}"
}

// GoString is String, so that %#v does not print the raw token either.
func (t Token) GoString() string { return t.String() }

// LogValue makes slog log the issuer and fingerprint, never the raw token.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("iss", t.Issuer), slog.String("fp", t.Fingerprint()))
}

// Parse runs the pre-checks of SPEC §5 step 3 on raw: size, shape, strict
// base64url, strict JSON (no duplicate or case-variant names), a configured
// issuer, the header (alg, crit, typ, key-carrying headers) and the claims
// (exp, nbf, iat, aud, sub, fhirUser). It makes no network call. Errors are
// *Error values.
func (a *Authenticator) Parse(raw string) (*Token, error) {
	if len(raw) > MaxTokenSize {
		return nil, &Error{Kind: KindMalformedRequest, Reason: ReasonTooLarge}
	}
	if strings.Count(raw, ".") != 2 {
		return nil, invalid(ReasonMalformed)
	}
	h64, rest, _ := strings.Cut(raw, ".")
	p64, s64, _ := strings.Cut(rest, ".")
	// alg none is never allowed, so a signature must be there.
	if _, err := decodeSegment(s64); err != nil {
		return nil, invalid(ReasonMalformed)
	}
	headerJSON, err := decodeSegment(h64)
	if err != nil {
		return nil, invalid(ReasonMalformed)
	}
	payloadJSON, err := decodeSegment(p64)
	if err != nil {
		return nil, invalid(ReasonMalformed)
	}
	header, err := decodeObject(headerJSON, headerNames)
	if err != nil {
		return nil, jsonError(err)
	}
	claims, err := decodeObject(payloadJSON, claimNames)
	if err != nil {
		return nil, jsonError(err)
	}

	iss, ok := claims.string("iss")
	if !ok {
		return nil, invalid(ReasonUnknownIssuer)
	}
	p := a.providers[iss]
	if p == nil {
		return nil, invalid(ReasonUnknownIssuer)
	}
	tok := &Token{Provider: &p.cfg, Issuer: iss, raw: raw}
	if err := p.checkHeader(header, tok); err != nil {
		return nil, err
	}
	if err := p.checkClaims(claims, a.now(), tok); err != nil {
		return nil, err
	}
	tok.hash = sha256.Sum256([]byte(raw))
	tok.CacheKey = CacheKeyPrefix + iss + ":" + base64.RawURLEncoding.EncodeToString(tok.hash[:])
	return tok, nil
}

// checkHeader applies the JOSE header rules of p.
func (p *provider) checkHeader(h object, tok *Token) error {
	alg, ok := h.string("alg")
	if !ok || !p.algs[alg] || forbiddenAlg(alg) {
		return invalid(ReasonAlgNotAllowed)
	}
	if h.has("crit") {
		return invalid(ReasonCritHeader)
	}
	// A token must never choose the key it is verified with.
	for _, name := range []string{"jku", "x5u", "jwk", "x5c"} {
		if h.has(name) {
			return invalid(ReasonKeyHeader)
		}
	}
	if h.has("kid") {
		kid, ok := h.string("kid")
		if !ok {
			return invalid(ReasonMalformed)
		}
		tok.kid = kid
	}
	if len(p.types) > 0 {
		typ, ok := h.string("typ")
		if !ok || !p.acceptsType(typ) {
			return invalid(ReasonTypeNotAccepted)
		}
	} else if h.has("typ") {
		if _, ok := h.string("typ"); !ok {
			return invalid(ReasonMalformed)
		}
	}
	tok.alg = alg
	return nil
}

// checkClaims applies the claim rules of p at time now.
func (p *provider) checkClaims(c object, now time.Time, tok *Token) error {
	leeway := p.cfg.Leeway.Duration

	if !c.has("exp") {
		return invalid(ReasonNoExpiry)
	}
	exp, err := c.numericDate("exp")
	if err != nil {
		return err
	}
	if !now.Before(exp.Add(leeway)) {
		return invalid(ReasonExpired)
	}
	tok.Expires = exp
	if c.has("nbf") {
		nbf, err := c.numericDate("nbf")
		if err != nil {
			return err
		}
		if now.Add(leeway).Before(nbf) {
			return invalid(ReasonNotYetValid)
		}
	}
	if c.has("iat") {
		iat, err := c.numericDate("iat")
		if err != nil {
			return err
		}
		if now.Add(leeway).Before(iat) {
			return invalid(ReasonIssuedInFuture)
		}
	}

	if c.has("aud") || len(p.cfg.Audience) > 0 {
		aud, err := c.audience()
		if err != nil {
			return err
		}
		if len(p.cfg.Audience) > 0 && !containsAny(aud, p.cfg.Audience) {
			return invalid(ReasonAudience)
		}
	}

	if c.has("sub") {
		sub, ok := c.string("sub")
		if !ok || sub == "" || len(sub) > MaxSubjectLength {
			return invalid(ReasonBadSubject)
		}
		tok.Subject = sub
	}

	// fhirUser wins over ext.fhirUser; either, when present, must be a
	// non-empty string, even when the other one is what gets used.
	if c.has("fhirUser") {
		fu, ok := c.string("fhirUser")
		if !ok || fu == "" {
			return invalid(ReasonBadFHIRUser)
		}
		tok.FHIRUser, tok.HasFHIRUser = fu, true
	}
	if c.has("ext") {
		ext, err := decodeObject(c["ext"], extNames)
		if err != nil {
			return jsonError(err)
		}
		if ext.has("fhirUser") {
			fu, ok := ext.string("fhirUser")
			if !ok || fu == "" {
				return invalid(ReasonBadFHIRUser)
			}
			if !tok.HasFHIRUser {
				tok.FHIRUser, tok.HasFHIRUser = fu, true
			}
		}
	}
	if !tok.HasFHIRUser && tok.Subject == "" {
		return invalid(ReasonNoSubject)
	}
	// The shape of fhirUser is known locally: a claim the resolver would
	// refuse costs no userinfo call.
	if tok.HasFHIRUser {
		if _, err := fhir.ParseFHIRUser(tok.FHIRUser); err != nil {
			return invalid(ReasonBadFHIRUser)
		}
	}
	return nil
}

// forbiddenAlg reports the algorithms refused whatever the configuration says:
// none and the symmetric HMAC family (a public key must never be an HMAC secret).
func forbiddenAlg(alg string) bool {
	return strings.EqualFold(alg, "none") || len(alg) >= 2 && strings.EqualFold(alg[:2], "HS")
}

// normalizeType lower-cases a typ value and drops an "application/" prefix,
// following RFC 7515 §4.1.9 (so "application/at+jwt" equals "at+jwt").
func normalizeType(typ string) string {
	t := strings.ToLower(strings.TrimSpace(typ))
	return strings.TrimPrefix(t, "application/")
}

func (p *provider) acceptsType(typ string) bool {
	n := normalizeType(typ)
	for _, t := range p.types {
		if t == n {
			return true
		}
	}
	return false
}

func containsAny(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// isBase64URL reports whether s is non-empty and uses only the unpadded
// base64url alphabet. (encoding/base64 silently skips CR and LF, so the
// alphabet is checked here first.)
func isBase64URL(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !base64URLAlphabet[s[i]] {
			return false
		}
	}
	return true
}

var base64URLAlphabet = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") {
		t[c] = true
	}
	return t
}()

// decodeSegment decodes one strict, unpadded base64url segment.
func decodeSegment(s string) ([]byte, error) {
	if !isBase64URL(s) {
		return nil, errBadBase64
	}
	return base64.RawURLEncoding.Strict().DecodeString(s)
}

var (
	errBadBase64    = errors.New("bad base64url")
	errBadJSON      = errors.New("not a JSON object")
	errDuplicateKey = errors.New("duplicate or case-variant key")
)

func jsonError(err error) *Error {
	if errors.Is(err, errDuplicateKey) {
		return invalid(ReasonDuplicateKey)
	}
	return invalid(ReasonMalformed)
}

// object is a JSON object whose member names are exact and unique.
type object map[string]json.RawMessage

// decodeObject decodes data as one JSON object in valid UTF-8. It refuses a
// repeated member name, and a member name that equals one of names
// case-insensitively without being spelled exactly like it. Member values
// are kept as raw JSON (sharing data's memory).
//
// The input is validated by encoding/json first; the scan below then only
// has to find member boundaries, which keeps this on the hot path cheap.
func decodeObject(data []byte, names []string) (object, error) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, errBadJSON
	}
	i := skipSpace(data, 0)
	if data[i] != '{' {
		return nil, errBadJSON
	}
	obj := make(object, 8)
	i = skipSpace(data, i+1)
	for data[i] != '}' {
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
		end := endOfString(data, i)
		key, err := unquote(data[i:end])
		if err != nil {
			return nil, errBadJSON
		}
		if _, dup := obj[key]; dup {
			return nil, errDuplicateKey
		}
		for _, n := range names {
			if key != n && strings.EqualFold(key, n) {
				return nil, errDuplicateKey
			}
		}
		i = skipSpace(data, end)
		i = skipSpace(data, i+1) // the colon
		end = endOfValue(data, i)
		obj[key] = data[i:end:end]
		i = skipSpace(data, end)
	}
	return obj, nil
}

// The scanning helpers below assume data is valid JSON.

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just after the string starting at data[i].
func endOfString(data []byte, i int) int {
	j := i + 1
	for data[j] != '"' {
		if data[j] == '\\' {
			j++
		}
		j++
	}
	return j + 1
}

// endOfValue returns the index just after the value starting at data[i].
func endOfValue(data []byte, i int) int {
	switch data[i] {
	case '"':
		return endOfString(data, i)
	case '{', '[':
		depth := 0
		for j := i; ; j++ {
			switch data[j] {
			case '"':
				j = endOfString(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
	default: // number, true, false, null
		j := i
		for j < len(data) && !valueEnd[data[j]] {
			j++
		}
		return j
	}
}

var valueEnd = func() (t [256]bool) {
	for _, c := range []byte(",}] \t\n\r") {
		t[c] = true
	}
	return t
}()

// unquote decodes a JSON string literal, without reflection when it has no escapes.
func unquote(lit []byte) (string, error) {
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), nil
	}
	var s string
	err := json.Unmarshal(lit, &s)
	return s, err
}

func (o object) has(name string) bool {
	_, ok := o[name]
	return ok
}

// string returns member name when it is a JSON string.
func (o object) string(name string) (string, bool) {
	v, ok := o[name]
	if !ok || len(v) == 0 || v[0] != '"' {
		return "", false
	}
	s, err := unquote(v)
	return s, err == nil
}

// numericDate returns member name as an RFC 7519 NumericDate: a JSON number
// (never a string) of seconds, truncated to whole seconds like golang-jwt does.
func (o object) numericDate(name string) (time.Time, error) {
	v := o[name]
	if len(v) == 0 || !(v[0] == '-' || '0' <= v[0] && v[0] <= '9') {
		return time.Time{}, invalid(ReasonMalformed)
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, invalid(ReasonMalformed)
	}
	return time.Unix(int64(f), 0), nil
}

// audience returns aud as a list: a string or an array of strings. A missing
// aud is an empty list.
func (o object) audience() ([]string, error) {
	v, ok := o["aud"]
	if !ok {
		return nil, nil
	}
	if s, ok := o.string("aud"); ok {
		return []string{s}, nil
	}
	if len(v) == 0 || v[0] != '[' {
		return nil, invalid(ReasonMalformed)
	}
	// v is valid JSON (decodeObject checked the whole payload): walk the
	// array's elements, each of which must be a string.
	var out []string
	for i := skipSpace(v, 1); v[i] != ']'; i = skipSpace(v, i) {
		if v[i] == ',' {
			i = skipSpace(v, i+1)
		}
		if v[i] != '"' {
			return nil, invalid(ReasonMalformed)
		}
		end := endOfString(v, i)
		s, err := unquote(v[i:end])
		if err != nil {
			return nil, invalid(ReasonMalformed)
		}
		out = append(out, s)
		i = end
	}
	return out, nil
}
