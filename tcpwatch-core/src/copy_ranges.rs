//! Which byte ranges of a full socket the sweep copies: the spans of the fields it reads,
//! merged where they share or nearly share a cache line. On Linux 6.18 the fields spread over
//! 2 232 bytes (35 cache lines) but fill about a dozen lines: copying only those touches a
//! quarter of the memory per socket, at the price of one helper call per range.
use tcpwatch_common::COPY_RANGES;

/// Spans closer than this are copied as one (a cache line: a gap within one costs nothing).
pub const MERGE_GAP: u32 = 64;

/// `spans`: `(start, end)` byte offsets of every field read from the copy. The result, in
/// offset order, covers every span, has at most [`COPY_RANGES`] ranges (the closest ones
/// merged first when there are more) and unused slots of length 0.
#[must_use]
pub fn copy_ranges(spans: &[(u32, u32)]) -> [[u32; 2]; COPY_RANGES] {
    let mut sorted: Vec<(u32, u32)> = spans.iter().copied().filter(|s| s.1 > s.0).collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    while merged.len() > COPY_RANGES {
        // Merge the two neighbours with the smallest gap.
        let i = (0..merged.len() - 1)
            .min_by_key(|&i| merged[i + 1].0.saturating_sub(merged[i].1))
            .unwrap_or(0);
        merged[i].1 = merged[i].1.max(merged[i + 1].1);
        merged.remove(i + 1);
    }
    let mut out = [[0; 2]; COPY_RANGES];
    for (slot, (start, end)) in out.iter_mut().zip(merged) {
        *slot = [start, end - start];
    }
    out
}

#[cfg(test)]
#[path = "copy_ranges_tests.rs"]
mod tests;
