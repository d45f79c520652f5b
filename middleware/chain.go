// Package middleware is the gin authentication chain of SPEC §5 and the
// request plumbing around it (request ids, JSON request logs, panic
// recovery, error responses). Token checks live in plain Go in the oauth,
// extauth and membership packages; this package orders them and turns their
// results into HTTP answers.
package middleware

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/fhirgate/fhirgate/caller"
	"github.com/fhirgate/fhirgate/extauth"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/fhirgate/fhirgate/oauth"
	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Chain authenticates requests: local tokens with our issuer, external tokens
// with the extauth Authenticator, identities with the membership Service.
type Chain struct {
	issuer   *oauth.Issuer
	external *extauth.Authenticator
	members  *membership.Service
	log      *slog.Logger
	metrics  *Metrics
}

// NewChain returns the authentication chain; metrics may be nil.
func NewChain(issuer *oauth.Issuer, external *extauth.Authenticator, members *membership.Service, log *slog.Logger, metrics *Metrics) *Chain {
	return &Chain{issuer: issuer, external: external, members: members, log: log, metrics: metrics}
}

// ctxKeyReason is the gin key under which the chain leaves the reason of a
// refusal for the request log.
const ctxKeyReason = "fhirgate.auth_reason"

// ctxKeyAuthError holds the underlying error of a refusal (never token
// material) for the request log.
const ctxKeyAuthError = "fhirgate.auth_error"

// ctxKeyExternalToken holds the *extauth.Token of an external caller, for logout.
const ctxKeyExternalToken = "fhirgate.external_token"

// failure is a refusal with its HTTP answer and a reason for the log.
type failure struct {
	status     int
	reason     string
	retryAfter time.Duration
	err        error
}

func refuse(reason string) *failure { return &failure{status: http.StatusUnauthorized, reason: reason} }

// Authenticate is the gin middleware: it puts a *caller.Caller in the request
// context or aborts with the answer of SPEC §5.
func (ch *Chain) Authenticate(c *gin.Context) {
	raw, err := bearerToken(c.Request.Header)
	if err != nil {
		switch err {
		case errNoCredentials:
			ch.metrics.authResult("none", "no_credentials")
			c.Set(ctxKeyReason, "no_credentials")
			c.Header("WWW-Authenticate", `Bearer realm="fhirgate"`)
			fhir.WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication required: send Authorization: Bearer <token>")
		default:
			ch.metrics.authResult("none", "malformed_header")
			c.Set(ctxKeyReason, "malformed_header")
			c.Header("WWW-Authenticate", `Bearer realm="fhirgate", error="invalid_request"`)
			fhir.WriteError(c, http.StatusBadRequest, models.IssueTypeInvalid, "malformed Authorization header: "+err.Error())
		}
		return
	}
	var cl *caller.Caller
	var f *failure
	kind := "external"
	if ch.issuer.LooksLocal(raw) {
		kind = "local"
		if claims, err := ch.issuer.Verify(raw); err != nil {
			f = &failure{status: http.StatusUnauthorized, reason: "local_token", err: err}
		} else {
			cl, f = ch.local(c.Request.Context(), claims)
		}
	} else {
		cl, f = ch.externalToken(c, raw)
	}
	if f != nil {
		ch.metrics.authResult(kind, f.reason)
		ch.fail(c, f)
		return
	}
	ch.metrics.authResult(kind, "ok")
	c.Request = c.Request.WithContext(caller.With(c.Request.Context(), cl))
	c.Next()
}

// local is step 2 after the signature check: the token's Login and membership.
func (ch *Chain) local(ctx context.Context, claims *oauth.Claims) (*caller.Caller, *failure) {
	login, err := ch.members.LoginState(ctx, claims.LoginID)
	if err != nil {
		return nil, storeFailure(err, "login_not_found")
	}
	if login.Revoked || login.Membership != claims.Membership {
		return nil, refuse("login_revoked")
	}
	m, err := ch.members.MembershipState(ctx, claims.Membership)
	if err != nil {
		return nil, storeFailure(err, "membership_not_found")
	}
	if !m.Active || m.Project != claims.Project {
		return nil, refuse("membership_inactive")
	}
	if m.Profile != claims.Profile {
		return nil, refuse("membership_changed")
	}
	return &caller.Caller{
		Project:    claims.Project,
		Membership: claims.Membership,
		Profile:    claims.Profile,
		Login:      claims.LoginID,
		ClientID:   claims.ClientID,
		Admin:      m.Admin,
		AuthMethod: login.AuthMethod,
		Expires:    claims.ExpiresAt.Time,
	}, nil
}

// externalToken is steps 3 to 7 for an external IdP token.
func (ch *Chain) externalToken(c *gin.Context, raw string) (*caller.Caller, *failure) {
	ctx := c.Request.Context()
	// Only plain strings go into the resolve closure: it may outlive this
	// request (a shared validation), and gin reuses its contexts.
	peer, agent := c.Request.RemoteAddr, c.Request.UserAgent()
	tok, res, err := ch.external.Authenticate(ctx, raw, func(ctx context.Context, tok *extauth.Token) (*extauth.Result, error) {
		remote, _, splitErr := net.SplitHostPort(peer)
		if splitErr != nil {
			remote = peer
		}
		return ch.resolve(ctx, tok, remote, agent)
	})
	if err != nil {
		return nil, externalFailure(err)
	}
	c.Set(ctxKeyExternalToken, tok)
	// Every request re-reads the Login and the membership, cached or not: a
	// revocation, a deactivated or deleted membership stop working at once,
	// on every instance.
	login, err := ch.members.LoginState(ctx, res.Login)
	if err != nil {
		return nil, storeFailure(err, "login_not_found")
	}
	if login.Revoked {
		ch.external.Revoke(ctx, tok)
		return nil, refuse("login_revoked")
	}
	m, err := ch.members.MembershipState(ctx, res.Membership)
	if err != nil && !errors.Is(err, fhir.ErrNotFound) && !errors.Is(err, fhir.ErrGone) {
		return nil, storeFailure(err, "")
	}
	if err != nil || !m.Active {
		ch.external.Forget(ctx, tok)
		return nil, refuse("membership_inactive")
	}
	// The membership must still be the one the token resolved to: an admin
	// who moves externalId away from this subject, or points the membership
	// at another profile, ends the sessions the old mapping made.
	if m.Profile != res.Profile || (!tok.HasFHIRUser && m.ExternalID != tok.Subject) {
		ch.external.Forget(ctx, tok)
		return nil, refuse("membership_changed")
	}
	return &caller.Caller{
		Project:    res.Project,
		Membership: res.Membership,
		Profile:    res.Profile,
		Login:      res.Login,
		Admin:      m.Admin,
		AuthMethod: caller.MethodExternal,
		Expires:    tok.Expires,
	}, nil
}

// resolve is steps 6 and 7: find the one membership and record the Login.
func (ch *Chain) resolve(ctx context.Context, tok *extauth.Token, remote, agent string) (*extauth.Result, error) {
	var projects []string
	if len(tok.Provider.Projects) > 0 {
		projects = tok.Provider.Projects
	}
	var m *fhir.ProjectMembership
	var err error
	if tok.HasFHIRUser {
		m, err = ch.members.ResolveFHIRUser(ctx, tok.FHIRUser, projects)
	} else {
		m, err = ch.members.ResolveSubject(ctx, tok.Subject, projects)
	}
	if err != nil {
		return nil, err
	}
	if revoked, err := ch.members.TokenRevoked(ctx, tok.Hash()); err != nil || revoked {
		if err == nil {
			err = &membership.ResolveError{Reason: "login_revoked"}
		}
		return nil, err
	}
	loginID, err := ch.members.RecordLogin(ctx, membership.LoginInput{
		Membership:    m,
		AuthMethod:    caller.MethodExternal,
		Issuer:        tok.Issuer,
		Subject:       tok.Subject,
		TokenHash:     tok.Hash(),
		RemoteAddress: remote,
		UserAgent:     agent,
	})
	if err != nil {
		return nil, err
	}
	// A logout that committed between the check above and this Login did
	// not see it: look again, and never hand out a Login of a revoked token.
	if revoked, err := ch.members.TokenRevoked(ctx, tok.Hash()); err != nil || revoked {
		if err == nil {
			err = ch.members.RevokeLogin(ctx, loginID)
		}
		if err == nil {
			err = &membership.ResolveError{Reason: "login_revoked"}
		}
		return nil, err
	}
	profile := ""
	if m.Profile.Reference != nil {
		profile = *m.Profile.Reference
	}
	return &extauth.Result{Project: membership.ProjectOf(m), Membership: m.ID, Profile: profile, Login: loginID}, nil
}

func externalFailure(err error) *failure {
	var ee *extauth.Error
	var re *membership.ResolveError
	switch {
	case errors.As(err, &ee):
		switch ee.Kind {
		case extauth.KindMalformedRequest:
			return &failure{status: http.StatusBadRequest, reason: ee.Reason}
		case extauth.KindUnavailable:
			return &failure{status: http.StatusServiceUnavailable, reason: ee.Reason, retryAfter: ee.RetryAfter, err: ee.Err}
		}
		return &failure{status: http.StatusUnauthorized, reason: ee.Reason, err: ee.Err}
	case errors.As(err, &re):
		return refuse(re.Reason)
	}
	return storeFailure(err, "")
}

// storeFailure maps a store error: not found → 401 with reason, unavailable
// → 503, anything else → 500.
func storeFailure(err error, notFoundReason string) *failure {
	switch {
	case notFoundReason != "" && (errors.Is(err, fhir.ErrNotFound) || errors.Is(err, fhir.ErrGone)):
		return refuse(notFoundReason)
	case errors.Is(err, fhir.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return &failure{status: http.StatusServiceUnavailable, reason: "database_unavailable", retryAfter: 5 * time.Second, err: err}
	}
	return &failure{status: http.StatusInternalServerError, reason: "internal", err: err}
}

// fail writes the answer for f. 401 bodies are generic: which check failed is
// only logged.
func (ch *Chain) fail(c *gin.Context, f *failure) {
	c.Set(ctxKeyReason, f.reason)
	ctx := c.Request.Context()
	switch f.status {
	case http.StatusBadRequest:
		c.Header("WWW-Authenticate", `Bearer realm="fhirgate", error="invalid_request"`)
		fhir.WriteError(c, f.status, models.IssueTypeInvalid, "the bearer token is too large")
	case http.StatusServiceUnavailable:
		secs := int(f.retryAfter.Round(time.Second) / time.Second)
		if secs <= 0 {
			secs = 30
		}
		c.Header("Retry-After", strconv.Itoa(secs))
		ch.log.WarnContext(ctx, "authentication unavailable", "request_id", RequestID(c), "reason", f.reason, "error", errString(f.err))
		fhir.WriteError(c, f.status, models.IssueTypeTransient, "the identity provider or database is unavailable; retry after "+strconv.Itoa(secs)+" seconds")
	case http.StatusInternalServerError:
		ch.log.ErrorContext(ctx, "authentication failed with an internal error", "error", errString(f.err), "request_id", RequestID(c))
		fhir.WriteError(c, f.status, models.IssueTypeException, "internal error (request id "+RequestID(c)+")")
	default:
		if f.err != nil {
			c.Set(ctxKeyAuthError, f.err.Error())
		}
		c.Header("WWW-Authenticate", `Bearer realm="fhirgate", error="invalid_token"`)
		fhir.WriteError(c, http.StatusUnauthorized, models.IssueTypeLogin, "authentication failed")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Logout revokes the Login behind the presented token (POST /oauth2/logout):
// local tokens of that Login and the external token stop working at once.
func (ch *Chain) Logout(c *gin.Context) {
	ctx := c.Request.Context()
	cl := caller.From(ctx)
	if err := ch.members.RevokeLogin(ctx, cl.Login); err != nil {
		ch.fail(c, storeFailure(err, "login_not_found"))
		return
	}
	if v, ok := c.Get(ctxKeyExternalToken); ok {
		ch.external.Revoke(ctx, v.(*extauth.Token))
	}
	c.Header("Cache-Control", "no-store")
	c.Status(http.StatusNoContent)
}
