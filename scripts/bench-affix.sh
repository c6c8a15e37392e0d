#!/usr/bin/env bash
# Quick affix benchmark: a distribution registry on loopback, a deterministic
# fp16-like weights tarball (SIZE, default 1GiB), then 3 runs each of the raw
# floor (monolithic PUT of the tarball's bytes, digest precomputed) and
# `r8im affix` with gzip, zstd and none, with wall time and peak RSS.
# Usage: scripts/bench-affix.sh [SIZE]      (needs `make deps`)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1GiB}
WORK=$(mktemp -d); trap 'kill $REG 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
R=127.0.0.1:$PORT
cat > "$WORK/reg.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/data}, delete: {enabled: true}}
http: {addr: $R}
YML
docker-registry serve "$WORK/reg.yml" >"$WORK/registry.log" 2>&1 & REG=$!
for _ in $(seq 50); do curl -sf "http://$R/v2/" >/dev/null && break; sleep 0.1; done
go run ./internal/tools/benchinput -o "$WORK/weights.tar" -size "$SIZE" -push-base "$R/base/bench:v1" >/dev/null
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$WORK/r8im" ./cmd/r8im
SUM=$(sha256sum "$WORK/weights.tar" | cut -d' ' -f1)
echo "input: $(stat -c %s "$WORK/weights.tar") bytes; $(nproc) cores"
for i in 1 2 3; do
  LOC=$(curl -sf -X POST -D - -o /dev/null "http://$R/v2/raw$i/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  case "$LOC" in http*) ;; *) LOC="http://$R$LOC";; esac
  s=$(date +%s.%N)
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' -T "$WORK/weights.tar" "$LOC&digest=sha256:$SUM" -o /dev/null
  echo "raw-floor run$i $(python3 -c "print(round($(date +%s.%N) - $s, 2))")s"
done
for c in gzip zstd none; do
  for i in 1 2 3; do
    /usr/bin/time -f "%M" -o "$WORK/rss" "$WORK/r8im" affix -q --json --base "$R/base/bench:v1" \
      --dest "$R/models/bench-$c-$i" --tar "$WORK/weights.tar" --compression "$c" --created 2026-01-01T00:00:00Z > "$WORK/out.json"
    python3 - "$WORK/out.json" "$c" "$i" "$(cat "$WORK/rss")" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
st = {s["name"]: round(s["seconds"], 2) for s in d["stages"]}
print(f"affix-{sys.argv[2]} run{sys.argv[3]} {round(sum(st.values()), 2)}s layer {d['layer']['size']} bytes "
      f"peak-rss {int(sys.argv[4]) // 1024} MiB stages {st}")
PY
  done
done
