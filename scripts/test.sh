#!/usr/bin/env bash
# The whole suite: ruff, mypy, pytest (live tests drive real sipp/baresip peers).
# Runs every stage even when an earlier one fails, then fails if any failed.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k options -x`.
set -uo pipefail

cd "$(dirname "$0")/.."
VENV=.venv
failed=()

stage() {
    local name="$1"
    shift
    printf '\n=== %s: %s\n' "$name" "$*"
    "$@"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '=== %s FAILED (exit %d)\n' "$name" "$rc"
        failed+=("$name")
    fi
    return "$rc"
}

if [ ! -x "$VENV/bin/python" ]; then
    echo "no $VENV: run 'make setup' (or scripts/setup.sh) first" >&2
    exit 1
fi

stage ruff "$VENV/bin/ruff" check .
stage mypy "$VENV/bin/mypy"

printf '\n=== pytest: %s -m pytest %s\n' "$VENV/bin/python" "$*"
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "=== pytest FAILED: no tests were collected (exit 5); an empty suite does not pass" >&2
    failed+=("pytest (no tests collected)")
elif [ "$rc" -ne 0 ]; then
    echo "=== pytest FAILED (exit $rc)" >&2
    failed+=("pytest")
fi

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\nFAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf '\nall checks passed: ruff, mypy, pytest\n'
