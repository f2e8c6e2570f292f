#!/usr/bin/env bash
# A/B of one checkout (the candidate, e.g. a pull request) against another (the reference, e.g. its
# base branch): each gets its own environment with what its own pyproject.toml asks for (pin more
# with pip's own PIP_CONSTRAINT), then the candidate's suite times every stage in both, round by
# round, one process per side (docs/ab.md).
#
#   bash .github/scripts/ab.sh REFERENCE_DIR CANDIDATE_DIR [pytest arguments ...]
#
# Environments are made once and reused (REFERENCE_DIR/.venv, CANDIDATE_DIR/.venv). Exit status
# and last line are the suite's: 0 and PASS only when every stage was compared and none regressed.
set -euo pipefail
reference=$(cd "$1" && pwd)
candidate=$(cd "$2" && pwd)
shift 2
for side in "$reference" "$candidate"; do
  if [ ! -x "$side/.venv/bin/python" ]; then
    python3 -m venv "$side/.venv"
    "$side/.venv/bin/python" -m pip install -q --upgrade pip
  fi
  "$side/.venv/bin/python" -m pip install -q -e "$side[test]"
done
cd "$candidate"
exec .venv/bin/python -m pytest perf -k test_ab --perf-reference-python="$reference/.venv/bin/python" "$@"
