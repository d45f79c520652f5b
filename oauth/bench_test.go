package oauth

import (
	"testing"
	"time"
)

func BenchmarkSign(b *testing.B) {
	iss := newBenchIssuer(b)
	for b.Loop() {
		if _, _, err := iss.Sign(grant); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	iss := newBenchIssuer(b)
	tok, _, err := iss.Sign(grant)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := iss.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func newBenchIssuer(b *testing.B) *Issuer {
	key, err := LoadOrCreateKey(b.TempDir() + "/key.pem")
	if err != nil {
		b.Fatal(err)
	}
	iss, err := NewIssuer(key, base, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	return iss
}

// BenchmarkVerifyUncached is the full ES256 verification that the memo saves.
func BenchmarkVerifyUncached(b *testing.B) {
	iss := newBenchIssuer(b)
	tok, _, err := iss.Sign(grant)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := iss.verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
