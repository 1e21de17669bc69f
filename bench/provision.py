#!/usr/bin/env python3
"""Provisioning benchmarks, side by side in one run (issue 3's targets).

  sudo bench/provision.py            # about 3 minutes; needs root, xfsprogs, the unpack corpus

1. overlay provision of a cached image through the CLI: tiny image vs ~1.2 GiB image,
   alternated, against a bare `mount -t overlay` process;
2. 1,000 provision+destroy cycles in one process (overlay): rate, p50, p99;
3. copy backend vs `cp -a` of the same flattened tree (tmpfs), and on an XFS loop
   image where strata clones with reflinks;
4. `strata recover` with 10,000 containers on disk.
Everything runs under a private tmpfs (and the XFS image) that is unmounted at the end.
"""
import os, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STRATA = os.path.join(REPO, "target/release/strata")
CORPUS = os.environ.get("BENCH_DIR", "/var/tmp/strata-bench-unpack") + "/layout"
RUNS = int(os.environ.get("RUNS", "30"))
# Where the strata root of rows 1, 2 and 4 lives: "disk" (/var/tmp, like /var/lib/strata)
# or "tmpfs". The copy rows always use a tmpfs and an XFS image (see below).
FS = os.environ.get("FS", "disk")

def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)

def timed(args):
    t = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000

def med(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}–{max(xs):.2f})"

def build_big_image(work):
    """The unpack corpus layer plus a 1 GiB file layer: ~1.25 GiB unpacked."""
    layout = os.path.join(work, "big")
    sh("cp", "-r", CORPUS, layout)
    blobs = os.path.join(layout, "blobs/sha256")
    sh("sh", "-c", f"mkdir -p {work}/l && head -c 1073741824 /dev/zero > {work}/l/big && tar -C {work}/l -cf {work}/big.tar big && rm -rf {work}/l")
    import hashlib, json
    def digest(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    diff_id = digest(f"{work}/big.tar")
    sh("sh", "-c", f"gzip -1 -c {work}/big.tar > {work}/big.tar.gz")
    gz = digest(f"{work}/big.tar.gz")
    os.rename(f"{work}/big.tar.gz", f"{blobs}/{gz}")
    os.remove(f"{work}/big.tar")
    index = json.load(open(f"{layout}/index.json"))
    mdesc = index["manifests"][0]
    manifest = json.load(open(f"{blobs}/{mdesc['digest'][7:]}"))
    config = json.load(open(f"{blobs}/{manifest['config']['digest'][7:]}"))
    config["rootfs"]["diff_ids"].append("sha256:" + diff_id)
    cbytes = json.dumps(config).encode()
    chex = hashlib.sha256(cbytes).hexdigest()
    open(f"{blobs}/{chex}", "wb").write(cbytes)
    manifest["config"] = {"mediaType": manifest["config"]["mediaType"], "digest": "sha256:" + chex, "size": len(cbytes)}
    manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + gz,
                               "size": os.path.getsize(f"{blobs}/{gz}")})
    mbytes = json.dumps(manifest).encode()
    mhex = hashlib.sha256(mbytes).hexdigest()
    open(f"{blobs}/{mhex}", "wb").write(mbytes)
    index["manifests"] = [{"mediaType": mdesc["mediaType"], "digest": "sha256:" + mhex, "size": len(mbytes),
                           "annotations": {"org.opencontainers.image.ref.name": "big"}}]
    json.dump(index, open(f"{layout}/index.json", "w"))
    return f"oci:{layout}:big"

def main():
    if os.geteuid() != 0:
        sys.exit("run as root (overlay mounts)")
    if not os.path.exists(CORPUS + "/index.json"):
        sh(os.path.join(HERE, "unpack.sh"), env={**os.environ, "RUNS": "1"}, stdout=subprocess.DEVNULL)
    sh("cargo", "build", "--release", "--quiet", cwd=REPO)
    sh("cargo", "build", "--release", "--quiet", "--benches", cwd=REPO)
    sh(os.path.join(REPO, "scripts/build-example.sh"), stdout=subprocess.DEVNULL)
    tiny = f"oci:{REPO}/examples/build/hello:latest"
    work = tempfile.mkdtemp(prefix="strata-bench-prov-", dir="/var/tmp")
    fs = os.path.join(work, "fs")
    os.makedirs(fs)
    sh("mount", "-t", "tmpfs", "-o", "size=12g", "strata-bench", fs)
    xfs = os.path.join(work, "xfs")
    state = fs
    mounted_xfs = False
    rows = []
    try:
        state = os.path.join(work, "state") if FS == "disk" else fs
        os.makedirs(state, exist_ok=True)
        root = os.path.join(state, "root")
        big = build_big_image(fs)
        for ref in (tiny, big, f"oci:{CORPUS}:bench"):
            sh(STRATA, "--root", root, "pull", ref, stdout=subprocess.DEVNULL)
        # 1. CLI overlay provision, tiny vs big, and a bare mount(8) of overlay.
        lower, upper, wd, tgt = (os.path.join(fs, d) for d in ("lo", "up", "wd", "mnt"))
        lo2 = os.path.join(fs, "lo2")
        for d in (lower, lo2, upper, wd, tgt):
            os.makedirs(d)
        t_tiny, t_big, t_mount = [], [], []
        for i in range(RUNS):
            t_tiny.append(timed([STRATA, "--root", root, "provision", f"t{i}", tiny, "--backend", "overlay"]))
            t_big.append(timed([STRATA, "--root", root, "provision", f"b{i}", big, "--backend", "overlay"]))
            t_mount.append(timed(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}:{lo2},upperdir={upper},workdir={wd}", tgt]))
            sh("umount", tgt)
        for i in range(RUNS):
            sh(STRATA, "--root", root, "destroy", f"t{i}", stdout=subprocess.DEVNULL)
            sh(STRATA, "--root", root, "destroy", f"b{i}", stdout=subprocess.DEVNULL)
        rows.append(("overlay provision, tiny image (CLI, ms)", med(t_tiny), ""))
        rows.append(("overlay provision, 1.25 GiB image (CLI, ms)", med(t_big),
                     f"big/tiny = {statistics.median(t_big) / statistics.median(t_tiny):.2f}"))
        rows.append(("`mount -t overlay` process (ms)", med(t_mount),
                     f"strata/mount = {statistics.median(t_tiny) / statistics.median(t_mount):.2f}"))
        # 2. In-process cycles.
        out = subprocess.run([os.path.join(REPO, "target/release/deps", b) for b in os.listdir(os.path.join(REPO, "target/release/deps"))
                              if b.startswith("provision-") and os.access(os.path.join(REPO, "target/release/deps", b), os.X_OK) and "." not in b][:1]
                             + ["cycles", root, tiny, "overlay", "1000"], check=True, capture_output=True, text=True).stdout.strip()
        rows.append(("1,000 overlay provision+destroy cycles, in process", out, ""))
        # 3. copy backend vs cp -a, tmpfs then XFS with reflinks.
        corpus = f"oci:{CORPUS}:bench"
        def copy_rows(root, flat, label):
            s, c = [], []
            for i in range(5):
                sh("sync")
                s.append(timed([STRATA, "--root", root, "provision", f"cp{i}", corpus, "--backend", "copy"]) / 1000)
                sh("sync")
                c.append(timed(["cp", "-a", flat, os.path.join(os.path.dirname(root), f"cpa{i}")]) / 1000)
            rows.append((f"copy backend, 247 MB tree, {label} (s)", med(s), f"strata/cp -a = {statistics.median(s) / statistics.median(c):.2f}"))
            rows.append((f"`cp -a` of the flattened tree, {label} (s)", med(c), ""))
            return statistics.median(s)
        troot = os.path.join(fs, "copy-root")
        sh(STRATA, "--root", troot, "pull", corpus, stdout=subprocess.DEVNULL)
        tflat = subprocess.run([STRATA, "--root", troot, "provision", "flat", corpus, "--backend", "copy"],
                               check=True, capture_output=True, text=True).stdout.strip()
        copy_rows(troot, tflat, "tmpfs")
        img = os.path.join(fs, "xfs.img")
        sh("truncate", "-s", "6G", img)
        sh("mkfs.xfs", "-q", "-m", "reflink=1", img)
        os.makedirs(xfs)
        sh("mount", "-o", "loop", img, xfs)
        mounted_xfs = True
        xroot = os.path.join(xfs, "root")
        sh(STRATA, "--root", xroot, "pull", corpus, stdout=subprocess.DEVNULL)
        xflat = subprocess.run([STRATA, "--root", xroot, "provision", "flat", corpus, "--backend", "copy"],
                               check=True, capture_output=True, text=True).stdout.strip()
        strata_xfs = copy_rows(xroot, xflat, "XFS with reflink")
        never = []
        for i in range(5):
            sh("sync")
            never.append(timed(["cp", "-a", "--reflink=never", xflat, os.path.join(xfs, f"never{i}")]) / 1000)
        rows.append(("`cp -a --reflink=never`, XFS (s)", med(never),
                     f"reflink speed-up of strata copy = {statistics.median(never) / strata_xfs:.1f}x"))
        # 4. recover with 10,000 containers.
        rroot = os.path.join(state, "recover-root")
        subprocess.run([os.path.join(REPO, "target/release/deps", b) for b in os.listdir(os.path.join(REPO, "target/release/deps"))
                        if b.startswith("provision-") and "." not in b][:1] + ["populate", rroot, tiny, "copy", "10000"],
                       check=True, capture_output=True)
        rec = [timed([STRATA, "--root", rroot, "recover"]) / 1000 for _ in range(3)]
        rows.append(("`strata recover`, 10,000 containers (s)", med(rec), ""))
    finally:
        for r in ("root", "recover-root"):
            subprocess.run([STRATA, "--root", os.path.join(state, r), "recover", "--alive", "none"], capture_output=True)
        if mounted_xfs:
            subprocess.run(["umount", "-l", xfs])
        subprocess.run(["umount", "-l", fs])
        subprocess.run(["rm", "-rf", work])
    print(f"date: {time.strftime('%Y-%m-%d')}, cores: {os.cpu_count()}, state on: {FS}, runs: {RUNS} (copy rows: 5)")
    print("| measurement | median (min–max) | ratio |")
    print("|---|---|---|")
    for name, value, ratio in rows:
        print(f"| {name} | {value} | {ratio} |")

main()
