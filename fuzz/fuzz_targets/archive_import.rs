//! Any bytes as a local archive handed to `strata pull`: a `docker save` tar (its
//! `manifest.json`, configs and layers all hostile) or an appc ACI. The pull returns,
//! and nothing outside the store root changes: the victim beside it keeps its file.
//! A failed pull leaves no image record behind.
#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata::reference::ImageRef;
use strata::store::appc::{import, AciSource};
use strata::store::{PullPolicy, Store, StoreOptions};

const BOX: &str = "/tmp/strata-fuzz-archive";

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, archive)) = bytes.split_first() else { return };
    let root = Path::new(BOX);
    let (store_root, victim, input) = (root.join("root"), root.join("victim"), root.join("input"));
    let _ = fs::remove_dir_all(&store_root);
    fs::create_dir_all(&victim).expect("make the victim dir");
    fs::write(victim.join("keep"), b"keep").expect("write the victim file");
    fs::write(&input, archive).expect("write the input");

    let mut options = StoreOptions::default();
    options.unpack = options.unpack.with_max_layer_bytes(16 << 20);
    let store = Store::open(&store_root, options.clone()).expect("open the store");
    let failed = match selector % 3 {
        0 | 1 => {
            let transport = if selector % 3 == 0 { "docker-archive" } else { "aci" };
            let reference = ImageRef::parse(&format!("{transport}:{}", input.display())).expect("a valid reference");
            store.prepare(&reference, PullPolicy::Missing).is_err()
        }
        // As discovery hands an ACI over: with a signature the store writes beside it.
        _ => {
            let source = AciSource { name: "fuzz".into(), reader: Box::new(archive), signature: Some(b"sig".to_vec()) };
            let store_dir = store_root.join("store");
            import(&store_dir, &store_dir.join("staging"), source, &options.unpack, &|_, _| Ok(())).is_err()
        }
    };
    if failed {
        assert!(store.images().expect("list images").is_empty(), "a failed pull left an image record");
        let (appc_images, _) = store.appc().scan().expect("scan the appc store");
        assert!(appc_images.is_empty(), "a failed import left an appc image");
    }

    let mut beside: Vec<_> = fs::read_dir(root).expect("list the box").map(|e| e.expect("entry").file_name()).collect();
    beside.sort();
    assert_eq!(beside, ["input", "root", "victim"], "an entry appeared beside the store");
    let names: Vec<_> =
        fs::read_dir(&victim).expect("list the victim").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, ["keep"], "the victim dir changed");
    assert_eq!(fs::read(victim.join("keep")).expect("read the victim"), b"keep");
    fs::remove_dir_all(&store_root).expect("remove the store");
});
