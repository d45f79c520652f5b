package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:8090", true},
		{"127.0.0.2:8090", true},
		{"[::1]:8090", true},
		{"localhost:8090", true},
		{":8090", false},
		{"0.0.0.0:8090", false},
		{"[::]:8090", false},
		{"10.1.2.3:8090", false},
		{"example.com:8090", false},
		{"127.0.0.1", false},
	}
	for _, tc := range tests {
		if err := checkLoopback(tc.addr); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "key.pem")
	first, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", info.Mode().Perm())
	}
	again, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if again.kid != first.kid || !again.key.Equal(first.key) {
		t.Error("reloading the key file gave another key")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("key directory holds %d files, want 1 (temporary file left behind?)", len(entries))
	}

	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	bad := []struct {
		name    string
		content []byte
	}{
		{"not pem", []byte("hello")},
		{"wrong pem type", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1}})},
		{"broken der", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})},
		{"ec key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})},
	}
	for _, tc := range bad {
		p := filepath.Join(dir, tc.name+".pem")
		if err := os.WriteFile(p, tc.content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadOrCreateKey(p); err == nil {
			t.Errorf("%s: loaded without error", tc.name)
		}
	}
}

// startIdP serves s on a loopback httptest server whose URL is the issuer.
func startIdP(t *testing.T, s *signer) string {
	srv := httptest.NewUnstartedServer(nil)
	iss := "http://" + srv.Listener.Addr().String()
	srv.Config.Handler = s.handler(iss, time.Now)
	srv.Start()
	t.Cleanup(srv.Close)
	return iss
}

func userinfo(t *testing.T, method, url, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// tamper replaces the payload's sub while keeping the original signature.
func tamper(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	payload = bytes.Replace(payload, []byte(`"sub":"alice"`), []byte(`"sub":"admin"`), 1)
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, ".")
}

func TestServeAndUserInfo(t *testing.T) {
	dir := t.TempDir()
	s, err := loadOrCreateKey(filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := loadOrCreateKey(filepath.Join(dir, "other.pem"))
	if err != nil {
		t.Fatal(err)
	}
	iss := startIdP(t, s)
	req := func(mod func(*tokenRequest)) tokenRequest {
		r := tokenRequest{issuer: iss, audience: "fhirgate", sub: "alice", ttl: time.Hour, now: time.Now()}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	mint := func(s *signer, r tokenRequest) string {
		tok, err := s.mint(r)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mint(s, req(nil))

	tests := []struct {
		name     string
		method   string
		token    string
		status   int
		fhirUser string
	}{
		{"good", "GET", good, 200, ""},
		{"good by POST", "POST", good, 200, ""},
		{"fhirUser", "GET", mint(s, req(func(r *tokenRequest) { r.fhirUser = "Practitioner/123" })), 200, "Practitioner/123"},
		{"tampered", "GET", tamper(t, good), 401, ""},
		{"expired", "GET", mint(s, req(func(r *tokenRequest) { r.now = time.Now().Add(-2 * time.Hour) })), 401, ""},
		{"issued in the future", "GET", mint(s, req(func(r *tokenRequest) { r.now = time.Now().Add(time.Hour) })), 401, ""},
		{"other issuer", "GET", mint(s, req(func(r *tokenRequest) { r.issuer = "http://127.0.0.1:1" })), 401, ""},
		{"other key", "GET", mint(other, req(nil)), 401, ""},
		{"no token", "GET", "", 401, ""},
		{"wrong method", "DELETE", good, 405, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := userinfo(t, tc.method, iss+"/userinfo", tc.token)
			if status != tc.status {
				t.Fatalf("status = %d, want %d (%v)", status, tc.status, body)
			}
			if status != 200 {
				return
			}
			if body["sub"] != "alice" {
				t.Errorf("sub = %v, want alice", body["sub"])
			}
			if got, _ := body["fhirUser"].(string); got != tc.fhirUser {
				t.Errorf("fhirUser = %q, want %q", got, tc.fhirUser)
			}
		})
	}

	status, doc := userinfo(t, "GET", iss+"/.well-known/openid-configuration", "")
	if status != 200 || doc["issuer"] != iss || doc["userinfo_endpoint"] != iss+"/userinfo" {
		t.Errorf("discovery = %d %v", status, doc)
	}
	status, jwks := userinfo(t, "GET", iss+"/jwks.json", "")
	keys, _ := jwks["keys"].([]any)
	if status != 200 || len(keys) != 1 || keys[0].(map[string]any)["kid"] != s.kid || keys[0].(map[string]any)["d"] != nil {
		t.Errorf("jwks = %d %v", status, jwks)
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "data", "devidp-key.pem")
	s, err := loadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	iss := startIdP(t, s)

	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{"no command", nil, 2, "usage"},
		{"unknown command", []string{"mint"}, 2, "unknown command"},
		{"token without sub", []string{"token", "-key", keyFile}, 2, "-sub is required"},
		{"token bad flag", []string{"token", "-sub", "a", "-bogus"}, 2, "bogus"},
		{"serve off loopback", []string{"serve", "-listen", "0.0.0.0:0", "-key", keyFile}, 1, "loopback"},
		{"serve bad key", []string{"serve", "-listen", "127.0.0.1:0", "-key", dir}, 1, "-key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
				t.Fatalf("exit code = %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderrHas) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), tc.stderrHas)
			}
		})
	}

	t.Run("token accepted by serve", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		args := []string{"token", "-sub", "alice", "-fhir-user", "Practitioner/123", "-ttl", "10m", "-key", keyFile, "-issuer", iss}
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("exit code = %d, stderr %q", code, stderr.String())
		}
		tok := strings.TrimSpace(stdout.String())
		if strings.Count(tok, ".") != 2 || strings.Contains(stdout.String()[:len(stdout.String())-1], "\n") {
			t.Fatalf("stdout is not one JWT line: %q", stdout.String())
		}
		status, body := userinfo(t, "GET", iss+"/userinfo", tok)
		if status != 200 || body["sub"] != "alice" || body["fhirUser"] != "Practitioner/123" {
			t.Fatalf("userinfo = %d %v", status, body)
		}
		claims, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
		var c map[string]any
		_ = json.Unmarshal(claims, &c)
		if c["aud"] != "fhirgate" || c["jti"] == nil || c["exp"].(float64)-c["iat"].(float64) != 600 {
			t.Errorf("claims = %v", c)
		}
	})

	t.Run("serve drains and exits 0 when stopped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var stderr bytes.Buffer
		fresh := filepath.Join(t.TempDir(), "k.pem")
		if code := run(ctx, []string{"serve", "-listen", "127.0.0.1:0", "-key", fresh}, &bytes.Buffer{}, &stderr); code != 0 {
			t.Fatalf("exit code = %d, stderr %q", code, stderr.String())
		}
		if _, err := os.Stat(fresh); err != nil {
			t.Errorf("serve did not create its key: %v", err)
		}
		if !strings.Contains(stderr.String(), "issuer http://127.0.0.1:") {
			t.Errorf("stderr %q does not announce the issuer", stderr.String())
		}
	})
}
