//! The kernel's defaults of the per-namespace sysctls in `model::NetnsInfo`: what a namespace
//! whose value could not be read (or an older snapshot without it) is taken to have.

/// `net.ipv4.tcp_keepalive_time` (seconds).
pub(crate) fn keepalive_time() -> u32 {
    7200
}

/// `net.ipv4.tcp_keepalive_intvl` (seconds).
pub(crate) fn keepalive_intvl() -> u32 {
    75
}

/// `net.ipv4.tcp_keepalive_probes`.
pub(crate) fn keepalive_probes() -> u32 {
    9
}

/// `net.ipv4.tcp_syn_retries`.
pub(crate) fn syn_retries() -> u32 {
    6
}
