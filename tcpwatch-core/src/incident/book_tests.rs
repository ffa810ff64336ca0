//! Tests of the incident lifecycle.
#![allow(clippy::unwrap_used, reason = "tests")]
