// Command fhirgate runs the fhirgate server and its administrative
// subcommands: serve, bootstrap and version.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/fhirgate/fhirgate/config"
	"github.com/fhirgate/fhirgate/fhir"
	"github.com/fhirgate/fhirgate/membership"
	"github.com/fhirgate/fhirgate/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  fhirgate serve [-config FILE] [-pprof ADDR]       run the server (-pprof: profiling on a loopback address)
  fhirgate bootstrap [-config FILE] -project NAME   create a project and its admin client
  fhirgate version                                  print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stderr)
	case "bootstrap":
		err = bootstrap(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "fhirgate", version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "fhirgate: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "fhirgate:", err)
		}
		return 1
	}
	return 0
}

func loadConfig(fs *flag.FlagSet, args []string) (*config.Config, error) {
	path := fs.String("config", "fhirgate.json", "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return config.Load(*path, os.Getenv)
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060); off by default")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if err := checkPprofAddr(*pprofAddr); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv, err := server.New(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("key listen: %w", err)
	}
	httpServer := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	if *pprofAddr != "" {
		stopProfiling, err := startPprof(*pprofAddr, log)
		if err != nil {
			return err
		}
		defer stopProfiling()
	}
	log.Info("fhirgate listening", "addr", ln.Addr().String(), "baseUrl", cfg.BaseURL, "version", version)
	served := make(chan error, 1)
	go func() { served <- httpServer.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

func bootstrap(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	project := fs.String("project", "", "name of the project to create (required)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if *project == "" {
		return errors.New("bootstrap: -project NAME is required")
	}
	ctx := context.Background()
	store, err := fhir.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("key database: %w", err)
	}
	defer store.Close()
	out, err := membership.New(store, nil).Bootstrap(ctx, *project)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(out)
}
