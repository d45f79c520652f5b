package extauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"

	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
)

// Fixed clock and issuers of the pre-check tests.
var (
	testNow     = time.Unix(1_700_000_000, 0)
	issPlain    = "https://idp.example"
	issAudience = "https://aud.example"
	issTyped    = "https://typ.example"
)

// testProvider returns a provider with the defaults the config package applies.
func testProvider(iss string) config.Provider {
	return config.Provider{
		Issuer:          iss,
		UserInfoURL:     iss + "/userinfo",
		Algorithms:      []string{"RS256", "ES256"},
		Leeway:          config.Duration{Duration: 60 * time.Second},
		UserInfoTimeout: config.Duration{Duration: 5 * time.Second},
		CacheTTL:        config.Duration{Duration: time.Hour},
	}
}

func parseTestAuthenticator(t testing.TB) *Authenticator {
	t.Helper()
	aud := testProvider(issAudience)
	aud.Audience = config.StringList{"api://fhir", "urn:oid:1.2.3"}
	typed := testProvider(issTyped)
	typed.AcceptedTypes = []string{"at+jwt", "JWT"}
	a, err := New([]config.Provider{testProvider(issPlain), aud, typed}, Options{
		Cache: cache.NewMemory(0, nil),
		Now:   func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// craft builds an unsigned-but-shaped token from literal header and payload JSON.
func craft(header, payload string) string {
	return b64(header) + "." + b64(payload) + "." + b64("not-a-real-signature")
}

// claims renders a payload with iss, exp (now+1h) and the extra members given.
func claims(iss string, extra string) string {
	s := fmt.Sprintf(`{"iss":%q,"exp":%d`, iss, testNow.Add(time.Hour).Unix())
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

const rs = `{"alg":"RS256","kid":"k1"}`

func at(d time.Duration) int64 { return testNow.Add(d).Unix() }

// flipTrailingBits makes the last character of an unpadded base64url segment
// carry non-zero padding bits (only meaningful when len%4 != 0).
func flipTrailingBits(seg string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(alphabet[last+1])
}

func TestParse(t *testing.T) {
	a := parseTestAuthenticator(t)
	okPayload := claims(issPlain, `"sub":"alice"`)
	// A header whose JSON length is not a multiple of 3, so its last
	// base64 character has padding bits.
	oddHeader := `{"alg":"RS256","a":12}`
	if len(oddHeader)%3 == 0 {
		t.Fatal("test header must have padding bits")
	}
	exact := func(size int) string { // a valid token of exactly size bytes
		for pad := ""; ; pad += "a" {
			hp := b64(rs) + "." + b64(claims(issPlain, `"sub":"alice","pad":"`+pad+`"`)) + "."
			if n := size - len(hp); n%4 != 1 { // a base64 length of 4k+1 is impossible
				return hp + strings.Repeat("A", n)
			}
		}
	}

	type want struct {
		kind        Kind
		reason      string
		sub, fu     string
		hasFHIRUser bool
	}
	ok := func(sub, fu string) want { return want{sub: sub, fu: fu, hasFHIRUser: fu != ""} }
	bad := func(reason string) want { return want{kind: KindInvalid, reason: reason} }

	tests := []struct {
		name string
		raw  string
		want want
	}{
		// Accepted shapes.
		{"minimal sub", craft(rs, okPayload), ok("alice", "")},
		{"whitespace in JSON", craft(" {\n\"alg\" : \"RS256\" } ", fmt.Sprintf(" { \"iss\" : %q , \"exp\" : %d , \"sub\" : \"alice\" } ", issPlain, at(time.Hour))), ok("alice", "")},
		{"fhirUser only", craft(rs, claims(issPlain, `"fhirUser":"Practitioner/1"`)), ok("", "Practitioner/1")},
		{"fhirUser wins over ext", craft(rs, claims(issPlain, `"sub":"a","fhirUser":"Patient/1","ext":{"fhirUser":"Patient/2"}`)), ok("a", "Patient/1")},
		{"ext.fhirUser", craft(rs, claims(issPlain, `"ext":{"fhirUser":"Patient/2","other":1}`)), ok("", "Patient/2")},
		{"ext without fhirUser", craft(rs, claims(issPlain, `"sub":"a","ext":{"x":1}`)), ok("a", "")},
		{"ES256", craft(`{"alg":"ES256"}`, okPayload), ok("alice", "")},
		{"exactly 8 KiB", exact(MaxTokenSize), ok("alice", "")},
		{"sub 255 bytes", craft(rs, claims(issPlain, `"sub":"`+strings.Repeat("s", 255)+`"`)), ok(strings.Repeat("s", 255), "")},
		{"exp fractional", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d.5,"sub":"a"}`, issPlain, at(time.Hour))), ok("a", "")},
		{"exp within leeway", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"a"}`, issPlain, at(-30*time.Second))), ok("a", "")},
		{"nbf within leeway", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","nbf":%d`, at(30*time.Second)))), ok("a", "")},
		{"iat within leeway", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","iat":%d`, at(30*time.Second)))), ok("a", "")},
		{"aud any when unset", craft(rs, claims(issPlain, `"sub":"a","aud":"whatever"`)), ok("a", "")},
		{"aud string match", craft(rs, claims(issAudience, `"sub":"a","aud":"api://fhir"`)), ok("a", "")},
		{"aud array match", craft(rs, claims(issAudience, `"sub":"a","aud":["x","urn:oid:1.2.3"]`)), ok("a", "")},
		{"typ at+jwt", craft(`{"alg":"RS256","typ":"at+jwt"}`, claims(issTyped, `"sub":"a"`)), ok("a", "")},
		{"typ application/at+jwt", craft(`{"alg":"RS256","typ":"application/at+jwt"}`, claims(issTyped, `"sub":"a"`)), ok("a", "")},
		{"typ case-insensitive", craft(`{"alg":"RS256","typ":"AT+JWT"}`, claims(issTyped, `"sub":"a"`)), ok("a", "")},
		{"typ JWT", craft(`{"alg":"RS256","typ":"jwt"}`, claims(issTyped, `"sub":"a"`)), ok("a", "")},
		{"typ anything when unset", craft(`{"alg":"RS256","typ":"id+jwt"}`, okPayload), ok("alice", "")},

		// Shape and encoding.
		{"over 8 KiB", exact(MaxTokenSize + 1), want{kind: KindMalformedRequest, reason: ReasonTooLarge}},
		{"empty", "", bad(ReasonMalformed)},
		{"two segments", b64(rs) + "." + b64(okPayload), bad(ReasonMalformed)},
		{"four segments", craft(rs, okPayload) + ".x", bad(ReasonMalformed)},
		{"empty signature", b64(rs) + "." + b64(okPayload) + ".", bad(ReasonMalformed)},
		{"empty header", "." + b64(okPayload) + ".c2ln", bad(ReasonMalformed)},
		{"padded header", b64(oddHeader) + "=." + b64(okPayload) + ".c2ln", bad(ReasonMalformed)},
		{"padded signature", b64(rs) + "." + b64(okPayload) + ".c2lnbg==", bad(ReasonMalformed)},
		{"std alphabet", strings.Replace(craft(rs, okPayload), "-", "+", 1) + "+/", bad(ReasonMalformed)},
		{"newline in payload", b64(rs) + "." + b64(okPayload)[:8] + "\n" + b64(okPayload)[8:] + ".c2ln", bad(ReasonMalformed)},
		{"non-zero padding bits", flipTrailingBits(b64(oddHeader)) + "." + b64(okPayload) + ".c2ln", bad(ReasonMalformed)},
		{"invalid UTF-8", craft(rs, claims(issPlain, "\"sub\":\"a\xff\"")), bad(ReasonMalformed)},
		{"payload array", craft(rs, `[1]`), bad(ReasonMalformed)},
		{"payload null", craft(rs, `null`), bad(ReasonMalformed)},
		{"trailing data", craft(rs, okPayload+` {}`), bad(ReasonMalformed)},
		{"header not JSON", craft(`RS256`, okPayload), bad(ReasonMalformed)},

		// Duplicate and case-variant names.
		{"duplicate iss", craft(rs, claims(issPlain, `"sub":"a","iss":"https://evil.example"`)), bad(ReasonDuplicateKey)},
		{"ISS beside iss", craft(rs, claims(issPlain, `"sub":"a","ISS":"https://evil.example"`)), bad(ReasonDuplicateKey)},
		{"Sub", craft(rs, claims(issPlain, `"Sub":"a"`)), bad(ReasonDuplicateKey)},
		{"EXP", craft(rs, claims(issPlain, `"sub":"a","EXP":99999999999`)), bad(ReasonDuplicateKey)},
		{"fhiruser", craft(rs, claims(issPlain, `"sub":"a","fhiruser":"Patient/9"`)), bad(ReasonDuplicateKey)},
		{"escaped duplicate", craft(rs, claims(issPlain, `"sub":"a","s\u0075b":"b"`)), bad(ReasonDuplicateKey)},
		{"duplicate alg", craft(`{"alg":"RS256","alg":"none"}`, okPayload), bad(ReasonDuplicateKey)},
		{"ALG", craft(`{"alg":"RS256","ALG":"none"}`, okPayload), bad(ReasonDuplicateKey)},
		{"ext duplicate fhirUser", craft(rs, claims(issPlain, `"sub":"a","ext":{"fhirUser":"Patient/1","fhirUser":"Patient/2"}`)), bad(ReasonDuplicateKey)},
		{"ext FHIRUSER", craft(rs, claims(issPlain, `"sub":"a","ext":{"FHIRUSER":"Patient/1"}`)), bad(ReasonDuplicateKey)},

		// Issuer.
		{"unknown issuer", craft(rs, claims("https://evil.example", `"sub":"a"`)), bad(ReasonUnknownIssuer)},
		{"issuer trailing slash", craft(rs, claims(issPlain+"/", `"sub":"a"`)), bad(ReasonUnknownIssuer)},
		{"issuer case", craft(rs, claims(strings.ToUpper(issPlain), `"sub":"a"`)), bad(ReasonUnknownIssuer)},
		{"issuer missing", craft(rs, fmt.Sprintf(`{"exp":%d,"sub":"a"}`, at(time.Hour))), bad(ReasonUnknownIssuer)},
		{"issuer not a string", craft(rs, fmt.Sprintf(`{"iss":["%s"],"exp":%d,"sub":"a"}`, issPlain, at(time.Hour))), bad(ReasonUnknownIssuer)},

		// Header.
		{"alg lower case", craft(`{"alg":"rs256"}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"alg none", craft(`{"alg":"none"}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"alg HS256", craft(`{"alg":"HS256"}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"alg not configured", craft(`{"alg":"PS256"}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"alg missing", craft(`{"kid":"k1"}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"alg not a string", craft(`{"alg":["RS256"]}`, okPayload), bad(ReasonAlgNotAllowed)},
		{"crit", craft(`{"alg":"RS256","crit":["exp"],"exp":1}`, okPayload), bad(ReasonCritHeader)},
		{"crit empty", craft(`{"alg":"RS256","crit":[]}`, okPayload), bad(ReasonCritHeader)},
		{"jku", craft(`{"alg":"RS256","jku":"https://evil.example/jwks"}`, okPayload), bad(ReasonKeyHeader)},
		{"x5u", craft(`{"alg":"RS256","x5u":"https://evil.example/cert"}`, okPayload), bad(ReasonKeyHeader)},
		{"jwk", craft(`{"alg":"RS256","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}`, okPayload), bad(ReasonKeyHeader)},
		{"x5c", craft(`{"alg":"RS256","x5c":["MIIB"]}`, okPayload), bad(ReasonKeyHeader)},
		{"kid not a string", craft(`{"alg":"RS256","kid":1}`, okPayload), bad(ReasonMalformed)},
		{"typ not a string", craft(`{"alg":"RS256","typ":1}`, okPayload), bad(ReasonMalformed)},
		{"typ refused", craft(`{"alg":"RS256","typ":"id+jwt"}`, claims(issTyped, `"sub":"a"`)), bad(ReasonTypeNotAccepted)},
		{"typ missing when required", craft(rs, claims(issTyped, `"sub":"a"`)), bad(ReasonTypeNotAccepted)},
		{"typ other media type", craft(`{"alg":"RS256","typ":"text/at+jwt"}`, claims(issTyped, `"sub":"a"`)), bad(ReasonTypeNotAccepted)},

		// Times.
		{"exp missing", craft(rs, fmt.Sprintf(`{"iss":%q,"sub":"a"}`, issPlain)), bad(ReasonNoExpiry)},
		{"exp string", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":"%d","sub":"a"}`, issPlain, at(time.Hour))), bad(ReasonMalformed)},
		{"exp null", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":null,"sub":"a"}`, issPlain)), bad(ReasonMalformed)},
		{"exp negative", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":-1,"sub":"a"}`, issPlain)), bad(ReasonMalformed)},
		{"exp huge", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":1e300,"sub":"a"}`, issPlain)), bad(ReasonMalformed)},
		{"exp past leeway", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"a"}`, issPlain, at(-61*time.Second))), bad(ReasonExpired)},
		{"exp at leeway edge", craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"a"}`, issPlain, at(-60*time.Second))), bad(ReasonExpired)},
		{"nbf future", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","nbf":%d`, at(61*time.Second)))), bad(ReasonNotYetValid)},
		{"nbf string", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","nbf":"%d"`, at(0)))), bad(ReasonMalformed)},
		{"iat future", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","iat":%d`, at(61*time.Second)))), bad(ReasonIssuedInFuture)},
		{"iat string", craft(rs, claims(issPlain, fmt.Sprintf(`"sub":"a","iat":"%d"`, at(0)))), bad(ReasonMalformed)},

		// Audience.
		{"aud missing when required", craft(rs, claims(issAudience, `"sub":"a"`)), bad(ReasonAudience)},
		{"aud other", craft(rs, claims(issAudience, `"sub":"a","aud":"api://other"`)), bad(ReasonAudience)},
		{"aud array other", craft(rs, claims(issAudience, `"sub":"a","aud":["x","y"]`)), bad(ReasonAudience)},
		{"aud empty array", craft(rs, claims(issAudience, `"sub":"a","aud":[]`)), bad(ReasonAudience)},
		{"aud number", craft(rs, claims(issAudience, `"sub":"a","aud":1`)), bad(ReasonMalformed)},
		{"aud array with number", craft(rs, claims(issAudience, `"sub":"a","aud":["api://fhir",1]`)), bad(ReasonMalformed)},
		{"aud malformed when unset", craft(rs, claims(issPlain, `"sub":"a","aud":{"x":1}`)), bad(ReasonMalformed)},

		// Subject and fhirUser.
		{"sub number", craft(rs, claims(issPlain, `"sub":1`)), bad(ReasonBadSubject)},
		{"sub empty", craft(rs, claims(issPlain, `"sub":""`)), bad(ReasonBadSubject)},
		{"sub 256 bytes", craft(rs, claims(issPlain, `"sub":"`+strings.Repeat("s", 256)+`"`)), bad(ReasonBadSubject)},
		{"fhirUser number", craft(rs, claims(issPlain, `"sub":"a","fhirUser":1`)), bad(ReasonBadFHIRUser)},
		{"fhirUser empty", craft(rs, claims(issPlain, `"sub":"a","fhirUser":""`)), bad(ReasonBadFHIRUser)},
		{"fhirUser object", craft(rs, claims(issPlain, `"sub":"a","fhirUser":{"reference":"Patient/1"}`)), bad(ReasonBadFHIRUser)},
		{"ext not an object", craft(rs, claims(issPlain, `"sub":"a","ext":"Patient/1"`)), bad(ReasonMalformed)},
		{"ext.fhirUser number", craft(rs, claims(issPlain, `"sub":"a","ext":{"fhirUser":7}`)), bad(ReasonBadFHIRUser)},
		{"fhirUser extra search parameter", craft(rs, claims(issPlain, `"sub":"a","fhirUser":"Practitioner?identifier=x&_include=*"`)), bad(ReasonBadFHIRUser)},
		{"fhirUser path trick", craft(rs, claims(issPlain, `"sub":"a","fhirUser":"Practitioner/../ProjectMembership/x"`)), bad(ReasonBadFHIRUser)},
		{"fhirUser unsupported type", craft(rs, claims(issPlain, `"sub":"a","fhirUser":"Organization/1"`)), bad(ReasonBadFHIRUser)},
		{"ext.fhirUser unsupported shape", craft(rs, claims(issPlain, `"ext":{"fhirUser":"Patient"}`)), bad(ReasonBadFHIRUser)},
		{"ext.fhirUser bad beside fhirUser", craft(rs, claims(issPlain, `"fhirUser":"Patient/1","ext":{"fhirUser":null}`)), bad(ReasonBadFHIRUser)},
		{"neither sub nor fhirUser", craft(rs, claims(issPlain, `"name":"x"`)), bad(ReasonNoSubject)},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Fatalf("duplicate case name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			tok, err := a.Parse(tt.raw)
			if tt.want.kind != 0 {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("Parse() = %v, %v; want *Error %s/%s", tok, err, tt.want.kind, tt.want.reason)
				}
				if e.Kind != tt.want.kind || e.Reason != tt.want.reason {
					t.Fatalf("Parse() error = %s/%s; want %s/%s", e.Kind, e.Reason, tt.want.kind, tt.want.reason)
				}
				if tok != nil {
					t.Fatal("Parse() returned a token with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() error = %v; want success", err)
			}
			if tok.Subject != tt.want.sub || tok.FHIRUser != tt.want.fu || tok.HasFHIRUser != tt.want.hasFHIRUser {
				t.Fatalf("Parse() sub=%q fhirUser=%q has=%v; want %q %q %v", tok.Subject, tok.FHIRUser, tok.HasFHIRUser, tt.want.sub, tt.want.fu, tt.want.hasFHIRUser)
			}
			if tok.Provider == nil || tok.Provider.Issuer != tok.Issuer {
				t.Fatalf("Parse() provider %v does not match issuer %q", tok.Provider, tok.Issuer)
			}
			if tok.raw != tt.raw {
				t.Fatal("Parse() did not keep the raw token")
			}
		})
	}
}

func TestParseTokenFields(t *testing.T) {
	a := parseTestAuthenticator(t)
	raw := craft(rs, fmt.Sprintf(`{"iss":%q,"exp":%d,"sub":"alice"}`, issPlain, at(time.Hour)))
	tok, err := a.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expires.Equal(testNow.Add(time.Hour)) {
		t.Errorf("Expires = %v; want %v", tok.Expires, testNow.Add(time.Hour))
	}
	// The cache key is the issuer and the base64url SHA-256 of the exact token.
	wantKey := "fhirgate:ext:v1:" + issPlain + ":" + base64.RawURLEncoding.EncodeToString(sha256Sum(raw))
	if tok.CacheKey != wantKey {
		t.Errorf("CacheKey = %q; want %q", tok.CacheKey, wantKey)
	}
	if tok.kid != "k1" || tok.alg != "RS256" {
		t.Errorf("kid, alg = %q, %q", tok.kid, tok.alg)
	}
	// The raw token never appears in any printed or logged form.
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "token", tok, "tokenValue", *tok)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), fmt.Sprintf("%+v", *tok), fmt.Sprintf("%v", []*Token{tok}), logs.String()} {
		if strings.Contains(s, raw) || strings.Contains(s, strings.Split(raw, ".")[1]) {
			t.Errorf("printed form contains the token: %s", s)
		}
		if !strings.Contains(s, tok.Fingerprint()) {
			t.Errorf("printed form lacks the fingerprint: %s", s)
		}
	}
}

func sha256Sum(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
