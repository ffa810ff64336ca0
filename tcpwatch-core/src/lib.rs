//! tcpwatch's pure logic. Nothing here touches the kernel, the filesystem (except through
//! byte slices handed in) or the wall clock: time is always passed in as [`model::MonoNs`],
//! so every rule is testable with a fake clock and no root.
pub mod api;
pub mod btf;
pub mod config;
pub mod detect;
pub mod endpoints;
pub mod incident;
pub mod k8s;
pub mod model;
pub mod offsets;
pub mod render;
pub mod table;
pub mod tp_format;
pub mod wall;
