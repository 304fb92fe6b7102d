#!/usr/bin/env bash
# `make bench` and `make bench-quick`: every standard scenario, throng side by side
# with Mosquitto on this host, one after the other in one run, through the
# per-scenario scripts beside this one:
#   connect  cluster-bench.sh  the same connection storm + idle hold against Mosquitto,
#                              throng proxy hand-off and throng fd hand-off (N that one
#                              Mosquitto process can hold: < 20,000 open files)
#   scale    cluster-bench.sh  the paper's experiment scaled to this host: 200,000
#                              connections through one agent (fd) into 12 handlers
#   held     cluster-bench.sh  as many concurrent connections as the host holds, up to
#                              1,000,000 (fd hand-off, ~17,000 per handler process, keepalive 300)
#   pubsub   pubsub-bench.sh   fan-out and one-to-one at QoS 0 and 1, both brokers
#   downlink downlink-bench.sh Redis stream → distributor → handlers → devices
# Every figure lands in --out as JSON next to the logs; a summary table (with the
# commands) is printed, and with --write it replaces the generated section of
# BENCHMARKS.md. Kernel settings the scenarios need are set where permitted and
# listed in the summary. Everything started is stopped on exit.
#
#   loadtest/bench.sh --write          # make bench (under 30 minutes)
#   loadtest/bench.sh --quick          # make bench-quick: small counts, asserts no losses
set -euo pipefail

usage() {
  cat <<'EOF'
usage: loadtest/bench.sh [--quick] [--write] [--only LIST] [--out DIR]
                         [--throng-bin PATH] [--load-bin PATH]
  --quick           small counts (a smoke run of every scenario, under 3 minutes);
                    fails if any scenario loses messages or connections
  --write           replace the generated section of BENCHMARKS.md with this run
  --only LIST       comma-separated subset of connect,scale,held,pubsub,downlink
  --out DIR         keep reports and logs here (default: a new directory under /tmp)
  --throng-bin PATH throng binary (default: release build of the workspace)
  --load-bin PATH   throng-load binary (default: release build of the workspace)
EOF
}

quick=0
write=0
only="connect,scale,held,pubsub,downlink"
out_dir=""
throng_bin="${THRONG_BIN:-}"
load_bin="${THRONG_LOAD:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --write) write=1; shift ;;
    --only) only="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    --throng-bin) throng_bin="$2"; shift 2 ;;
    --load-bin) load_bin="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -n $out_dir ]] || out_dir="$(mktemp -d /tmp/throng-bench.XXXXXX)"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
log() { echo "[bench] $*" >&2; }

# --- binaries --------------------------------------------------------------------
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [[ -z $throng_bin || -z $load_bin ]]; then
  log "building throng and throng-load (release)"
  (cd "$repo" && cargo build --release -q -p throng -p throng-load)
  [[ -n $throng_bin ]] || throng_bin="$target_dir/release/throng"
  [[ -n $load_bin ]] || load_bin="$target_dir/release/throng-load"
fi
for bin in "$throng_bin" "$load_bin"; do
  [[ -x $bin ]] || { echo "no executable at $bin" >&2; exit 1; }
done

# --- peers -----------------------------------------------------------------------
# shellcheck source=bench-lib.sh source-path=SCRIPTDIR
bench_name=bench source "$repo/loadtest/bench-lib.sh"
ensure_mosquitto
ensure_redis

# --- kernel settings -------------------------------------------------------------
# Backlogs for connection storms, the whole port range for many source ports,
# reuse of TIME_WAIT ports between scenarios, and room for millions of sockets.
kernel_settings=(
  "net.core.somaxconn=65535"
  "net.ipv4.tcp_max_syn_backlog=65535"
  "net.core.netdev_max_backlog=65535"
  "net.ipv4.ip_local_port_range=32768 65535"
  "net.ipv4.tcp_tw_reuse=1"
  "fs.file-max=4194304"
  "fs.nr_open=1048576"
  "net.ipv4.tcp_mem=1048576 2097152 4194304"
)
: >"$out_dir/kernel.txt"
for kv in "${kernel_settings[@]}"; do
  key="${kv%%=*}"
  if sysctl -qw "$kv" 2>/dev/null; then
    echo "$key = $(sysctl -n "$key" | tr '\t' ' ')" >>"$out_dir/kernel.txt"
  else
    echo "$key = $(sysctl -n "$key" 2>/dev/null | tr '\t' ' ') (could not set $kv)" >>"$out_dir/kernel.txt"
    log "could not set $kv"
  fi
done
echo "open files per process (hard) = $(ulimit -Hn)" >>"$out_dir/kernel.txt"

# --- scenarios -------------------------------------------------------------------
common=(--throng-bin "$throng_bin" --load-bin "$load_bin")
failed=()
run() {
  local name="$1"
  shift
  log "scenario $name: $*"
  printf '%q ' "$@" >"$out_dir/$name.cmd"
  echo >>"$out_dir/$name.cmd"
  local started=$SECONDS
  if "$@" >"$out_dir/$name.out" 2>"$out_dir/$name.err"; then
    log "scenario $name done in $((SECONDS - started)) s"
  else
    log "scenario $name FAILED after $((SECONDS - started)) s (see $out_dir/$name.err)"
    tail -20 "$out_dir/$name.err" >&2 || true
    failed+=("$name")
  fi
}
want() { [[ ",$only," == *",$1,"* ]]; }

if ((quick)); then
  want connect && run connect "$repo/loadtest/cluster-bench.sh" "${common[@]}" \
    --variants mosquitto,proxy,fd --connections 2000 --hold 2 --in-flight 100 --out "$out_dir/connect"
  want scale && run scale "$repo/loadtest/cluster-bench.sh" "${common[@]}" \
    --variants fd --handlers 2 --connections 5000 --hold 1 --in-flight 500 --out "$out_dir/scale"
  want pubsub && run pubsub "$repo/loadtest/pubsub-bench.sh" "${common[@]}" --quick --out "$out_dir/pubsub"
  want downlink && run downlink "$repo/loadtest/downlink-bench.sh" "${common[@]}" \
    --devices 200 --messages 20000 --variants redis,ingest --out "$out_dir/downlink"
else
  want connect && run connect "$repo/loadtest/cluster-bench.sh" "${common[@]}" \
    --variants mosquitto,proxy,fd --connections 9000 --hold 10 --in-flight 100 --rounds 2 --out "$out_dir/connect"
  want scale && run scale "$repo/loadtest/cluster-bench.sh" "${common[@]}" \
    --variants fd --handlers 12 --connections 200000 --hold 10 --in-flight 1000 --out "$out_dir/scale"
  want held && run held "$repo/loadtest/cluster-bench.sh" "${common[@]}" \
    --variants fd --handlers 60 --connections 1000000 --hold 30 --in-flight 2000 --keepalive 300 --out "$out_dir/held"
  want pubsub && run pubsub "$repo/loadtest/pubsub-bench.sh" "${common[@]}" --out "$out_dir/pubsub"
  want downlink && run downlink "$repo/loadtest/downlink-bench.sh" "${common[@]}" \
    --messages 500000 --variants redis,sink --out "$out_dir/downlink"
fi

# --- summary ---------------------------------------------------------------------
summary="$out_dir/summary.md"
python3 "$repo/loadtest/bench-summary.py" --out "$out_dir" --quick "$quick" >"$summary" || {
  log "could not summarise the reports"
  failed+=(summary)
}
cat "$summary"
if ((write)) && ((${#failed[@]} == 0)); then
  python3 "$repo/loadtest/bench-summary.py" --splice "$repo/BENCHMARKS.md" --from "$summary"
  log "BENCHMARKS.md updated"
fi
log "reports and logs in $out_dir"
if ((${#failed[@]})); then
  log "failed: ${failed[*]}"
  exit 1
fi
