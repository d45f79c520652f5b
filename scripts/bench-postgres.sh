#!/usr/bin/env bash
# Runs the load tool on a throwaway PostgreSQL database. Called through
# test-env.sh, which provides FHIRGATE_TEST_POSTGRES_URL (a server URL).
set -euo pipefail
server="${FHIRGATE_TEST_POSTGRES_URL:?run through scripts/test-env.sh}"
db="fhirgate_bench_$$"
psql "$server" -qc "CREATE DATABASE $db" >&2
trap 'psql "$server" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >&2' EXIT
url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$server" "$db")
go run ./cmd/fhirgate-bench -database "$url" "$@"
