#!/usr/bin/env bash
# What checkpointing costs: the same jobs on the same 6-node cluster with --checkpoint on and
# off, each run on a fresh cluster. Usage: scripts/bench_checkpoint.sh [N ...] (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
ns=("$@")
[ ${#ns[@]} -gt 0 ] || ns=(200000)
cargo build --release --quiet
bin=target/release/facto
for mode in on off; do
  for run in 1 2 3; do
    data=$(mktemp -d -t facto-bench-XXXXXX)
    peers=$(for i in 1 2 3 4 5 6; do printf "%d=127.0.0.1:%d," "$i" $((7600 + i)); done)
    pids=()
    for i in 1 2 3 4 5 6; do
      RUST_LOG=error "$bin" node --id "$i" --peers "$peers" --checkpoint "$mode" --data-dir "$data/node-$i" &
      pids+=($!)
    done
    cluster=$(for i in 1 2 3 4 5 6; do printf "127.0.0.1:%d," $((7600 + i)); done)
    until "$bin" status --json --cluster "$cluster" 2>/dev/null | grep -q '"role":"coordinator"'; do sleep 0.1; done
    start=$(date +%s.%N)
    "$bin" submit --cluster "$cluster" "${ns[@]}" > /dev/null
    end=$(date +%s.%N)
    kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$data"
    printf 'checkpoint %-3s run %d: %s! in %.2f s\n' "$mode" "$run" "${ns[*]}" "$(python3 -c "print($end - $start)")"
  done
done
