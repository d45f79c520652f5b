package extauth

import (
	"context"
	"encoding/base64"
)

// ReasonRevoked marks the negative cache entry of a token whose Login was
// revoked (POST /oauth2/logout).
const ReasonRevoked = "revoked"

// Revoke makes tok unusable until it expires: its cached validation is
// deleted and replaced by a negative entry that lives until the token's exp,
// so the token is refused without another userinfo call. The Login record is
// the durable part of a revocation; this entry only makes the refusal cheap.
func (a *Authenticator) Revoke(ctx context.Context, tok *Token) {
	a.Forget(ctx, tok)
	a.store(ctx, tok, entry{Negative: ReasonRevoked}, tok.Expires.Sub(a.now()))
}

// Hash returns the base64url SHA-256 of the raw token: the identifier under
// which a revocation is recorded. It reveals nothing usable about the token.
func (t *Token) Hash() string { return base64.RawURLEncoding.EncodeToString(t.hash[:]) }
