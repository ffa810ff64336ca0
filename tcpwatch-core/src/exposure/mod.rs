//! The exposure audit (issue 15, `docs/exposure.md`): for each `ESTABLISHED` connection, how
//! long after its peer vanished the owning process would learn of it, from the socket's own
//! settings and its namespace's sysctls, by the kernel's own rules.
mod audit;
mod cache;
pub mod formula;
mod group_acc;
pub mod render;

pub use audit::{
    ExposedSocket, ExposureGroup, ExposureHistogram, ExposureReport, HISTOGRAM_BOUNDS_S,
    MAX_GROUPS_LISTED, MAX_SOCKETS_LISTED, ProcessExposure, audit, process_line, wait_text,
};
pub use cache::{AuditCache, AuditCacheStats};
pub use formula::{
    Bound, ConnExposure, Keepalive, assess, effective_keepalive, keepalive_detect_ms,
};
