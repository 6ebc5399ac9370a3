#!/usr/bin/env bash
# A chaos soak (not in CI): a local 6-node cluster under `facto chaos` for a long while.
#   scripts/soak.sh [ELECTION] [DURATION] [SEED]      default: raft 10m 7
# Prints the chaos report; exits with chaos's status. Node logs stay in the printed folder.
set -euo pipefail
cd "$(dirname "$0")/.."
election=${1:-raft}
duration=${2:-10m}
seed=${3:-7}
key=soak-key-$$
cargo build --release --quiet
bin=target/release/facto
data=$(mktemp -d -t facto-soak-XXXXXX)
echo "soak: $election, $duration, seed $seed; node logs in $data"
"$bin" cluster --nodes 6 --election "$election" --base-port 27001 --data-dir "$data" --cluster-key "$key" \
  > "$data/cluster.log" 2>&1 &
cluster_pid=$!
trap 'kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null || true' EXIT
export FACTO_CLUSTER=127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003,127.0.0.1:27004,127.0.0.1:27005,127.0.0.1:27006
date -u
"$bin" chaos --cluster-key "$key" --kill-prob 0.1 --slow-prob 0.05 --partition-prob 0.05 \
  --duration "$duration" --seed "$seed"
