package fhir

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

//go:embed migrations/postgres/*.sql
var postgresMigrationFiles embed.FS

// postgresMigrationLock is the pg_advisory_xact_lock key that serialises
// migrations between instances starting at the same time ("fhirgate" in ASCII).
const postgresMigrationLock int64 = 0x6668697267617465

// Pool bounds for PostgreSQL. Each instance keeps at most this many server
// connections, so several instances fit the server's default of 100.
const (
	postgresMaxConns = 20
	postgresMaxIdle  = 10
)

// postgresOpenTimeout bounds the first connection at open when ctx has no deadline.
const postgresOpenTimeout = 10 * time.Second

// openPostgres opens the PostgreSQL database named by the URL dsn.
func openPostgres(ctx context.Context, dsn string) (Store, error) {
	sub, err := fs.Sub(postgresMigrationFiles, "migrations/postgres")
	if err != nil {
		return nil, fmt.Errorf("fhir: postgres migrations: %w", err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("fhir: postgres: invalid database URL: %w", err)
	}
	db.SetMaxOpenConns(postgresMaxConns)
	db.SetMaxIdleConns(postgresMaxIdle)
	db.SetConnMaxIdleTime(5 * time.Minute)

	d := &dialect{
		name:           "postgres",
		rebind:         rebindDollar,
		classify:       classifyPostgres,
		lockMigrations: lockPostgresMigrations,
		migrations:     sub,
		forUpdate:      " FOR UPDATE",
		timeArg:        func(t time.Time) any { return t.UTC() },
	}
	s := &sqlStore{db: db, d: d}
	pingCtx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		pingCtx, cancel = context.WithTimeout(ctx, postgresOpenTimeout)
		defer cancel()
	}
	if err := s.Ping(pingCtx); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := migrate(ctx, db, d); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// lockPostgresMigrations takes the transaction-scoped migration lock; it is
// released at commit or rollback.
func lockPostgresMigrations(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", postgresMigrationLock)
	return err
}

// rebindDollar rewrites "?" placeholders as $1, $2, ... The store's SQL has no
// "?" inside literals, so a plain scan is exact.
func rebindDollar(query string) string {
	n := strings.Count(query, "?")
	if n == 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 2*n)
	i := 0
	for _, r := range query {
		if r == '?' {
			i++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(i))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// classifyPostgres maps a unique violation (23505) to ErrConflict, and
// connection failures, server shutdown and connection exhaustion to
// ErrUnavailable.
func classifyPostgres(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return ErrConflict
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, cannot connect now
			pgErr.Code == "53300", // too many connections
			pgErr.Code == "3D000": // database does not exist
			return ErrUnavailable
		}
		return nil
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr), errors.Is(err, driver.ErrBadConn):
		return ErrUnavailable
	}
	return nil
}
