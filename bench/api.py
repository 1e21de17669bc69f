#!/usr/bin/env python3
"""Provision+destroy through the daemon's API: 8 concurrent clients over the unix
socket, overlay backend, a cached image; rate and p50/p99 latency.

  sudo bench/api.py            # about 30 s; needs root (overlay); state on /var/tmp (disk)
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.path.join(REPO, "target/release/strata")
CLIENTS = int(os.environ.get("CLIENTS", "8"))
SECONDS = float(os.environ.get("SECONDS", "15"))


def call(sock, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    chunks = []
    while True:
        c = s.recv(65536)
        if not c:
            break
        chunks.append(c)
    s.close()
    head = b"".join(chunks).split(b"\r\n", 1)[0]
    return int(head.split()[1])


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (overlay)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    subprocess.run([os.path.join(REPO, "scripts/build-example.sh")], check=True, stdout=subprocess.DEVNULL)
    work = tempfile.mkdtemp(prefix="strata-bench-api-", dir="/var/tmp")
    root, sock = os.path.join(work, "root"), os.path.join(work, "s.sock")
    daemon = subprocess.Popen([STRATA, "--root", root, "--socket", sock, "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.02)
        image = f"oci:{REPO}/examples/build/hello:latest"
        assert call(sock, "POST", "/v1/images", {"image": image}) == 200
        latencies, errors = [], []
        stop = time.time() + SECONDS

        def client(n):
            i = 0
            while time.time() < stop:
                cid = f"b{n}-{i}"
                t = time.perf_counter()
                a = call(sock, "POST", "/v1/containers", {"id": cid, "image": image, "backend": "overlay"})
                b = call(sock, "DELETE", f"/v1/containers/{cid}")
                latencies.append((time.perf_counter() - t) * 1000)
                if a != 200 or b != 200:
                    errors.append((a, b))
                i += 1

        start = time.time()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - start
        latencies.sort()
        pct = lambda p: latencies[int((len(latencies) - 1) * p)]
        print(f"{time.strftime('%Y-%m-%d')}: {CLIENTS} clients, {len(latencies)} provision+destroy cycles in {elapsed:.1f} s: "
              f"{len(latencies) / elapsed:.0f} cycles/s, p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms per cycle, {len(errors)} errors")
    finally:
        daemon.terminate()
        daemon.wait(30)
        subprocess.run([STRATA, "--root", root, "recover", "--alive", "none"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


main()
