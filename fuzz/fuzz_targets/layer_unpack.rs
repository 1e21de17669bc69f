//! Any bytes as a layer blob (compression found from the magic bytes), unpacked into
//! an empty directory beside a victim directory. Whatever the tar says, the unpack
//! returns, and nothing outside the target changes: the victim keeps its one file,
//! its content, mode and link count, and no other entry appears beside the target.
//! Run as root, as strata runs: ownership, xattrs and whiteouts are exercised too.
#![no_main]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata::layer::{unpack, Expected, UnpackOptions};

/// A fixed place, so that absolute names in a corpus can aim at the victim.
const BOX: &str = "/tmp/strata-fuzz-unpack";

fuzz_target!(|blob: &[u8]| {
    let root = Path::new(BOX);
    let (dest, victim) = (root.join("dest"), root.join("victim"));
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir_all(&victim).expect("make the victim dir");
    fs::write(victim.join("keep"), b"keep").expect("write the victim file");
    fs::create_dir(&dest).expect("make the target dir");
    let before = fs::metadata(victim.join("keep")).expect("victim file");

    let options = UnpackOptions::default().with_max_layer_bytes(16 << 20);
    let _ = unpack(blob, &Expected::default(), &dest, &options);

    let mut beside: Vec<_> = fs::read_dir(root).expect("list the box").map(|e| e.expect("entry").file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["dest", "victim"], "an entry appeared beside the target");
    let names: Vec<_> =
        fs::read_dir(&victim).expect("list the victim").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, ["keep"], "the victim dir changed");
    let after = fs::symlink_metadata(victim.join("keep")).expect("victim file");
    assert!(after.file_type().is_file(), "the victim file was replaced");
    assert_eq!((after.mode(), after.nlink(), after.uid(), after.ino()), (before.mode(), 1, before.uid(), before.ino()));
    assert_eq!(fs::read(victim.join("keep")).expect("read the victim"), b"keep");
    fs::remove_dir_all(&dest).expect("remove the target");
});
