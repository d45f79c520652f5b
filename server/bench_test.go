package server_test

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/internal/testserver"
)

// BenchmarkChain serves one FHIR read through the whole gin engine, without
// the network, so the cost of authentication shows against the same read
// without it: compare the sub-benchmarks' ns/op (the ratio is what counts).
func BenchmarkChain(b *testing.B) {
	var member caller.Caller
	e := startExtB(b, testserver.Quiet(), testserver.WithBenchmarkCaller(func() *caller.Caller { return &member }))
	ext := e.token(map[string]any{"sub": "alice"})
	r := e.Do(b, http.MethodGet, "oauth2/userinfo", ext, nil)
	if r.Status != http.StatusOK {
		b.Fatalf("userinfo: %d %s", r.Status, r.Body)
	}
	info := r.Map(b)
	local := info["access_token"].(string)
	member = caller.Caller{Project: e.project.ID, Membership: info["membership"].(string), Profile: e.alice}
	h := e.Server.Handler()
	for _, bc := range []struct {
		name, path, token string
	}{
		{"no-auth", "/_bench/noauth/fhir/R4/" + e.alice, ""},
		{"local-token", "/fhir/R4/" + e.alice, local},
		{"external-cached", "/fhir/R4/" + e.alice, ext},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, bc.path, nil)
			if bc.token != "" {
				req.Header.Set("Authorization", "Bearer "+bc.token)
			}
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != http.StatusOK {
						b.Errorf("status %d", w.Code)
						return
					}
				}
			})
		})
	}
}

// BenchmarkTokenHash is the SHA-256 every cached request pays (cache key and memo).
func BenchmarkTokenHash(b *testing.B) {
	tok := make([]byte, 900)
	for b.Loop() {
		sha256.Sum256(tok)
	}
}
