package extauth

import (
	"fmt"
	"time"
)

// Kind tells the caller how to answer a failed authentication.
type Kind int

const (
	// KindInvalid means the token is not acceptable: answer 401.
	KindInvalid Kind = iota + 1
	// KindMalformedRequest means the request itself is unacceptable (a token
	// over the size cap): answer 400 invalid_request.
	KindMalformedRequest
	// KindUnavailable means the token could not be checked because the IdP
	// (userinfo or JWKS) is unreachable, rate-limiting or misconfigured: answer
	// 503 with a Retry-After of Error.RetryAfter.
	KindUnavailable
)

// String returns the kind's name, for logs.
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindMalformedRequest:
		return "malformed_request"
	case KindUnavailable:
		return "unavailable"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Reasons carried by Error.Reason. They are short, stable, machine-readable
// labels for logs and metrics; none of them carries any part of the token.
const (
	ReasonTooLarge            = "too_large"             // token over MaxTokenSize
	ReasonMalformed           = "malformed"             // not a compact JWS with JSON object header and payload
	ReasonDuplicateKey        = "duplicate_key"         // a repeated or case-variant header/claim name
	ReasonUnknownIssuer       = "unknown_issuer"        // iss missing or not a configured issuer
	ReasonAlgNotAllowed       = "alg_not_allowed"       // alg not in the provider's algorithms
	ReasonCritHeader          = "crit_header"           // a crit header is present
	ReasonKeyHeader           = "key_header"            // jku, x5u, jwk or x5c header present
	ReasonTypeNotAccepted     = "typ_not_accepted"      // typ not in the provider's acceptedTypes
	ReasonNoExpiry            = "no_expiry"             // exp missing
	ReasonExpired             = "expired"               // exp past beyond leeway
	ReasonNotYetValid         = "not_yet_valid"         // nbf in the future beyond leeway
	ReasonIssuedInFuture      = "issued_in_future"      // iat in the future beyond leeway
	ReasonAudience            = "audience"              // aud does not contain a configured audience
	ReasonBadSubject          = "bad_subject"           // sub not a non-empty string of at most 255 bytes
	ReasonBadFHIRUser         = "bad_fhiruser"          // fhirUser or ext.fhirUser present but not a string of a supported form
	ReasonNoSubject           = "no_subject"            // neither fhirUser, ext.fhirUser nor sub
	ReasonSignature           = "signature"             // signature does not verify
	ReasonUnknownKey          = "unknown_kid"           // no key of the JWKS fits the token
	ReasonKeyMismatch         = "key_alg_mismatch"      // key type does not fit alg
	ReasonJWKSUnavailable     = "jwks_unavailable"      // the JWKS could not be loaded
	ReasonNegativeCache       = "negative_cache"        // the IdP rejected this token recently
	ReasonUserInfoRejected    = "userinfo_rejected"     // userinfo answered 400, 401 or 403
	ReasonUserInfoSubMismatch = "userinfo_sub_mismatch" // userinfo sub differs from the token's sub
	ReasonIdPUnavailable      = "idp_unavailable"       // userinfo 429, 5xx, timeout or connection error
	ReasonIdPMisconfigured    = "idp_misconfigured"     // userinfo redirect, 404 or other unexpected status
	ReasonIdPBadResponse      = "idp_bad_response"      // userinfo 200 with an unusable body
	ReasonCanceled            = "canceled"              // the caller's context ended while waiting
)

// Error is a failed authentication. It never contains the token, a claim
// value or a userinfo body.
type Error struct {
	// Kind selects the HTTP answer (401, 400 or 503).
	Kind Kind
	// Reason is one of the Reason constants.
	Reason string
	// RetryAfter is set for KindUnavailable: how long the client should wait.
	RetryAfter time.Duration
	// Err is an underlying cause for logs (a network error, a library error),
	// or nil. It never wraps the token.
	Err error

	// negative marks a definite IdP rejection that is cached for a short while.
	negative bool
}

// Error returns a one-line description without any token material.
func (e *Error) Error() string {
	s := "extauth: " + e.Kind.String() + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

func invalid(reason string) *Error { return &Error{Kind: KindInvalid, Reason: reason} }

func unavailable(reason string, retryAfter time.Duration, err error) *Error {
	return &Error{Kind: KindUnavailable, Reason: reason, RetryAfter: retryAfter, Err: err}
}
