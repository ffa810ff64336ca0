//! The test VM's initramfs: the runner as `/init`, `tcpwatch`, a static busybox, `nft` when the
//! host has one, the shared libraries `ldd` names (with the loader), and the kernel modules
//! the scenarios need; packed as a gzip'ed cpio (newc) archive.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::kernels::{self, Kernel};
use crate::cmd::{Cmd, find_in_path};

/// Static busybox from Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";
/// Modules (and their dependencies) for the optional nftables blackhole scenario.
const NFT_MODULES: &[&str] = &["nf_tables"];
/// Where the runner finds the module list (`tcpwatch-vmtest`'s `VM_MODULES`).
const MODULE_LIST: &str = "etc/vmtest-modules";

pub struct Binaries {
    pub tcpwatch: PathBuf,
    pub runner: PathBuf,
}

/// Builds `<work>/initrd.gz` for `kernel`; returns its path.
pub fn build(kernel: &Kernel, bins: &Binaries, work: &Path) -> Result<PathBuf> {
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "etc", "run", "lib64",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    copy(&bins.runner, &root.join("init"))?;
    copy(&bins.tcpwatch, &root.join("bin/tcpwatch"))?;
    let mut dynamic = vec![bins.runner.clone(), bins.tcpwatch.clone()];
    if Path::new(BUSYBOX).is_file() {
        copy(Path::new(BUSYBOX), &root.join("bin/busybox"))?;
        std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    }
    let nft = find_in_path("nft")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nft")).filter(|p| p.is_file()));
    let mut modules = Vec::new();
    if let Some(nft) = &nft {
        copy(nft, &root.join("bin/nft"))?;
        dynamic.push(nft.clone());
        modules.extend_from_slice(NFT_MODULES);
    }
    for bin in &dynamic {
        for lib in shared_libraries(bin)? {
            let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if !dest.exists() {
                copy(&lib, &dest)?;
            }
        }
    }
    let loaded = install_modules(kernel, &modules, &root)?;
    std::fs::write(root.join(MODULE_LIST), loaded.join("\n") + "\n")?;
    // Best effort: the runner also reopens /dev/console after mounting devtmpfs.
    let _ = Cmd::new("mknod")
        .arg(root.join("dev/console"))
        .args(["c", "5", "1"])
        .output();
    let initrd = work.join("initrd.gz");
    let script = format!(
        "set -eo pipefail; cd '{}' && find . -print0 | cpio --null -o -H newc --quiet -R 0:0 \
         | gzip -1 > '{}'",
        root.display(),
        initrd.display()
    );
    Cmd::new("bash").args(["-c", &script]).run()?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(initrd)
}

/// Copies the modules `wanted` and their dependencies (decompressed) into the image; returns
/// their guest paths in load order.
fn install_modules(kernel: &Kernel, wanted: &[&str], root: &Path) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let index = kernels::module_index(&kernel.modules)?;
    let builtin = builtin_modules(&kernel.modules);
    let deps = |m: &str| -> Result<Vec<String>> {
        if builtin.iter().any(|b| b == m) {
            return Ok(Vec::new());
        }
        let path = index.get(m).with_context(|| {
            format!(
                "{}: module {m} is neither a module file nor built in",
                kernel.package
            )
        })?;
        Ok(kernels::modinfo_depends(&kernels::read_module(path)?))
    };
    let order = kernels::load_order(wanted, &deps)?;
    let mut out = Vec::new();
    std::fs::create_dir_all(root.join("lib/modules"))?;
    for m in order {
        let Some(path) = index.get(&m) else {
            continue; // built in
        };
        let guest = format!("/lib/modules/{m}.ko");
        std::fs::write(root.join(&guest[1..]), kernels::read_module(path)?)?;
        out.push(guest);
    }
    Ok(out)
}

/// Names in `modules.builtin` (`kernel/net/x/y.ko` lines), if the package ships it.
fn builtin_modules(modules_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(modules_dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(kernels::module_name))
        .collect()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// The shared libraries of a dynamic executable, from `ldd` (empty for a static one).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Cmd::new("ldd").arg(bin).output()?;
    if !out.status.success() {
        if out.stdout.contains("not a dynamic executable")
            || out.stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", bin.display(), out.stderr.trim());
    }
    let libs = ldd_paths(&out.stdout);
    if let Some(missing) = out.stdout.lines().find(|l| l.contains("not found")) {
        bail!(
            "{}: a library is missing: {}",
            bin.display(),
            missing.trim()
        );
    }
    Ok(libs)
}

/// Absolute library paths in `ldd` output (`libc.so.6 => /lib/... (0x..)`, and the loader
/// `/lib64/ld-linux-x86-64.so.2 (0x..)`); the vDSO has no file.
pub fn ldd_paths(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, r)| r.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(ldd_paths("\tstatically linked\n").is_empty());
    }
}
