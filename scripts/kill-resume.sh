#!/usr/bin/env bash
# Proof that resume loses nothing: trains configs/smoke.toml on MNIST for N steps in one go, then
# again while killing the process with SIGKILL at random moments K times (resuming after each),
# and compares the final weights of both runs. Prints the largest absolute difference of the EMA
# and raw weights (expected: 0) and how many steps were trained twice because of the kills.
#
#   scripts/kill-resume.sh [STEPS=80] [KILLS=5]      (needs scripts/setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-80}
kills=${2:-5}
ember="${CARGO_TARGET_DIR:-target}/release/ember"
[ -x "$ember" ] || { echo "kill-resume.sh: build first (scripts/setup.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
config=configs/smoke.toml

echo "reference: $steps steps in one go"
"$ember" train "$config" --steps "$steps" --run-dir "$tmp/ref" > "$tmp/ref.log"

trained=0   # optimiser steps actually computed by the interrupted run, kills included
start_step() { grep -oE 'resuming .* at step [0-9]+' "$1" | grep -oE '[0-9]+$' || echo 0; }
# The last step a log reached; its start step when it trained none (a resume of a finished run).
last_step() {
  local last
  last=$(grep -oE '^step +[0-9]+' "$1" | tail -n 1 | grep -oE '[0-9]+' || true)
  echo "${last:-$(start_step "$1")}"
}
steps_in() { echo $(( $(last_step "$1") - $(start_step "$1") )); }
attempt() { # $1 = log file; starts (or resumes) the interrupted run in the background
  if [ -f "$tmp/run/checkpoints/latest" ]; then
    "$ember" train --resume "$tmp/run" --steps "$steps" > "$1" 2>&1 &
  else
    "$ember" train "$config" --steps "$steps" --run-dir "$tmp/run" --overwrite > "$1" 2>&1 &
  fi
  pid=$!
}
for i in $(seq 1 "$kills"); do
  attempt "$tmp/attempt-$i.log"
  delay=$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.5 + 2.5 * rand() }')
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
    trained=$((trained + $(steps_in "$tmp/attempt-$i.log")))
    echo "kill $i after ${delay}s: reached step $(last_step "$tmp/attempt-$i.log")"
  else
    wait "$pid"; echo "attempt $i finished before its kill"
    trained=$((trained + $(steps_in "$tmp/attempt-$i.log")))
  fi
done
echo "final resume to step $steps"
log="$tmp/final.log"
if [ -f "$tmp/run/checkpoints/latest" ]; then
  "$ember" train --resume "$tmp/run" --steps "$steps" > "$log" 2>&1
else
  "$ember" train "$config" --steps "$steps" --run-dir "$tmp/run" --overwrite > "$log" 2>&1
fi
trained=$((trained + $(steps_in "$log")))

for w in ema raw; do
  flag=""; [ "$w" = raw ] && flag="--raw"
  "$ember" export --run "$tmp/ref" $flag --out "$tmp/ref-$w.safetensors" > /dev/null
  "$ember" export --run "$tmp/run" $flag --out "$tmp/run-$w.safetensors" > /dev/null
  echo "$w weights: $("$ember" compare "$tmp/ref-$w.safetensors" "$tmp/run-$w.safetensors" | grep 'max abs')"
done
echo "steps trained by the interrupted run: $trained for $steps; redone after kills: $((trained - steps))"
