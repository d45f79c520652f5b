// Command fhirgate-devidp is a development OpenID provider for the README
// quick-start and for manual tests: it serves discovery, JWKS and userinfo on
// loopback and prints signed RS256 tokens for given claims.
//
// Usage:
//
//	fhirgate-devidp serve [-listen 127.0.0.1:8090] [-key data/devidp-key.pem] [-issuer URL]
//	fhirgate-devidp token -sub alice [-fhir-user Practitioner/123] [-ttl 1h] [-key data/devidp-key.pem]
//	                      [-issuer http://127.0.0.1:8090] [-aud fhirgate]
//
// Its RSA key is kept in a PKCS#8 PEM file (created with mode 0600 when
// absent), so tokens survive restarts. It refuses to listen anywhere but on
// loopback: it hands out tokens to whoever asks and must never be exposed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const (
	defaultListen = "127.0.0.1:8090"
	defaultKey    = "data/devidp-key.pem"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: fhirgate-devidp serve|token [flags]")
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "token":
		err = token(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "fhirgate-devidp: unknown command %q (want serve or token)\n", args[0])
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case err != nil:
		fmt.Fprintln(stderr, "fhirgate-devidp:", err)
		return 1
	}
	return 0
}

// errUsage marks a flag error that the flag package already reported.
var errUsage = errors.New("usage")

func parse(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", defaultListen, "loopback address to listen on")
	keyFile := fs.String("key", defaultKey, "RSA signing key (PKCS#8 PEM), created if absent")
	issuer := fs.String("issuer", "", "issuer URL (default http://<listen>)")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if err := checkLoopback(*listen); err != nil {
		return err
	}
	s, err := loadOrCreateKey(*keyFile)
	if err != nil {
		return fmt.Errorf("-key: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() { // "localhost" resolved elsewhere
		ln.Close()
		return fmt.Errorf("-listen %q: resolved to non-loopback %s", *listen, ln.Addr())
	}
	iss := *issuer
	if iss == "" {
		iss = "http://" + ln.Addr().String()
	}
	srv := &http.Server{
		Handler:           s.handler(iss, time.Now),
		ReadHeaderTimeout: 10 * time.Second,
	}
	fmt.Fprintf(stderr, "fhirgate-devidp: issuer %s, userinfo %s/userinfo, jwks %s/jwks.json\n", iss, iss, iss)
	return serveUntil(ctx, srv, ln)
}

// serveUntil serves on ln until ctx ends, then drains in-flight requests.
func serveUntil(ctx context.Context, srv *http.Server, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func token(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	sub := fs.String("sub", "", "subject (required)")
	fhirUser := fs.String("fhir-user", "", "fhirUser claim, e.g. Practitioner/123")
	ttl := fs.Duration("ttl", time.Hour, "lifetime")
	keyFile := fs.String("key", defaultKey, "RSA signing key (PKCS#8 PEM), created if absent")
	issuer := fs.String("issuer", "http://"+defaultListen, "iss claim; must match the serving IdP's issuer")
	aud := fs.String("aud", "fhirgate", "aud claim")
	if err := parse(fs, args, stderr); err != nil {
		return err
	}
	if *sub == "" {
		fmt.Fprintln(stderr, "token: -sub is required")
		return errUsage
	}
	s, err := loadOrCreateKey(*keyFile)
	if err != nil {
		return fmt.Errorf("-key: %w", err)
	}
	tok, err := s.mint(tokenRequest{
		issuer: strings.TrimSuffix(*issuer, "/"), audience: *aud, sub: *sub, fhirUser: *fhirUser,
		ttl: *ttl, now: time.Now(),
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// checkLoopback refuses a listen address whose host is not a loopback IP or
// "localhost" (an empty host would mean every interface).
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("-listen %q: only loopback addresses are allowed (127.0.0.1, ::1, localhost)", addr)
}
