#!/usr/bin/env bash
# The main job on the example image that ships in the repo: build strata, build the
# example OCI layout from examples/hello/, pull it into a fresh store, list and
# inspect it, and show the unpacked, shared layer directories.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
scripts/build-example.sh
root="${STRATA_ROOT:-$PWD/examples/build/demo-root}"
strata=(target/release/strata --root "$root")
set -x
"${strata[@]}" pull oci:examples/build/hello:latest
"${strata[@]}" images
"${strata[@]}" inspect oci:examples/build/hello:latest
set +x
echo "unpacked layers (whiteouts stored as overlayfs reads them):"
find "$root/store/layers" -path '*/rootfs/*' -printf '%M %p\n' | sed "s|$root/||"
set -x
rootfs=$("${strata[@]}" provision demo oci:examples/build/hello:latest | tail -1)
ls -R "$rootfs"
cat "$rootfs/usr/share/hello/greeting.txt"
"${strata[@]}" containers
"${strata[@]}" destroy demo
