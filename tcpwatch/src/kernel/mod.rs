//! Loading and attaching the kernel programs, and reading their maps. I/O edge: everything
//! that talks to the `bpf()` syscall lives here.
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{BtfTracePoint, Iter, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use tcpwatch_common::delta::SweepCtl;
use tcpwatch_common::hooks::{HOOKS, SWEEP_PROGRAM, SWEEP_PROGRAM_NOCOOKIE, map_size};
use tcpwatch_common::{ABI_VERSION, PortKey, PortResets, SockState, counter};
use tcpwatch_core::model::ResetCounts;
use tcpwatch_core::offsets;

mod btf;
mod endpoints;
pub mod log;
pub mod probe;
mod prog_stats;
mod sweep_parse;

pub use sweep_parse::{Sweep, parse_sweep};

pub use btf::KernelBtf;

/// The eBPF object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcpwatch"));

/// Sizes of the kernel maps.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub max_sockets: u32,
    pub ringbuf_bytes: u32,
    /// Where to pin the maps that must survive a daemon restart (socket ages, retransmit
    /// chains, counters). None: no pinning.
    pub pin_dir: Option<PathBuf>,
    /// Pretend the kernel has no BPF iterators (tests the refusal path).
    pub pretend_no_iter: bool,
}

/// How one tracepoint was attached.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attached {
    pub tracepoint: &'static str,
    /// `tp_btf` (preferred) or `raw_tp`.
    pub variant: &'static str,
}

pub struct Kernel {
    ebpf: Ebpf,
    /// What the running kernel offers and what was chosen (log, `/readyz`, metrics).
    pub features: crate::kernel::probe::Features,
    pub attached: Vec<Attached>,
    pub missing_optional: Vec<String>,
    /// Start (ktime) of the previous sweep of each namespace, by cookie.
    prev_sweep_start: HashMap<u64, u64>,
    /// The programs' diagnostics (aya-log), until the daemon takes it to forward them.
    log: Option<log::KernelLog>,
    /// The loaded `iter/tcp` program ([`SWEEP_PROGRAM`] or its variant without cookies).
    sweep_program: &'static str,
    /// Held while the daemon runs: keeps the kernel counting programs' run time and count.
    run_stats: Option<std::os::fd::OwnedFd>,
    /// The generation last written to `SWEEP_CTL` (`tcpwatch_common::delta`).
    generation_written: u64,
    /// The sweep iterator's output, kept between sweeps (no regrowth each time).
    read_buf: Vec<u8>,
}

/// Checks what loading needs and says what to do when it is missing.
pub fn preflight() -> anyhow::Result<()> {
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "/sys/kernel/btf/vmlinux is missing: this kernel was built without BTF \
             (CONFIG_DEBUG_INFO_BTF=y). tcpwatch needs it to find struct offsets; use a kernel \
             with BTF (all major distributions since 2021 ship one)"
        );
    }
    let caps = crate::host::caps::effective()?;
    let missing = crate::host::caps::missing_for_load(caps);
    if !missing.is_empty() {
        bail!(
            "missing capabilities {}: loading eBPF programs needs CAP_BPF and CAP_PERFMON, and \
             sweeping other network namespaces needs CAP_SYS_ADMIN (setns). Run as root \
             (`sudo tcpwatch ...`) or grant them (see docs/operations.md)",
            missing.join(", ")
        );
    }
    Ok(())
}

impl Kernel {
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        preflight()?;
        // Read and parsed once, for the probe, the offsets and (parsed by aya) the loader.
        let kernel_btf = KernelBtf::read();
        let mut features = crate::kernel::probe::probe(
            crate::kernel::probe::ProbeOptions {
                pretend_no_iter: opts.pretend_no_iter,
            },
            &kernel_btf,
        );
        if let Some(msg) = features.refusal() {
            bail!(msg);
        }
        let mut resolved = offsets::resolve(kernel_btf.offsets_btf()?)?;
        if features
            .get("netns_cookie")
            .is_none_or(|f| f.support != probe::Support::Yes)
        {
            // No namespace cookies: the programs use the tagged inode, as userspace does.
            resolved.offsets.net_cookie = tcpwatch_common::OFFSET_MISSING;
        }
        let btf = kernel_btf.into_aya()?;
        let pins = opts
            .pin_dir
            .as_deref()
            .and_then(|dir| prepare_pins(dir, opts.max_sockets));
        let reset_tp = endpoints::reset_tp_offsets();
        // aya's `EbpfLoader::new` reads and parses the kernel's BTF once more on its own (aya
        // 0.14 offers no way around it); the parse made above replaces it at once.
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .override_global("OFFSETS", &resolved.offsets, true)
            .override_global("RESET_TP", &reset_tp, true)
            .map_max_entries("SOCKS", opts.max_sockets)
            .map_max_entries("EVENTS", opts.ringbuf_bytes);
        if let Some(dir) = &pins {
            for (name, ..) in pinned_maps(opts.max_sockets) {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| {
            anyhow!(
                "loading tcpwatch's eBPF maps failed: {e}. Check that you run as root (or \
                     with CAP_BPF+CAP_PERFMON) and that the memlock limit allows BPF maps"
            )
        })?;
        // Before the programs load: it holds the log ring buffer's fd they refer to.
        let log = log::init(&mut ebpf);
        let mut attached = Vec::new();
        for h in HOOKS {
            attached.push(attach_hook(
                &mut ebpf,
                &btf,
                h.tp_btf,
                h.raw_tp,
                h.tracepoint,
            )?);
        }
        features.push(tcpwatch_core::fallbacks::reset_reason(
            endpoints::attach_reset_reasons(&mut ebpf, reset_tp),
        ));
        let sweep_program = load_sweep(&mut ebpf, &btf, &mut features)?;
        for a in &attached {
            features.record_attached(a.tracepoint, a.variant);
        }
        crate::kernel::probe::log(&features);
        Ok(Self {
            ebpf,
            features,
            attached,
            missing_optional: resolved.missing_optional,
            prev_sweep_start: HashMap::new(),
            log,
            sweep_program,
            run_stats: None,
            generation_written: 0,
            read_buf: Vec::new(),
        })
    }

    /// The programs' diagnostics, to forward with [`log::forward`] (can be taken once; left
    /// in place, nothing reads them: one-shot commands).
    pub fn take_log(&mut self) -> Option<log::KernelLog> {
        self.log.take()
    }

    /// The ring buffer of state events (can be taken once).
    pub fn take_events(&mut self) -> anyhow::Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .context("EVENTS map already taken")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Sums the per-CPU self-accounting counters.
    pub fn counters(&self) -> anyhow::Result<[u64; counter::COUNT as usize]> {
        let map = self.ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        let mut out = [0_u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let idx = u32::try_from(i)?;
            *slot = arr.get(&idx, 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Has the kernel count run time and run count of every program from now on, for as long
    /// as this `Kernel` lives (`BPF_ENABLE_STATS`: no sysctl change, nothing left behind).
    pub fn enable_run_stats(&mut self) {
        if self.run_stats.is_none() {
            self.run_stats = prog_stats::enable_run_stats();
        }
    }

    /// Whether run time and count are being counted (held here or set host-wide).
    pub fn run_stats_enabled(&self) -> bool {
        self.run_stats.is_some() || prog_stats::host_stats_enabled()
    }

    /// The kernel's statistics of every loaded program (`bpf_prog_info`), by name.
    pub fn program_stats(&self) -> anyhow::Result<Vec<tcpwatch_core::api::ProgramStats>> {
        prog_stats::read_all(&self.ebpf)
    }

    /// Cumulative resets per (namespace cookie, local port), summed over CPUs.
    pub fn port_resets(&self) -> anyhow::Result<HashMap<(u64, u16), ResetCounts>> {
        let map = self
            .ebpf
            .map("PORT_RESETS")
            .context("PORT_RESETS map missing")?;
        let m: PerCpuHashMap<&MapData, PortKey, PortResets> = PerCpuHashMap::try_from(map)?;
        let mut out = HashMap::new();
        for entry in &m {
            let (k, vals) = entry?;
            let sent: u64 = vals.iter().map(|v| v.sent).sum();
            let received: u64 = vals.iter().map(|v| v.received).sum();
            out.insert(
                (k.netns_cookie, k.port),
                ResetCounts {
                    sent: u32::try_from(sent).unwrap_or(u32::MAX),
                    received: u32::try_from(received).unwrap_or(u32::MAX),
                },
            );
        }
        Ok(out)
    }

    /// Deletes `SOCKS` entries of sockets that no longer exist (their CLOSE was missed while
    /// no program was attached, e.g. across a daemon restart with pinned maps): entries of a
    /// namespace in `swept` that its sweep did not list and nothing touched since it started.
    /// Entries whose namespace is not known yet (never swept) only when the sweep was
    /// `complete` (every namespace read), against all of them. Returns how many.
    pub fn gc_socks(
        &mut self,
        swept: &HashMap<u64, GcScope>,
        complete: bool,
    ) -> anyhow::Result<usize> {
        let map = self.ebpf.map_mut("SOCKS").context("SOCKS map missing")?;
        let mut socks: BpfHashMap<&mut MapData, u64, SockState> = BpfHashMap::try_from(map)?;
        let all_start = swept.values().map(|s| s.start).min().unwrap_or(0);
        let stale: Vec<u64> = socks
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| {
                let untouched_since = |start: u64| {
                    v.first_seen_ns < start
                        && v.state_since_ns < start
                        && v.last_retrans_ns < start
                        && v.last_sweep_ns < start
                };
                match swept.get(&v.netns_cookie) {
                    Some(scope) => !scope.live.contains(k) && untouched_since(scope.start),
                    None => {
                        v.netns_cookie == 0
                            && complete
                            && !swept.values().any(|s| s.live.contains(k))
                            && untouched_since(all_start)
                    }
                }
            })
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in stale {
            if socks.remove(&k).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Records that a sweep of namespace `cookie` started at `start`; returns when the
    /// previous one started (None: first sweep seen). Forgets namespaces not in `keep`.
    pub fn note_sweep_start(&mut self, cookie: u64, start: u64) -> Option<u64> {
        self.prev_sweep_start.insert(cookie, start)
    }

    /// Forgets the sweep starts of namespaces not swept any more.
    pub fn retain_sweep_starts(&mut self, keep: &std::collections::HashSet<u64>) {
        self.prev_sweep_start.retain(|c, _| keep.contains(c));
    }

    /// Runs the `iter/tcp` sweep in the calling thread's current network namespace (the
    /// iterator captures the namespace of the task that creates it).
    /// `generation` (`tcpwatch_common::delta`): sockets whose last full record was written in
    /// this generation and did not change since come back as `Sweep::unchanged`; 0 writes
    /// every socket in full and remembers nothing.
    pub fn sweep_current_netns(&mut self, generation: u64) -> anyhow::Result<Sweep> {
        if generation != self.generation_written {
            let map = self
                .ebpf
                .map_mut("SWEEP_CTL")
                .context("SWEEP_CTL map missing (build mismatch)")?;
            let mut ctl: Array<&mut MapData, SweepCtl> = Array::try_from(map)?;
            ctl.set(0, SweepCtl { generation }, 0)
                .context("setting the sweep generation")?;
            self.generation_written = generation;
        }
        let it: &mut Iter = program(&mut self.ebpf, self.sweep_program)?.try_into()?;
        let link_id = it.attach().context("attaching the iter/tcp sweep")?;
        let link = it.take_link(link_id)?;
        let mut file = link.into_file().context("creating a sweep iterator")?;
        self.read_buf.clear();
        file.read_to_end(&mut self.read_buf)
            .context("reading the sweep iterator")?;
        parse_sweep(&self.read_buf)
    }
}

/// One namespace's sweep as the `SOCKS` garbage collection needs it.
#[derive(Debug, Default)]
pub struct GcScope {
    /// Socket addresses the sweep listed.
    pub live: std::collections::HashSet<u64>,
    /// ktime at which the sweep started.
    pub start: u64,
}

/// Maps that outlive the daemon: (name, key size, value size, max entries). Their layout is
/// part of [`ABI_VERSION`].
fn pinned_maps(max_sockets: u32) -> [(&'static str, u32, u32, u32); 2] {
    #[expect(clippy::cast_possible_truncation, reason = "struct sizes are small")]
    let socks = (size_of::<u64>() as u32, size_of::<SockState>() as u32);
    #[expect(clippy::cast_possible_truncation, reason = "struct sizes are small")]
    let ports = (size_of::<PortKey>() as u32, size_of::<PortResets>() as u32);
    [
        ("SOCKS", socks.0, socks.1, max_sockets),
        ("PORT_RESETS", ports.0, ports.1, map_size::PORT_RESETS),
    ]
}

/// Prepares `<dir>/abi-<ABI_VERSION>/` for pinned maps: removes pins of other ABI versions
/// and pins whose shape no longer matches (a clear log line each time). Returns None, with a
/// warning, when pinning is impossible (bpffs not mounted): tcpwatch then runs without it.
fn prepare_pins(dir: &Path, max_sockets: u32) -> Option<PathBuf> {
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

/// Loads the `iter/tcp` sweep: the variant with socket cookies, or, when the verifier refuses
/// it, the one without (the probe's decision, recorded as the `socket_cookie` feature).
fn load_sweep(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    features: &mut probe::Features,
) -> anyhow::Result<&'static str> {
    let first = {
        let it: &mut Iter = program(ebpf, SWEEP_PROGRAM)?.try_into()?;
        it.load("tcp", btf)
    };
    let Err(cookie_err) = first else {
        features.push(tcpwatch_core::fallbacks::socket_cookie(Ok(())));
        return Ok(SWEEP_PROGRAM);
    };
    let it: &mut Iter = program(ebpf, SWEEP_PROGRAM_NOCOOKIE)?.try_into()?;
    match it.load("tcp", btf) {
        Ok(()) => {
            // The verifier's log is long: its line naming the refused helper says it all.
            let full = format!("{cookie_err:#}");
            let why = full
                .lines()
                .find(|l| l.contains("unknown func"))
                .unwrap_or_else(|| full.lines().next().unwrap_or_default());
            features.push(tcpwatch_core::fallbacks::socket_cookie(Err(format!(
                "the verifier refused the sweep that reads them: {}",
                why.trim()
            ))));
            Ok(SWEEP_PROGRAM_NOCOOKIE)
        }
        Err(e) => Err(anyhow!(
            "loading the iter/tcp sweep program failed: {e:#} (with socket cookies: \
             {cookie_err:#}). BPF iterators over TCP sockets need Linux 5.9+ (tcpwatch is \
             tested on 5.10+); if the verifier refused it, report the log above"
        )),
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object (build mismatch)"))
}

fn attach_hook(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    tp_btf: &str,
    raw_tp: &str,
    tracepoint: &'static str,
) -> anyhow::Result<Attached> {
    let first = {
        let p: &mut BtfTracePoint = program(ebpf, tp_btf)?.try_into()?;
        p.load(tracepoint, btf)
            .and_then(|()| p.attach().map(|_| ()))
    };
    let Err(btf_err) = first else {
        return Ok(Attached {
            tracepoint,
            variant: "tp_btf",
        });
    };
    let p: &mut RawTracePoint = program(ebpf, raw_tp)?.try_into()?;
    match p.load().and_then(|()| p.attach(tracepoint).map(|_| ())) {
        Ok(()) => {
            tracing::warn!(tracepoint, error = %btf_err, "tp_btf refused, using raw_tp");
            Ok(Attached {
                tracepoint,
                variant: "raw_tp",
            })
        }
        Err(raw_err) => Err(anyhow!(
            "attaching to tracepoint {tracepoint} failed: as tp_btf: {btf_err}; as raw_tp: \
             {raw_err}. The tracepoint exists since Linux 4.16-5.x (tcpwatch is tested on 5.10+); \
             check that BPF is not restricted by lockdown or an LSM"
        )),
    }
}

#[cfg(test)]
#[path = "object_tests.rs"]
mod object_tests;
