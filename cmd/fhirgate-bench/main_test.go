package main

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	f, err := parseFlags([]string{"-scenarios", "forged-jwks, external-cached,forged-jwks", "-duration", "2s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// baseline always runs, first; duplicates dropped; canonical order.
	want := []string{scBaseline, scExternalCached, scForgedJWKS}
	if !slices.Equal(f.scenarios, want) {
		t.Errorf("scenarios = %v, want %v", f.scenarios, want)
	}
	for _, args := range [][]string{
		{"-scenarios", "nope"},
		{"-concurrency", "0"},
		{"-duration", "0s"},
		{"-memory-tokens", "-1"},
		{"extra"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestJudge(t *testing.T) {
	ratio := func(v float64) *float64 { return &v }
	cases := []struct {
		r    row
		want string
	}{
		{row{Scenario: scExternalCached, Ratio: ratio(0.95)}, verdictOK},
		{row{Scenario: scExternalCached, Ratio: ratio(0.85)}, verdictMissed},
		{row{Scenario: scExternalCached, Ratio: ratio(0.95), Errors: 1}, verdictMissed},
		{row{Scenario: scExternal10k, Ratio: ratio(0.85)}, verdictOK},
		{row{Scenario: scExternalCold, IdPCalls: 10, Tokens: 10}, verdictOK},
		{row{Scenario: scExternalCold, IdPCalls: 11, Tokens: 10}, verdictMissed},
		{row{Scenario: scForgedJWKS}, verdictOK},
		{row{Scenario: scForgedJWKS, IdPCalls: 1}, verdictMissed},
		{row{Scenario: scBaseline, Ratio: ratio(1)}, ""},
	}
	for _, c := range cases {
		r := c.r
		judge(&r)
		if r.Verdict != c.want {
			t.Errorf("%+v: verdict %q, want %q", c.r, r.Verdict, c.want)
		}
	}
}

func TestPrintTable(t *testing.T) {
	one := 1.0
	res := &results{Concurrency: 64, Duration: "5s", Scenarios: []row{
		{Scenario: scBaseline, RPS: 1000, Ratio: &one},
		{Scenario: scExternalCold, Errors: 2, Statuses: "200×8 503×2", FirstError: "status 503, want 200", Verdict: verdictMissed},
		{Scenario: scCachedRedisOnly, Verdict: verdictSkipped, Note: "needs an option"},
	}}
	var out bytes.Buffer
	if err := printTable(&out, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MISSED", "SKIPPED", "needs an option", "first error: status 503"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}
