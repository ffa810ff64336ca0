//! The sweep's reference walk (`tcpwatch snapshot --walk-reference`, for `cargo xtask
//! bench`): the `iter/tcp` program that only counts, run in the calling thread's namespace.
//! What the kernel's walk of a namespace costs with no per-socket work: the floor of a sweep.
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::programs::Iter;
use tcpwatch_common::hooks::WALK_REFERENCE_PROGRAM;

use super::{Kernel, KernelBtf, program, read_iter};

impl Kernel {
    /// Walks the current namespace's TCP sockets with the reference program (loaded on first
    /// use): the sockets it was handed and how long the walk took (attach, read, close).
    pub fn walk_reference_current_netns(&mut self) -> anyhow::Result<(u64, Duration)> {
        if !self.walk_reference_loaded {
            let btf = KernelBtf::read().into_aya()?;
            let it: &mut Iter = program(&mut self.ebpf, WALK_REFERENCE_PROGRAM)?.try_into()?;
            it.load("tcp", &btf)
                .with_context(|| format!("loading {WALK_REFERENCE_PROGRAM}"))?;
            self.walk_reference_loaded = true;
        }
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(8);
        read_iter(
            &mut self.ebpf,
            WALK_REFERENCE_PROGRAM,
            &mut out,
            "the reference walk",
        )?;
        let took = t0.elapsed();
        let count: [u8; 8] = out
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow!(
                    "the reference walk returned {} bytes instead of its 8-byte count (build \
                 mismatch?)",
                    out.len()
                )
            })?;
        Ok((u64::from_ne_bytes(count), took))
    }
}
