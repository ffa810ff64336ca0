//! tcpwatch's kernel programs. They sample, count and keep per-socket history; every finding
//! is decided in userspace. Everything lives behind `cfg(target_arch = "bpf")` so that host builds of the
//! workspace (clippy, tests) compile this crate as an empty program.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
