package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxRequests bounds the requests of one Run when Spec.MaxRequests is
// zero, so that a run ends even if its clock misbehaves.
const DefaultMaxRequests = 50_000_000

// Spec describes one load run: Concurrency workers, each sending requests
// made by Request one after another over a keep-alive client, first for
// Warmup (not measured), then for Duration (measured).
type Spec struct {
	// Client sends the requests; see NewClient.
	Client *http.Client
	// Concurrency is the number of workers (≥ 1).
	Concurrency int
	// Warmup and Duration are the lengths of the two phases.
	Warmup, Duration time.Duration
	// Request returns the next request of worker w (0 ≤ w < Concurrency).
	// It is called from that worker's goroutine only.
	Request func(w int) (*http.Request, error)
	// Expect is the status every response must have; another status is an
	// error. Zero means 200.
	Expect int
	// BeforeMeasure, when set, runs once after every warm-up request has
	// completed and before the measured phase starts (to snapshot counters).
	BeforeMeasure func()
	// MaxRequests bounds the measured phase (0: DefaultMaxRequests).
	MaxRequests int64
}

// Result summarises the measured phase of a run.
type Result struct {
	Requests int64         // completed requests
	Errors   int64         // transport errors plus unexpected statuses
	Elapsed  time.Duration // from the start of the phase to the last response
	P50, P99 time.Duration
	Max      time.Duration
	// Statuses counts responses by status code (0: transport error).
	Statuses map[int]int64
	// FirstError describes the first error seen, "" when there was none.
	FirstError string
}

// RPS returns the completed requests per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// NewClient returns a keep-alive client for loopback load at the given
// concurrency: every worker keeps its own idle connection.
func NewClient(concurrency int) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: t, Timeout: 30 * time.Second}
}

// worker is the state of one load goroutine.
type worker struct {
	hist     Histogram
	requests int64
	errors   int64
	statuses map[int]int64
	firstErr string
	last     time.Time
}

func (w *worker) fail(msg string) {
	w.errors++
	if w.firstErr == "" {
		w.firstErr = msg
	}
}

// Run executes spec and returns the result of its measured phase. It returns
// an error only for a bad spec or when ctx ends; failed requests are counted
// in the result.
func Run(ctx context.Context, spec Spec) (Result, error) {
	if spec.Client == nil || spec.Request == nil || spec.Concurrency < 1 || spec.Duration <= 0 {
		return Result{}, errors.New("loadtest: Spec needs Client, Request, Concurrency ≥ 1 and Duration > 0")
	}
	if spec.Expect == 0 {
		spec.Expect = http.StatusOK
	}
	if spec.MaxRequests <= 0 {
		spec.MaxRequests = DefaultMaxRequests
	}
	if spec.Warmup > 0 {
		if _, err := phase(ctx, spec, spec.Warmup, spec.MaxRequests); err != nil {
			return Result{}, err
		}
	}
	if spec.BeforeMeasure != nil {
		spec.BeforeMeasure()
	}
	return phase(ctx, spec, spec.Duration, spec.MaxRequests)
}

// phase runs the workers for d (or until max requests were started) and
// waits for every request to complete.
func phase(ctx context.Context, spec Spec, d time.Duration, max int64) (Result, error) {
	workers := make([]worker, spec.Concurrency)
	var started atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.statuses = map[int]int64{}
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) && started.Add(1) <= max {
				w.one(spec, id)
			}
		}(i)
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var (
		res  = Result{Statuses: map[int]int64{}}
		hist Histogram
		last = start
	)
	for i := range workers {
		w := &workers[i]
		hist.Merge(&w.hist)
		res.Requests += w.requests
		res.Errors += w.errors
		for code, n := range w.statuses {
			res.Statuses[code] += n
		}
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
		if w.last.After(last) {
			last = w.last
		}
	}
	res.Elapsed = last.Sub(start)
	res.P50, res.P99, res.Max = hist.Quantile(0.50), hist.Quantile(0.99), hist.Max()
	return res, nil
}

// one sends a single request and records its outcome.
func (w *worker) one(spec Spec, id int) {
	req, err := spec.Request(id)
	if err != nil {
		w.requests++
		w.statuses[0]++
		w.fail("build request: " + err.Error())
		w.last = time.Now()
		return
	}
	t0 := time.Now()
	resp, err := spec.Client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t1 := time.Now()
	w.last = t1
	w.requests++
	w.hist.Record(t1.Sub(t0))
	switch {
	case err != nil:
		w.statuses[0]++
		w.fail(err.Error())
	default:
		w.statuses[resp.StatusCode]++
		if resp.StatusCode != spec.Expect {
			w.fail(fmt.Sprintf("status %d, want %d", resp.StatusCode, spec.Expect))
		}
	}
}

// StatusSummary renders statuses as "200×1234 401×5", sorted by code.
func StatusSummary(statuses map[int]int64) string {
	codes := make([]int, 0, len(statuses))
	for c := range statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "transport-error"
		}
		parts[i] = fmt.Sprintf("%s×%d", name, statuses[c])
	}
	return strings.Join(parts, " ")
}

// Each sends n requests, made by Request(i) for i in [0, n), with the given
// concurrency, and returns how many did not answer expect (0: 200) together
// with the first such failure. It stops early when ctx ends or timeout
// passes; the requests not sent then count as failed.
func Each(ctx context.Context, client *http.Client, concurrency, n int, timeout time.Duration, expect int, request func(i int) (*http.Request, error)) (failed int64, first string) {
	if expect == 0 {
		expect = http.StatusOK
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		next    atomic.Int64
		nfailed atomic.Int64
		once    sync.Once
		wg      sync.WaitGroup
	)
	note := func(msg string) {
		nfailed.Add(1)
		once.Do(func() { first = msg })
	}
	for range max(1, min(concurrency, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				req, err := request(i)
				if err != nil {
					note("build request: " + err.Error())
					continue
				}
				resp, err := client.Do(req.WithContext(ctx))
				if err != nil {
					note(err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != expect {
					note(fmt.Sprintf("status %d, want %d", resp.StatusCode, expect))
				}
			}
		}()
	}
	wg.Wait()
	if sent := next.Load(); sent < int64(n) {
		nfailed.Add(int64(n) - sent)
		once.Do(func() { first = ctx.Err().Error() })
	}
	return nfailed.Load(), first
}
