package fhir_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/fhir/storetest"
	"github.com/fhirgate/fhirgate/internal/testdb"
)

func openPostgresTest(t *testing.T) fhir.Store {
	t.Helper()
	url := testdb.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := fhir.Open(ctx, url)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	return s
}

func TestPostgresConformance(t *testing.T) {
	testdb.Require(t)
	storetest.Run(t, openPostgresTest)
}

func TestOpenPostgresUnavailable(t *testing.T) {
	tests := []string{
		// Nothing listens on port 1.
		"postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
		"postgresql://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=5",
	}
	for _, dsn := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := fhir.Open(ctx, dsn)
		cancel()
		if !errors.Is(err, fhir.ErrUnavailable) {
			t.Errorf("Open(%s): %v, want ErrUnavailable", dsn, err)
		}
	}
}

// TestOpenPostgresMigrationsOnce opens one database from several pools at
// once: the advisory lock must let exactly one of them apply each migration.
func TestOpenPostgresMigrationsOnce(t *testing.T) {
	url := testdb.PostgresURL(t)
	const openers = 6
	var wg sync.WaitGroup
	stores := make([]fhir.Store, openers)
	errs := make([]error, openers)
	for i := range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = fhir.Open(context.Background(), url)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("opener %d: %v", i, err)
		}
	}
	rec := &fhir.Record{Type: fhir.TypePatient, ID: "keep", Project: "p1", Body: json.RawMessage(`{}`)}
	if err := stores[0].Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		if _, err := s.Read(context.Background(), "p1", fhir.TypePatient, "keep"); err != nil {
			t.Errorf("read through another pool: %v", err)
		}
		s.Close()
	}

	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("migrations/postgres/*.sql")
	if n != len(files) || distinct != n || n == 0 {
		t.Errorf("schema_migrations has %d rows (%d distinct), want %d", n, distinct, len(files))
	}
}
