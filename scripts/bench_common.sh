# shellcheck shell=bash
# Pieces the CPU benches share (scripts/cpu_per_message.sh, scripts/compare_cryptofeed.sh):
# free ports, waiting for a port, and a throwaway redis-server and simulator, each stopped when
# the script exits. Source it after scripts/servers.sh and `ensure_redis`; it sets WORK (a temp
# directory removed at exit) and PIDS (the processes killed at exit, by PID).
#
#   bench_start_redis               -> REDIS_PORT, REDIS_PID
#   bench_start_sim BIN RATE SYMS   -> SIM_PORT, SIM_PID (SYMS: comma-separated)
#   bench_stop PID                  stops one process started here and waits for it

WORK="$(mktemp -d)"
PIDS=()
_bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap _bench_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

bench_start_redis() {
  REDIS_PORT="$(free_port)"
  "$HOTPATH_REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_port "$REDIS_PORT"
}

bench_start_sim() {
  local bin="$1" rate="$2" symbols="$3"
  SIM_PORT="$(free_port)"
  "$bin" sim --listen "127.0.0.1:$SIM_PORT" --symbols "$symbols" --rate "$rate" \
    >"$WORK/sim.log" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  wait_port "$SIM_PORT"
}

bench_stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
