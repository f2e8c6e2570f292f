#!/usr/bin/env bash
# One device command for issue 13: quantized stages on the GPU, recorded by the suite.
#
#   bash tools/device_quantized.sh NAME LIMIT_S [pytest args...] [-- NAME LIMIT_S [pytest args...]] ...
#
# Each segment is one `pytest perf` run under `timeout -s INT LIMIT_S`, with its log, JSON and
# report under $OUT. With STACK_DUMP_S=N, every N seconds the run's main thread dumps its Python
# stack into the log (faulthandler on SIGUSR1; -s, or pytest captures it), to see where a slow
# first compile spends its time. Off by default: one Flux run crashed (SIGSEGV) at its first dump
# (reports/h100/quantized/flux-fp8-segfault-at-stack-dump.log), and passed without it.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/diag "$OUT"
[ -n "${STACK_DUMP_S:-}" ] && printf 'import faulthandler, signal\nfaulthandler.register(signal.SIGUSR1)\n' > /tmp/diag/sitecustomize.py
export PYTHONPATH=/tmp/diag:${PYTHONPATH:-}:$PWD PYTHONUNBUFFERED=1

segment() {
  local name=$1 limit=$2; shift 2
  timeout -s INT "$limit" python3 -m pytest perf -s "$@" --perf-report="$OUT/report-$name.md" \
    --benchmark-json="$OUT/$name.json" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  local dumper=
  if [ -n "${STACK_DUMP_S:-}" ]; then
    ( while sleep "$STACK_DUMP_S"; do pkill -USR1 -f '^python3 -m pytest perf' || break; done ) &
    dumper=$!
  fi
  wait "$pid"; local rc=$?
  [ -n "$dumper" ] && kill "$dumper" 2>/dev/null
  echo "== $name: rc=$rc"; grep -E '^(stage|-----|[a-z0-9_]+ +[0-9.]+ )|REGRESSION|PASS|FAIL|session:|saved|recorded|compile cache' "$OUT/$name.log" | tail -20
}

args=()
for arg in "$@" --; do
  if [ "$arg" = "--" ]; then
    [ ${#args[@]} -gt 0 ] && segment "${args[@]}"
    args=()
  else
    args+=("$arg")
  fi
done
rm -rf "$OUT"/report-*-charts
ls baselines/*/ baselines/*/compile-cache
