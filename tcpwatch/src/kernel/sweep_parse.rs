//! The sweep iterator's output: a header slot, then per socket either a full [`SockRecord`]
//! or, for a socket unchanged since its last full record of this generation, a 16-byte
//! [`SockSeen`] (`tcpwatch_common::delta`), and nothing for a `TIME_WAIT` minisocket (counted).
//! The program also writes a header on its final call, the trailer (a namespace without
//! sockets has no first call), so header slots are recognised anywhere. The trailer carries
//! the counts; an output without one is refused.
//!
//! A slot's first word tells its kind: a header has [`SWEEP_MAGIC`] and [`ABI_VERSION`] in
//! it, a `SockSeen` has the [`SEEN_TAG`] bit set (socket addresses are aligned), anything else
//! is a full record.
use anyhow::{Context as _, bail};
use tcpwatch_common::delta::{SEEN_TAG, SOCK_SEEN_SIZE, SockSeen};
use tcpwatch_common::{
    ABI_VERSION, SOCK_RECORD_SIZE, SWEEP_MAGIC, SockRecord, SweepHeader, sweep_flags,
};

/// One namespace's sweep: the header, the sockets written in full and the sockets unchanged
/// since their last full record.
#[derive(Debug, Default)]
pub struct Sweep {
    pub header: SweepHeader,
    pub records: Vec<SockRecord>,
    pub unchanged: Vec<SockSeen>,
    /// `TIME_WAIT` minisockets the sweep counted instead of listing (the trailer's count).
    pub time_wait: u64,
}

impl Sweep {
    /// Every socket the sweep listed, full or unchanged.
    #[must_use]
    pub fn sockets(&self) -> usize {
        self.records.len() + self.unchanged.len()
    }

    /// The addresses of every socket listed.
    pub fn skaddrs(&self) -> impl Iterator<Item = u64> + '_ {
        self.records
            .iter()
            .map(|r| r.skaddr)
            .chain(self.unchanged.iter().map(SockSeen::skaddr))
    }
}

/// Parses the iterator's output.
pub fn parse_sweep(bytes: &[u8]) -> anyhow::Result<Sweep> {
    let header_word = u64::from(SWEEP_MAGIC) | (u64::from(ABI_VERSION) << 32);
    let mut header: Option<SweepHeader> = None;
    let mut trailer: Option<SweepHeader> = None;
    let mut sweep = Sweep::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let Some(word) = rest.first_chunk::<8>().map(|w| u64::from_le_bytes(*w)) else {
            bail!(truncated(bytes.len(), at));
        };
        let len = if word == header_word || word & SEEN_TAG == 0 {
            SOCK_RECORD_SIZE
        } else {
            SOCK_SEEN_SIZE
        };
        if rest.len() < len {
            bail!(truncated(bytes.len(), at));
        }
        if word == header_word {
            // SAFETY: `rest` holds at least size_of::<SweepHeader>() bytes (the size of a
            // record, asserted in tcpwatch-common); SweepHeader is plain old data;
            // read_unaligned needs no alignment.
            let h: SweepHeader = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
            if h.flags & sweep_flags::TRAILER != 0 {
                trailer = Some(h);
            } else if header.is_none() {
                header = Some(h);
            }
        } else if len == SOCK_SEEN_SIZE {
            // SAFETY: as above, for the SOCK_SEEN_SIZE bytes of a SockSeen.
            sweep
                .unchanged
                .push(unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) });
        } else {
            // SAFETY: as above, for SockRecord.
            sweep
                .records
                .push(unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) });
        }
        at += len;
    }
    if header.is_none() && trailer.is_none() {
        bail!(
            "sweep output has no header with magic {SWEEP_MAGIC:#x} version {ABI_VERSION} \
             (tcpwatch and its kernel object are out of sync)"
        );
    }
    let trailer = trailer.with_context(|| {
        format!(
            "sweep output of {} bytes has no trailer (the iterator's final call): its counts \
             would be short, so the sweep is refused",
            bytes.len()
        )
    })?;
    sweep.time_wait = trailer.time_wait;
    // A namespace without sockets: the final call is the first, and writes header and trailer.
    sweep.header = header.unwrap_or(trailer);
    Ok(sweep)
}

fn truncated(total: usize, at: usize) -> String {
    format!(
        "sweep output of {total} bytes ends inside a record at byte {at} (tcpwatch and its \
         kernel object are out of sync)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is plain old data of size_of::<T>() bytes.
        unsafe { std::slice::from_raw_parts((&raw const *v).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn parses_header_records_unchanged_and_trailing_header() {
        let hdr = SweepHeader {
            magic: SWEEP_MAGIC,
            abi_version: ABI_VERSION,
            ktime_ns: 5,
            ..SweepHeader::default()
        };
        let rec = SockRecord {
            skaddr: 0xffff_8881_0318_0000,
            sport: 80,
            ..SockRecord::default()
        };
        let seen = SockSeen {
            tagged_skaddr: 0xffff_8881_0318_0800 | SEEN_TAG,
            cookie: 3,
        };
        let mut b = bytes_of(&hdr);
        b.extend(bytes_of(&seen));
        b.extend(bytes_of(&rec));
        b.extend(bytes_of(&seen));
        let no_trailer = b.clone();
        b.extend(bytes_of(&SweepHeader {
            ktime_ns: 9,
            time_wait: 4,
            flags: sweep_flags::TRAILER,
            ..hdr
        }));
        let s = parse_sweep(&b).unwrap();
        assert_eq!(s.header.ktime_ns, 5);
        assert_eq!(s.time_wait, 4);
        assert!(parse_sweep(&no_trailer).is_err(), "no trailer");
        assert_eq!(s.records, vec![rec]);
        assert_eq!(s.unchanged, vec![seen, seen]);
        assert_eq!(s.sockets(), 3);
        assert_eq!(
            s.skaddrs().collect::<Vec<_>>(),
            vec![rec.skaddr, seen.skaddr(), seen.skaddr()]
        );
        assert!(parse_sweep(&b[..10]).is_err());
        assert!(parse_sweep(&b[..b.len() - 1]).is_err(), "truncated");
        assert!(parse_sweep(&bytes_of(&rec)).is_err(), "no header");
    }
}
