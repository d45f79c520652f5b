package middleware

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    string
		err     error
	}{
		{"none", nil, "", errNoCredentials},
		{"bearer", []string{"Bearer abc.def.ghi"}, "abc.def.ghi", nil},
		{"scheme case-insensitive", []string{"bEaReR abc"}, "abc", nil},
		{"b64token padding", []string{"Bearer abc=="}, "abc==", nil},
		{"all b64token characters", []string{"Bearer aZ09-._~+/"}, "aZ09-._~+/", nil},
		{"basic", []string{"Basic dXNlcjpwYXNz"}, "", errNoCredentials},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", errMalformed},
		{"empty token", []string{"Bearer "}, "", errMalformed},
		{"scheme only", []string{"Bearer"}, "", errMalformed},
		{"two spaces", []string{"Bearer  abc"}, "", errMalformed},
		{"space inside", []string{"Bearer a b"}, "", errMalformed},
		{"only padding", []string{"Bearer =="}, "", errMalformed},
		{"padding inside", []string{"Bearer a=b"}, "", errMalformed},
		{"quote", []string{`Bearer "abc"`}, "", errMalformed},
		{"non-ASCII", []string{"Bearer abcé"}, "", errMalformed},
		{"control character", []string{"Bearer abc\x01"}, "", errMalformed},
		{"at the limit", []string{"Bearer " + strings.Repeat("a", MaxTokenSize)}, strings.Repeat("a", MaxTokenSize), nil},
		{"over the limit", []string{"Bearer " + strings.Repeat("a", MaxTokenSize+1)}, "", errTooLarge},
		{"empty header", []string{""}, "", errMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.headers {
				h.Add("Authorization", v)
			}
			got, err := bearerToken(h)
			if err != tt.err || got != tt.want {
				t.Fatalf("bearerToken = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	for id, ok := range map[string]bool{"abc-123_X": true, "": false, strings.Repeat("a", 65): false, "a b": false, "a\nb": false, "<script>": false} {
		if validRequestID(id) != ok {
			t.Errorf("validRequestID(%q) = %v", id, !ok)
		}
	}
	if a, b := newRequestID(), newRequestID(); a == b || !validRequestID(a) {
		t.Fatalf("request ids %q %q", a, b)
	}
}

// TestRequestLogOmitsQueryAndHeaders: the one log line per request carries
// the request id, route and status, and never the query string or headers,
// where tokens travel.
func TestRequestLogOmitsQueryAndHeaders(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	r := gin.New()
	r.Use(RequestLog(log))
	r.GET("/x/:id", func(c *gin.Context) { c.Status(http.StatusTeapot) })

	req := httptest.NewRequest(http.MethodGet, "/x/1?access_token=SECRET-QUERY", nil)
	req.Header.Set("Authorization", "Bearer SECRET-HEADER")
	req.Header.Set(HeaderRequestID, "given-id")
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)

	line := buf.String()
	for _, want := range []string{`"request_id":"given-id"`, `"route":"/x/:id"`, `"status":418`, `"path":"/x/1"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %s: %s", want, line)
		}
	}
	if strings.Contains(line, "SECRET") {
		t.Fatalf("log line leaks the query or a header: %s", line)
	}
	if w.Header().Get(HeaderRequestID) != "given-id" {
		t.Fatalf("request id not echoed: %q", w.Header().Get(HeaderRequestID))
	}
	if strings.Count(line, "\n") != 1 {
		t.Fatalf("want one line per request, got %q", line)
	}
}

func TestRecoverAnswersOperationOutcome(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	r := gin.New()
	r.Use(RequestLog(log), Recover(log))
	r.GET("/boom", func(*gin.Context) { panic("kaput") })
	w := httptest.NewRecorder()
	r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/boom", nil))
	id := w.Header().Get(HeaderRequestID)
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"code":"exception"`) || !strings.Contains(w.Body.String(), id) {
		t.Fatalf("panic answer: %d %s", w.Code, w.Body.String())
	}
	if !strings.Contains(buf.String(), `"panic":"kaput"`) || !strings.Contains(buf.String(), id) {
		t.Fatalf("panic not logged with the request id: %s", buf.String())
	}
}
