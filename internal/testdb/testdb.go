// Package testdb gives tests a throwaway PostgreSQL database. The server comes
// from FHIRGATE_TEST_POSTGRES_URL; each call creates a database with a random
// name on it and drops it when the test ends.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// EnvPostgresURL names the environment variable holding the URL of a
// PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
// whose user may create databases.
const EnvPostgresURL = "FHIRGATE_TEST_POSTGRES_URL"

// Require returns the server URL from FHIRGATE_TEST_POSTGRES_URL. When the
// variable is unset it skips the test, or fails it under CI=true. A test that
// opens several databases calls it first to skip once rather than per subtest.
func Require(t testing.TB) string {
	t.Helper()
	server := os.Getenv(EnvPostgresURL)
	if server == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testdb: %s is not set; CI must run the PostgreSQL tests (e.g. %s=postgres://postgres@127.0.0.1:5432/test?sslmode=disable)",
				EnvPostgresURL, EnvPostgresURL)
		}
		t.Skipf("testdb: %s not set; skipping PostgreSQL test", EnvPostgresURL)
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testdb: %s must be a postgres:// URL", EnvPostgresURL)
	}
	return server
}

// PostgresURL creates an empty database on the server named by
// FHIRGATE_TEST_POSTGRES_URL and returns its URL; the database is dropped in
// t.Cleanup. When the variable is unset the test is skipped, except under
// CI=true, where a missing database is a failure.
func PostgresURL(t testing.TB) string {
	t.Helper()
	server := Require(t)
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("testdb: %s is not a URL", EnvPostgresURL)
	}

	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("testdb: random name: %v", err)
	}
	name := "fhirgate_test_" + hex.EncodeToString(suffix[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatalf("testdb: open server: %v", err)
	}
	defer admin.Close()
	// name is generated above from hex digits, so it is a safe identifier.
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testdb: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := sql.Open("pgx", server)
		if err != nil {
			t.Errorf("testdb: open server for cleanup: %v", err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: drop database %s: %v", name, err)
		}
	})

	db := *u
	db.Path = "/" + name
	return db.String()
}
