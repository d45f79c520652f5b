// Package testredis is a test helper that gives each test a private, real
// redis-server on a free loopback port and kills it when the test ends. Without
// redis-server on PATH it falls back to FHIRGATE_TEST_REDIS_URL, or skips the
// test (fails it under CI=true, where a missing Redis must never pass silently).
package testredis

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvURL names the environment variable holding the URL of an existing Redis,
// used when redis-server is not installed.
const EnvURL = "FHIRGATE_TEST_REDIS_URL"

// startTimeout bounds how long a redis-server may take to become ready.
const startTimeout = 15 * time.Second

// Server is a Redis server for one test.
type Server struct {
	t       testing.TB
	url     string
	private bool // false: an external server from EnvURL

	mu   sync.Mutex
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start returns a running Redis for t: a private redis-server when one is
// installed, else the server named by FHIRGATE_TEST_REDIS_URL. Without
// either it skips t, or fails it when the environment has CI=true.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if u := os.Getenv(EnvURL); u != "" {
			return &Server{t: t, url: u}
		}
		msg := "testredis: redis-server is not on PATH and " + EnvURL + " is not set"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing Redis is a failure; install redis-server)")
		}
		t.Skip(msg)
	}
	s, err := start(bin, t.TempDir())
	if err != nil {
		t.Fatalf("testredis: %v", err)
	}
	s.t = t
	t.Cleanup(s.kill)
	return s
}

// StartProcess runs a private redis-server from PATH, working in dir, for a
// program that is not a test (the load tool). Close stops it; Stop and
// Restart must not be used.
func StartProcess(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH; install it or pass a Redis URL")
	}
	return start(bin, dir)
}

// Close stops a server started by StartProcess.
func (s *Server) Close() { s.kill() }

// start runs bin on a free loopback port, retrying when another process takes
// the port first.
func start(bin, dir string) (*Server, error) {
	s := &Server{private: true, bin: bin, dir: dir}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ { // a free port can be taken before redis binds it
		port, err := freePort()
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		s.mu.Lock()
		s.port = port
		lastErr = s.startLocked()
		s.mu.Unlock()
		if lastErr == nil {
			s.url = "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"
			return s, nil
		}
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

// URL returns the server's redis:// URL.
func (s *Server) URL() string { return s.url }

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	u, err := url.Parse(s.url)
	if err != nil {
		return ""
	}
	return u.Host
}

// Stop kills the server (SIGKILL) and waits for it to exit, so that clients
// see a dead Redis. It skips the test when the server is not private.
func (s *Server) Stop() {
	s.t.Helper()
	if !s.private {
		s.t.Skip("testredis: Stop needs a private redis-server; " + EnvURL + " names a shared one")
	}
	s.kill()
}

// Restart starts the server again on the same port, with an empty dataset.
// It skips the test when the server is not private.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.private {
		s.t.Skip("testredis: Restart needs a private redis-server; " + EnvURL + " names a shared one")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	if err := s.startLocked(); err != nil {
		s.t.Fatalf("testredis: restart redis-server on port %d: %v", s.port, err)
	}
}

func (s *Server) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Server) killLocked() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd, s.done = nil, nil
}

// startLocked runs redis-server on s.port and returns once it logs that it
// accepts connections and answers PING. The caller holds s.mu.
func (s *Server) startLocked() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--loglevel", "notice",
	)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	ready := make(chan struct{})
	var (
		logMu sync.Mutex
		log   []string // the first lines, for the error message
	)
	go func() {
		// Read the log until redis is ready, then keep draining it so that
		// redis never blocks on a full pipe.
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if !signalled {
				logMu.Lock()
				if len(log) < 40 {
					log = append(log, line)
				}
				logMu.Unlock()
				if strings.Contains(line, "Ready to accept connections") {
					close(ready)
					signalled = true
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(done)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	fail := func(reason string) error {
		_ = cmd.Process.Kill()
		<-done
		logMu.Lock()
		defer logMu.Unlock()
		return fmt.Errorf("%s; log:\n%s", reason, strings.Join(log, "\n"))
	}
	select {
	case <-ready:
	case <-done:
		return fail("redis-server exited early")
	case <-timer.C:
		return fail("redis-server not ready after " + startTimeout.String())
	}
	if err := ping("127.0.0.1:" + strconv.Itoa(s.port)); err != nil {
		return fail("PING failed: " + err.Error())
	}
	s.cmd, s.done = cmd, done
	return nil
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return errors.New("unexpected reply " + strconv.Quote(line))
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
