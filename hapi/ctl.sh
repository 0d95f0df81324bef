#!/usr/bin/env bash
# Control the local HAPI FHIR JPA server (R4) used by alliance-fhir's tests and demo.
#
#   hapi/ctl.sh start     build if needed, start in the background, wait until /fhir/metadata
#                         answers 200, print the base URL (the only line on stdout)
#   hapi/ctl.sh stop      SIGTERM, wait, then SIGKILL; harmless if not running
#   hapi/ctl.sh status    "running <url>" (exit 0), "starting" (exit 0) or "not running" (exit 3)
#   hapi/ctl.sh restart   stop + start
#
# Environment:
#   HAPI_PORT=8080              port on 127.0.0.1; state lives in hapi/run/<port>/
#   HAPI_FRESH=1                wipe the H2 database before starting (only when not already running)
#   HAPI_DB=file|mem            H2 on disk under run/<port>/db (default, fast warm boots) or in memory
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

start_server() {
	local pid
	pid="$(server_pid)"
	if [[ -n "$pid" ]]; then
		[[ "${HAPI_FRESH:-0}" == 1 ]] && echo "hapi/ctl.sh: already running, HAPI_FRESH ignored (run stop first)" >&2
		wait_until_ready "$pid"
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
	local db_url
	case "${HAPI_DB:-file}" in
		file) mkdir -p "$STATE/db"; db_url="jdbc:h2:file:$STATE/db/hapi" ;;
		mem) db_url="jdbc:h2:mem:hapi;DB_CLOSE_DELAY=-1" ;;
		*) die "HAPI_DB must be 'file' or 'mem'" ;;
	esac
	: >"$LOG"
	# shellcheck disable=SC2086  # word splitting of the JVM options is intended
	HAPI_PORT="$PORT" HAPI_DB_URL="$db_url" \
		setsid java ${HAPI_JAVA_OPTS:-$DEFAULT_JAVA_OPTS} -jar "$JAR" </dev/null >>"$LOG" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$PID_FILE"
	wait_until_ready "$pid"
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
			stop) stop_server ;;
			restart) stop_server >&2; start_server ;;
		esac
		;;
	status) status_server ;;
	*) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
