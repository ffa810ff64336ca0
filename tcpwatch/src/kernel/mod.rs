//! Loading and attaching the kernel programs, and reading their maps. I/O edge: everything
//! that talks to the `bpf()` syscall lives here.
use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::{BtfTracePoint, Iter, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use tcpwatch_common::delta::SweepCtl;
use tcpwatch_common::hooks::{HOOKS, SWEEP_PROGRAM, SWEEP_PROGRAM_NOCOOKIE, store_mode};
use tcpwatch_common::{PortKey, PortResets, SockState, counter};
use tcpwatch_core::model::ResetCounts;
use tcpwatch_core::offsets;

mod batch;
mod btf;
mod endpoints;
pub mod log;
mod pins;
pub mod probe;
mod prog_stats;
mod sweep_parse;
mod walk_ref;

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
    /// Whether the sweep's reference program is loaded (`walk_ref.rs`).
    walk_reference_loaded: bool,
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
        let object = Object {
            opts,
            btf: &btf,
            offsets: &resolved.offsets,
            reset_tp: endpoints::reset_tp_offsets(),
            pins: opts
                .pin_dir
                .as_deref()
                .and_then(|dir| pins::prepare_pins(dir, opts.max_sockets)),
        };
        // Socket-local storage where this kernel's tracing programs may use it: decided by
        // loading the programs with it (no fallback to raw_tp or to the sweep without
        // cookies, which cannot use it); when that fails, once more with the SOCKS hash.
        let probed = features.clone();
        let (ebpf, log, attached, sweep_program) =
            match object.load(store_mode::SK_STORAGE, &mut features) {
                Ok(loaded) => {
                    features.push(tcpwatch_core::fallbacks::sk_storage(Ok(())));
                    loaded
                }
                Err(e) => {
                    features = probed;
                    let loaded = object.load(store_mode::HASH, &mut features)?;
                    features.push(tcpwatch_core::fallbacks::sk_storage(Err(refusal(&e))));
                    loaded
                }
            };
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
            walk_reference_loaded: false,
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
        let sums = batch::percpu_sums(map, counter::COUNT)?;
        let mut out = [0_u64; counter::COUNT as usize];
        out.copy_from_slice(&sums);
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
        let mut out = HashMap::new();
        batch::for_each_percpu_hash(map, |k: PortKey, vals: &[PortResets]| {
            let sent: u64 = vals.iter().map(|v| v.sent).sum();
            let received: u64 = vals.iter().map(|v| v.received).sum();
            out.insert(
                (k.netns_cookie, k.port),
                ResetCounts {
                    sent: u32::try_from(sent).unwrap_or(u32::MAX),
                    received: u32::try_from(received).unwrap_or(u32::MAX),
                },
            );
        })?;
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
        self.read_buf.clear();
        read_iter(
            &mut self.ebpf,
            self.sweep_program,
            &mut self.read_buf,
            "the iter/tcp sweep",
        )?;
        let sweep = parse_sweep(&self.read_buf);
        // Kept for the next sweep, but not at the size of a full sweep once sweeps are
        // change-only (256 bytes per socket).
        self.read_buf
            .shrink_to(self.read_buf.len() + self.read_buf.len() / 2);
        sweep
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

/// What loading the eBPF object needs, prepared once for one or two attempts.
struct Object<'a> {
    opts: &'a LoadOptions,
    btf: &'a aya::Btf,
    offsets: &'a tcpwatch_common::KernelOffsets,
    reset_tp: tcpwatch_common::endpoints::ResetTpOffsets,
    pins: Option<PathBuf>,
}

type Loaded = (Ebpf, Option<log::KernelLog>, Vec<Attached>, &'static str);

impl Object<'_> {
    /// Loads maps and programs with per-socket state in `mode` (`store_mode`), attaches the
    /// hooks and loads the sweep. With socket-local storage, every hook must load as `tp_btf`
    /// and the sweep with cookies: an error otherwise (nothing stays attached).
    fn load(&self, mode: u32, features: &mut probe::Features) -> anyhow::Result<Loaded> {
        let storage = mode == store_mode::SK_STORAGE;
        // aya's `EbpfLoader::new` reads and parses the kernel's BTF once more on its own (aya
        // 0.14 offers no way around it); the parse made above replaces it at once.
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(self.btf))
            .override_global("OFFSETS", self.offsets, true)
            .override_global("RESET_TP", &self.reset_tp, true)
            .override_global("STORE_MODE", &mode, true)
            .map_max_entries("SOCKS", self.opts.max_sockets)
            .map_max_entries("EVENTS", self.opts.ringbuf_bytes);
        if let Some(dir) = &self.pins {
            for (name, ..) in pins::pinned_maps(self.opts.max_sockets) {
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
                self.btf,
                (h.tp_btf, h.raw_tp),
                h.tracepoint,
                !storage,
            )?);
        }
        features.push(tcpwatch_core::fallbacks::reset_reason(
            endpoints::attach_reset_reasons(&mut ebpf, self.reset_tp),
        ));
        let sweep_program = load_sweep(&mut ebpf, self.btf, features, !storage)?;
        Ok((ebpf, log, attached, sweep_program))
    }
}

/// The verifier's log is long: its line naming a refused helper says it all.
fn refusal(e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    full.lines()
        .find(|l| l.contains("unknown func"))
        .unwrap_or_else(|| full.lines().next().unwrap_or_default())
        .trim()
        .to_owned()
}

/// Loads the `iter/tcp` sweep: the variant with socket cookies, or, when the verifier refuses
/// it and `fallback` allows, the one without (the probe's decision, recorded as the
/// `socket_cookie` feature).
fn load_sweep(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    features: &mut probe::Features,
    fallback: bool,
) -> anyhow::Result<&'static str> {
    let first = {
        let it: &mut Iter = program(ebpf, SWEEP_PROGRAM)?.try_into()?;
        it.load("tcp", btf)
    };
    let Err(cookie_err) = first else {
        features.push(tcpwatch_core::fallbacks::socket_cookie(Ok(())));
        return Ok(SWEEP_PROGRAM);
    };
    if !fallback {
        return Err(anyhow!("{SWEEP_PROGRAM}: {cookie_err:#}"));
    }
    let it: &mut Iter = program(ebpf, SWEEP_PROGRAM_NOCOOKIE)?.try_into()?;
    match it.load("tcp", btf) {
        Ok(()) => {
            features.push(tcpwatch_core::fallbacks::socket_cookie(Err(format!(
                "the verifier refused the sweep that reads them: {}",
                refusal(&anyhow!(cookie_err))
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

/// Runs the loaded `iter/tcp` program `name` once in the calling thread's namespace: attaches
/// it, reads its whole output into `out`, and closes it. `what` names it in errors.
fn read_iter(ebpf: &mut Ebpf, name: &str, out: &mut Vec<u8>, what: &str) -> anyhow::Result<()> {
    let it: &mut Iter = program(ebpf, name)?.try_into()?;
    let link_id = it.attach().with_context(|| format!("attaching {what}"))?;
    let link = it.take_link(link_id)?;
    let mut file = link
        .into_file()
        .with_context(|| format!("creating {what}"))?;
    file.read_to_end(out)
        .with_context(|| format!("reading {what}"))?;
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object (build mismatch)"))
}

/// Attaches a hook as `tp_btf`, or, when that is refused and `fallback` allows, as `raw_tp`.
fn attach_hook(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    (tp_btf, raw_tp): (&str, &str),
    tracepoint: &'static str,
    fallback: bool,
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
    if !fallback {
        return Err(anyhow!("{tp_btf}: {btf_err:#}"));
    }
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
