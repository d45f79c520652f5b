package middleware

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/fhirgate/fhirgate/fhir"
	"github.com/gin-gonic/gin"
	models "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

const (
	ctxKeyRequestID = "fhirgate.request_id"
	// HeaderRequestID carries the request id in and out.
	HeaderRequestID = "X-Request-Id"
)

// RequestID returns the id of the request (set by the RequestLog middleware).
func RequestID(c *gin.Context) string { return c.GetString(ctxKeyRequestID) }

// RequestLog assigns a request id (keeping a well-formed incoming
// X-Request-Id) and writes one JSON log line per request. It logs the route
// and path but never the query string, headers or body, where tokens travel.
func RequestLog(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		id := c.GetHeader(HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Set(ctxKeyRequestID, id)
		c.Header(HeaderRequestID, id)
		c.Next()
		attrs := []slog.Attr{
			slog.String("request_id", id),
			slog.String("method", c.Request.Method),
			slog.String("route", c.FullPath()),
			slog.String("path", c.Request.URL.Path),
			slog.Int("status", c.Writer.Status()),
			slog.Int("bytes", c.Writer.Size()),
			slog.Duration("duration", time.Since(start)),
			slog.String("remote", c.ClientIP()),
		}
		if reason := c.GetString(ctxKeyReason); reason != "" {
			attrs = append(attrs, slog.String("auth_reason", reason))
		}
		if detail := c.GetString(ctxKeyAuthError); detail != "" {
			attrs = append(attrs, slog.String("auth_error", detail))
		}
		log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
	}
}

// Recover turns a panic into a 500 OperationOutcome carrying the request id,
// and logs the panic with that id.
func Recover(log *slog.Logger) gin.HandlerFunc {
	return gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, err any) {
		log.ErrorContext(c.Request.Context(), "panic while serving a request", "request_id", RequestID(c), "panic", fmt.Sprint(err))
		fhir.WriteError(c, http.StatusInternalServerError, models.IssueTypeException, "internal error (request id "+RequestID(c)+")")
	})
}

func newRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func validRequestID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// NotFound answers unknown routes with an OperationOutcome.
func NotFound(c *gin.Context) {
	fhir.WriteError(c, http.StatusNotFound, models.IssueTypeNotFound, "no such endpoint: "+c.Request.Method+" "+c.Request.URL.Path)
}

// MethodNotAllowed answers a known route called with another method.
func MethodNotAllowed(c *gin.Context) {
	fhir.WriteError(c, http.StatusMethodNotAllowed, models.IssueTypeNotSupported, "method "+c.Request.Method+" is not allowed on "+c.Request.URL.Path)
}
