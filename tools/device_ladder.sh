#!/usr/bin/env bash
# One part of a GPU ladder campaign, in one device command (reports/h200/ladder/). Run from the
# repository root; $OUT receives one archive with the log, the report, its charts, the JSON, the
# stored runs this command added and, with WITH_CACHE=1, the compile cache, in parts of 15 MiB.
#
#   tools/device_ladder.sh NAME SECONDS PYTEST-ARGS...
#
# NAME names the files; SECONDS is the limit (SIGINT, so an interrupted run still says so and
# writes its compile cache; SIGKILL 20 s later if it has not ended: the JSON, rewritten after each
# stage, still holds the stages that finished). Leave 30 s past a fresh compile's expected end: on
# torch 2.11 a run that compiled afresh spent 11-21 s outside its pytest session (start-up and
# exit; 6 s from the cache), and a limit that falls there turns the exit status into timeout's 124
# after the verdict was printed (reports/h200/ladders-complete/).
# The compile cache lives in ./compile-cache (carried between commands).
# A baseline a command saves is also kept in ./compile-cache/baselines, which the device keeps
# between commands on a warm machine (the repository's own files are copied afresh each call, so
# a saved run would otherwise be gone): the next command's --benchmark-compare finds it without
# waiting for it to be copied into the checkout, so the machine need not idle while that is done.
# The log and the JSON are written straight into $OUT as well: a command that the device tool
# stops at its own limit (which shrinks to the session's device time left) still brings them back.
set -u
name=$1; limit=$2; shift 2
out=${OUT:-/tmp/diffusers-perf-out}
work=/tmp/$name
mkdir -p "$out" "$work" compile-cache
for kept in compile-cache/baselines/*/*.json; do  # runs saved by earlier commands on this machine
  [ -f "$kept" ] || continue
  dest=baselines/$(basename "$(dirname "$kept")")
  mkdir -p "$dest"; [ -e "$dest/$(basename "$kept")" ] || cp "$kept" "$dest/"
done
before=$(ls baselines/*/ 2>/dev/null | sort)
start=$(date +%s)
timeout -s INT -k 20 "$limit" python3 -m pytest perf -p no:cacheprovider --perf-compile-cache=compile-cache \
  --benchmark-json="$out/$name.json" --perf-report="$work/$name.md" "$@" > "$out/$name.log" 2>&1
echo "exit status $? after $(( $(date +%s) - start )) s" >> "$out/$name.log"
cp "$out/$name.log" "$work/"; [ -f "$out/$name.json" ] && cp "$out/$name.json" "$work/"
for f in baselines/*/*.json; do
  grep -qxF "$(basename "$f")" <<<"$before" && continue
  kept=compile-cache/baselines/$(basename "$(dirname "$f")")
  cp "$f" "$work/"; mkdir -p "$kept"; cp "$f" "$kept/"
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$work/gpu.csv" 2>&1
[ -n "${WITH_CACHE:-}" ] && cp -r compile-cache "$work/"  # large: only when this command wrote it
tar -czf - -C /tmp "$name" | split -b 15M - "$out/$name.tgz.part-"  # 16 MiB a file comes back
tail -3 "$out/$name.log"
