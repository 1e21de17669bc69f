#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target under fuzz/seeds/<target>/.

The layer seeds are the hostile tars that past CVEs used (traversal, absolute
names, symlink and hardlink escapes, whiteouts aimed outside), so the fuzzer
starts from the attacks and mutates them. Deterministic: same files every run.
"""
import gzip
import hashlib
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
BOX = "/tmp/strata-fuzz-unpack"


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for kind, name, arg in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if kind == "file":
                info.size = len(arg)
                t.addfile(info, io.BytesIO(arg))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, arg
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, arg
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info)
    return buf.getvalue()


layers = {
    "plain": [("dir", "etc", None), ("file", "etc/hello", b"hi"), ("sym", "etc/link", "hello")],
    "dotdot": [("file", "../victim/keep", b"owned")],
    "absolute": [("file", BOX + "/victim/keep", b"owned")],
    "symlink-dir-escape": [("sym", "l", "../victim"), ("file", "l/keep", b"owned")],
    "symlink-absolute-escape": [("sym", "l", BOX + "/victim"), ("file", "l/new", b"owned")],
    "hardlink-escape": [("hard", "h", "../victim/keep")],
    "hardlink-via-symlink": [("sym", "l", "../victim"), ("hard", "h", "l/keep")],
    "whiteout-escape": [("file", "../victim/.wh.keep", b"")],
    "whiteout-via-symlink": [("sym", "l", "../victim"), ("file", "l/.wh.keep", b"")],
    "opaque-via-symlink": [("sym", "l", "../victim"), ("file", "l/.wh..wh..opq", b"")],
    "replace-dir-with-symlink": [("dir", "d", None), ("file", "d/f", b"x"), ("sym", "d", "../victim"), ("file", "d/keep", b"owned")],
    "fifo-and-long-name": [("fifo", "p", None), ("file", "a/" + "b" * 200 + "/c", b"long")],
}
for name, entries in layers.items():
    write("layer_unpack", name + ".tar", tar(entries))
write("layer_unpack", "pax.tar", tar(layers["symlink-dir-escape"], tarfile.PAX_FORMAT))
# A GNU long name and a PAX record claiming far more than they hold, gzip'ed so that
# mutations can make them real: the parser must not hold them whole.
long_name = tar([("file", "d/" + "n" * 300, b"x")])
write("layer_unpack", "longname.tar.gz", gzip.compress(long_name + b"\0" * 60000, mtime=0))
write("layer_unpack", "pax-long.tar", tar([("file", "p" * 200, b"y")], tarfile.PAX_FORMAT))
write("layer_unpack", "plain.tar.gz", gzip.compress(tar(layers["plain"]), mtime=0))
write("layer_unpack", "dotdot.tar.gz", gzip.compress(tar(layers["dotdot"]), mtime=0))

for i, ref in enumerate([
    "alpine", "docker://localhost:5000/a/b:v1@sha256:" + "e3" * 32, "[::1]:5000/app",
    "oci:/x/y:v1", "docker-archive:/a/b.tar:localhost:5000/app:v2", "aci:./a.aci",
    "appc:example.com/app:1.0?os=linux&arch=amd64", "appc:sha512-" + "ab" * 64,
]):
    write("reference_parse", f"ref{i}", ref.encode())

D = "sha256:" + "e3" * 32
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D, "size": 3}]}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "size": 5,
                        "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/bin/sh"], "Env": ["A=b"]},
          "rootfs": {"type": "layers", "diff_ids": [D]}}
schema1 = {"schemaVersion": 1, "name": "a/b", "tag": "v1", "fsLayers": [{"blobSum": D}],
           "history": [{"v1Compatibility": json.dumps({"id": "1", "config": {}})}]}
aci = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app",
       "labels": [{"name": "version", "value": "1.0"}],
       "dependencies": [{"imageName": "example.com/base", "labels": [{"name": "version", "value": "2"}]}],
       "pathWhitelist": ["/bin/sh"]}
for i, (selector, doc) in enumerate([(1, manifest), (2, index), (0, config), (5, schema1), (0, aci)]):
    write("manifest_parse", f"doc{i}", bytes([selector]) + json.dumps(doc).encode())

write("registry_answers", "bearer", b'Bearer realm="https://auth.example.com/token",service="registry",scope="repository:a/b:pull,push"')
write("registry_answers", "basic", b'Basic realm="Registry Realm", Bearer realm=x')
write("registry_answers", "token", json.dumps({"token": "a.eyJleHAiOjE4MDAwMDAwMDB9.c", "expires_in": 300, "issued_at": "2026-12-04T06:00:00Z"}).encode())
write("registry_answers", "access", json.dumps({"access_token": "opaque", "refresh_token": "r"}).encode())


def docker_save(layer_tars):
    """A `docker save` archive: manifest.json, a config whose diff_ids match, layers."""
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layer_tars]}}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    names = [f"{i}/layer.tar" for i in range(len(layer_tars))]
    manifest = [{"Config": config_name, "RepoTags": ["app:1"], "Layers": names}]
    files = [("file", "manifest.json", json.dumps(manifest).encode()), ("file", config_name, config_bytes)]
    files += [("file", n, l) for n, l in zip(names, layer_tars)]
    return tar(files)


def aci(rootfs_entries):
    manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/app",
                "labels": [{"name": "version", "value": "1.0"}, {"name": "os", "value": "linux"},
                           {"name": "arch", "value": "amd64"}]}
    entries = [("file", "manifest", json.dumps(manifest).encode()), ("dir", "rootfs", None)]
    entries += [(k, "rootfs/" + n if not n.startswith("/") else n, a) for k, n, a in rootfs_entries]
    return tar(entries)


ARCHIVE_BOX = "/tmp/strata-fuzz-archive"
write("archive_import", "save-plain", b"\0" + docker_save([tar(layers["plain"]), tar([("file", ".wh.etc", b"")])]))
write("archive_import", "save-escape", b"\0" + docker_save([tar(layers["symlink-dir-escape"])]))
write("archive_import", "save-absolute", b"\0" + docker_save([tar([("file", ARCHIVE_BOX + "/victim/keep", b"owned")])]))
write("archive_import", "aci-plain", b"\1" + aci(layers["plain"]))
write("archive_import", "aci-escape", b"\1" + aci([("sym", "l", "../../victim"), ("file", "l/keep", b"owned")]))
write("archive_import", "aci-gzip", b"\1" + gzip.compress(aci(layers["plain"]), mtime=0))
write("archive_import", "aci-signed", b"\2" + aci(layers["plain"]))
write("archive_import", "aci-signature-symlink", b"\2" + tar([
    ("file", "manifest", json.dumps({"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/s"}).encode()),
    ("dir", "rootfs", None), ("sym", "signature.asc", ARCHIVE_BOX + "/victim/keep")]))
