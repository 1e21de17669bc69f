#!/usr/bin/env python3
"""strata vs skopeo+umoci vs containerd, one run; driven by bench/run (see its header).

Fairness on these shared 2-core machines: tools alternate within every run (the order
rotates), each row records load1 and how busy the host was during it, every run gets
fresh directories, and each image is measured on its own freshly made ext4 file
system on a loop device, thrown away whole afterwards: deleting a big tree on the root
file system (ext4 without a journal) would slow the next tool's file creation 10-20x.
"""
import atexit, csv, hashlib, json, mmap, os, random, re, shutil, signal, socket, statistics, subprocess, sys, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(REPO, "target/release/strata")
BENCH = os.environ.get("STRATA_BENCH", "/var/tmp/strata-bench")
RUNS = int(os.environ.get("RUNS", "5"))
MICRO = int(os.environ.get("MICRO_RUNS", "10"))
ALL_IMAGES = ["tiny", "debian", "debian-5", "smallfiles", "bigfile", "debian-zstd"]
IMAGES = [i for i in os.environ.get("IMAGES", ",".join(ALL_IMAGES)).split(",") if i]
STAMP = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
OUT = os.path.join(REPO, "bench/results", STAMP)

started = []      # (name, Popen)
mounts = []       # mount points to undo at exit


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, **kw)


def out(*args):
    return sh(*args, capture_output=True, text=True).stdout.strip()


def cleanup():
    for name, proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", m], capture_output=True)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def warm_guest_memory():
    """Touches (almost) all free RAM once, then frees it.

    On these VMs the first write to a guest page the hypervisor has not backed yet costs
    a host fault: unpacking into never-used page cache ran at ~500 MB/s in the kernel's
    copy (perf: copy_folio_from_iter_atomic at 33%), and runs after the sixth of an image
    took 2x as long as the first five. A real machine has no such state, and it hit
    whichever tool wrote into fresh memory first; touching the memory once up front puts
    every tool in the steady state.
    """
    avail = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemAvailable:")) * 1024
    size = max(0, avail - (2 << 30))
    if size <= 0:
        return
    block = b"\1" * (64 << 20)
    m = mmap.mmap(-1, size)
    for off in range(0, size, len(block)):
        m.write(block[: min(len(block), size - off)])  # every page faulted in
    m.close()
    log(f"touched {size >> 30} GiB of guest memory once (see warm_guest_memory)")


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return idle, sum(fields)


def measure(cmds, env=None):
    """Runs commands one after the other; returns (seconds, peak RSS KiB, load1, host busy %, ok)."""
    sh("sync")
    load1 = float(open("/proc/loadavg").read().split()[0])
    idle0, total0 = cpu_times()
    seconds, rss, ok = 0.0, 0, True
    for cmd in cmds:
        tfile = os.path.join(BENCH, "time.out")
        t0 = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tfile] + [str(c) for c in cmd],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        seconds += time.perf_counter() - t0
        try:
            rss = max(rss, int(open(tfile).read().split()[-1]))
        except (ValueError, IndexError):
            pass
        if r.returncode != 0:
            ok = False
            log(f"failed: {' '.join(map(str, cmd))}: {r.stderr.decode(errors='replace')[-300:]}")
            break
    idle1, total1 = cpu_times()
    busy = 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))
    return seconds, rss, load1, busy, ok


# ---------------------------------------------------------------- corpus

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def debian_mirror():
    for path in ["/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"]:
        if os.path.exists(path):
            text = open(path).read()
            m = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def tar(src, dest, members=(".",)):
    sh("tar", "--sort=name", "--numeric-owner", "--format=pax", "--pax-option=delete=atime,delete=ctime",
       "-C", src, "-cf", dest, *members)


def make_layout(name, tars, compression="gzip"):
    """An OCI layout with one image tagged `name` from uncompressed tars (base first)."""
    layout = os.path.join(BENCH, "layouts", name)
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    tmp = layout + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs/sha256"))
    layers, diff_ids = [], []
    for t in tars:
        diff_ids.append("sha256:" + sha256_file(t))
        blob = t + (".gz" if compression == "gzip" else ".zst")
        if compression == "gzip":
            sh("sh", "-c", f"pigz -6 -n -c '{t}' > '{blob}'")
        else:
            sh("sh", "-c", f"zstd -q -3 -c '{t}' > '{blob}'")
        digest = sha256_file(blob)
        os.replace(blob, os.path.join(tmp, "blobs/sha256", digest))
        media = "application/vnd.oci.image.layer.v1.tar+" + ("gzip" if compression == "gzip" else "zstd")
        layers.append({"mediaType": media, "digest": "sha256:" + digest, "size": os.path.getsize(os.path.join(tmp, "blobs/sha256", digest))})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        open(os.path.join(tmp, "blobs/sha256", d), "wb").write(data)
        return d
    cdig = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cdig, "size": len(config)},
                           "layers": layers}).encode()
    mdig = put(manifest)
    open(os.path.join(tmp, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": "sha256:" + mdig, "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": name}}]},
              open(os.path.join(tmp, "index.json"), "w"))
    os.rename(tmp, layout)
    return layout


def corpus(name):
    """Builds (once) the uncompressed layer tars of an image; returns (tars, compression)."""
    d = os.path.join(BENCH, "corpus", name)
    os.makedirs(d, exist_ok=True)
    done = os.path.join(d, "done.json")
    if os.path.exists(done):
        return json.load(open(done))
    if name == "tiny":
        src = os.path.join(REPO, "examples/hello")
        tars = []
        for layer in ("layer1", "layer2"):
            t = os.path.join(d, layer + ".tar")
            tar(os.path.join(src, layer), t)
            tars.append(t)
        result = (tars, "gzip")
    elif name in ("debian", "debian-5", "debian-zstd"):
        root = os.path.join(BENCH, "corpus", "debian-rootfs")
        if not os.path.exists(os.path.join(root, "etc/debian_version")):
            log(f"debootstrap bookworm minbase from {debian_mirror()} (a few minutes, once)")
            shutil.rmtree(root, ignore_errors=True)
            sh("debootstrap", "--variant=minbase", "bookworm", root, debian_mirror(), stdout=subprocess.DEVNULL)
            shutil.rmtree(os.path.join(root, "var/cache/apt/archives"), ignore_errors=True)
            os.makedirs(os.path.join(root, "var/cache/apt/archives/partial"), exist_ok=True)
        if name == "debian-5":
            groups = [["usr/lib"], ["usr/share"], ["usr/bin", "usr/sbin", "usr/libexec", "usr/include", "usr/games", "usr/local", "usr/src"],
                      [m for m in sorted(os.listdir(root)) if m != "usr"]]
            tars = []
            for i, members in enumerate(groups):
                members = [m for m in members if os.path.lexists(os.path.join(root, m))]
                t = os.path.join(d, f"layer{i + 1}.tar")
                tar(root, t, members)
                tars.append(t)
            # layer 5: a whiteout and an opaque dir over the layers below
            top = os.path.join(d, "top")
            shutil.rmtree(top, ignore_errors=True)
            os.makedirs(os.path.join(top, "usr/share"))
            os.makedirs(os.path.join(top, "var/cache/debconf"))
            open(os.path.join(top, "usr/share/.wh.doc"), "w").close()
            open(os.path.join(top, "var/cache/debconf/.wh..wh..opq"), "w").close()
            open(os.path.join(top, "var/cache/debconf/fresh"), "w").write("replaced\n")
            t = os.path.join(d, "layer5.tar")
            tar(top, t)
            tars.append(t)
            result = (tars, "gzip")
        else:
            t = os.path.join(d, "layer.tar")
            tar(root, t)
            result = ([t], "zstd" if name == "debian-zstd" else "gzip")
    elif name == "smallfiles":
        src = os.path.join(d, "tree")
        shutil.rmtree(src, ignore_errors=True)
        rng = random.Random(42)
        words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
        for i in range(50_000):
            sub = os.path.join(src, f"d{i // 1000:02d}")
            if i % 1000 == 0:
                os.makedirs(sub)
            size = rng.randint(1024, 4096)
            data = b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
            open(os.path.join(sub, f"f{i:05d}.txt"), "wb").write(data)
        t = os.path.join(d, "layer.tar")
        tar(src, t)
        shutil.rmtree(src)
        result = ([t], "gzip")
    elif name == "bigfile":
        src = os.path.join(d, "tree")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        # 1 GiB of real binaries, repeated: compresses like real content (about 2.5:1).
        pool = b"".join(open(os.path.join("/usr/lib/x86_64-linux-gnu", f), "rb").read()
                        for f in sorted(os.listdir("/usr/lib/x86_64-linux-gnu"))[:400]
                        if os.path.isfile(os.path.join("/usr/lib/x86_64-linux-gnu", f)))[: 64 << 20]
        with open(os.path.join(src, "big.bin"), "wb") as f:
            written = 0
            while written < 1 << 30:
                chunk = pool[: (1 << 30) - written]
                f.write(chunk)
                written += len(chunk)
        t = os.path.join(d, "layer.tar")
        tar(src, t)
        shutil.rmtree(src)
        result = ([t], "gzip")
    else:
        raise SystemExit(f"unknown image {name}")
    json.dump(result, open(done, "w"))
    return result


# ---------------------------------------------------------------- services

def start_registry():
    port = free_port()
    data = os.path.join(BENCH, "registry-data")
    cfg = os.path.join(BENCH, "registry.yml")
    open(cfg, "w").write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
                         f"    rootdirectory: {data}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(("registry", proc))
    wait_port(port)
    return port


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Containerd:
    """A private containerd (overlayfs snapshotter) under `root`, stopped by pid."""

    def __init__(self, root):
        self.root = root
        self.sock = os.path.join(root, "c.sock")
        os.makedirs(root, exist_ok=True)
        cfg = os.path.join(root, "config.toml")
        open(cfg, "w").write(f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
                             f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.sock}"\n')
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(("containerd", self.proc))
        deadline = time.time() + 30
        while not os.path.exists(self.sock):
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("containerd did not start")
            time.sleep(0.05)
        time.sleep(0.2)

    def ctr(self, *args):
        return ["ctr", "-a", self.sock, "-n", "strata-bench", *args]

    def peak_rss_kib(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for line in reversed(open("/proc/self/mountinfo").read().splitlines()):
            target = line.split()[4]
            if target.startswith(self.root):
                subprocess.run(["umount", "-l", target], capture_output=True)


def work_fs(name):
    """A fresh ext4 (with journal) on a loop device for one image's runs."""
    img = os.path.join(BENCH, f"work-{name}.img")
    mnt = os.path.join(BENCH, f"work-{name}")
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    if os.path.exists(img):
        os.remove(img)
    sh("truncate", "-s", "40G", img)
    # Inode tables and journal written now: lazy init would keep a kernel thread
    # writing in the background during the measurements.
    sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
    os.makedirs(mnt, exist_ok=True)
    sh("mount", "-o", "loop", img, mnt)
    mounts.append(mnt)
    return img, mnt


def drop_fs(img, mnt):
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    if mnt in mounts:
        mounts.remove(mnt)
    os.remove(img)


def chain_id(diff_ids):
    chain = diff_ids[0]
    for d in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {d}".encode()).hexdigest()
    return chain


# ---------------------------------------------------------------- the run

def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(BENCH, exist_ok=True)
    rows = []

    def record(image, step, tool, run, result):
        seconds, rss, load1, busy, ok = result
        rows.append({"image": image, "step": step, "tool": tool, "run": run, "seconds": round(seconds, 4) if ok else "",
                     "max_rss_kib": rss, "load1": load1, "host_busy_pct": round(busy, 1), "ok": ok})

    if os.environ.get("CORPUS_ONLY") == "1":
        for name in IMAGES:
            tars, compression = corpus(name)
            make_layout(name, tars, compression)
            log(f"corpus {name} ready")
        return
    warm_guest_memory()
    port = start_registry()
    log(f"registry on 127.0.0.1:{port}")
    for name in IMAGES:
        tars, compression = corpus(name)
        layout = make_layout(name, tars, compression)
        ref = f"127.0.0.1:{port}/bench/{name}:1"
        sh("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{name}", f"docker://{ref}")
        manifest = json.load(open(os.path.join(layout, "blobs/sha256", json.load(open(os.path.join(layout, "index.json")))["manifests"][0]["digest"][7:])))
        config = json.load(open(os.path.join(layout, "blobs/sha256", manifest["config"]["digest"][7:])))
        biggest = max(manifest["layers"], key=lambda l: l["size"])
        blob = os.path.join(layout, "blobs/sha256", biggest["digest"][7:])
        big_tar = tars[[l["digest"] for l in manifest["layers"]].index(biggest["digest"])]
        img, w = work_fs(name)
        log(f"{name}: {len(tars)} layer(s), {sum(l['size'] for l in manifest['layers']) / 1e6:.1f} MB compressed")
        try:
            tools = ["strata", "skopeo+umoci", "ctr"]
            keep = {}
            for run in range(RUNS):
                order = tools[run % 3:] + tools[:run % 3]
                for tool in order:
                    d = os.path.join(w, f"pull-{run}-{tool.replace('+', '-')}")
                    os.makedirs(d)
                    if tool == "strata":
                        record(name, "pull+unpack", tool, run, measure([[STRATA, "--root", d, "pull", ref]]))
                        keep["strata"] = d
                    elif tool == "skopeo+umoci":
                        record(name, "pull+unpack", tool, run, measure([
                            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d}/oci:img"],
                            ["umoci", "unpack", "--image", f"{d}/oci:img", f"{d}/bundle"]]))
                        if os.path.isdir(f"{d}/bundle/rootfs"):
                            keep["flat"] = f"{d}/bundle/rootfs"
                    else:
                        c = Containerd(os.path.join(d, "containerd"))
                        seconds, rss, load1, busy, ok = measure([c.ctr("image", "pull", "--plain-http", ref)])
                        record(name, "pull+unpack", tool, run, (seconds, max(rss, c.peak_rss_kib()), load1, busy, ok))
                        if run == RUNS - 1:
                            keep["containerd"] = c
                        else:
                            c.stop()
                # the one-pass floor: strata from the local layout, no network
                d = os.path.join(w, f"local-{run}")
                record(name, "unpack from local layout", "strata", run, measure([[STRATA, "--root", d, "pull", f"oci:{layout}:{name}"]]))
                # Free this run's space (off the clock; the file system has a journal, so
                # inodes are reused at once), keeping what the provisioning rows need.
                if run < RUNS - 1:
                    for entry in os.listdir(w):
                        if entry.startswith((f"pull-{run}-", f"local-{run}")):
                            if os.path.join(w, entry) not in (keep.get("strata"), os.path.dirname(os.path.dirname(keep.get("flat", "/x/y/z")))):
                                shutil.rmtree(os.path.join(w, entry), ignore_errors=True)
                    sh("sync")
            # provisioning from the cached image
            sroot = keep["strata"]
            for i in range(MICRO):
                record(name, "provision overlay", "strata", i, measure([[STRATA, "--root", sroot, "provision", f"ov{i}", ref, "--backend", "overlay"]]))
                record(name, "provision copy", "strata", i, measure([[STRATA, "--root", sroot, "provision", f"cp{i}", ref, "--backend", "copy"]]))
                if len(tars) == 1:
                    record(name, "provision bind", "strata", i, measure([[STRATA, "--root", sroot, "provision", f"bd{i}", ref, "--backend", "bind"]]))
                c = keep.get("containerd")
                if c:
                    target = os.path.join(w, f"ctr-mnt-{i}")
                    os.makedirs(target)
                    # `--target` makes ctr print the mount command, which the shell then runs.
                    script = f"set -e; eval \"$({' '.join(c.ctr('snapshots', 'prepare', '--target', target, f'k{i}', chain_id(config['rootfs']['diff_ids'])))})\""
                    record(name, "provision overlay", "ctr snapshots prepare + mount", i, measure([["sh", "-c", script]]))
                    subprocess.run(["umount", target], capture_output=True)
                if "flat" in keep:
                    record(name, "provision copy", "cp -a", i, measure([["cp", "-a", keep["flat"], os.path.join(w, f"cpa-{i}")]]))
            # the machine's limits on the largest blob
            for i in range(RUNS):
                record(name, "limit", "curl (download)", i, measure([["curl", "-s", "-o", "/dev/null", f"http://{ref.split('/')[0]}/v2/bench/{name}/blobs/{biggest['digest']}"]]))
                if compression == "gzip":
                    record(name, "limit", "gzip -dc", i, measure([["sh", "-c", f"gzip -dc '{blob}' > /dev/null"]]))
                    record(name, "limit", "pigz -dc", i, measure([["sh", "-c", f"pigz -dc '{blob}' > /dev/null"]]))
                else:
                    record(name, "limit", "zstd -dc", i, measure([["sh", "-c", f"zstd -q -dc '{blob}' > /dev/null"]]))
                t = os.path.join(w, f"tarx-{i}")
                os.makedirs(t)
                record(name, "limit", "tar -x (uncompressed)", i, measure([["tar", "-xf", big_tar, "-C", t]]))
            for i in range(MICRO):
                subprocess.run([STRATA, "--root", sroot, "recover", "--alive", "none"], capture_output=True)
                break
            if "containerd" in keep:
                keep["containerd"].stop()
        finally:
            drop_fs(img, w)
    # recover with 10,000 containers
    if os.environ.get("SKIP_RECOVER") != "1":
        img, w = work_fs("recover")
        try:
            root = os.path.join(w, "root")
            deps = os.path.join(REPO, "target/release/deps")
            bench_bin = next(os.path.join(deps, b) for b in sorted(os.listdir(deps)) if b.startswith("provision-") and "." not in b)
            tiny = f"oci:{make_layout('tiny', corpus('tiny')[0])}:tiny"
            sh(bench_bin, "populate", root, tiny, "copy", "10000", stdout=subprocess.DEVNULL)
            for i in range(RUNS):
                record("10,000 containers", "recover", "strata", i, measure([[STRATA, "--root", root, "recover"]]))
        finally:
            drop_fs(img, w)
    report(rows)


def report(rows):
    path = os.path.join(OUT, "results.csv")
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(rows)
    groups = {}
    for r in rows:
        groups.setdefault((r["image"], r["step"]), {}).setdefault(r["tool"], []).append(r)
    lines = [f"Run {STAMP} on {os.cpu_count()} cores; {RUNS} runs per pull row, {MICRO} per provision row; "
             "median (min–max) seconds; ratio = strata median / tool median; load1 and host busy % are medians over the row.", "",
             "| image | step | tool | median s (min–max) | peak RSS MiB | load1 | busy % | strata / tool |", "|---|---|---|---|---|---|---|---|"]
    medians = {}
    for (image, step), tools in groups.items():
        for tool, rs in tools.items():
            secs = [r["seconds"] for r in rs if r["ok"]]
            medians[(image, step, tool)] = statistics.median(secs) if secs else None
    for (image, step), tools in groups.items():
        strata_med = medians.get((image, step, "strata"))
        if step == "unpack from local layout":
            strata_med = medians.get((image, "unpack from local layout", "strata"))
        for tool, rs in tools.items():
            secs = [r["seconds"] for r in rs if r["ok"]]
            rss = max(r["max_rss_kib"] for r in rs) / 1024
            load = statistics.median(r["load1"] for r in rs)
            busy = statistics.median(r["host_busy_pct"] for r in rs)
            if secs:
                cell = f"{statistics.median(secs):.3f} ({min(secs):.3f}–{max(secs):.3f})"
            else:
                cell = "**failed**"
            ratio = ""
            base = medians.get((image, "pull+unpack", "strata")) if step == "limit" else strata_med
            if tool != "strata" and secs and base:
                ratio = f"{base / statistics.median(secs):.2f}"
            if step == "pull+unpack" and tool == "strata":
                local = medians.get((image, "unpack from local layout", "strata"))
                if local and secs:
                    ratio = f"{statistics.median(secs) / local:.2f}× its local one-pass"
            lines.append(f"| {image} | {step} | {tool} | {cell} | {rss:.0f} | {load:.2f} | {busy:.0f} | {ratio} |")
    summary = "\n".join(lines) + "\n"
    open(os.path.join(OUT, "summary.md"), "w").write(summary)
    chart(medians, os.path.join(OUT, "chart.svg"))
    print(summary)
    print(f"csv: {path}\nchart: {os.path.join(OUT, 'chart.svg')}")


def chart(medians, path):
    """Grouped bars: pull+unpack median per image and tool, scaled to the slowest tool of the image."""
    images = [i for i in IMAGES if (i, "pull+unpack", "strata") in medians]
    tools = [("strata", "#2a7ab0"), ("skopeo+umoci", "#e08a1e"), ("ctr", "#5aa05a")]
    w, h, left, top, bar = 860, 360, 60, 40, 30
    group = len(tools) * bar + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="20" font-size="14">cold pull + unpack, relative to the slowest tool per image (seconds on bars)</text>']
    for gi, image in enumerate(images):
        vals = [medians.get((image, "pull+unpack", t)) for t, _ in tools]
        worst = max(v for v in vals if v) or 1
        x0 = left + gi * group
        for ti, ((tool, color), v) in enumerate(zip(tools, vals)):
            x = x0 + ti * bar
            if v is None:
                parts.append(f'<text x="{x + 2}" y="{h - 86}" font-size="10">fail</text>')
                continue
            bh = (h - 120) * v / worst
            parts.append(f'<rect x="{x}" y="{h - 80 - bh:.1f}" width="{bar - 4}" height="{bh:.1f}" fill="{color}"/>')
            parts.append(f'<text x="{x}" y="{h - 84 - bh:.1f}" font-size="9">{v:.2f}</text>')
        parts.append(f'<text x="{x0}" y="{h - 62}">{image}</text>')
    for ti, (tool, color) in enumerate(tools):
        parts.append(f'<rect x="{left + ti * 150}" y="{h - 35}" width="12" height="12" fill="{color}"/>'
                     f'<text x="{left + ti * 150 + 18}" y="{h - 25}">{tool}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


if __name__ == "__main__":
    main()
