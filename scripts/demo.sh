#!/usr/bin/env bash
# The main job on a fresh machine: build facto, start a local 6-node cluster, show who was
# elected, compute factorials, show the cluster again, stop it.
#   scripts/demo.sh [ELECTION] [N ...]      e.g. scripts/demo.sh ring 20 1000
set -euo pipefail
cd "$(dirname "$0")/.."
election=${1:-raft}
shift || true
ns=("$@")
[ ${#ns[@]} -gt 0 ] || ns=(20 100)

cargo build --release --quiet
bin=target/release/facto
data=$(mktemp -d -t facto-demo-XXXXXX)
"$bin" cluster --nodes 6 --election "$election" --base-port 7001 --data-dir "$data" &
cluster_pid=$!
trap 'kill $cluster_pid 2>/dev/null; wait $cluster_pid 2>/dev/null; rm -rf "$data"' EXIT

# Wait (at most 30 s) until every node agrees on a coordinator.
for _ in $(seq 300); do
  if "$bin" status --json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
leaders = {n.get("leader") for n in nodes}
sys.exit(0 if all(n["up"] for n in nodes) and len(leaders) == 1 and None not in leaders else 1)'; then
    break
  fi
  sleep 0.1
done
"$bin" status
echo
"$bin" submit "${ns[@]}"
echo
"$bin" status
