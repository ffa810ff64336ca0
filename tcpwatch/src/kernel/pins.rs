//! Pinned maps: what survives a daemon restart (socket ages, retransmit chains, resets per
//! port), in `<pin_dir>/abi-<ABI_VERSION>/`.
use std::path::{Path, PathBuf};

use aya::maps::MapData;
use tcpwatch_common::hooks::map_size;
use tcpwatch_common::{ABI_VERSION, PortKey, PortResets, SockState};

/// Maps that outlive the daemon: (name, key size, value size, max entries). Their layout is
/// part of [`ABI_VERSION`].
pub(super) fn pinned_maps(max_sockets: u32) -> [(&'static str, u32, u32, u32); 3] {
    #[expect(clippy::cast_possible_truncation, reason = "struct sizes are small")]
    let socks = (size_of::<u64>() as u32, size_of::<SockState>() as u32);
    #[expect(clippy::cast_possible_truncation, reason = "struct sizes are small")]
    let ports = (size_of::<PortKey>() as u32, size_of::<PortResets>() as u32);
    [
        ("SOCKS", socks.0, socks.1, max_sockets),
        // Socket-local storage: an `int` key (the socket's fd from userspace), no maximum.
        ("SOCK_STORE", 4, socks.1, 0),
        ("PORT_RESETS", ports.0, ports.1, map_size::PORT_RESETS),
    ]
}

/// Prepares `<dir>/abi-<ABI_VERSION>/` for pinned maps: removes pins of other ABI versions
/// and pins whose shape no longer matches (a clear log line each time). Returns None, with a
/// warning, when pinning is impossible (bpffs not mounted): tcpwatch then runs without it.
pub(super) fn prepare_pins(dir: &Path, max_sockets: u32) -> Option<PathBuf> {
    let root = dir.parent().unwrap_or(dir);
    if !is_bpffs(root) {
        tracing::warn!(
            path = %root.display(),
            "bpffs is not mounted there: socket ages and retransmit chains will not survive a \
             restart (mount it: `mount -t bpf bpf /sys/fs/bpf`, or in Kubernetes mount the \
             host's /sys/fs/bpf)"
        );
        return None;
    }
    let current = format!("abi-{ABI_VERSION}");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("abi-") && name != current {
                tracing::warn!(
                    path = %e.path().display(),
                    "removing pinned maps of an incompatible tcpwatch version ({name}, this is \
                     {current}): kernel-side socket history restarts from now"
                );
                if let Err(err) = std::fs::remove_dir_all(e.path()) {
                    tracing::warn!(error = %err, "could not remove stale pins");
                }
            }
        }
    }
    let versioned = dir.join(current);
    if let Err(err) = std::fs::create_dir_all(&versioned) {
        tracing::warn!(path = %versioned.display(), error = %err, "cannot create pin directory; not pinning");
        return None;
    }
    for (name, key, value, max) in pinned_maps(max_sockets) {
        let path = versioned.join(name);
        if !path.exists() {
            continue;
        }
        let shape = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map(|i| (i.key_size(), i.value_size(), i.max_entries()));
        match shape {
            Ok(found) if found == (key, value, max) => {
                tracing::info!(map = name, path = %path.display(), "reusing pinned map: socket history kept");
            }
            other => {
                tracing::warn!(
                    map = name,
                    path = %path.display(),
                    found = ?other,
                    expected = ?(key, value, max),
                    "pinned map has another shape (other build or max_connections changed): \
                     replacing it, kernel-side history restarts from now"
                );
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Some(versioned)
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: zeroed statfs is a valid out-buffer; c is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}
