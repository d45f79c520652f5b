#!/usr/bin/env bash
# Provides the services the tests need, then runs the command given as
# arguments with FHIRGATE_TEST_POSTGRES_URL set.
#   - redis-server: the tests start private servers themselves; it is
#     installed from Debian's packages when missing.
#   - PostgreSQL: FHIRGATE_TEST_POSTGRES_URL when set; else a server on
#     127.0.0.1:5432 that answers; else a private throwaway cluster started
#     here (PostgreSQL installed from Debian's packages when missing) and
#     removed on exit. The tests create a database of their own per run.
set -euo pipefail

log() { echo "test-env: $*" >&2; }

apt_install() {
	if ! command -v apt-get >/dev/null; then
		log "cannot install $* (no apt-get); install it and retry"
		return 1
	fi
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	if [ -z "${APT_UPDATED:-}" ]; then
		$sudo apt-get update -qq >&2
		APT_UPDATED=1
	fi
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

if ! command -v redis-server >/dev/null; then
	log "redis-server missing; installing it"
	apt_install redis-server
fi

pg_bin() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && { echo "$d"; return 0; }
	done
	return 1
}

cleanup=""
trap 'eval "$cleanup"' EXIT

if [ -z "${FHIRGATE_TEST_POSTGRES_URL:-}" ]; then
	if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && \
		psql "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" -Atc 'select 1' >/dev/null 2>&1; then
		export FHIRGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		log "using PostgreSQL on 127.0.0.1:5432"
	else
		bin=$(pg_bin) || { log "PostgreSQL missing; installing it"; apt_install postgresql; bin=$(pg_bin); }
		dir=$(mktemp -d /tmp/fhirgate-pg.XXXXXX)
		port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
		run_as=()
		if [ "$(id -u)" -eq 0 ]; then
			chown postgres "$dir" 2>/dev/null || chown nobody "$dir"
			user=$(stat -c %U "$dir")
			run_as=(runuser -u "$user" --)
		fi
		"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
		"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" -l "$dir/log" -w start >/dev/null
		cleanup="${run_as[*]} $bin/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1; rm -rf $dir"
		export FHIRGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
		log "started a private PostgreSQL on 127.0.0.1:$port"
	fi
fi

"$@"
