//! Rebuild when the bpf-linker binary changes (it is an undeclared dependency of the eBPF link).
fn main() {
    // Host builds (clippy, tests) do not need bpf-linker; only print when it exists.
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
