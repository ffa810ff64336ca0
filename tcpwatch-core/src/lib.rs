//! tcpwatch's pure logic. Nothing here touches the kernel, the filesystem (except through
//! byte slices handed in) or the wall clock: time is always passed in as [`model::MonoNs`],
//! so every rule is testable with a fake clock and no root.
pub mod aging;
pub mod api;
pub mod api_times;
pub mod btf;
pub mod config;
pub mod config_alertmanager;
pub mod config_exposure;
pub mod config_http;
pub mod copy_ranges;
pub mod decode;
pub mod detect;
pub mod endpoints;
pub mod exposure;
pub mod fallbacks;
pub mod features;
pub mod incident;
pub mod k8s;
pub mod k8s_authz;
pub mod model;
mod netns_defaults;
pub mod netns_gone;
pub mod offsets;
pub mod owner_scan;
pub mod render;
pub mod shared_hash;
pub mod state_changes;
pub mod table;
#[cfg(test)]
mod test_rng;
pub mod tp_format;
pub mod wall;
pub mod webconfig;

#[cfg(test)]
#[path = "layout_tests.rs"]
mod layout_tests;
