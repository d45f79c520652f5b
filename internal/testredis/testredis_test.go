package testredis

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") {
		t.Fatalf("URL = %q, want a loopback redis:// URL", s.URL())
	}
	steps := []struct {
		name  string
		do    func()
		alive bool
	}{
		{"started", func() {}, true},
		{"stopped", s.Stop, false},
		{"stopped twice", s.Stop, false},
		{"restarted", s.Restart, true},
		{"restarted while running", s.Restart, true},
	}
	for _, st := range steps {
		st.do()
		err := ping(s.Addr())
		if alive := err == nil; alive != st.alive {
			t.Fatalf("%s: PING error = %v, want alive = %v", st.name, err, st.alive)
		}
	}
}

// recorder is a testing.TB that records Skip and Fatal instead of acting on
// them, ending the goroutine as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skip(args ...any)  { r.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Fatal(args ...any) { r.failed = fmt.Sprint(args...); runtime.Goexit() }
func (r *recorder) Skipf(format string, args ...any) {
	r.Skip(fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.Fatal(fmt.Sprintf(format, args...))
}

func TestWithoutRedisServer(t *testing.T) {
	tests := []struct {
		name        string
		envURL, ci  string
		wantURL     string
		wantSkip    bool
		wantFailure bool
	}{
		{"external url", "redis://10.0.0.1:6379/2", "", "redis://10.0.0.1:6379/2", false, false},
		{"nothing: skip", "", "", "", true, false},
		{"nothing under CI: fail", "", "true", "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir()) // no redis-server here
			t.Setenv(EnvURL, tc.envURL)
			t.Setenv("CI", tc.ci)
			rec := &recorder{TB: t}
			var s *Server
			done := make(chan struct{})
			go func() {
				defer close(done)
				s = Start(rec)
			}()
			<-done
			if got := rec.skipped != ""; got != tc.wantSkip {
				t.Errorf("skipped = %q, want skip %v", rec.skipped, tc.wantSkip)
			}
			if got := rec.failed != ""; got != tc.wantFailure {
				t.Errorf("failed = %q, want failure %v", rec.failed, tc.wantFailure)
			}
			if tc.wantFailure && !strings.Contains(rec.failed, "CI=true") {
				t.Errorf("failure message %q does not explain the CI rule", rec.failed)
			}
			if tc.wantURL != "" {
				if s == nil || s.URL() != tc.wantURL {
					t.Fatalf("Start returned %+v, want URL %q", s, tc.wantURL)
				}
				// Stop and Restart need a private server: they skip.
				for _, f := range []func(){s.Stop, s.Restart} {
					rec.skipped = ""
					done := make(chan struct{})
					s.t = rec
					go func() { defer close(done); f() }()
					<-done
					if rec.skipped == "" {
						t.Error("Stop/Restart on an external server did not skip")
					}
				}
			}
		})
	}
}

func TestPingRejectsNonRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n"))
		_ = c.Close()
	}()
	if err := ping(l.Addr().String()); err == nil {
		t.Fatal("ping accepted a server that is not Redis")
	}
}
