//! Wall-clock twins of monotonic times, for the API (`since_time`, `opened_time`, ...).
//!
//! The pure code keeps time as [`MonoNs`] (the clock of `bpf_ktime_get_ns()`); people and
//! other tools need RFC 3339. A [`WallClock`] is one pair of readings of both clocks, taken at
//! the I/O edge ([`WallClock::now`]) or made up in tests ([`WallClock::at`]); every conversion
//! is then pure.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::MonoNs;

/// A `CLOCK_MONOTONIC` reading and the `CLOCK_REALTIME` reading taken at the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    pub mono: MonoNs,
    /// Nanoseconds since the Unix epoch at `mono`.
    pub unix_ns: u128,
}

impl WallClock {
    /// Both clocks now (an I/O edge: the daemon and `top` call this, the pure code never does).
    #[must_use]
    pub fn now() -> Self {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            mono: crate::model::mono_now(),
            unix_ns,
        }
    }

    /// A fixed pairing (tests, replays).
    #[must_use]
    pub fn at(mono: MonoNs, unix_ns: u128) -> Self {
        Self { mono, unix_ns }
    }

    /// The wall-clock time of a monotonic time, as a `SystemTime`.
    #[must_use]
    pub fn system_time(&self, t: MonoNs) -> SystemTime {
        let unix = if t >= self.mono {
            self.unix_ns.saturating_add(u128::from(t - self.mono))
        } else {
            self.unix_ns.saturating_sub(u128::from(self.mono - t))
        };
        let secs = u64::try_from(unix / 1_000_000_000).unwrap_or(u64::MAX);
        let nanos = u32::try_from(unix % 1_000_000_000).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-01T15:07:27.123Z`.
    #[must_use]
    pub fn rfc3339(&self, t: MonoNs) -> String {
        humantime::format_rfc3339_millis(self.system_time(t)).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_around_the_reading() {
        // 2026-12-01T00:00:00Z
        let w = WallClock::at(100 * 1_000_000_000, 1_796_083_200 * 1_000_000_000);
        assert_eq!(w.rfc3339(100 * 1_000_000_000), "2026-12-01T00:00:00.000Z");
        assert_eq!(
            w.rfc3339(100 * 1_000_000_000 + 1_500_000_000),
            "2026-12-01T00:00:01.500Z"
        );
        assert_eq!(w.rfc3339(40 * 1_000_000_000), "2026-11-30T23:59:00.000Z");
    }
}
