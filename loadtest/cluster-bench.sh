#!/usr/bin/env bash
# Connection-agent benchmark: the same connection storm and idle hold against
#   mosquitto  Mosquitto (one process),
#   proxy      `throng agent` (proxy hand-off: it relays every connection) in
#              front of H `throng handler` processes,
#   fd         the same with `--handoff fd` (the agent passes each socket to its
#              handler and keeps nothing),
#   dev        optionally, `throng dev` (agent and handlers in one process),
# one after the other in one run, with broker RSS and CPU sampled per tier
# (agent, handlers, or the single process) by throng-load.
#
#   CARGO_TARGET_DIR=/work/targets/load loadtest/cluster-bench.sh --in-flight 100
#
# N (--connections) defaults to 9,000 for every variant: in proxy mode the agent
# holds two sockets per connection (device side, handler side) and the host
# allows 20,000 open files per process, so one agent cannot hold 15,000. The
# same N is used for Mosquitto so the ratios compare like with like.
#
# Everything this script starts is stopped on exit. JSON reports, broker logs
# and /metrics scraped in the middle of each hold stay in --out (default: a new
# directory under /tmp, printed at the end).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: loadtest/cluster-bench.sh [options] [-- extra throng-load connect options]
  --connections N   connections per variant (default 9000; proxy mode needs 2 fds
                    per connection in the agent, < 20000 per process)
  --hold S          seconds to hold them idle (default 10)
  --in-flight K     handshakes in flight (default: throng-load's, 1000)
  --rate R          start R handshakes/s instead of an in-flight limit
  --protocol 4|5    MQTT protocol level (default 4)
  --keepalive S     keep-alive sent in CONNECT (default 60)
  --handlers H      throng handler processes behind the agent (default 2)
  --variants LIST   comma-separated, run in this order (default mosquitto,proxy,fd;
                    also: dev)
  --rounds R        run the whole list R times (default 1)
  --throng-bin PATH throng binary (default: target/release/throng of the workspace)
  --agent-args ARGS extra arguments for `throng agent` (word-split)
  --handler-args ARGS extra arguments for every `throng handler` (word-split)
  --ready-timeout S seconds to wait for a process to listen (default 60)
  --out DIR         keep JSON reports, logs and metrics here (default: a temp dir)
  --load-bin PATH   throng-load binary (default: build it with cargo --release)
EOF
}

connections=9000
hold=10
in_flight=""
rate=""
protocol=4
keepalive=60
handlers=2
variants="mosquitto,proxy,fd"
rounds=1
throng_bin=""
agent_args=""
handler_args=""
ready_timeout=60
out_dir=""
load_bin="${THRONG_LOAD:-}"
extra=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --connections) connections="$2"; shift 2 ;;
    --hold) hold="$2"; shift 2 ;;
    --in-flight) in_flight="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --protocol) protocol="$2"; shift 2 ;;
    --keepalive) keepalive="$2"; shift 2 ;;
    --handlers) handlers="$2"; shift 2 ;;
    --variants) variants="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --throng-bin) throng_bin="$2"; shift 2 ;;
    --agent-args) agent_args="$2"; shift 2 ;;
    --handler-args) handler_args="$2"; shift 2 ;;
    --ready-timeout) ready_timeout="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --load-bin) load_bin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench-lib.sh source-path=SCRIPTDIR
source "$repo/loadtest/bench-lib.sh"
bench_init cluster-bench

[[ -n $throng_bin ]] || throng_bin="$repo/target/release/throng"
IFS=, read -r -a variant_list <<<"$variants"
for v in "${variant_list[@]}"; do
  case "$v" in
    mosquitto|proxy|fd|dev) ;;
    *) echo "unknown variant: $v (mosquitto, proxy, fd, dev)" >&2; exit 2 ;;
  esac
  if [[ $v != mosquitto && ! -x $throng_bin ]]; then
    echo "no throng binary at $throng_bin (cargo build --release -p throng)" >&2
    exit 1
  fi
done
fd_limit=$(ulimit -Hn)
for v in "${variant_list[@]}"; do
  # Sockets the busiest process holds: Mosquitto 1 per connection; the proxy agent
  # 2 (device + handler side); dev 3 (all in one process); with fd hand-off the
  # agent keeps none once handed off, so a handler's share counts (the ring is
  # uneven by a few percent: 10 % slack).
  held=$connections
  case "$v" in
    proxy) held=$((connections * 2)) ;;
    dev) held=$((connections * 3)) ;;
    fd) held=$(((connections * 11 / 10 + handlers - 1) / handlers)) ;;
  esac
  if ((held + 200 > fd_limit)); then
    echo "variant $v would hold about $held sockets in one process, more than the" \
      "$fd_limit open files allowed: fewer --connections or (fd) more --handlers" >&2
    exit 2
  fi
done

# --- one variant -------------------------------------------------------------------

# Where the load goes and the admin URLs of what start_NAME started.
target_port=""
admin_urls=()

# start_cluster NAME MODE: H handlers, then one agent in hand-off MODE (proxy|fd).
start_cluster() {
  local name="$1" mode="$2" pid
  plan_handlers "$name"
  start_handlers "$name"
  admin_urls+=("${handler_metrics[@]}")
  start_agent "$name" "$mode"
  admin_urls+=("agent=$agent_metrics")
  target_port=$agent_port
  add_tier agent "$agent_pid"
  for pid in "${handler_pids[@]}"; do add_tier handlers "$pid"; done
}

start_dev() {
  local name="$1" admin
  free_port target_port
  free_port admin
  start_group "$name" "$throng_bin dev --dev-handlers $handlers --mqtt-listen 127.0.0.1:$target_port --admin-listen 127.0.0.1:$admin --grpc-listen 127.0.0.1:0"
  admin_urls+=("dev=http://127.0.0.1:$admin/metrics")
  wait_ready "$name" "$group_pid" port_open "$target_port"
  wait_ready "$name" "$group_pid" http_ok "http://127.0.0.1:$admin/readyz"
  add_tier dev "$group_pid"
}

# scrape_midhold NAME ERRFILE LOADPID: once the load tool says it holds, waits
# half the hold and saves every /metrics (connection gauges, routing counts).
scrape_midhold() {
  local name="$1" errfile="$2" loadpid="$3" entry
  until grep -q "holding" "$errfile" 2>/dev/null; do
    kill -0 "$loadpid" 2>/dev/null || return 0
    sleep 0.2
  done
  sleep "$(awk -v h="$hold" 'BEGIN { print h / 2 }')"
  for entry in "${admin_urls[@]}"; do
    curl -fsS --max-time 2 "${entry#*=}" >"$out_dir/$name.${entry%%=*}.metrics" 2>/dev/null || true
  done
}

# The gauges worth a glance: connections per process, routing, hand-off failures.
show_metrics() {
  local name="$1" f
  for f in "$out_dir/$name".*.metrics; do
    [[ -e $f ]] || continue
    local who="${f#"$out_dir/$name".}"
    who="${who%.metrics}"
    grep -E '^throng_(agent_connections|agent_routed_total|agent_handoff_failures_total|agent_accepts_total|handler_connections)[ {]' "$f" |
      sed "s/^/  mid-hold $who: /" || true
  done
}

run_variant() {
  local variant="$1" name="$2"
  tier_args=()
  admin_urls=()
  case "$variant" in
    mosquitto) start_mosquitto "$name"; target_port=$mosquitto_port ;;
    proxy) start_cluster "$name" proxy ;;
    fd) start_cluster "$name" fd ;;
    dev) start_dev "$name" ;;
  esac
  sleep 1 # let it settle before the "before" sample
  local args=("${tier_args[@]}")
  args+=(--target "127.0.0.1:$target_port" --connections "$connections" --hold "$hold")
  args+=(--protocol "$protocol" --keepalive "$keepalive" --clean --json "$out_dir/$name.json")
  if [[ -n $in_flight ]]; then args+=(--in-flight "$in_flight"); fi
  if [[ -n $rate ]]; then args+=(--rate "$rate"); fi
  echo
  echo "=== $name ==="
  echo "\$ throng-load connect ${args[*]} ${extra[*]}"
  local errfile="$out_dir/$name.load.stderr"
  : >"$errfile"
  setsid "$load_bin" connect "${args[@]}" "${extra[@]}" \
    > >(tee "$out_dir/$name.txt") 2> >(tee "$errfile" >&2) &
  local loadpid=$!
  load_pgid=$loadpid
  scrape_midhold "$name" "$errfile" "$loadpid" &
  local scraper=$!
  local rc=0
  wait "$loadpid" || rc=$?
  load_pgid=""
  wait "$scraper" || true
  show_metrics "$name"
  stop_all
  if ((rc != 0)); then
    echo "throng-load failed on $name (exit $rc)" >&2
    exit "$rc"
  fi
  reports+=("$out_dir/$name.json")
}

# --- main ----------------------------------------------------------------------------

ensure_load_bin
for v in "${variant_list[@]}"; do
  if [[ $v == mosquitto ]]; then ensure_mosquitto; fi
done
log "N = $connections connections per variant, hold $hold s, ${in_flight:+in-flight $in_flight}${rate:+rate $rate/s}; output in $out_dir"
reports=()
for ((round = 1; round <= rounds; round++)); do
  for v in "${variant_list[@]}"; do
    name="$v"
    if ((rounds > 1)); then name="$v-r$round"; fi
    run_variant "$v" "$name"
  done
done

# --- summary -----------------------------------------------------------------------
echo
echo "=== summary (N = $connections; memory = RSS growth at the end of the hold per live connection; CPU = user+system from before to all connected, per connection) ==="
python3 - "${reports[@]}" <<'EOF' || echo "(python3 failed: no summary; see the JSON reports)"
import json, os, sys

def kib(b):
    return "n/a" if b is None else (f"{b:.0f} B" if abs(b) < 1024 else f"{b / 1024:.2f} KiB")

def us(v):
    return "n/a" if v is None else f"{v:.1f} µs"

def ms(v):
    return f"{v / 1000:.1f} ms" if v < 1e6 else f"{v / 1e6:.2f} s"

rows = []
for path in sys.argv[1:]:
    r = json.load(open(path))
    name = os.path.basename(path)[: -len(".json")]
    b = r.get("broker") or {}
    tiers = {t["label"]: t for t in b.get("tiers", [])}
    hold = r.get("hold") or {}
    tcp = {k: v for k, v in r.get("host_tcp", {}).items() if v}
    rows.append((name, r, b, tiers, hold, tcp))

print(f"{'variant':<14}{'conn/s':>9}{'p50':>10}{'p99':>10}  {'failed':>6} {'alive':>6}  "
      f"{'mem total':>10}{'mem agent':>11}{'mem hndlrs':>11}  {'CPU total':>10}{'CPU agent':>10}{'CPU hndlrs':>11}")
for name, r, b, tiers, hold, tcp in rows:
    a, h = tiers.get("agent", {}), tiers.get("handlers", {})
    lat = r["connack_latency_us"]
    print(f"{name:<14}{r['connects_per_s']:>9,.0f}{ms(lat['p50_us']):>10}{ms(lat['p99_us']):>10}  "
          f"{r['failed']:>6} {hold.get('alive', r['ok']):>6}  "
          f"{kib(b.get('rss_per_connection_bytes')):>10}{kib(a.get('rss_per_connection_bytes')):>11}"
          f"{kib(h.get('rss_per_connection_bytes')):>11}  "
          f"{us(b.get('cpu_us_per_connection')):>10}{us(a.get('cpu_us_per_connection')):>10}"
          f"{us(h.get('cpu_us_per_connection')):>11}"
          + (f"  host TCP: {tcp}" if tcp else "")
          + (f"  failures: {r['failures']}" if r["failures"] else ""))

# Ratios against the Mosquitto run of the same round (or the first one).
mosq = {n.split("-r")[-1] if "-r" in n else "": r for n, r, b, *_ in rows if n.startswith("mosquitto")}
if mosq:
    print("\nthrong / Mosquitto (same round):")
    for name, r, b, tiers, hold, tcp in rows:
        if name.startswith("mosquitto"):
            continue
        key = name.split("-r")[-1] if "-r" in name else ""
        m = mosq.get(key) or next(iter(mosq.values()))
        mb = m["broker"]
        def ratio(x, y):
            return "n/a" if not x or not y else f"{x / y:.2f}"
        print(f"  {name:<12} conn/s {ratio(r['connects_per_s'], m['connects_per_s'])}, "
              f"p50 {ratio(r['connack_latency_us']['p50_us'], m['connack_latency_us']['p50_us'])}, "
              f"p99 {ratio(r['connack_latency_us']['p99_us'], m['connack_latency_us']['p99_us'])}, "
              f"memory {ratio(b.get('rss_per_connection_bytes'), mb.get('rss_per_connection_bytes'))}, "
              f"CPU {ratio(b.get('cpu_us_per_connection'), mb.get('cpu_us_per_connection'))}")
EOF
echo
echo "JSON reports:"
printf '  %s\n' "${reports[@]}"
echo "logs, load-tool output and mid-hold /metrics: $out_dir"
