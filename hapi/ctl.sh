#!/usr/bin/env bash
# Control the local HAPI FHIR JPA server (R4) used by alliance-fhir's tests and demo.
#
#   hapi/ctl.sh start     build if needed, start in the background, wait until /fhir/metadata
#                         answers 200, print the base URL (the only line on stdout)
#   hapi/ctl.sh stop      SIGTERM, wait, then SIGKILL; harmless if not running
#   hapi/ctl.sh status    "running <url>" (exit 0), "starting" (exit 0) or "not running" (exit 3)
#   hapi/ctl.sh restart   stop + start
#   hapi/ctl.sh pg-start  only the local PostgreSQL cluster (HAPI_DB=postgres); prints its URL
#   hapi/ctl.sh pg-stop   stop the local PostgreSQL cluster of this port
#
# Environment:
#   HAPI_PORT=8080              port on 127.0.0.1; state lives in hapi/run/<port>/
#   HAPI_FRESH=1                wipe the H2 database before starting (only when not already running)
#   HAPI_DB=file|mem|postgres   H2 on disk under run/<port>/db (default, fast warm boots), H2 in memory,
#                               or PostgreSQL: a cluster of our own in run/<port>/pg (initdb as an
#                               unprivileged user, 127.0.0.1 only, a free port; Debian's postgresql
#                               package is installed when missing, as root). start then prints the
#                               cluster's URL (postgresql://USER@127.0.0.1:PORT/DB) before the base URL.
#   HAPI_DB_URL=jdbc:postgresql://host:port/db   with HAPI_DB=postgres (implied): an existing database
#                               instead of our cluster (HAPI_DB_USERNAME / HAPI_DB_PASSWORD from the env)
#   HAPI_PG_OS_USER=postgres    the unprivileged OS user that owns and runs the cluster when we are root
#   HAPI_PG_CONFIG, HAPI_PG_LIBDIR, HAPI_PG_CONFDIR  where PostgreSQL is looked for and configured
#                               (pg_config, /usr/lib/postgresql, /etc/postgresql-common): tests point
#                               them elsewhere to exercise the install path without touching the system
#   HAPI_START_TIMEOUT=300      seconds to wait for /fhir/metadata
#   HAPI_STOP_TIMEOUT=30        seconds to wait after SIGTERM before SIGKILL
#   HAPI_JAVA_OPTS=...          replaces the default JVM flags below
#   HAPI_CLIENT_ID_STRATEGY, HAPI_SEARCH_CACHE_MS, HAPI_REQUEST_VALIDATION, HAPI_VALIDATION_CACHE,
#   HAPI_BATCH2_INTERVAL_MS, HAPI_SUBSCRIPTION_INTERVAL_MS  server settings, see src/main/resources/application.properties
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${HAPI_PORT:-8080}"
STATE="$HERE/run/$PORT"
PID_FILE="$STATE/hapi.pid"
LOG="$STATE/hapi.log"
JAR="$HERE/target/hapi-harness.jar"
URL="http://127.0.0.1:$PORT/fhir"
DEFAULT_JAVA_OPTS="-Xms256m -Xmx1536m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss1m -Djava.awt.headless=true"

die() { echo "hapi/ctl.sh: $*" >&2; exit 1; }

PG_DIR="$STATE/pg"
PG_LOG="$STATE/pg.log"
PG_USER=hapi  # the cluster's superuser (trust auth, loopback only); HAPI's database is "hapi"
PG_OS_USER="${HAPI_PG_OS_USER:-postgres}"
# As root, the unprivileged owner must reach the data folder: a checkout under a private folder
# (mktemp -d is 0700) is not searchable by it, so the cluster and its log then live under /var/tmp.
if [[ "$(id -u)" == 0 ]] && id "$PG_OS_USER" >/dev/null 2>&1 \
	&& ! su -s /bin/sh "$PG_OS_USER" -c "test -x '$HERE'" 2>/dev/null; then
	PG_DIR="/var/tmp/alliance-fhir-pg/$(printf '%s' "$STATE" | sha1sum | cut -c1-12)"
	PG_LOG="$PG_DIR.log"
	mkdir -p /var/tmp/alliance-fhir-pg && chmod 755 /var/tmp/alliance-fhir-pg
	touch "$PG_LOG" && chown "$PG_OS_USER" "$PG_LOG"
fi
DB_MODE="${HAPI_DB:-file}"
if [[ -n "${HAPI_DB_URL:-}" ]]; then
	[[ "$HAPI_DB_URL" == jdbc:postgresql://* ]] || die "HAPI_DB_URL must be a jdbc:postgresql:// URL, got '$HAPI_DB_URL'"
	DB_MODE=postgres-url
fi

[[ "$PORT" =~ ^[0-9]+$ ]] || die "HAPI_PORT must be a number, got '$PORT'"

# pid of our server for this port, or nothing
server_pid() {
	local pid
	[[ -f "$PID_FILE" ]] || return 0
	pid="$(cat "$PID_FILE" 2>/dev/null || true)"
	if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
		&& tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "hapi-harness.jar"; then
		echo "$pid"
	fi
}

metadata_ok() {
	[[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$URL/metadata" 2>/dev/null || true)" == 200 ]]
}

port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

build_if_needed() {
	command -v mvn >/dev/null || die "mvn not found (Maven 3.8+ and JDK 17 are needed to build the server)"
	if [[ -f "$JAR" && -d "$HERE/target/lib" ]] \
		&& [[ -z "$(find "$HERE/pom.xml" "$HERE/src" -newer "$JAR" -print -quit)" ]]; then
		return 0
	fi
	echo "hapi/ctl.sh: building $JAR (first build downloads ~300 MB from Maven Central)" >&2
	if ! (cd "$HERE" && mvn -q -B package -DskipTests) >"$STATE/build.log" 2>&1; then
		tail -n 30 "$STATE/build.log" >&2
		die "maven build failed (full log: $STATE/build.log)"
	fi
	touch "$JAR"
}

# the most telling line of a failed start: the innermost "Caused by", else the last error line
failure_reason() {
	local line
	line="$(grep -E '^Caused by: ' "$LOG" 2>/dev/null | tail -n 1 | cut -c 12-300)"
	[[ -n "$line" ]] || line="$(grep -E 'ERROR|Error|Exception' "$LOG" 2>/dev/null | tail -n 1 | cut -c 1-300)"
	echo "${line:-no error message in the log}"
}

wait_until_ready() {
	local pid="$1" deadline=$((SECONDS + ${HAPI_START_TIMEOUT:-300}))
	while ! metadata_ok; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "---- last lines of $LOG ----" >&2
			tail -n 25 "$LOG" >&2 || true
			rm -f "$PID_FILE"
			die "server process exited during startup: $(failure_reason) (log: $LOG)"
		fi
		if ((SECONDS >= deadline)); then
			tail -n 20 "$LOG" >&2 || true
			stop_server >/dev/null
			die "server not ready after ${HAPI_START_TIMEOUT:-300}s, stopped it (log: $LOG)"
		fi
		sleep 1
	done
}

# ---- PostgreSQL: a local cluster of our own, run by an unprivileged user
PG_CONFIG="${HAPI_PG_CONFIG:-pg_config}"
PG_LIBDIR="${HAPI_PG_LIBDIR:-/usr/lib/postgresql}"  # Debian: one <version>/bin per installed server
PG_CONFDIR="${HAPI_PG_CONFDIR:-/etc/postgresql-common}"

# the folder of initdb/pg_ctl (the newest installed version), or nothing; never fails (callers assign it)
pg_bindir() {
	local dir
	dir="$("$PG_CONFIG" --bindir 2>/dev/null || true)"
	[[ -x "$dir/initdb" ]] || dir="$(ls -d "$PG_LIBDIR"/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
	if [[ -x "$dir/initdb" ]]; then echo "$dir"; fi
}

pg_install() {
	[[ -n "$(pg_bindir)" ]] && return 0
	[[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed (initdb not found); as root: apt-get install postgresql"
	command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing"
	echo "hapi/ctl.sh: installing Debian's postgresql package (once)" >&2
	# No system cluster on 5432: we only ever run our own. postgresql-common's createcluster.conf
	# includes createcluster.d/, and the package's postinst skips "main" when this reads off.
	mkdir -p "$PG_CONFDIR/createcluster.d"
	echo "create_main_cluster = false" >"$PG_CONFDIR/createcluster.d/alliance-fhir.conf"
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; } \
		>"$STATE/apt.log" 2>&1 || { tail -n 20 "$STATE/apt.log" >&2; die "apt-get install postgresql failed (log: $STATE/apt.log)"; }
	[[ -n "$(pg_bindir)" ]] || die "postgresql installed but initdb not found"
}

# run a PostgreSQL tool as the cluster's owner (never as root: initdb refuses, and so should we)
as_pg_owner() {
	if [[ "$(id -u)" == 0 ]]; then
		getent passwd "$PG_OS_USER" >/dev/null || die "no OS user '$PG_OS_USER' to run PostgreSQL as (set HAPI_PG_OS_USER)"
		runuser -u "$PG_OS_USER" -- "$@"
	else
		"$@"
	fi
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_port() { cat "$STATE/pg.port" 2>/dev/null || true; }

pg_running() {
	local bin port
	bin="$(pg_bindir)"; port="$(pg_port)"
	[[ -n "$bin" && -n "$port" && -f "$PG_DIR/postmaster.pid" ]] || return 1
	"$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2
}

pg_url() { echo "postgresql://$PG_USER@127.0.0.1:$(pg_port)/${1:-hapi}"; }

pg_start() {
	local bin port
	pg_install
	bin="$(pg_bindir)"
	if pg_running; then
		return 0
	fi
	if [[ ! -f "$PG_DIR/PG_VERSION" ]]; then
		rm -rf "$PG_DIR"
		mkdir -p "$PG_DIR"
		[[ "$(id -u)" == 0 ]] && chown "$PG_OS_USER" "$PG_DIR"
		chmod 700 "$PG_DIR"
		as_pg_owner test -w "$PG_DIR" || die "user '$PG_OS_USER' cannot write $PG_DIR (a parent folder is not searchable?)"
		as_pg_owner "$bin/initdb" -D "$PG_DIR" -U "$PG_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log" 2>&1 \
			|| { tail -n 20 "$STATE/initdb.log" >&2; die "initdb failed (log: $STATE/initdb.log)"; }
	fi
	port="$(pg_port)"
	if [[ -z "$port" ]] || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		port="$(free_port)"
		echo "$port" >"$STATE/pg.port"
	fi
	: >"$PG_LOG"
	[[ "$(id -u)" == 0 ]] && chown "$PG_OS_USER" "$PG_LOG"
	# Loopback only, the socket in the cluster folder (not /var/run), sizes for a benchmark harness.
	as_pg_owner "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_LOG" -w -t 60 -o "-p $port -c listen_addresses=127.0.0.1 \
-c unix_socket_directories=$PG_DIR -c shared_buffers=256MB -c max_connections=100" start >/dev/null 9>&- \
		|| { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start (log: $PG_LOG)"; }
	if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'hapi'" | grep -q 1; then
		"$bin/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" hapi
	fi
}

pg_fresh_hapi_db() {
	local bin port
	bin="$(pg_bindir)"; port="$(pg_port)"
	"$bin/dropdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" --if-exists --force hapi
	"$bin/createdb" -h 127.0.0.1 -p "$port" -U "$PG_USER" hapi
}

pg_stop() {
	local bin
	bin="$(pg_bindir)"
	if [[ -z "$bin" || ! -f "$PG_DIR/postmaster.pid" ]]; then
		echo "postgres not running"
		return 0
	fi
	if as_pg_owner "$bin/pg_ctl" -D "$PG_DIR" -m fast -w -t "${HAPI_STOP_TIMEOUT:-30}" stop >/dev/null 2>&1; then
		echo "postgres stopped"
	else
		as_pg_owner "$bin/pg_ctl" -D "$PG_DIR" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
		echo "postgres stopped (immediate)"
	fi
}

start_server() {
	local pid
	pid="$(server_pid)"
	if [[ -n "$pid" ]]; then
		[[ "${HAPI_FRESH:-0}" == 1 ]] && echo "hapi/ctl.sh: already running, HAPI_FRESH ignored (run stop first)" >&2
		local running_mode
		running_mode="$(cat "$STATE/hapi.db" 2>/dev/null || echo file)"
		[[ "$running_mode" == "$DB_MODE" ]] || die "already running on HAPI_DB=$running_mode, not $DB_MODE (run stop first)"
		wait_until_ready "$pid"
		[[ "$DB_MODE" == postgres ]] && pg_url
		echo "$URL"
		return 0
	fi
	port_busy && die "port $PORT on 127.0.0.1 is already used by another process"
	command -v java >/dev/null || die "java not found (JDK 17 needed)"
	command -v curl >/dev/null || die "curl not found (needed to see when /fhir/metadata answers)"
	build_if_needed
	if [[ "${HAPI_FRESH:-0}" == 1 ]]; then
		rm -rf "$STATE/db"
	fi
	local db_url pg_env=()
	case "$DB_MODE" in
		file) mkdir -p "$STATE/db"; db_url="jdbc:h2:file:$STATE/db/hapi" ;;
		mem) db_url="jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1" ;;
		postgres)
			pg_start
			[[ "${HAPI_FRESH:-0}" == 1 ]] && pg_fresh_hapi_db
			db_url="jdbc:postgresql://127.0.0.1:$(pg_port)/hapi"
			pg_env=(HAPI_DB_USERNAME="$PG_USER" HAPI_DB_PASSWORD=) ;;
		postgres-url) db_url="$HAPI_DB_URL" ;;
		*) die "HAPI_DB must be 'file', 'mem' or 'postgres'" ;;
	esac
	if [[ "$DB_MODE" == postgres* ]]; then
		pg_env+=(HAPI_DB_DRIVER=org.postgresql.Driver HAPI_DB_DIALECT=ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect)
	fi
	echo "$DB_MODE" >"$STATE/hapi.db"
	: >"$LOG"
	# shellcheck disable=SC2086  # word splitting of the JVM options is intended
	env "${pg_env[@]}" HAPI_PORT="$PORT" HAPI_DB_URL="$db_url" \
		setsid java ${HAPI_JAVA_OPTS:-$DEFAULT_JAVA_OPTS} -jar "$JAR" </dev/null >>"$LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$PID_FILE"
	wait_until_ready "$pid"
	[[ "$DB_MODE" == postgres ]] && pg_url
	echo "$URL"
}

stop_server() {
	local pid deadline
	pid="$(server_pid)"
	if [[ -z "$pid" ]]; then
		rm -f "$PID_FILE"
		echo "not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + ${HAPI_STOP_TIMEOUT:-30}))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		echo "killed (pid $pid did not stop within ${HAPI_STOP_TIMEOUT:-30}s)"
	else
		echo "stopped"
	fi
	rm -f "$PID_FILE"
}

status_server() {
	local pid
	pid="$(server_pid)"
	if [[ -z "$pid" ]]; then
		echo "not running"
		return 3
	elif metadata_ok; then
		echo "running $URL (pid $pid)"
	else
		echo "starting (pid $pid, log $LOG)"
	fi
}

mkdir -p "$STATE"
cmd="${1:-}"
case "$cmd" in
	start | stop | restart)
		# one ctl.sh at a time per port (parallel test workers may all call start)
		exec 9>"$STATE/ctl.lock"
		flock 9
		case "$cmd" in
			start) start_server ;;
			stop) stop_server; pg_stop ;;  # our cluster too: nothing of ours keeps running
			restart) stop_server >&2; start_server ;;
		esac
		;;
	pg-start | pg-stop)
		exec 9>"$STATE/ctl.lock"
		flock 9
		case "$cmd" in
			pg-start) pg_start; pg_url ;;
			pg-stop) pg_stop ;;
		esac
		;;
	status) status_server ;;
	*) echo "usage: $0 start|stop|status|restart|pg-start|pg-stop" >&2; exit 2 ;;
esac
