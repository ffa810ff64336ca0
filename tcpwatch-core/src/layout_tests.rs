//! Sizes of the per-connection structures: the daemon holds one [`ConnRecord`] per socket
//! (two while a published view holds the previous version), so a field that grows the record
//! grows the daemon by that much per connection (docs/performance.md, memory notes).
use std::mem::size_of;
use std::sync::Arc;

use crate::model::{ConnRecord, Owner};

#[test]
fn a_record_stays_small() {
    assert_eq!(size_of::<Option<Arc<Owner>>>(), 8, "the owner is shared, not inline");
    assert!(
        size_of::<ConnRecord>() <= 384,
        "ConnRecord grew to {} bytes",
        size_of::<ConnRecord>()
    );
}
