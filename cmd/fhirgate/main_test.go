package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary's main as a child process.
func TestMain(m *testing.M) {
	if os.Getenv("FHIRGATE_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func writeConfig(t *testing.T, listen string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{
		"baseUrl":        "http://" + listen + "/",
		"listen":         listen,
		"database":       "sqlite:" + filepath.Join(dir, "db"),
		"signingKeyFile": filepath.Join(dir, "key.pem"),
	}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(dir, "fhirgate.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "fhirgate ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "unknown command") {
		t.Fatalf("unknown command: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"bootstrap", "-config", writeConfig(t, "127.0.0.1:1")}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "-project NAME is required") {
		t.Fatalf("bootstrap without -project: %d %q", code, errOut.String())
	}
	errOut.Reset()
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"lisen":":1"}`), 0o600)
	if code := run([]string{"serve", "-config", bad}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), `unknown key "lisen"`) ||
		strings.Count(errOut.String(), "\n") != 1 {
		t.Fatalf("bad config: %d %q", code, errOut.String())
	}
}

func TestBootstrapPrintsCredentials(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"bootstrap", "-config", writeConfig(t, "127.0.0.1:1"), "-project", "Demo"}, &out, &errOut); code != 0 {
		t.Fatalf("bootstrap: %d %s", code, errOut.String())
	}
	var got map[string]string
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("stdout is not one JSON object: %q", out.String())
	}
	for _, k := range []string{"projectId", "clientId", "clientSecret"} {
		if got[k] == "" {
			t.Errorf("%s missing in %v", k, got)
		}
	}
}

// TestServeDrainsOnSIGTERM starts the real binary, waits until it answers,
// sends SIGTERM and expects exit status 0.
func TestServeDrainsOnSIGTERM(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(os.Args[0], "serve", "-config", writeConfig(t, addr))
	cmd.Env = append(os.Environ(), "FHIRGATE_RUN_MAIN=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	var log strings.Builder
	timeout := time.After(30 * time.Second)
	for up := false; !up; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("server exited before listening:\n%s", log.String())
			}
			log.WriteString(l + "\n")
			up = strings.Contains(l, "fhirgate listening")
		case <-timeout:
			_ = cmd.Process.Kill()
			t.Fatalf("server did not come up:\n%s", log.String())
		}
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/healthz", addr))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve did not exit cleanly on SIGTERM: %v", err)
	}
	for l := range lines {
		log.WriteString(l + "\n")
	}
	if !strings.Contains(log.String(), `"msg":"stopped"`) {
		t.Fatalf("no clean stop logged:\n%s", log.String())
	}
}

func TestPprofOnlyOnLoopback(t *testing.T) {
	var out, errOut bytes.Buffer
	cfg := writeConfig(t, "127.0.0.1:1")
	if code := run([]string{"serve", "-config", cfg, "-pprof", "0.0.0.0:6060"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "not a loopback") {
		t.Fatalf("pprof on 0.0.0.0: %d %q", code, errOut.String())
	}
	stop, err := startPprof("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stop()
}
