package cache_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// recordingHandler is a slog.Handler that keeps every record at or above
// level.
type recordingHandler struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

// dialDeadRedis makes go-redis log a dial failure.
func dialDeadRedis(t *testing.T) {
	t.Helper()
	srv := testredis.Start(t)
	url := srv.URL()
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := cache.NewRedis(ctx, url); err == nil {
		_ = r.Close()
		t.Fatal("NewRedis of a dead server succeeded")
	}
}

func TestSetRedisLogger(t *testing.T) {
	t.Cleanup(func() { cache.SetRedisLogger(nil) })

	debug := &recordingHandler{level: slog.LevelDebug}
	cache.SetRedisLogger(slog.New(debug))
	dialDeadRedis(t)
	var found bool
	for _, r := range debug.records() {
		if !strings.Contains(r.Message, "failed to dial") {
			continue
		}
		found = true
		if r.Level != slog.LevelDebug {
			t.Errorf("go-redis line logged at %v, want DEBUG", r.Level)
		}
		var component string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" {
				component = a.Value.String()
			}
			return true
		})
		if component != "go-redis" {
			t.Errorf("component = %q, want go-redis", component)
		}
	}
	if !found {
		t.Fatalf("no go-redis dial failure reached the slog logger; got %d records", len(debug.records()))
	}

	// A logger above Debug records nothing from go-redis.
	info := &recordingHandler{level: slog.LevelInfo}
	cache.SetRedisLogger(slog.New(info))
	dialDeadRedis(t)
	if recs := info.records(); len(recs) != 0 {
		t.Fatalf("an Info logger received %d go-redis records, first %q", len(recs), recs[0].Message)
	}
}
