#!/usr/bin/env bash
# Builds the example OCI image layout from files in examples/hello/, reproducibly
# (fixed mtimes, owners and order): examples/build/hello, tag "latest".
# Layer 1 holds a small tree; layer 2 adds a file and deletes one with a whiteout.
# Needs only tar, gzip and sha256sum.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src="$here/examples/hello"
out="${1:-$here/examples/build/hello}"
rm -rf "$out"
mkdir -p "$out/blobs/sha256"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
put_blob() { local h; h=$(sha "$1"); cp "$1" "$out/blobs/sha256/$h"; echo "$h"; }

layers_json=""
diff_ids=""
for layer in layer1 layer2; do
  tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner --format=pax \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$src/$layer" -cf "$work/$layer.tar" .
  diff_id=$(sha "$work/$layer.tar")
  gzip -n -9 -c "$work/$layer.tar" > "$work/$layer.tar.gz"
  digest=$(put_blob "$work/$layer.tar.gz")
  layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$(size "$work/$layer.tar.gz")}"
  diff_ids+="${diff_ids:+,}\"sha256:$diff_id\""
done

printf '{"architecture":"amd64","os":"linux","created":"2023-11-14T22:13:20Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/bin/hello"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$diff_ids" > "$work/config.json"
config=$(put_blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$config" "$(size "$work/config.json")" "$layers_json" > "$work/manifest.json"
manifest=$(put_blob "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
  "$manifest" "$(size "$work/manifest.json")" > "$out/index.json"
echo "built $out (manifest sha256:$manifest)"
