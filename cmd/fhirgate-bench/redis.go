package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// redisProc is a private redis-server started for one benchmark run.
type redisProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	url  string
}

// startRedis runs redis-server from PATH on a free loopback port, without
// persistence, with its working directory in dir, and waits until it answers
// PING.
func startRedis(dir string) (*redisProc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server is not on PATH; install it or pass -redis redis://127.0.0.1:6379/0")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ { // a free port can be taken before redis binds it
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := runRedis(bin, dir, port)
		if err == nil {
			return p, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("start redis-server: %w", lastErr)
}

func runRedis(bin, dir string, port int) (*redisProc, error) {
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--loglevel", "warning",
	)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &redisProc{cmd: cmd, done: make(chan struct{}), url: "redis://127.0.0.1:" + strconv.Itoa(port) + "/0"}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < 100; i++ { // at most ≈ 10 s
		select {
		case <-p.done:
			return nil, errors.New("redis-server exited early (port taken?)")
		case <-time.After(100 * time.Millisecond):
		}
		if ping(addr) == nil {
			return p, nil
		}
	}
	p.stop()
	return nil, errors.New("redis-server did not answer PING within 10s")
}

// stop kills the server and waits for it to exit.
func (p *redisProc) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected reply %q", line)
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
