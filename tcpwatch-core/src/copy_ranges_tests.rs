use super::*;

fn covers(r: &[[u32; 2]; COPY_RANGES], (start, end): (u32, u32)) -> bool {
    r.iter()
        .any(|&[s, len]| len > 0 && s <= start && end <= s + len)
}

#[test]
fn merges_within_a_cache_line_and_keeps_far_spans_apart() {
    let r = copy_ranges(&[(0, 4), (12, 16), (288, 296), (1664, 1668), (1700, 1704)]);
    assert_eq!(r[0], [0, 16]);
    assert_eq!(r[1], [288, 8]);
    assert_eq!(r[2], [1664, 40]);
    assert!(r[3..].iter().all(|x| x[1] == 0), "{r:?}");
}

#[test]
fn overlapping_and_unsorted_spans() {
    let r = copy_ranges(&[(100, 108), (0, 8), (4, 12), (104, 106)]);
    assert_eq!(r[0], [0, 12]);
    assert_eq!(r[1], [100, 8]);
}

#[test]
fn too_many_ranges_merge_the_closest_first_and_still_cover_everything() {
    // 20 spans 200 bytes apart, one pair only 100 apart.
    let mut spans: Vec<(u32, u32)> = (0..20).map(|i| (i * 200, i * 200 + 4)).collect();
    spans.push((2_100, 2_104));
    let r = copy_ranges(&spans);
    assert!(r.iter().all(|x| x[1] > 0), "every slot used: {r:?}");
    for s in &spans {
        assert!(covers(&r, *s), "{s:?} not covered by {r:?}");
    }
    let copied: u32 = r.iter().map(|x| x[1]).sum();
    assert!(copied < 3_804, "less than one span to the last: {copied}");
    for w in r.windows(2) {
        assert!(w[0][0] + w[0][1] < w[1][0], "sorted, disjoint: {r:?}");
    }
}

#[test]
fn randomised_every_span_is_covered() {
    let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..500 {
        let mut spans = Vec::new();
        for _ in 0..rng.below(40) {
            let start = rng.below_u32(4000);
            let len = 1 + rng.below_u32(16);
            spans.push((start, start + len));
        }
        let r = copy_ranges(&spans);
        for s in &spans {
            assert!(covers(&r, *s), "{s:?} not covered by {r:?}");
        }
    }
}
