package fhir

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrationFiles embed.FS

// sqliteDSNParams configure every SQLite connection: a 10 s busy timeout
// (applied first by the driver), WAL so readers never block the writer,
// foreign keys, and immediate transactions. Immediate transactions take the
// write lock at BEGIN, so concurrent read-then-write transactions queue on the
// busy timeout instead of failing with "database is locked" at their first
// write.
const sqliteDSNParams = "_busy_timeout=10000&_journal_mode=WAL&_foreign_keys=1&_txlock=immediate"

// sqliteMaxConns bounds the pool. Writers are serialised by SQLite itself;
// the bound only limits open file handles for concurrent readers.
const sqliteMaxConns = 32

// openSQLite opens (creating when needed) the SQLite database file at path.
func openSQLite(ctx context.Context, path string) (Store, error) {
	if path == "" {
		return nil, errors.New("fhir: sqlite: empty path (want sqlite:<path>)")
	}
	if strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") || path == ":memory:" {
		return nil, fmt.Errorf("fhir: sqlite: %q must be a plain file path", path)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("%w: sqlite: create directory: %w", ErrUnavailable, err)
		}
	}
	// Create the file ourselves so that it is private to this user: it holds
	// client secret hashes and login records.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: sqlite: open %s: %w", ErrUnavailable, path, err)
	}
	_ = f.Close()

	sub, err := fs.Sub(sqliteMigrationFiles, "migrations/sqlite")
	if err != nil {
		return nil, fmt.Errorf("fhir: sqlite migrations: %w", err)
	}
	db, err := sql.Open("sqlite", path+"?"+sqliteDSNParams)
	if err != nil {
		return nil, fmt.Errorf("%w: sqlite: %w", ErrUnavailable, err)
	}
	db.SetMaxOpenConns(sqliteMaxConns)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)

	d := &dialect{
		name:       "sqlite",
		classify:   classifySQLite,
		migrations: sub,
		timeArg:    func(t time.Time) any { return t.UTC().Format(lastUpdatedLayout) },
	}
	s := &sqlStore{db: db, d: d}
	if err := s.Ping(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := migrate(ctx, db, d); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// classifySQLite maps SQLite result codes: a unique or primary-key violation
// is ErrConflict; a busy, locked, unopenable, full or failing database file is
// ErrUnavailable.
func classifySQLite(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return nil
	}
	switch code := se.Code(); code {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return ErrConflict
	default:
		switch code & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN,
			sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_NOTADB:
			return ErrUnavailable
		}
	}
	return nil
}
