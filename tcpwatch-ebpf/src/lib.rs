//! Library target so that `tcpwatch` can declare this crate as a build-dependency (its
//! build script re-runs when the kernel programs change). The programs are in `main.rs`.
#![no_std]
