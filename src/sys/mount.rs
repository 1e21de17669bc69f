//! Mount system calls: overlay through the new mount API (one `fsconfig` per lower
//! layer, so no one-page limit on the option string), read-only binds, propagation,
//! lazy unmounts.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::CWD;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags, FsOpenFlags, MountAttrFlags,
    MountFlags, MountPropagationFlags, MoveMountFlags, UnmountFlags,
};

/// Mounts an overlay at `target`: `lowers` top layer first.
pub fn mount_overlay(lowers: &[&Path], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in lowers {
        // `lowerdir+` (Linux 6.8+) appends one layer per call.
        fsconfig_set_string(fs.as_fd(), "lowerdir+", *lower)?;
    }
    fsconfig_set_string(fs.as_fd(), "upperdir", upper)?;
    fsconfig_set_string(fs.as_fd(), "workdir", work)?;
    fsconfig_create(fs.as_fd())?;
    let mnt = fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(mnt.as_fd(), "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
    // The fds are closed here: a held mount fd would keep the superblock busy.
    Ok(())
}

/// Bind-mounts `source` at `target`, read-only.
pub fn bind_read_only(source: &Path, target: &Path) -> io::Result<()> {
    rustix::mount::mount_bind(source, target)?;
    let result = rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "");
    if let Err(e) = result {
        let _ = unmount_lazy(target);
        return Err(e.into());
    }
    Ok(())
}

/// Makes `target` a slave, then shared, as Mesos does: unmounts made on the host then
/// propagate into the mount namespaces of containers started from it.
pub fn make_slave_then_shared(target: &Path) -> io::Result<()> {
    rustix::mount::mount_change(target, MountPropagationFlags::DOWNSTREAM)?;
    rustix::mount::mount_change(target, MountPropagationFlags::SHARED)?;
    Ok(())
}

/// Detaches the mount at `target` now; the kernel frees it when no one uses it
/// (a process holding a file open inside does not block destroy: MESOS-9196).
pub fn unmount_lazy(target: &Path) -> io::Result<()> {
    Ok(rustix::mount::unmount(target, UnmountFlags::DETACH)?)
}
