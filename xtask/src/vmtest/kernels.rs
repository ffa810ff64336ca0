//! Debian kernel packages for the test VMs: resolved and downloaded with apt through a private
//! apt configuration under `target/vm-test/apt/<suite>/` (the system's sources are not
//! touched), extracted once under `target/vm-test/kernels/<package>/`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, Privileges};

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// A kernel ready to boot.
pub struct Kernel {
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
}

/// The Debian suite that carries a kernel alias (`5.10`, `6.1`, `6.12`) or package name.
pub fn suite_for(spec: &str) -> Option<&'static str> {
    match spec {
        "5.10" => Some("bullseye"),
        "6.1" => Some("bookworm"),
        "6.12" => Some("bookworm-backports"),
        s if s.starts_with("linux-image-5.10.") => Some("bullseye"),
        s if s.starts_with("linux-image-6.1.") => Some("bookworm"),
        s if s.starts_with("linux-image-6.12.") => Some("bookworm-backports"),
        _ => None,
    }
}

/// The package `apt-cache depends <meta>` names first (`Depends: linux-image-6.1.0-56-...`).
pub fn first_depends(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        dep.starts_with("linux-image-").then(|| dep.to_owned())
    })
}

struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(vm_dir: &Path, suite: &str) -> Result<Self> {
        let dir = vm_dir.join("apt").join(suite);
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        let mut sources = format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n");
        if matches!(suite, "bookworm" | "bullseye") {
            // The newest 6.1 and 5.10 kernels are published through the security archive.
            let _ = writeln!(
                sources,
                "deb [signed-by={KEYRING}] {SECURITY_MIRROR} {suite}-security main"
            );
        }
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&path, &sources)?;
            // Other sources: the lists no longer match.
            let _ = std::fs::remove_dir_all(dir.join("lists"));
            std::fs::create_dir_all(dir.join("lists/partial"))?;
        }
        Ok(Self { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-o".into(),
            format!("Dir::Etc::SourceList={d}/sources.list"),
            "-o".into(),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "-o".into(),
            format!("Dir::State::Lists={d}/lists"),
            "-o".into(),
            format!("Dir::Cache={d}/cache"),
            "-o".into(),
            "APT::Sandbox::User=root".into(),
            "-q".into(),
        ]
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with("_Packages")))
        })
    }

    fn update(&self, privs: &Privileges) -> Result<()> {
        let c = Cmd::new("apt-get")
            .args(self.options())
            .arg("update")
            .no_stdin();
        privs.as_root(&c)?.run()
    }

    fn depends(&self, package: &str) -> Result<Option<String>> {
        let out = Cmd::new("apt-cache")
            .args(self.options())
            .args(["depends", package])
            .output()?;
        Ok(first_depends(&out.stdout))
    }

    fn download(&self, package: &str, into: &Path, privs: &Privileges) -> Result<()> {
        let c = Cmd::new("apt-get")
            .args(self.options())
            .args(["download", package])
            .dir(into)
            .no_stdin();
        privs.as_root(&c)?.run()
    }
}

/// Resolves, downloads (once) and extracts a kernel.
pub fn fetch(spec: &str, vm_dir: &Path, privs: &Privileges) -> Result<Kernel> {
    let suite = suite_for(spec).with_context(|| {
        format!(
            "unknown kernel `{spec}`: use 5.10 (bullseye), 6.1 (bookworm), 6.12 \
             (bookworm-backports), host, or a package name \
             linux-image-5.10.*/6.1.*/6.12.*-cloud-amd64"
        )
    })?;
    let apt = Apt::new(vm_dir, suite)?;
    let mut updated = false;
    if !apt.has_lists() {
        apt.update(privs)?;
        updated = true;
    }
    let package = if spec.starts_with("linux-image-") {
        spec.to_owned()
    } else {
        match apt.depends(META_PACKAGE)? {
            Some(p) => p,
            None if !updated => {
                apt.update(privs)?;
                updated = true;
                apt.depends(META_PACKAGE)?.with_context(|| {
                    format!("{suite} has no {META_PACKAGE} (apt-cache depends found nothing)")
                })?
            }
            None => bail!("{suite} has no {META_PACKAGE} (apt-cache depends found nothing)"),
        }
    };
    // The unsigned image is preferred (bullseye's meta package names the signed one); the
    // mirror does not always carry it, and the signed one boots the same under QEMU.
    let mut candidates = Vec::new();
    if !package.ends_with("-unsigned") && suite == "bullseye" {
        candidates.push(format!("{package}-unsigned"));
    }
    candidates.push(package);
    for p in &candidates {
        if let Some(k) = cached(&vm_dir.join("kernels").join(p), p) {
            eprintln!("vm-test: kernel {p}: cached in {}", k.vmlinuz.display());
            return Ok(k);
        }
    }
    let debs = vm_dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    let mut chosen = None;
    for p in &candidates {
        let mut ok = apt.download(p, &debs, privs).is_ok();
        if !ok && !updated {
            // Lists older than the mirror: refresh once and retry.
            apt.update(privs)?;
            updated = true;
            ok = apt.download(p, &debs, privs).is_ok();
        }
        if ok {
            chosen = Some(p.clone());
            break;
        }
        eprintln!("vm-test: kernel {p}: apt-get download failed, trying the next candidate");
    }
    let package = chosen.with_context(|| {
        format!(
            "apt-get download failed for every candidate: {}",
            candidates.join(", ")
        )
    })?;
    let dest = vm_dir.join("kernels").join(&package);
    let deb = find_deb(&debs, &package)?;
    let tmp = vm_dir.join("kernels").join(format!(".{package}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    Cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp).run()?;
    let vmlinuz = only_entry(&tmp.join("boot"), "vmlinuz-")?;
    let modules = only_entry(&tmp.join("lib/modules"), "")?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest)?;
    std::fs::rename(&vmlinuz, dest.join("vmlinuz"))?;
    std::fs::rename(&modules, dest.join("modules"))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&deb);
    std::fs::write(dest.join(".complete"), &package)?;
    cached(&dest, &package).context("extracted kernel is incomplete")
}

fn cached(dest: &Path, package: &str) -> Option<Kernel> {
    let ok = std::fs::read_to_string(dest.join(".complete")).is_ok_and(|p| p == package);
    (ok && dest.join("vmlinuz").is_file()).then(|| Kernel {
        package: package.to_owned(),
        vmlinuz: dest.join("vmlinuz"),
        modules: dest.join("modules"),
    })
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .with_context(|| {
            format!(
                "apt-get download left no {package}_*.deb in {}",
                dir.display()
            )
        })
}

fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .with_context(|| format!("nothing named {prefix}* in {}", dir.display()))
}

/// Module name as the kernel knows it (`nf_tables` for `nf_tables.ko.xz`, `-` as `_`).
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.strip_suffix(".ko.xz"))
        .or_else(|| file_name.strip_suffix(".ko.zst"))
        .or_else(|| file_name.strip_suffix(".ko.gz"))?;
    Some(stem.replace('-', "_"))
}

/// The `depends=` list in a module's `.modinfo` strings.
pub fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Orders `wanted` and their dependencies so that each comes after what it depends on.
pub fn load_order(
    wanted: &[&str],
    deps: &dyn Fn(&str) -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    fn visit(
        m: &str,
        deps: &dyn Fn(&str) -> Result<Vec<String>>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if depth > 32 {
            bail!("module dependency chain too deep at {m}");
        }
        if !seen.insert(m.to_owned()) {
            return Ok(());
        }
        for d in deps(m)? {
            visit(&d, deps, seen, out, depth + 1)?;
        }
        out.push(m.to_owned());
        Ok(())
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in wanted {
        visit(m, deps, &mut seen, &mut out, 0)?;
    }
    Ok(out)
}

/// Index of a kernel's module files by module name.
pub fn module_index(modules_dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    fn walk(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if let Some(name) = p
                .file_name()
                .and_then(|n| module_name(&n.to_string_lossy()))
            {
                out.insert(name, p);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(&modules_dir.join("kernel"), &mut out)?;
    Ok(out)
}

/// A module file's contents, decompressed.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return std::fs::read(path).with_context(|| format!("read {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("cannot start {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites() {
        assert_eq!(suite_for("6.1"), Some("bookworm"));
        assert_eq!(suite_for("6.12"), Some("bookworm-backports"));
        assert_eq!(
            suite_for("linux-image-6.12.95+deb12-cloud-amd64"),
            Some("bookworm-backports")
        );
        assert_eq!(
            suite_for("linux-image-6.1.0-56-cloud-amd64"),
            Some("bookworm")
        );
        assert_eq!(suite_for("5.10"), Some("bullseye"));
        assert_eq!(
            suite_for("linux-image-5.10.0-46-cloud-amd64-unsigned"),
            Some("bullseye")
        );
        assert_eq!(suite_for("5.4"), None);
    }

    #[test]
    fn apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            first_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(first_depends("linux-image-cloud-amd64\n"), None);
        assert_eq!(first_depends("x\n  Depends: foo\n"), None);
    }

    #[test]
    fn module_names_and_depends() {
        assert_eq!(module_name("nf_tables.ko").as_deref(), Some("nf_tables"));
        assert_eq!(module_name("nf-nat.ko.xz").as_deref(), Some("nf_nat"));
        assert_eq!(module_name("x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_name("modules.dep"), None);
        let ko = b"\x7fELF..\0license=GPL\0depends=nfnetlink,libcrc32c\0name=nf_tables\0";
        assert_eq!(modinfo_depends(ko), vec!["nfnetlink", "libcrc32c"]);
        assert!(modinfo_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(modinfo_depends(b"nothing").is_empty());
    }

    #[test]
    fn dependencies_load_first() {
        let deps = |m: &str| -> Result<Vec<String>> {
            Ok(match m {
                "nf_tables" => vec!["nfnetlink".into(), "libcrc32c".into()],
                "libcrc32c" | "nfnetlink" => vec!["crc32c".into()],
                _ => vec![],
            })
        };
        let order = load_order(&["nf_tables"], &deps).unwrap();
        assert_eq!(order, vec!["crc32c", "nfnetlink", "libcrc32c", "nf_tables"]);
        let cyclic = |_: &str| -> Result<Vec<String>> { Ok(vec!["a".into()]) };
        assert_eq!(load_order(&["a"], &cyclic).unwrap(), vec!["a"]);
    }
}
