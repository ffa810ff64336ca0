//! Builds the kernel programs (`tcpwatch-ebpf`) for `bpfel-unknown-none` with aya-build and
//! embeds the object in the daemon.
//!
//! The eBPF crate needs `-Z build-std=core` with a library source that matches the compiler
//! exactly. On this machine kind that is Debian's rustc-web + rust-web-src, linked into rustup
//! as the toolchain `debian-rustc-web` by `cargo xtask setup`; `TCPWATCH_EBPF_TOOLCHAIN` names
//! another one.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf_package = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tcpwatch-ebpf")
        .ok_or_else(|| anyhow!("tcpwatch-ebpf package not found in the workspace"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf_package.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf_package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    println!("cargo:rerun-if-env-changed=TCPWATCH_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("TCPWATCH_EBPF_TOOLCHAIN").unwrap_or_else(|_| "debian-rustc-web".into());
    if !toolchain.starts_with("nightly") && std::env::var_os("RUSTC_BOOTSTRAP").is_none() {
        // SAFETY: build scripts are single-threaded; the child cargo inherits this so the
        // stable Debian toolchain accepts `-Z build-std=core`.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain)).map_err(|e| {
        anyhow!(
            "building the eBPF programs with toolchain `{toolchain}` failed: {e:#}\n\
             hint: run `cargo xtask setup` (installs rustc-web, rust-web-src, llvm and bpf-linker)"
        )
    })
}
