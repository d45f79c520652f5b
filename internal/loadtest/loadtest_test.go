package loadtest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 123456, 1 << 30, 5e9} {
		i := bucket(v)
		lo := lowerBound(i)
		if lo > v {
			t.Errorf("v=%d: bucket %d lower bound %d > v", v, i, lo)
		}
		if next := lowerBound(i + 1); v >= next {
			t.Errorf("v=%d: bucket %d ends at %d ≤ v", v, i, next)
		}
		if v > 0 && float64(v-lo)/float64(v) > 1.0/64 {
			t.Errorf("v=%d: error %d too large", v, v-lo)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram must give 0")
	}
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	check := func(q float64, want time.Duration) {
		t.Helper()
		got := h.Quantile(q)
		if got > want || float64(want-got)/float64(want) > 1.0/64 {
			t.Errorf("Quantile(%v) = %v, want ≈ %v", q, got, want)
		}
	}
	check(0.5, 500*time.Microsecond)
	check(0.99, 990*time.Microsecond)
	check(1, time.Millisecond)
	var other Histogram
	other.Record(time.Second)
	h.Merge(&other)
	if h.Count() != 1001 || h.Max() != time.Second {
		t.Errorf("after merge: count %d max %v", h.Count(), h.Max())
	}
}

func TestRun(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	var snapshot int64 = -1
	res, err := Run(context.Background(), Spec{
		Client:        NewClient(4),
		Concurrency:   4,
		Warmup:        20 * time.Millisecond,
		Duration:      100 * time.Millisecond,
		Request:       func(int) (*http.Request, error) { return http.NewRequest(http.MethodGet, srv.URL, nil) },
		BeforeMeasure: func() { snapshot = hits.Load() },
	})
	if err != nil {
		t.Fatal(err)
	}
	if snapshot <= 0 {
		t.Fatalf("BeforeMeasure saw %d warm-up requests", snapshot)
	}
	if res.Requests != hits.Load()-snapshot {
		t.Errorf("measured %d requests, server saw %d", res.Requests, hits.Load()-snapshot)
	}
	if res.Errors == 0 || res.Errors != res.Statuses[http.StatusTeapot] {
		t.Errorf("errors %d, statuses %v", res.Errors, res.Statuses)
	}
	if res.RPS() <= 0 || res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("rps %v p50 %v p99 %v", res.RPS(), res.P50, res.P99)
	}
}

func TestRunMaxRequests(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	res, err := Run(context.Background(), Spec{
		Client: NewClient(3), Concurrency: 3, Duration: time.Minute, MaxRequests: 50,
		Request: func(int) (*http.Request, error) { return http.NewRequest(http.MethodGet, srv.URL, nil) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 50 {
		t.Errorf("requests = %d, want 50", res.Requests)
	}
}

func TestEach(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Query().Get("i") == "7" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	failed, first := Each(context.Background(), NewClient(8), 8, 100, time.Minute, 0, func(i int) (*http.Request, error) {
		return http.NewRequest(http.MethodGet, srv.URL+"?i="+string(rune('0'+i%10)), nil)
	})
	if hits.Load() != 100 || failed != 10 || first == "" {
		t.Errorf("hits %d failed %d first %q", hits.Load(), failed, first)
	}
}

func TestRSS(t *testing.T) {
	rss, err := RSS()
	if err != nil {
		t.Skip("no /proc/self/status:", err)
	}
	if rss < 1<<20 {
		t.Errorf("RSS = %d bytes, implausibly small", rss)
	}
}
