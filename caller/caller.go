// Package caller carries the authenticated identity of a request from the
// authentication chain to the handlers. It is the only thing handlers know
// about how a request was authenticated.
package caller

import (
	"context"
	"time"
)

// Auth methods recorded on a Login.
const (
	MethodExternal          = "external"
	MethodClientCredentials = "client_credentials"
)

// Caller is who is making the request, as established by the authentication chain.
type Caller struct {
	Project    string // project id
	Membership string // ProjectMembership id
	Profile    string // reference to the profile, e.g. "Practitioner/123" or "ClientApplication/abc"
	Login      string // Login id
	ClientID   string // ClientApplication id for client credentials, else empty
	Admin      bool
	// AuthMethod is how this request authenticated: MethodExternal when it
	// carried an external IdP token, MethodClientCredentials (or another Login
	// method) when it carried one of our local access tokens.
	AuthMethod string
	// Expires is when the presented credential stops being valid.
	Expires time.Time
}

// ProfileType returns the resource type of the caller's profile ("Practitioner").
func (c *Caller) ProfileType() string {
	for i := 0; i < len(c.Profile); i++ {
		if c.Profile[i] == '/' {
			return c.Profile[:i]
		}
	}
	return c.Profile
}

// ProfileID returns the id of the caller's profile.
func (c *Caller) ProfileID() string {
	for i := 0; i < len(c.Profile); i++ {
		if c.Profile[i] == '/' {
			return c.Profile[i+1:]
		}
	}
	return ""
}

type key struct{}

// With returns a copy of ctx carrying c.
func With(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, key{}, c)
}

// From returns the caller stored in ctx, or nil when the request is unauthenticated.
func From(ctx context.Context) *Caller {
	c, _ := ctx.Value(key{}).(*Caller)
	return c
}
