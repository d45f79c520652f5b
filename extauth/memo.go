package extauth

import (
	"crypto/sha256"
	"time"

	"github.com/fhirgate/fhirgate/cache"
)

// parsedMemoEntries bounds the memo of parsed tokens.
const parsedMemoEntries = 100_000

// parsedMemo remembers, per process, the parse of tokens that authenticated,
// keyed by the SHA-256 of the exact token bytes, so the hot path of a cached
// token is a hash and two map reads instead of a full parse. Parse is
// deterministic for given bytes and configuration, and its only
// time-dependent outcome, expiry, is the memo entry's own expiry; nbf and iat
// were already in the past. The memo never holds the raw token.
type parsedMemo struct {
	m   *cache.Local[*Token]
	now func() time.Time
}

func newParsedMemo(now func() time.Time) *parsedMemo {
	return &parsedMemo{m: cache.NewLocal[*Token](parsedMemoEntries, now), now: now}
}

// get returns a copy of the parse of raw, carrying raw, when one is memoized;
// key is the memo key of raw either way.
func (p *parsedMemo) get(raw string) (tok *Token, key string) {
	sum := sha256.Sum256([]byte(raw))
	key = string(sum[:])
	t, ok := p.m.Get(key) // entries expire with their token (see put)
	if !ok {
		return nil, key
	}
	c := *t
	c.raw = raw
	return &c, key
}

// put memoizes tok (without its raw token) until it expires.
func (p *parsedMemo) put(key string, tok *Token) {
	c := *tok
	c.raw = ""
	p.m.Set(key, &c, tok.Expires.Sub(p.now()))
}
