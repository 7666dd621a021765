#!/usr/bin/env bash
# The load-generator comparison of BENCHMARKS.md, by hand (not CI; about 10-20 minutes):
#   bash benches/loadgen.sh [subscriber counts, default 100,250,500,1000,1500,2000]
# Builds openchatd and openchat-loadgen (release), installs Debian's janus if missing, makes
# a network namespace with only `lo` and a veth pair whose address exists only inside it
# (Janus never gathers ICE candidates on a loopback interface), and runs the same sweep
# against the bare forwarder (the physical reference), openchatd and Janus VideoRoom inside
# it (LOADGEN_TARGETS picks some): generator on CPU 0, server on CPU 1. LOADGEN_ARGS adds
# generator options (e.g. "--profile video" or "--publishers 10").
# The namespace is removed when the script ends (unless it existed before).
# RESULT lines go to benches/results/$LOADGEN_OUT.txt (default loadgen); benches/chart.py
# draws benches/results/$LOADGEN_OUT.png from them. Every run is bounded and ends by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
counts="${1:-100,250,500,1000,1500,2000}"
seconds="${LOADGEN_SECONDS:-10}"
ns=ocbench
media_ip=10.99.0.1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/openchat-target}"

command -v janus >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q janus >/dev/null
cargo build --release --locked -p openchat --bin openchatd -p openchat-benches --bin openchat-loadgen \
  --bin openchat-bare-forwarder

if ! ip netns list | grep -qw "$ns"; then
  ip netns add "$ns"
  # The namespace this run made goes when the run ends, however it ends.
  trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
fi
ip -n "$ns" link set lo up
if ! ip -n "$ns" addr show | grep -q "$media_ip"; then
  ip -n "$ns" link add v0 type veth peer name v1
  ip -n "$ns" addr add "$media_ip/24" dev v0
  ip -n "$ns" link set v0 up
  ip -n "$ns" link set v1 up
fi

ulimit -l unlimited 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
name="${LOADGEN_OUT:-loadgen}"
out="benches/results/$name.txt"
: >"$out.new"
for target in ${LOADGEN_TARGETS:-bare openchatd janus}; do
  ip netns exec "$ns" "$CARGO_TARGET_DIR/release/openchat-loadgen" --target "$target" \
    --media-ip "$media_ip" --subscribers "$counts" --seconds "$seconds" \
    --generator-cpu 0 --server-cpu 1 ${LOADGEN_ARGS:-} | tee -a "$out.new"
done
mv "$out.new" "$out"

venv="$HOME/.cache/openchat-bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r benches/requirements.txt
"$venv/bin/python" benches/chart.py "$out" "benches/results/$name.png"
