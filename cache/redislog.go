package cache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// redisLoggerOnce installs the default go-redis logger the first time a
// Redis is built, unless SetRedisLogger was called before.
var redisLoggerOnce sync.Once

// SetRedisLogger routes the internal log lines of go-redis (for example
// "failed to dial" while Redis is down, printed by default to standard error
// through the log package) to l at Debug level, tagged component=go-redis.
// A nil l means slog.Default() as it is at the time of each line. NewRedis
// installs the nil default once, so calling SetRedisLogger is only needed to
// pick another logger. go-redis has a single process-wide logger: the last
// call wins.
func SetRedisLogger(l *slog.Logger) {
	redisLoggerOnce.Do(func() {}) // NewRedis must not replace this choice
	redis.SetLogger(slogRedisLogger{l: l})
}

// installRedisLogger installs the default logger once; NewRedis calls it.
func installRedisLogger() {
	redisLoggerOnce.Do(func() { redis.SetLogger(slogRedisLogger{}) })
}

// slogRedisLogger adapts slog to go-redis's Printf-style logging interface.
type slogRedisLogger struct {
	l *slog.Logger // nil: slog.Default()
}

// Printf logs one go-redis line at Debug level. The line is formatted only
// when the logger would record it.
func (s slogRedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l := s.l
	if l == nil {
		l = slog.Default()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !l.Enabled(ctx, slog.LevelDebug) {
		return
	}
	l.LogAttrs(ctx, slog.LevelDebug, fmt.Sprintf(format, v...), slog.String("component", "go-redis"))
}
