package extauth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/config"
)

// benchToken is a realistic-size external token (about 900 bytes).
var benchToken = craft(`{"alg":"RS256","kid":"2024-rotation-key-01","typ":"at+jwt"}`,
	claims(issPlain, `"sub":"00u1a2b3c4d5e6f7g8h9","aud":["api://fhir","https://fhir.example.org/fhir/R4"],`+
		`"iat":1699990000,"nbf":1699990000,"jti":"AT.3xQm7w9vYt2Lk8pQ4rZs6uN1bC0dE5fG","scp":["openid","profile","fhirUser","patient/*.read"],`+
		`"fhirUser":"https://fhir.example.org/fhir/R4/Practitioner/1234567890","ext":{"fhirUser":"Practitioner/1234567890","tenant":"acme"},`+
		`"name":"Dr. Alice Example","email":"alice@example.org","groups":["clinicians","on-call","research"]`))

func init() { // a 256-byte signature, as with a 2048-bit RSA key
	parts := strings.Split(benchToken, ".")
	benchToken = parts[0] + "." + parts[1] + "." + b64(strings.Repeat("s", 256))
}

func BenchmarkParse(b *testing.B) {
	a := parseTestAuthenticator(b)
	if _, err := a.Parse(benchToken); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchToken)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Parse(benchToken); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateCached measures the cache-hit path with the
// in-process cache: Parse, one cache read, one JSON decode.
func BenchmarkAuthenticateCached(b *testing.B) {
	now := func() time.Time { return testNow }
	p := testProvider(issPlain)
	p.UserInfoURL = "http://127.0.0.1:1/userinfo" // never called: the entry is cached
	a, err := New([]config.Provider{p}, Options{Cache: cache.NewMemory(0, now), Now: now})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = a.Close() })
	ctx := context.Background()
	tok, err := a.Parse(benchToken)
	if err != nil {
		b.Fatal(err)
	}
	a.store(ctx, tok, entry{Result: &testResult}, time.Hour)
	resolve := func(context.Context, *Token) (*Result, error) {
		b.Fatal("resolve called on a cache hit")
		return nil, nil
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := a.Authenticate(ctx, benchToken, resolve); err != nil {
				b.Fatal(err)
			}
		}
	})
}
