package extauth

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger whose output is checked at the end of the
// test: it must never contain a token (every JWT here starts with "eyJ").
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	var buf syncBuffer
	t.Cleanup(func() {
		if out := buf.String(); strings.Contains(out, "eyJ") {
			t.Errorf("a token was logged:\n%s", out)
		}
	})
	return slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fetch GETs url and returns the body.
func fetch(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyfuncFromJWKS returns a plain keyfunc over a fetched JWK Set.
func keyfuncFromJWKS(t *testing.T, url string) jwt.Keyfunc {
	t.Helper()
	kf, err := keyfunc.NewJWKSetJSON(fetch(t, url))
	if err != nil {
		t.Fatal(err)
	}
	return kf.Keyfunc
}
