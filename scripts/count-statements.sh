#!/usr/bin/env bash
# Counts the SQL statements a load test sends, the one engine figure that does not drift with
# the machine's speed. Starts a private PostgreSQL with pg_stat_statements on a spare port,
# runs orchestration-loadtest against it and prints the statements executed up to the moment
# the harness starts its own analysis (foreign-key checks included), then stops the cluster.
#
#   scripts/count-statements.sh target/release --scenario chain --runs 3000 --concurrency 64
#
# The first argument is the directory holding the release binaries; the rest go to the
# harness. Needs the PostgreSQL server binaries (initdb, pg_ctl) and, as root, a `postgres`
# user to run them.
set -euo pipefail
bin=$(cd "$1" && pwd); shift
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=${COUNT_PORT:-55439}
dir=$(mktemp -d /tmp/count-statements.XXXXXX)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
cleanup() { as_pg "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_pg "$pgbin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 200
CONF
as_pg "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
psql=(psql -h 127.0.0.1 -p "$port" -U postgres -tAq -d postgres)
"${psql[@]}" -c "CREATE EXTENSION pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null

"$bin/orchestration-loadtest" --bin-dir "$bin" "$@" --pg "postgres://postgres@127.0.0.1:$port" \
    --out "$dir/report" >"$dir/harness.log" 2>&1 &
harness=$!
until grep -q '^fetching' "$dir/harness.log" 2>/dev/null; do
    if ! kill -0 "$harness" 2>/dev/null; then
        tail -20 "$dir/harness.log"; echo "the harness ended before its analysis" >&2; exit 1
    fi
    sleep 0.05
done
count() {
    "${psql[@]}" -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
                     JOIN pg_database d ON d.oid = s.dbid
                     WHERE d.datname LIKE 'orch_loadtest%' $1"
}
total=$(count "")
transactions=$(count "AND query IN ('BEGIN', 'COMMIT')")
# COUNT_TOP=n also lists the n statements run most often, to show where the round trips go
# (taken now: the harness drops its database when it ends).
if [ "${COUNT_TOP:-0}" -gt 0 ]; then
    "${psql[@]}" -F $'\t' -c "SELECT sum(calls), round(sum(total_exec_time)::numeric, 1),
                                      left(regexp_replace(query, '\s+', ' ', 'g'), 160)
                               FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                               WHERE d.datname LIKE 'orch_loadtest%'
                               GROUP BY query ORDER BY 1 DESC LIMIT ${COUNT_TOP}" >"$dir/top"
fi
wait "$harness"
nodes=$(python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['throughput']; print(round(t['nodesPerSecond']*t['windowSeconds']))" "$dir/report/report.json")
echo "statements: $total (BEGIN/COMMIT: $transactions) for $nodes nodes: $(python3 -c "print(round($total / $nodes, 2))") per node"
if [ -s "$dir/top" ]; then
    echo "per node | ms per 1000 nodes | statement"
    awk -F'\t' -v n="$nodes" '{ printf "%8.2f | %8.1f | %s\n", $1 / n, $2 / n * 1000, $3 }' "$dir/top"
fi
