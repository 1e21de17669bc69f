#!/usr/bin/env bash
# Layer unpack, side by side in one run: strata pull (one pass: sha256 + gunzip +
# diff_id + untar) against GNU `tar -xzf` of the same blob and `umoci unpack` of the
# same OCI layout. Cold store every run, fresh directories, tools alternated.
#
#   bench/unpack.sh            # 5 runs each on a tmpfs the script mounts (default)
#   RUNS=7 FS=disk bench/unpack.sh   # on the root file system instead
#
# Prints a table of medians (min–max), the strata/peer ratios and peak RSS, and
# writes bench/results/unpack-<date>.csv. Needs root (tmpfs, umoci), GNU tar, gzip,
# /usr/bin/time, umoci (apt-get install -y umoci time). Takes about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
FS="${FS:-tmpfs}"
work="${BENCH_DIR:-/var/tmp/strata-bench-unpack}"
results=bench/results
mkdir -p "$results" "$work"

for tool in umoci /usr/bin/time tar gzip; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y umoci time" >&2; exit 1; }
done
cargo build --release --quiet
strata="$PWD/target/release/strata"

# The corpus: one gzip layer of ~240 MB of real files (python, gcc, perl).
layout="$work/layout"
if [ ! -f "$layout/index.json" ]; then
  echo "building the corpus layer..."
  rm -rf "$layout" && mkdir -p "$layout/blobs/sha256"
  tar --format=pax --numeric-owner -C / -cf "$work/layer.tar" usr/lib/python3.11 usr/lib/python3 usr/lib/gcc usr/share/perl
  gzip -6 -c "$work/layer.tar" > "$work/layer.tar.gz"
  diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
  cp "$work/layer.tar.gz" "$layout/blobs/sha256/$digest"
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff_id" > "$work/config.json"
  config=$(sha256sum "$work/config.json" | cut -d' ' -f1); cp "$work/config.json" "$layout/blobs/sha256/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(stat -c %s "$work/config.json")" "$digest" "$(stat -c %s "$work/layer.tar.gz")" > "$work/manifest.json"
  manifest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1); cp "$work/manifest.json" "$layout/blobs/sha256/$manifest"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
    "$manifest" "$(stat -c %s "$work/manifest.json")" > "$layout/index.json"
  rm -f "$work/layer.tar" "$work/layer.tar.gz"
fi
blob=$(ls -S "$layout"/blobs/sha256/* | head -1)
uncompressed=$(gzip -dc "$blob" | wc -c)

# Output area: a tmpfs (no disk noise, no ext4 inode-reuse stalls) or the disk.
out="$work/out"
mkdir -p "$out"
if [ "$FS" = tmpfs ]; then
  mountpoint -q "$out" || mount -t tmpfs -o size=8g strata-bench "$out"
  trap 'umount "$out" 2>/dev/null || true' EXIT
fi

csv="$results/unpack-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "run,tool,seconds,max_rss_kib,load1" > "$csv"
measure() { # name, command...
  local name=$1; shift
  sync
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%e %M' -o "$work/time.out" "$@" >/dev/null 2>&1 || { echo "$name failed" >&2; exit 1; }
  local t; t=$(tail -1 "$work/time.out")
  echo "$run,$name,${t% *},${t#* },$load" >> "$csv"
}
for run in $(seq 1 "$RUNS"); do
  d="$out/run$run"; mkdir -p "$d/tar" "$d/umoci"
  measure tar tar -xzf "$blob" -C "$d/tar"
  measure strata "$strata" --root "$d/strata" pull "oci:$layout:bench"
  measure umoci umoci unpack --image "$layout:bench" "$d/umoci/bundle"
  # Fresh directories every run; delete only after all runs (and off the clock).
done
rm -rf "${out:?}"/run*

python3 - "$csv" "$uncompressed" "$FS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
size, fs = int(sys.argv[2]), sys.argv[3]
by = {}
for r in rows:
    by.setdefault(r["tool"], []).append((float(r["seconds"]), int(r["max_rss_kib"])))
med = {t: statistics.median(s for s, _ in v) for t, v in by.items()}
print(f"layer: {size/1e6:.0f} MB uncompressed, gzip; output on {fs}; {len(by['strata'])} runs each")
print(f"| tool | median s (min–max) | MB/s | peak RSS MiB | strata / tool |")
print(f"|---|---|---|---|---|")
for t in ["strata", "tar", "umoci"]:
    v = by[t]; s = [x for x, _ in v]
    print(f"| {t} | {med[t]:.2f} ({min(s):.2f}–{max(s):.2f}) | {size/1e6/med[t]:.0f} | {max(m for _, m in v)/1024:.0f} | {med['strata']/med[t]:.2f} |")
PY
echo "csv: $csv"
