package middleware

import (
	"errors"
	"net/http"
	"strings"
)

// MaxTokenSize caps a bearer token; a larger one is refused before parsing.
const MaxTokenSize = 8 << 10

var (
	errNoCredentials = errors.New("no bearer token")
	errMalformed     = errors.New("malformed Authorization header")
	errTooLarge      = errors.New("bearer token over 8 KiB")
)

// bearerToken extracts exactly one "Authorization: Bearer <token>" (RFC 6750
// §2.1; the scheme is case-insensitive). A missing header or another scheme is
// errNoCredentials; several headers, an empty or ill-formed token is
// errMalformed. Query-string and form tokens are never read.
func bearerToken(h http.Header) (string, error) {
	values := h.Values("Authorization")
	switch len(values) {
	case 0:
		return "", errNoCredentials
	case 1:
	default:
		return "", errMalformed
	}
	scheme, token, found := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		if found || scheme != "" {
			return "", errNoCredentials
		}
		return "", errMalformed
	}
	if len(token) > MaxTokenSize {
		return "", errTooLarge
	}
	if !isB64Token(token) {
		return "", errMalformed
	}
	return token, nil
}

// b64tokenChars marks the characters of RFC 6750's b64token before padding.
var b64tokenChars = func() (t [256]bool) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/") {
		t[c] = true
	}
	return t
}()

// isB64Token reports whether s matches RFC 6750's b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := 0; i < end; i++ {
		if !b64tokenChars[s[i]] {
			return false
		}
	}
	return true
}
