package fhir

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Open connects to the database named by dsn, applies the embedded schema
// migrations that are missing, and returns the Store.
//
//   - "sqlite:<path>" opens (and creates) a SQLite file: the embedded default
//     for a single instance. The parent directory is created with mode 0700.
//   - "postgres://..." or "postgresql://..." opens PostgreSQL, for several
//     instances sharing one database.
//
// An unreachable database yields an error wrapping ErrUnavailable. Migrations
// are idempotent and safe when several processes open the same database at
// once; each applied migration is recorded in the schema_migrations table.
//
// Both stores are one implementation over database/sql with a small dialect
// (placeholders, error codes, migration lock, row locks): PostgreSQL is
// reached through pgx's database/sql driver rather than pgxpool so that every
// query, transaction and index rule is written once and tested identically on
// both databases.
func Open(ctx context.Context, dsn string) (Store, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return openPostgres(ctx, dsn)
	}
	scheme, _, found := strings.Cut(dsn, ":")
	if !found || scheme == "" {
		return nil, errors.New("fhir: database must be sqlite:<path> or postgres://...")
	}
	return nil, fmt.Errorf("fhir: unsupported database scheme %q: want sqlite:<path> or postgres://...", scheme)
}

// dialect is what differs between SQLite and PostgreSQL.
type dialect struct {
	name string
	// rebind turns "?" placeholders into the database's own (nil: keep "?").
	rebind func(query string) string
	// classify returns ErrConflict, ErrUnavailable or nil for a driver error.
	classify func(err error) error
	// lockMigrations serialises migrations between processes inside tx (nil
	// when beginning the transaction already does).
	lockMigrations func(ctx context.Context, tx *sql.Tx) error
	// migrations holds the NNNN_name.sql files of this dialect.
	migrations fs.FS
	// forUpdate is appended to the row read of a read-modify-write.
	forUpdate string
	// timeArg encodes a timestamp for a last_updated parameter.
	timeArg func(t time.Time) any
}

// wrap annotates a database error and makes it match ErrConflict or
// ErrUnavailable when the driver says so.
func (d *dialect) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if sentinel := d.classify(err); sentinel != nil {
		return fmt.Errorf("%w: %s %s: %w", sentinel, d.name, op, err)
	}
	return fmt.Errorf("fhir: %s %s: %w", d.name, op, err)
}

// sqlStore implements Store over database/sql for both dialects.
type sqlStore struct {
	db *sql.DB
	d  *dialect
	// rowStmts holds the prepared single-row reads (Read, ReadAny and the
	// like), by query text: the reads of every request, which SQLite would
	// otherwise parse anew each time. The set of texts is small and fixed.
	rowStmts sync.Map // string → *sql.Stmt
}

// queryer is what *sql.DB and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqlOps runs the Ops on a database handle or a transaction.
type sqlOps struct {
	q queryer
	d *dialect
	// inTx is set inside WithTx: Read and ReadAny then lock the row they
	// return until the transaction ends (PostgreSQL FOR UPDATE; SQLite
	// transactions are serialised anyway), so read-then-write transactions
	// behave the same on both databases and never lose an update.
	inTx bool
	// store is set outside transactions: single-row reads then use its
	// prepared statements.
	store *sqlStore
}

var _ Store = (*sqlStore)(nil)

func (s *sqlStore) ops() *sqlOps { return &sqlOps{q: s.db, d: s.d, store: s} }

// rowStmt returns the prepared statement for a single-row read, preparing it
// on first use; nil when preparing fails (the caller then runs the text).
func (s *sqlStore) rowStmt(ctx context.Context, query string) *sql.Stmt {
	if st, ok := s.rowStmts.Load(query); ok {
		return st.(*sql.Stmt)
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	if prev, loaded := s.rowStmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt)
	}
	return st
}

// Create implements Ops; the write is atomic (its own transaction).
func (s *sqlStore) Create(ctx context.Context, rec *Record) error {
	return s.writeTx(ctx, rec, (*sqlOps).Create)
}

// Update implements Ops; the write is atomic (its own transaction).
func (s *sqlStore) Update(ctx context.Context, rec *Record) error {
	return s.writeTx(ctx, rec, (*sqlOps).Update)
}

// Delete implements Ops; the write is atomic (its own transaction).
func (s *sqlStore) Delete(ctx context.Context, project, typ, id string) error {
	return s.inTx(ctx, func(o *sqlOps) error { return o.Delete(ctx, project, typ, id) })
}

// Read implements Ops.
func (s *sqlStore) Read(ctx context.Context, project, typ, id string) (*Record, error) {
	return s.ops().Read(ctx, project, typ, id)
}

// ReadAny implements Ops.
func (s *sqlStore) ReadAny(ctx context.Context, typ, id string) (*Record, error) {
	return s.ops().ReadAny(ctx, typ, id)
}

// Search implements Ops.
func (s *sqlStore) Search(ctx context.Context, q Query) ([]Record, int, error) {
	return s.ops().Search(ctx, q)
}

// writeTx runs a write on a copy of rec in its own transaction and copies the
// result back only when the transaction committed.
func (s *sqlStore) writeTx(ctx context.Context, rec *Record, write func(*sqlOps, context.Context, *Record) error) error {
	if rec == nil {
		return errors.New("fhir: nil record")
	}
	work := *rec
	if err := s.inTx(ctx, func(o *sqlOps) error { return write(o, ctx, &work) }); err != nil {
		return err
	}
	*rec = work
	return nil
}

// WithTx implements Store. fn's error is returned unchanged after rollback; a
// panic in fn rolls back and is re-raised. Resources read with Read or ReadAny
// inside fn stay locked against other writers until the transaction ends.
func (s *sqlStore) WithTx(ctx context.Context, fn func(tx Ops) error) error {
	return s.inTx(ctx, func(o *sqlOps) error { return fn(o) })
}

func (s *sqlStore) inTx(ctx context.Context, fn func(o *sqlOps) error) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.d.wrap("begin", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(&sqlOps{q: tx, d: s.d, inTx: true}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.d.wrap("commit", err)
	}
	committed = true
	return nil
}

// Ping implements Store: it runs a trivial query so that a broken connection
// or database file is noticed, not only a missing pool.
func (s *sqlStore) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("%w: %s ping: %w", ErrUnavailable, s.d.name, err)
	}
	return nil
}

// Close implements Store.
func (s *sqlStore) Close() error {
	s.rowStmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	return s.db.Close()
}

var (
	storeTypePattern = regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`)
)

// storeNow is the store's clock: UTC, truncated to the milliseconds that
// meta.lastUpdated carries, so the row and the body agree.
func storeNow() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

func (o *sqlOps) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if o.d.rebind != nil {
		query = o.d.rebind(query)
	}
	return o.q.ExecContext(ctx, query, args...)
}

func (o *sqlOps) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if o.d.rebind != nil {
		query = o.d.rebind(query)
	}
	return o.q.QueryContext(ctx, query, args...)
}

func (o *sqlOps) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if o.d.rebind != nil {
		query = o.d.rebind(query)
	}
	if o.store != nil {
		if st := o.store.rowStmt(ctx, query); st != nil {
			return st.QueryRowContext(ctx, args...)
		}
	}
	return o.q.QueryRowContext(ctx, query, args...)
}

// checkRecord validates the identity of a record to be written and applies
// the Project rule (a Project belongs to itself).
func checkRecord(rec *Record, create bool) error {
	if rec == nil {
		return errors.New("fhir: nil record")
	}
	if !storeTypePattern.MatchString(rec.Type) {
		return fmt.Errorf("fhir: invalid resource type %q", rec.Type)
	}
	if rec.Type == TypeProject {
		switch {
		case rec.ID == "" && rec.Project == "" && create:
			rec.ID = uuid.NewString()
			rec.Project = rec.ID
		case rec.ID == "":
			rec.ID = rec.Project
		case rec.Project == "":
			rec.Project = rec.ID
		case rec.Project != rec.ID:
			return fmt.Errorf("fhir: Project %q must belong to itself, not to project %q", rec.ID, rec.Project)
		}
	}
	if rec.Project == "" {
		return fmt.Errorf("fhir: %s record without a project", rec.Type)
	}
	if rec.ID == "" {
		if !create {
			return fmt.Errorf("fhir: update of %s without an id", rec.Type)
		}
		rec.ID = uuid.NewString()
	}
	if !ValidID(rec.ID) {
		return fmt.Errorf("fhir: invalid resource id %q", rec.ID)
	}
	return nil
}

// Create implements Ops.
func (o *sqlOps) Create(ctx context.Context, rec *Record) error {
	if err := checkRecord(rec, true); err != nil {
		return err
	}
	now := storeNow()
	body, err := stampBody(rec.Body, rec.Type, rec.ID, 1, now)
	if err != nil {
		return err
	}
	iv, err := extractIndex(rec.Type, body)
	if err != nil {
		return err
	}
	_, err = o.exec(ctx,
		"INSERT INTO resources (type, id, project, version, last_updated, deleted, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
		rec.Type, rec.ID, rec.Project, int64(1), o.d.timeArg(now), false, string(body))
	if err != nil {
		return o.d.wrap("create "+rec.Type, err)
	}
	if err := o.insertIndex(ctx, rec.Type, rec.ID, rec.Project, iv); err != nil {
		return err
	}
	rec.Version, rec.LastUpdated, rec.Body = 1, now, body
	return nil
}

// current reads the state of a row for a read-modify-write, locking it where
// the database needs that (SQLite writers are already serialised).
func (o *sqlOps) current(ctx context.Context, typ, id string) (project string, version int64, deleted bool, err error) {
	err = o.queryRow(ctx,
		"SELECT project, version, deleted FROM resources WHERE type = ? AND id = ?"+o.d.forUpdate,
		typ, id).Scan(&project, &version, &deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, false, ErrNotFound
	}
	if err != nil {
		return "", 0, false, o.d.wrap("read "+typ, err)
	}
	return project, version, deleted, nil
}

// Update implements Ops.
func (o *sqlOps) Update(ctx context.Context, rec *Record) error {
	if err := checkRecord(rec, false); err != nil {
		return err
	}
	project, version, deleted, err := o.current(ctx, rec.Type, rec.ID)
	switch {
	case err != nil:
		return err
	case project != rec.Project:
		return ErrNotFound
	case deleted:
		return ErrGone
	case rec.Version != 0 && rec.Version != version:
		return fmt.Errorf("%w: %s/%s is at version %d, not %d", ErrVersionConflict, rec.Type, rec.ID, version, rec.Version)
	}
	next := version + 1
	now := storeNow()
	body, err := stampBody(rec.Body, rec.Type, rec.ID, next, now)
	if err != nil {
		return err
	}
	iv, err := extractIndex(rec.Type, body)
	if err != nil {
		return err
	}
	res, err := o.exec(ctx,
		"UPDATE resources SET version = ?, last_updated = ?, body = ? WHERE type = ? AND id = ? AND version = ?",
		next, o.d.timeArg(now), string(body), rec.Type, rec.ID, version)
	if err != nil {
		return o.d.wrap("update "+rec.Type, err)
	}
	if n, err := res.RowsAffected(); err == nil && n != 1 {
		return fmt.Errorf("%w: %s/%s changed concurrently", ErrVersionConflict, rec.Type, rec.ID)
	}
	if err := o.deleteIndex(ctx, rec.Type, rec.ID); err != nil {
		return err
	}
	if err := o.insertIndex(ctx, rec.Type, rec.ID, rec.Project, iv); err != nil {
		return err
	}
	rec.Version, rec.LastUpdated, rec.Body = next, now, body
	return nil
}

// Delete implements Ops: the row is kept (marked deleted, version bumped) so
// later reads answer ErrGone; its index rows are removed.
func (o *sqlOps) Delete(ctx context.Context, project, typ, id string) error {
	cur, version, deleted, err := o.current(ctx, typ, id)
	switch {
	case err != nil:
		return err
	case cur != project:
		return ErrNotFound
	case deleted:
		return ErrGone
	}
	if _, err := o.exec(ctx,
		"UPDATE resources SET deleted = ?, version = ?, last_updated = ? WHERE type = ? AND id = ?",
		true, version+1, o.d.timeArg(storeNow()), typ, id); err != nil {
		return o.d.wrap("delete "+typ, err)
	}
	return o.deleteIndex(ctx, typ, id)
}

const selectRecord = "SELECT r.type, r.id, r.project, r.version, r.last_updated, r.deleted, r.body FROM resources r"

// Read implements Ops.
func (o *sqlOps) Read(ctx context.Context, project, typ, id string) (*Record, error) {
	rec, deleted, err := o.readRow(ctx, typ, id)
	switch {
	case err != nil:
		return nil, err
	case rec.Project != project:
		return nil, ErrNotFound
	case deleted:
		return nil, ErrGone
	}
	return rec, nil
}

// ReadAny implements Ops.
func (o *sqlOps) ReadAny(ctx context.Context, typ, id string) (*Record, error) {
	rec, deleted, err := o.readRow(ctx, typ, id)
	switch {
	case err != nil:
		return nil, err
	case deleted:
		return nil, ErrGone
	}
	return rec, nil
}

func (o *sqlOps) readRow(ctx context.Context, typ, id string) (*Record, bool, error) {
	query := selectRecord + " WHERE r.type = ? AND r.id = ?"
	if o.inTx {
		query += o.d.forUpdate
	}
	row := o.queryRow(ctx, query, typ, id)
	rec, deleted, err := scanRecord(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, ErrNotFound
	}
	if err != nil {
		return nil, false, o.d.wrap("read "+typ, err)
	}
	return rec, deleted, nil
}

// scanRecord reads the columns of selectRecord.
func scanRecord(row interface{ Scan(...any) error }) (*Record, bool, error) {
	var (
		rec     Record
		ts      dbTime
		deleted bool
		body    []byte
	)
	if err := row.Scan(&rec.Type, &rec.ID, &rec.Project, &rec.Version, &ts, &deleted, &body); err != nil {
		return nil, false, err
	}
	rec.LastUpdated = ts.t
	rec.Body = body
	return &rec, deleted, nil
}

// Search implements Ops.
func (o *sqlOps) Search(ctx context.Context, q Query) ([]Record, int, error) {
	count := q.Count
	switch {
	case count < 0 || q.Offset < 0:
		return nil, 0, fmt.Errorf("%w: negative _count or offset", ErrUnsupportedParam)
	case count == 0:
		count = searchDefaultCount
	case count > searchMaxCount:
		count = searchMaxCount
	}
	f, err := buildSearchFilter(q)
	if err != nil {
		return nil, 0, err
	}
	var total int
	if err := o.queryRow(ctx, "SELECT count(*) FROM resources r WHERE "+f.where, f.args...).Scan(&total); err != nil {
		return nil, 0, o.d.wrap("search "+q.Type, err)
	}
	if total <= q.Offset {
		return []Record{}, total, nil
	}
	args := append(append([]any{}, f.args...), count, q.Offset)
	rows, err := o.query(ctx, selectRecord+" WHERE "+f.where+" ORDER BY r.last_updated, r.id LIMIT ? OFFSET ?", args...)
	if err != nil {
		return nil, 0, o.d.wrap("search "+q.Type, err)
	}
	defer rows.Close()
	recs := make([]Record, 0, min(count, total-q.Offset))
	for rows.Next() {
		rec, _, err := scanRecord(rows)
		if err != nil {
			return nil, 0, o.d.wrap("search "+q.Type, err)
		}
		recs = append(recs, *rec)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, o.d.wrap("search "+q.Type, err)
	}
	return recs, total, nil
}

// insertIndex writes the search rows of one resource.
func (o *sqlOps) insertIndex(ctx context.Context, typ, id, project string, iv indexValues) error {
	if len(iv.Identifiers) > 0 {
		args := make([]any, 0, 5*len(iv.Identifiers))
		for _, t := range iv.Identifiers {
			args = append(args, typ, id, project, nullable(t.System), nullable(t.Value))
		}
		if _, err := o.exec(ctx, "INSERT INTO identifier_index (type, id, project, system, value) VALUES "+
			rowsOf(len(iv.Identifiers), 5), args...); err != nil {
			return o.d.wrap("index "+typ, err)
		}
	}
	if len(iv.NameParts) > 0 {
		args := make([]any, 0, 4*len(iv.NameParts))
		for _, p := range iv.NameParts {
			args = append(args, typ, id, project, p)
		}
		if _, err := o.exec(ctx, "INSERT INTO name_index (type, id, project, part) VALUES "+
			rowsOf(len(iv.NameParts), 4), args...); err != nil {
			return o.d.wrap("index "+typ, err)
		}
	}
	if m := iv.Membership; m != nil {
		if _, err := o.exec(ctx,
			"INSERT INTO memberships (id, project, profile, external_id, active, admin) VALUES (?, ?, ?, ?, ?, ?)",
			id, project, m.Profile, nullable(m.ExternalID), m.Active, m.Admin); err != nil {
			return o.d.wrap("index "+typ, err)
		}
	}
	if l := iv.Login; l != nil {
		if _, err := o.exec(ctx, "INSERT INTO logins (id, project, membership, token_hash, revoked) VALUES (?, ?, ?, ?, ?)",
			id, project, l.Membership, nullable(l.TokenHash), l.Revoked); err != nil {
			return o.d.wrap("index "+typ, err)
		}
	}
	return nil
}

// deleteIndex removes the search rows of one resource.
func (o *sqlOps) deleteIndex(ctx context.Context, typ, id string) error {
	var stmts []string
	switch {
	case IsProfileType(typ):
		stmts = []string{
			"DELETE FROM identifier_index WHERE type = ? AND id = ?",
			"DELETE FROM name_index WHERE type = ? AND id = ?",
		}
	case typ == TypeProjectMembership:
		stmts = []string{"DELETE FROM memberships WHERE id = ?"}
	case typ == TypeLogin:
		stmts = []string{"DELETE FROM logins WHERE id = ?"}
	}
	for _, stmt := range stmts {
		args := []any{typ, id}
		if strings.Count(stmt, "?") == 1 {
			args = args[1:]
		}
		if _, err := o.exec(ctx, stmt, args...); err != nil {
			return o.d.wrap("unindex "+typ, err)
		}
	}
	return nil
}

// rowsOf returns n VALUES tuples of width placeholders each.
func rowsOf(n, width int) string {
	tuple := "(" + placeholders(width) + ")"
	return strings.Repeat(tuple+", ", n-1) + tuple
}

// nullable turns a nil string pointer into SQL NULL.
func nullable(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// dbTime scans a timestamp stored natively (PostgreSQL) or as RFC 3339 text (SQLite).
type dbTime struct{ t time.Time }

// Scan implements sql.Scanner.
func (d *dbTime) Scan(v any) error {
	var s string
	switch x := v.(type) {
	case time.Time:
		d.t = x.UTC()
		return nil
	case string:
		s = x
	case []byte:
		s = string(x)
	default:
		return fmt.Errorf("fhir: cannot scan %T as a timestamp", v)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("fhir: bad stored timestamp %q: %w", s, err)
	}
	d.t = t.UTC()
	return nil
}

// migrate applies, in one transaction, every embedded migration not yet
// recorded in schema_migrations. Files are named NNNN_description.sql and
// applied in numeric order.
func migrate(ctx context.Context, db *sql.DB, d *dialect) error {
	type migration struct {
		version int64
		name    string
	}
	entries, err := fs.ReadDir(d.migrations, ".")
	if err != nil {
		return fmt.Errorf("fhir: read %s migrations: %w", d.name, err)
	}
	var all []migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, _, _ := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if err != nil || v <= 0 {
			return fmt.Errorf("fhir: migration %s: name must start with a positive number", e.Name())
		}
		all = append(all, migration{v, e.Name()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].version < all[j].version })

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return d.wrap("migrate", err)
	}
	defer func() { _ = tx.Rollback() }()
	if d.lockMigrations != nil {
		if err := d.lockMigrations(ctx, tx); err != nil {
			return d.wrap("migration lock", err)
		}
	}
	o := &sqlOps{q: tx, d: d}
	if _, err := o.exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT NOT NULL PRIMARY KEY,
		name       TEXT   NOT NULL,
		applied_at TEXT   NOT NULL
	)`); err != nil {
		return d.wrap("migrate", err)
	}
	applied := map[int64]bool{}
	rows, err := o.query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return d.wrap("migrate", err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return d.wrap("migrate", err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return d.wrap("migrate", err)
	}
	for _, m := range all {
		if applied[m.version] {
			continue
		}
		script, err := fs.ReadFile(d.migrations, m.name)
		if err != nil {
			return fmt.Errorf("fhir: read migration %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, string(script)); err != nil {
			return d.wrap("migration "+m.name, err)
		}
		if _, err := o.exec(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			m.version, m.name, time.Now().UTC().Format(lastUpdatedLayout)); err != nil {
			return d.wrap("migration "+m.name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return d.wrap("migrate", err)
	}
	return nil
}
