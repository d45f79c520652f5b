package membership

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fhirgate/fhirgate/fhir"
)

// LoginInput describes one successful authentication to record.
type LoginInput struct {
	Membership *fhir.ProjectMembership
	AuthMethod string
	// Issuer and Subject of the external token (external logins only). Only a
	// SHA-256 of the subject is stored.
	Issuer, Subject string
	// TokenHash identifies the external token (a hash, never the token).
	TokenHash     string
	RemoteAddress string
	UserAgent     string
}

// RecordLogin stores a Login and returns its id.
func (s *Service) RecordLogin(ctx context.Context, in LoginInput) (string, error) {
	login := fhir.Login{
		ResourceType:  fhir.TypeLogin,
		Membership:    in.Membership.ID,
		AuthMethod:    in.AuthMethod,
		Issuer:        in.Issuer,
		TokenHash:     in.TokenHash,
		Time:          s.now().UTC().Format(time.RFC3339),
		RemoteAddress: in.RemoteAddress,
		UserAgent:     truncate(in.UserAgent, 512),
	}
	if in.Subject != "" {
		sum := sha256.Sum256([]byte(in.Subject))
		login.SubjectHash = hex.EncodeToString(sum[:])
	}
	rec := &fhir.Record{Type: fhir.TypeLogin, Project: ProjectOf(in.Membership)}
	if err := createJSON(ctx, s.store, rec, login); err != nil {
		return "", err
	}
	return rec.ID, nil
}

// Login reads a Login by id.
func (s *Service) Login(ctx context.Context, id string) (*fhir.Login, error) {
	rec, err := s.store.ReadAny(ctx, fhir.TypeLogin, id)
	if err != nil {
		return nil, err
	}
	var l fhir.Login
	if err := json.Unmarshal(rec.Body, &l); err != nil {
		return nil, fmt.Errorf("decode Login/%s: %w", id, err)
	}
	l.ID = rec.ID
	return &l, nil
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// TokenRevoked reports whether a revoked Login exists for the external token
// with this hash: a revoked token stays refused for its whole life, even
// after the cache entry that made the refusal fast is gone.
func (s *Service) TokenRevoked(ctx context.Context, tokenHash string) (bool, error) {
	recs, _, err := s.store.Search(ctx, fhir.Query{
		Type:        fhir.TypeLogin,
		AllProjects: true,
		Params:      []fhir.Param{{Name: "token-hash", Value: tokenHash}, {Name: "revoked", Value: "true"}},
		Count:       1,
	})
	return len(recs) > 0, err
}

// RevokeLogin marks a Login revoked; tokens issued for it stop working. When
// the Login came from an external token, every Login of that same token is
// revoked with it: a token validated more than once (its cache entry expired
// or was evicted) has several, and a logout must end them all. Revoking a
// revoked Login is not an error.
func (s *Service) RevokeLogin(ctx context.Context, id string) error {
	return s.store.WithTx(ctx, func(tx fhir.Ops) error {
		rec, err := tx.ReadAny(ctx, fhir.TypeLogin, id)
		if err != nil {
			return err
		}
		recs := []fhir.Record{*rec}
		var login fhir.Login
		if err := json.Unmarshal(rec.Body, &login); err != nil {
			return fmt.Errorf("decode Login/%s: %w", id, err)
		}
		if login.TokenHash != "" {
			same, _, err := tx.Search(ctx, fhir.Query{
				Type:        fhir.TypeLogin,
				AllProjects: true,
				Params:      []fhir.Param{{Name: "token-hash", Value: fhir.ExactValue(login.TokenHash)}, {Name: "revoked", Value: "false"}},
				Count:       1000,
			})
			if err != nil {
				return err
			}
			recs = append(recs, same...)
		}
		for i := range recs {
			if err := markRevoked(ctx, tx, &recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// markRevoked sets revoked:true on one stored Login.
func markRevoked(ctx context.Context, tx fhir.Ops, rec *fhir.Record) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body, &fields); err != nil {
		return fmt.Errorf("decode Login/%s: %w", rec.ID, err)
	}
	if string(fields["revoked"]) == "true" {
		return nil
	}
	fields["revoked"] = json.RawMessage("true")
	body, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	rec.Body, rec.Version = body, 0
	return tx.Update(ctx, rec)
}
