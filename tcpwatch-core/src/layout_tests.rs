//! Sizes of the per-connection structures: the daemon holds one [`ConnRecord`] per socket
//! (two while a published view holds the previous version), so a field that grows the record
//! grows the daemon by that much per connection (docs/performance.md, memory notes).
use std::mem::size_of;

use crate::model::ConnRecord;

#[test]
fn a_record_stays_small() {
    // 512 with the owner inline (136 bytes) instead of shared (8).
    assert!(
        size_of::<ConnRecord>() <= 384,
        "ConnRecord grew to {} bytes",
        size_of::<ConnRecord>()
    );
}
