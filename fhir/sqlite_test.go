package fhir_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/fhir/storetest"
)

func openSQLiteTest(t *testing.T) fhir.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := fhir.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "fhirgate.db"))
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, openSQLiteTest)
}

func TestOpenRefusesUnknownDSN(t *testing.T) {
	tests := []string{
		"",
		"data/fhirgate.db",
		"mysql://root@localhost/db",
		"redis://localhost:6379/0",
		"sqlite:",
		"sqlite:data.db?mode=memory",
		"sqlite::memory:",
		"sqlite:file:x.db",
	}
	for _, dsn := range tests {
		t.Run(dsn, func(t *testing.T) {
			s, err := fhir.Open(context.Background(), dsn)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", dsn)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestOpenSQLiteCreatesPrivateFiles(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "fhirgate.db")
	s, err := fhir.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		path string
		want os.FileMode
	}{
		{filepath.Join(root, "a"), 0o700},
		{filepath.Join(root, "a", "b"), 0o700},
		{path, 0o600},
	}
	for _, tc := range tests {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.want {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode().Perm(), tc.want)
		}
	}
}

func TestOpenSQLiteUnavailable(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The parent "directory" is a regular file: the database cannot be opened.
	_, err := fhir.Open(context.Background(), "sqlite:"+filepath.Join(blocker, "db.sqlite"))
	if !errors.Is(err, fhir.ErrUnavailable) {
		t.Fatalf("Open under a file: %v, want ErrUnavailable", err)
	}
}

// TestOpenSQLiteMigrationsOnce opens the same file from many goroutines at
// once (separate pools, as separate processes would have), then checks that
// each migration was recorded once and that data survives a reopen.
func TestOpenSQLiteMigrationsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	const openers = 8
	var wg sync.WaitGroup
	stores := make([]fhir.Store, openers)
	errs := make([]error, openers)
	for i := range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = fhir.Open(context.Background(), "sqlite:"+path)
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

	s, err := fhir.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if _, err := s.Read(context.Background(), "p1", fhir.TypePatient, "keep"); err != nil {
		t.Errorf("read after reopen: %v", err)
	}

	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT version) FROM schema_migrations").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("migrations/sqlite/*.sql")
	if n != len(files) || distinct != n || n == 0 {
		t.Errorf("schema_migrations has %d rows (%d distinct), want %d", n, distinct, len(files))
	}
}
