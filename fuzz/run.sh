#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another, from the
# seeds (regenerated) plus the corpus kept from earlier runs. Needs the nightly
# toolchain and cargo-fuzz (`cargo install cargo-fuzz`); run as root, as strata runs.
# A crash stops the run and leaves its input under fuzz/artifacts/<target>/. One allocation
# over 160 MiB counts as a crash: a hostile input must not make strata reserve memory
# in proportion to what it claims (the zstd window cap is 128 MiB).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reference_parse manifest_parse registry_answers layer_unpack archive_import)
python3 make-seeds.py
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" logs
  log="logs/$target.log"
  echo "== $target ($seconds s)"
  status=0
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=160 -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss|==[0-9]+== ERROR|SUMMARY|artifact_prefix|thread .* panicked)' "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "$target failed (exit $status); the whole log: fuzz/$log"
    exit "$status"
  fi
done
