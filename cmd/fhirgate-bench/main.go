// Command fhirgate-bench is the load tool behind `make bench`. It starts, in
// this process and on loopback only, a private redis-server, a test IdP with
// real keys and a userinfo latency (default 20 ms), and a fhirgate server
// (temporary SQLite database unless -database is given, Redis as the shared
// cache). It then drives fixed-concurrency, time-bounded scenarios and prints
// one table: requests/s, p50 and p99 latency, errors, IdP userinfo calls, and
// the ratio to the no-auth baseline measured in the same run, with the
// targets of issue 5 as notes (reported, never asserted: the exit status is 0
// when a target is MISSED).
//
// Every scenario reads the same Practitioner (the benchmark user's profile)
// and, after a warm-up, runs -concurrency workers over keep-alive
// connections for -duration. The scenarios and what they measure:
//
//   - baseline: the FHIR read at /_bench/noauth/fhir/R4 — the same handlers
//     with authentication replaced by a fixed caller (server.Options.
//     BenchmarkCaller, which no configuration can turn on). The cost of
//     everything but authentication; the other rows are ratios to it.
//   - baseline+header: the baseline read carrying the external-cached
//     scenario's Authorization header, which the no-auth route ignores: what
//     moving a ~1 KB header costs client and server, apart from checking it.
//     Its ratio tells how much of the gap to the authenticated rows is the
//     header's transport rather than authentication.
//   - local-token: the read with one of our own ES256 access tokens (from
//     /oauth2/userinfo): signature verification (memoized per token) plus
//     the Login and membership state checks.
//   - external-cached: one external IdP token, cached after its first use:
//     the cost of the cached external path (hashing, memoized pre-checks,
//     in-process cache hit, Login and membership state).
//   - external-10k: 10 000 distinct external tokens, all warmed before the
//     measurement, used round robin: the cached path with a realistic key
//     set instead of one hot entry.
//   - external-cold: a new token on every request, so every request
//     validates at the IdP: IdP-bound throughput, and proof that each
//     distinct token costs exactly one userinfo call.
//   - forged-jwks: tokens for the provider configured with jwksUri, signed by
//     a key that is not in its JWKS: each must get 401 with zero userinfo
//     calls (the signature is checked before any network call).
//   - external-cached-redis-only: external-cached against a second instance
//     with the in-process cache layer off, so every hit is a Redis round
//     trip: what the in-process layer buys. It needs
//     server.Options.DisableLocalCache and is SKIPPED without it.
//
// The baseline runs first and again after the other scenarios; ratios are to
// the mean of both runs, and the baseline row notes the drift between them
// (a busy machine shows there rather than in the ratios).
//
// The resident memory of the process is reported after external-10k. With
// -memory-tokens N the tool then warms two stages of N distinct tokens
// (fast IdP, high concurrency) and reports RSS and Go heap before and after
// each: with the in-process layer's size limit holding, the second stage
// adds little.
//
// Good tokens are ES256 (cheap to sign in the load generator); the load
// generator shares the machine's CPUs with the server, as the baseline does.
//
// Usage:
//
//	go run ./cmd/fhirgate-bench [-duration 5s] [-concurrency 64] [-json out.json]
//	    [-scenarios a,b] [-idp-latency 20ms] [-redis URL] [-database DSN] [-memory-tokens 100000]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fhirgate/fhirgate/internal/loadtest"
)

// flags are the command-line options.
type flags struct {
	duration, warmup   time.Duration
	concurrency        int
	warmConcurrency    int
	jsonPath           string
	scenarios          []string
	idpLatency         time.Duration
	redis, database    string
	distinct           int
	memoryTokens       int
	memoryLatency      time.Duration
	timeout            time.Duration
	serverLog          io.Writer
	serverLogPath      string
	cpuProfile         string
	scenariosRequested string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("fhirgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&f.duration, "duration", 5*time.Second, "measured length of each scenario")
	fs.DurationVar(&f.warmup, "warmup", time.Second, "unmeasured warm-up before each scenario")
	fs.IntVar(&f.concurrency, "concurrency", 64, "number of workers (concurrent connections)")
	fs.IntVar(&f.warmConcurrency, "warm-concurrency", 256, "concurrency when warming many tokens (external-10k, -memory-tokens)")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&f.scenariosRequested, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run (baseline always runs)")
	fs.DurationVar(&f.idpLatency, "idp-latency", 20*time.Millisecond, "latency of the test IdP's userinfo endpoint")
	fs.StringVar(&f.redis, "redis", "", "use this Redis URL instead of starting a private redis-server")
	fs.StringVar(&f.database, "database", "", "database DSN (default: a temporary SQLite file)")
	fs.IntVar(&f.distinct, "distinct", 10_000, "distinct tokens of external-10k")
	fs.IntVar(&f.memoryTokens, "memory-tokens", 0, "when > 0, warm two stages of this many distinct tokens and report memory")
	fs.DurationVar(&f.memoryLatency, "memory-idp-latency", time.Millisecond, "IdP latency while warming -memory-tokens")
	fs.DurationVar(&f.timeout, "timeout", 15*time.Minute, "upper bound for the whole run")
	fs.StringVar(&f.serverLogPath, "server-log", "", "write the server's JSON logs to this file (default: discarded)")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the measured scenarios (server and load generator) to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case f.duration <= 0 || f.warmup < 0 || f.timeout <= 0:
		return nil, errors.New("-duration and -timeout must be positive, -warmup not negative")
	case f.concurrency < 1 || f.concurrency > 10_000:
		return nil, errors.New("-concurrency must be in [1, 10000]")
	case f.warmConcurrency < 1 || f.warmConcurrency > 10_000:
		return nil, errors.New("-warm-concurrency must be in [1, 10000]")
	case f.distinct < 1 || f.distinct > 1_000_000:
		return nil, errors.New("-distinct must be in [1, 1000000]")
	case f.memoryTokens < 0 || f.memoryTokens > 1_000_000:
		return nil, errors.New("-memory-tokens must be in [0, 1000000]")
	case f.idpLatency < 0 || f.memoryLatency < 0:
		return nil, errors.New("IdP latencies must not be negative")
	}
	f.scenarios = []string{scBaseline}
	for _, s := range strings.Split(f.scenariosRequested, ",") {
		s = strings.TrimSpace(s)
		if s == "" || s == scBaseline {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", s, strings.Join(allScenarios, ", "))
		}
		if !slices.Contains(f.scenarios, s) {
			f.scenarios = append(f.scenarios, s)
		}
	}
	// Run in the canonical order whatever order was asked for.
	slices.SortFunc(f.scenarios, func(a, b string) int {
		return slices.Index(allScenarios, a) - slices.Index(allScenarios, b)
	})
	return f, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "fhirgate-bench:", err)
		return 2
	}
	if err := bench1(f, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "fhirgate-bench:", err)
		return 1
	}
	return 0
}

// bench1 runs one benchmark as f describes and prints the results.
func bench1(f *flags, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	if f.serverLogPath != "" {
		lf, err := os.Create(f.serverLogPath)
		if err != nil {
			return err
		}
		defer lf.Close()
		f.serverLog = lf
	}
	dir, err := os.MkdirTemp("", "fhirgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	progress := func(format string, args ...any) { fmt.Fprintf(stderr, "fhirgate-bench: "+format+"\n", args...) }
	progress("starting Redis, IdPs and server")
	e, err := start(ctx, dir, f)
	if err != nil {
		return err
	}
	defer e.close()

	b := &bench{env: e, f: f, progress: progress, client: loadtest.NewClient(max(f.concurrency, f.warmConcurrency))}
	if err := b.preflight(ctx); err != nil {
		return err
	}
	res := &results{
		Started: time.Now().UTC(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Concurrency: f.concurrency, Duration: f.duration.String(), Warmup: f.warmup.String(),
		IdPLatency: f.idpLatency.String(), Database: "SQLite (temporary)", Redis: "private redis-server",
	}
	if f.database != "" {
		res.Database = "database from -database"
	}
	if f.redis != "" {
		res.Redis = "Redis from -redis"
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	for _, name := range f.scenarios {
		progress("scenario %s", name)
		if err := b.run(ctx, name); err != nil {
			return err
		}
	}
	progress("baseline again, to judge every row against both baseline runs")
	if err := b.rebaseline(ctx); err != nil {
		return err
	}
	if f.memoryTokens > 0 {
		progress("memory: warming 2 × %d distinct tokens", f.memoryTokens)
		if err := b.measureMemory(ctx); err != nil {
			return err
		}
	}
	res.Scenarios, res.Memory = b.rows, b.mem
	if err := printTable(stdout, res); err != nil {
		return err
	}
	if f.jsonPath != "" {
		return writeJSON(f.jsonPath, res)
	}
	return nil
}
