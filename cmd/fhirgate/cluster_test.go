package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fhirgate/fhirgate/cache"
	"github.com/fhirgate/fhirgate/extauth"
	"github.com/fhirgate/fhirgate/internal/testdb"
	"github.com/fhirgate/fhirgate/internal/testidp"
	"github.com/fhirgate/fhirgate/internal/testredis"
)

// instance is one fhirgate process of a cluster.
type instance struct {
	url string // http://127.0.0.1:port/
	cmd *exec.Cmd
}

// cluster is N fhirgate processes sharing one PostgreSQL, one Redis, one
// signing key and one baseUrl, as behind a load balancer.
type cluster struct {
	t         *testing.T
	instances []*instance
	config    map[string]any
	dir       string
	redis     *testredis.Server
	idp       *testidp.IdP
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), redis: testredis.Start(t), idp: testidp.New(t)}
	c.config = map[string]any{
		"baseUrl":        "http://localhost:8080/",
		"database":       testdb.PostgresURL(t),
		"redisUrl":       c.redis.URL(),
		"signingKeyFile": filepath.Join(c.dir, "signing-key.pem"),
		"externalAuthProviders": []map[string]any{{
			"issuer": c.idp.Issuer(), "userInfoUrl": c.idp.UserInfoURL(), "userInfoTimeout": "1s",
		}},
	}
	var wg sync.WaitGroup
	c.instances = make([]*instance, n)
	for i := range c.instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.instances[i] = c.start(i)
		}()
	}
	wg.Wait()
	for _, in := range c.instances {
		if in == nil {
			t.FailNow()
		}
	}
	return c
}

// start runs instance i and waits until it listens.
func (c *cluster) start(i int) *instance {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Error(err)
		return nil
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := map[string]any{"listen": addr}
	for k, v := range c.config {
		cfg[k] = v
	}
	data, _ := json.Marshal(cfg)
	path := filepath.Join(c.dir, fmt.Sprintf("instance-%d.json", i))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		c.t.Error(err)
		return nil
	}
	cmd := exec.Command(os.Args[0], "serve", "-config", path)
	cmd.Env = append(os.Environ(), "FHIRGATE_RUN_MAIN=1")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		c.t.Error(err)
		return nil
	}
	c.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	up := make(chan bool, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		signalled := false
		for s.Scan() {
			if !signalled && strings.Contains(s.Text(), "fhirgate listening") {
				up <- true
				signalled = true
			}
		}
		if !signalled {
			up <- false
		}
	}()
	select {
	case ok := <-up:
		if !ok {
			c.t.Errorf("instance %d exited before listening", i)
			return nil
		}
	case <-time.After(60 * time.Second):
		c.t.Errorf("instance %d did not start", i)
		return nil
	}
	return &instance{url: "http://" + addr + "/", cmd: cmd}
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}, Timeout: 30 * time.Second}

func do(t *testing.T, method, u, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// setup bootstraps a project through the CLI and invites alice through
// another instance; it returns alice's profile reference.
func (c *cluster) setup() (adminToken, profile string) {
	t := c.t
	var out, errOut bytes.Buffer
	cfgPath := filepath.Join(c.dir, "instance-0.json")
	if code := run([]string{"bootstrap", "-config", cfgPath, "-project", "Cluster"}, &out, &errOut); code != 0 {
		t.Fatalf("bootstrap: %s", errOut.String())
	}
	var boot map[string]string
	_ = json.Unmarshal(out.Bytes(), &boot)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {boot["clientId"]}, "client_secret": {boot["clientSecret"]}}
	resp, err := client.PostForm(c.instances[0].url+"oauth2/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tok map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	adminToken, _ = tok["access_token"].(string)
	status, body := do(t, http.MethodPost, c.instances[1].url+"admin/projects/"+boot["projectId"]+"/invite", adminToken,
		map[string]any{"resourceType": "Practitioner", "firstName": "Alice", "lastName": "Smith", "externalId": "alice"})
	if status != http.StatusCreated {
		t.Fatalf("invite through instance 1: %d %s", status, body)
	}
	var m struct{ Profile struct{ Reference string } }
	_ = json.Unmarshal(body, &m)
	return adminToken, m.Profile.Reference
}

func (c *cluster) token(sub string) string {
	claims := c.idp.Claims(sub, time.Hour)
	claims["jti"] = fmt.Sprint(time.Now().UnixNano())
	return c.idp.Token(claims)
}

// spread sends n concurrent requests with token, request i to instance i%len.
func (c *cluster) spread(n int, path, token string, alive []*instance) map[int]int {
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, _ := do(c.t, http.MethodGet, alive[i%len(alive)].url+path, token, nil)
			mu.Lock()
			statuses[s]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return statuses
}

// TestClusterSingleValidation: three processes, 300 concurrent requests with
// one new external token spread across them → exactly one userinfo call.
func TestClusterSingleValidation(t *testing.T) {
	c := startCluster(t, 3)
	_, profile := c.setup()
	for round := 0; round < 3; round++ {
		c.idp.ResetCounts()
		statuses := c.spread(300, "fhir/R4/"+profile, c.token("alice"), c.instances)
		if statuses[http.StatusOK] != 300 {
			t.Fatalf("round %d: statuses %v, want 300 × 200", round, statuses)
		}
		if n := c.idp.UserInfoCalls(); n != 1 {
			t.Fatalf("round %d: %d userinfo calls for one token across 3 instances, want 1", round, n)
		}
	}
}

// TestClusterFaults: a lock left by a dead instance expires; an instance
// killed mid-load leaves the others answering and its writes in place; a
// Redis restart is survived without restarting fhirgate.
func TestClusterFaults(t *testing.T) {
	c := startCluster(t, 3)
	admin, profile := c.setup()
	ctx := context.Background()

	// A validation lock held by an instance that died: requests wait for its
	// expiry (userInfoTimeout 1s + slack), then validate.
	shared, err := cache.NewRedis(ctx, c.redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	tok := c.token("alice")
	parsed := tokenKey(t, c, tok)
	if _, ok, err := shared.TryLock(ctx, extauth.LockKeyPrefix+parsed, 3*time.Second); err != nil || !ok {
		t.Fatalf("take the lock: %v %v", ok, err)
	}
	start := time.Now()
	if s, b := do(t, http.MethodGet, c.instances[0].url+"fhir/R4/"+profile, tok, nil); s != http.StatusOK {
		t.Fatalf("with an orphaned lock: %d %s", s, b)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("an orphaned lock blocked a request for %v", waited)
	}

	// Kill instance 2 under load.
	var okCount, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	alive := c.instances[:2]
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s, _ := do(t, http.MethodGet, alive[i%2].url+"fhir/R4/"+profile, tok, nil)
				if s == http.StatusOK {
					okCount.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	if s, b := do(t, http.MethodPost, c.instances[2].url+"fhir/R4/Patient", admin, map[string]any{"resourceType": "Patient", "name": []map[string]any{{"family": "Written-By-Two"}}}); s != http.StatusCreated {
		t.Fatalf("write through instance 2: %d %s", s, b)
	}
	if err := c.instances[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.instances[2].cmd.Wait()
	wg.Wait()
	close(stop)
	if failed.Load() != 0 || okCount.Load() == 0 {
		t.Fatalf("with instance 2 killed: %d ok, %d failed on the surviving instances", okCount.Load(), failed.Load())
	}
	s, b := do(t, http.MethodGet, alive[0].url+"fhir/R4/Patient?name=Written-By-Two", admin, nil)
	if s != http.StatusOK || !strings.Contains(string(b), `"total":1`) {
		t.Fatalf("the killed instance's write is lost: %d %s", s, b)
	}

	// Restart Redis: service continues, then the cluster validates once again.
	c.redis.Restart()
	for _, in := range alive {
		if s, b := do(t, http.MethodGet, in.url+"fhir/R4/"+profile, tok, nil); s != http.StatusOK {
			t.Fatalf("after the Redis restart: %d %s", s, b)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, in := range alive {
		for {
			s, _ := do(t, http.MethodGet, in.url+"readyz", "", nil)
			if s == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after the Redis restart", in.url)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.idp.ResetCounts()
	if statuses := c.spread(100, "fhir/R4/"+profile, c.token("alice"), alive); statuses[http.StatusOK] != 100 {
		t.Fatalf("after the Redis restart: %v", statuses)
	}
	if n := c.idp.UserInfoCalls(); n != 1 {
		t.Fatalf("after the Redis restart: %d userinfo calls for one new token, want 1", n)
	}
}

// tokenKey returns the part of tok's cache key after the prefix: issuer and
// base64url SHA-256 of the token, as SPEC §5 step 4 defines it.
func tokenKey(t *testing.T, c *cluster, tok string) string {
	t.Helper()
	return c.idp.Issuer() + ":" + sha256B64(tok)
}

func sha256B64(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
