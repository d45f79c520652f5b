package extauth

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxUserInfoBody caps the userinfo response body read, in bytes.
const MaxUserInfoBody = 64 << 10

// userInfo asks p's userinfo endpoint whether it accepts tok (SPEC §5 step 5).
// It returns nil when the IdP accepted the token, else an *Error.
func (a *Authenticator) userInfo(ctx context.Context, p *provider, tok *Token) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.UserInfoTimeout.Duration)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.UserInfoURL, nil)
	if err != nil {
		return unavailable(ReasonIdPMisconfigured, DefaultRetryAfter, errors.New("invalid userInfoUrl"))
	}
	req.Header.Set("Authorization", "Bearer "+tok.raw)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "fhirgate")

	start := time.Now()
	resp, err := a.client.Do(req)
	a.metrics.userinfoSeconds.WithLabelValues(p.cfg.Issuer).Observe(time.Since(start).Seconds())
	if err != nil {
		status := "error"
		if errors.Is(err, context.DeadlineExceeded) {
			status = "timeout"
		}
		a.metrics.userinfo.WithLabelValues(p.cfg.Issuer, status).Inc()
		a.log.WarnContext(ctx, "extauth: userinfo call failed", "token", tok, "status", status, "error", err)
		// err is a *url.Error naming the URL, never the Authorization header.
		return unavailable(ReasonIdPUnavailable, DefaultRetryAfter, err)
	}
	defer resp.Body.Close()
	a.metrics.userinfo.WithLabelValues(p.cfg.Issuer, strconv.Itoa(resp.StatusCode)).Inc()

	switch code := resp.StatusCode; {
	case code == http.StatusOK:
		return a.checkUserInfoBody(ctx, resp, tok)
	case code == http.StatusBadRequest || code == http.StatusUnauthorized || code == http.StatusForbidden:
		drain(resp.Body)
		return &Error{Kind: KindInvalid, Reason: ReasonUserInfoRejected, negative: true}
	case code == http.StatusTooManyRequests || code >= 500:
		drain(resp.Body)
		ra := retryAfter(resp.Header.Get("Retry-After"), a.now())
		a.log.WarnContext(ctx, "extauth: IdP unavailable", "token", tok, "status", code, "retry_after", ra)
		return unavailable(ReasonIdPUnavailable, ra, nil)
	default:
		drain(resp.Body)
		a.log.ErrorContext(ctx, "extauth: unexpected userinfo status; check userInfoUrl", "token", tok,
			"provider", p.cfg.Issuer, "status", code)
		return unavailable(ReasonIdPMisconfigured, DefaultRetryAfter, nil)
	}
}

// checkUserInfoBody reads a 200 answer: a JSON object or a JWT, whose sub,
// when present, must equal the token's sub.
func (a *Authenticator) checkUserInfoBody(ctx context.Context, resp *http.Response, tok *Token) error {
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	isJSON := err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
	isJWT := err == nil && mt == "application/jwt"
	if !isJSON && !isJWT {
		drain(resp.Body)
		a.log.ErrorContext(ctx, "extauth: userinfo answered 200 with an unexpected media type", "token", tok, "content_type", mt)
		return unavailable(ReasonIdPBadResponse, DefaultRetryAfter, nil)
	}
	if resp.ContentLength > MaxUserInfoBody {
		a.log.WarnContext(ctx, "extauth: userinfo body too large", "token", tok, "content_length", resp.ContentLength)
		return unavailable(ReasonIdPBadResponse, DefaultRetryAfter, nil)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, resp.Body, MaxUserInfoBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			a.log.WarnContext(ctx, "extauth: userinfo body too large", "token", tok)
			return unavailable(ReasonIdPBadResponse, DefaultRetryAfter, nil)
		}
		a.log.WarnContext(ctx, "extauth: userinfo body read failed", "token", tok, "error", err)
		return unavailable(ReasonIdPUnavailable, DefaultRetryAfter, err)
	}

	var claims object
	if isJSON {
		claims, err = decodeObject(body, []string{"sub"})
		if err != nil {
			a.log.ErrorContext(ctx, "extauth: userinfo body is not a JSON object", "token", tok)
			return unavailable(ReasonIdPBadResponse, DefaultRetryAfter, nil)
		}
	} else {
		// A signed (or encrypted) userinfo response. Its signature is not
		// checked: the TLS connection to the configured endpoint is what makes
		// the answer trustworthy. When its payload is readable, its sub is
		// compared like a JSON answer's.
		claims = unverifiedJWTClaims(strings.TrimSpace(string(body)))
	}
	if claims.has("sub") {
		sub, ok := claims.string("sub")
		if !ok {
			a.log.ErrorContext(ctx, "extauth: userinfo sub is not a string", "token", tok)
			return unavailable(ReasonIdPBadResponse, DefaultRetryAfter, nil)
		}
		if tok.Subject != "" && sub != tok.Subject {
			a.log.WarnContext(ctx, "extauth: userinfo sub differs from token sub", "token", tok)
			return &Error{Kind: KindInvalid, Reason: ReasonUserInfoSubMismatch, negative: true}
		}
	}
	return nil
}

// unverifiedJWTClaims returns the payload of a compact JWS when it decodes to
// a JSON object, else nil (for example for an encrypted JWT).
func unverifiedJWTClaims(s string) object {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := decodeSegment(parts[1])
	if err != nil {
		return nil
	}
	claims, err := decodeObject(payload, []string{"sub"})
	if err != nil {
		return nil
	}
	return claims
}

// retryAfter parses a Retry-After header (delay in seconds or an HTTP date)
// into a delay between 1 s and MaxRetryAfter; DefaultRetryAfter when absent
// or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return DefaultRetryAfter
	}
	var d time.Duration
	if n, err := strconv.ParseUint(h, 10, 64); err == nil {
		if n > uint64(MaxRetryAfter/time.Second) {
			n = uint64(MaxRetryAfter / time.Second)
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now).Round(time.Second)
	} else {
		return DefaultRetryAfter
	}
	return min(max(d, time.Second), MaxRetryAfter)
}

// drain reads a little of an unused body so the connection can be reused.
func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, 4<<10)) }
