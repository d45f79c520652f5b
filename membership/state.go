package membership

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/fhir"
)

// The authentication chain checks, on every request, that the caller's Login
// is not revoked and that its membership is active. Those checks read small
// state records kept in the cache (in-process, and shared through Redis when
// configured) instead of the database. Every write of a ProjectMembership or
// Login through the Service's store drops the record once the write is
// committed, and again a moment later (a reader that loaded the old row just
// before the commit may have stored it after the first drop); with Redis, a
// drop reaches every instance through its invalidation channel.

const (
	stateKeyPrefix = "fhirgate:state:v2:"
	// stateTTL bounds how long a state record lives without being dropped.
	stateTTL = time.Minute
	// redropDelay is when a write drops the state records a second time.
	redropDelay = time.Second
)

// currentGetter is implemented by caches that can refuse to answer from a
// copy that may have missed an invalidation (cache.Layered): state records
// are then read from the database instead.
type currentGetter interface {
	GetCurrent(ctx context.Context, key string) ([]byte, bool, error)
}

// LoginState is what the authentication chain needs of a Login.
type LoginState struct {
	Membership string
	AuthMethod string
	Revoked    bool
}

// MembershipState is what the authentication chain needs of a membership.
type MembershipState struct {
	Project    string
	Profile    string
	ExternalID string
	Active     bool
	Admin      bool
}

// WithCache makes the Service keep state records in c and returns s.
func (s *Service) WithCache(c cache.Cache) *Service {
	s.state = c
	return s
}

// LoginState returns the state of a Login, from the cache when it can.
func (s *Service) LoginState(ctx context.Context, id string) (*LoginState, error) {
	key := stateKeyPrefix + "login:" + id
	if f, ok := s.cachedState(ctx, key, 3); ok {
		return &LoginState{Membership: f[0], AuthMethod: f[1], Revoked: f[2] == "1"}, nil
	}
	l, err := s.Login(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &LoginState{Membership: l.Membership, AuthMethod: l.AuthMethod, Revoked: l.Revoked}
	s.storeState(ctx, key, st.Membership, st.AuthMethod, flag(st.Revoked))
	return st, nil
}

// MembershipState returns the state of a membership, from the cache when it can.
func (s *Service) MembershipState(ctx context.Context, id string) (*MembershipState, error) {
	key := stateKeyPrefix + "membership:" + id
	if f, ok := s.cachedState(ctx, key, 5); ok {
		return &MembershipState{Project: f[0], Profile: f[1], Active: f[2] == "1", Admin: f[3] == "1", ExternalID: f[4]}, nil
	}
	m, err := s.Membership(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &MembershipState{Project: ProjectOf(m), Profile: refString(m.Profile), ExternalID: m.ExternalID, Active: m.IsActive(), Admin: m.Admin}
	if !strings.ContainsAny(st.ExternalID, "\n\r") {
		s.storeState(ctx, key, st.Project, st.Profile, flag(st.Active), flag(st.Admin), st.ExternalID)
	}
	return st, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// cachedState reads a record of n newline-separated fields; cache trouble is
// a miss (the database answers instead).
func (s *Service) cachedState(ctx context.Context, key string, n int) ([]string, bool) {
	if s.state == nil {
		return nil, false
	}
	get := s.state.Get
	if c, ok := s.state.(currentGetter); ok {
		get = c.GetCurrent
	}
	b, ok, err := get(ctx, key)
	if err != nil || !ok {
		return nil, false
	}
	f := strings.Split(string(b), "\n")
	return f, len(f) == n
}

func (s *Service) storeState(ctx context.Context, key string, fields ...string) {
	if s.state != nil {
		_ = s.state.Set(ctx, key, []byte(strings.Join(fields, "\n")), stateTTL)
	}
}

// dropState removes the state records of the given "Type/id" resources now
// and again after redropDelay.
func (s *Service) dropState(ctx context.Context, refs []string) {
	if s.state == nil || len(refs) == 0 {
		return
	}
	keys := make([]string, 0, len(refs))
	for _, r := range refs {
		typ, id, _ := strings.Cut(r, "/")
		switch typ {
		case fhir.TypeLogin:
			keys = append(keys, stateKeyPrefix+"login:"+id)
		case fhir.TypeProjectMembership:
			keys = append(keys, stateKeyPrefix+"membership:"+id)
		}
	}
	drop := func(ctx context.Context) {
		for _, k := range keys {
			_ = s.state.Delete(ctx, k)
		}
	}
	drop(ctx)
	time.AfterFunc(redropDelay, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		drop(ctx)
	})
}

// watchedStore is the Service's store: it drops the state records of the
// memberships and Logins it writes once the write is committed. The FHIR API
// must write through it too (see Service.Store).
type watchedStore struct {
	fhir.Store
	s *Service
}

// Store returns the store every writer of memberships must use, so that
// cached state follows the database.
func (s *Service) Store() fhir.Store { return s.store }

func watched(typ string) bool { return typ == fhir.TypeProjectMembership || typ == fhir.TypeLogin }

func (w watchedStore) Update(ctx context.Context, rec *fhir.Record) error {
	err := w.Store.Update(ctx, rec)
	if err == nil && watched(rec.Type) {
		w.s.dropState(ctx, []string{rec.Type + "/" + rec.ID})
	}
	return err
}

func (w watchedStore) Delete(ctx context.Context, project, typ, id string) error {
	err := w.Store.Delete(ctx, project, typ, id)
	if (err == nil || errors.Is(err, fhir.ErrGone)) && watched(typ) {
		w.s.dropState(ctx, []string{typ + "/" + id})
	}
	return err
}

func (w watchedStore) WithTx(ctx context.Context, fn func(tx fhir.Ops) error) error {
	var touched []string
	err := w.Store.WithTx(ctx, func(tx fhir.Ops) error {
		return fn(watchedOps{Ops: tx, touched: &touched})
	})
	if err == nil {
		w.s.dropState(ctx, touched)
	}
	return err
}

// watchedOps records the memberships and Logins written in a transaction.
type watchedOps struct {
	fhir.Ops
	touched *[]string
}

func (o watchedOps) Update(ctx context.Context, rec *fhir.Record) error {
	err := o.Ops.Update(ctx, rec)
	if err == nil && watched(rec.Type) {
		*o.touched = append(*o.touched, rec.Type+"/"+rec.ID)
	}
	return err
}

func (o watchedOps) Delete(ctx context.Context, project, typ, id string) error {
	err := o.Ops.Delete(ctx, project, typ, id)
	if err == nil && watched(typ) {
		*o.touched = append(*o.touched, typ+"/"+id)
	}
	return err
}
