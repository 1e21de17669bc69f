#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
# Installs the Debian packages the tests use when missing (skopeo, umoci,
# docker-registry, crun, appc-spec), then checks formatting and lints and runs every test.
# Tests that need root skip themselves with a message when not root; CI is root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(skopeo umoci docker-registry crun appc-spec busybox-static tar gzip bzip2 xz-utils openssl python3 curl util-linux)
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --quiet
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line with the totals of every test binary and the doc tests.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
