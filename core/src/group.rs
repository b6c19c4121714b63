//! Ranking helpers: one total order for hits, merging shard results, and grouping.
//!
//! Pagination only works if every page is cut from the same ranking, so all ranking goes
//! through one total order ([`compare_hits`]: distance, then key, NaN last). Grouping
//! ("best N images per product") ranks groups by their best hit and reports whether the
//! answer is settled, so the caller can grow its candidate pool only until it is.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub key: u64,
    pub distance: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub group: u64,
    pub hits: Vec<Hit>,
}

/// The ranking order: ascending distance (-0.0 and 0.0 tie), NaN distances after every
/// number, ties broken by ascending key. Copies of one key that tie even so (-0.0 against
/// 0.0, NaN payloads) fall back to `total_cmp`, so which copy survives deduplication never
/// depends on sort stability or input order.
pub fn compare_hits(a: &Hit, b: &Hit) -> Ordering {
    let by_distance = match (a.distance.is_nan(), b.distance.is_nan()) {
        (false, false) => a
            .distance
            .partial_cmp(&b.distance)
            .unwrap_or(Ordering::Equal),
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
    };
    by_distance
        .then(a.key.cmp(&b.key))
        .then_with(|| a.distance.total_cmp(&b.distance))
}

/// Sort hits into ranking order (see [`compare_hits`]).
pub fn sort_hits(hits: &mut [Hit]) {
    // Unstable is fine: hits that compare equal are bit-for-bit identical.
    hits.sort_unstable_by(compare_hits);
}

/// One list's next candidate in the k-way merge; ordered so `BinaryHeap` pops the best.
struct Head {
    hit: Hit,
    list: usize,
    position: usize,
}

impl Head {
    fn rank(&self, other: &Self) -> Ordering {
        compare_hits(&self.hit, &other.hit).then(self.list.cmp(&other.list))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        other.rank(self)
    }
}

/// Merge lists that are each in ranking order (as shards return them) into the first `k`
/// hits overall, keeping only the best hit of a key that appears more than once. Costs
/// O(k log lists), independent of the lists' lengths beyond what is consumed.
pub fn merge_top_k(lists: &[Vec<Hit>], k: usize) -> Vec<Hit> {
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Head> = lists
        .iter()
        .enumerate()
        .filter_map(|(list, hits)| {
            hits.first().map(|&hit| Head {
                hit,
                list,
                position: 0,
            })
        })
        .collect();
    let available: usize = lists.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(k.min(available));
    let mut seen = HashSet::new();
    while let Some(Head {
        hit,
        list,
        position,
    }) = heap.pop()
    {
        // Heads pop in global ranking order, so the first time a key shows up is its best.
        if seen.insert(hit.key) {
            out.push(hit);
            if out.len() == k {
                break;
            }
        }
        if let Some(&next) = lists.get(list).and_then(|hits| hits.get(position + 1)) {
            heap.push(Head {
                hit: next,
                list,
                position: position + 1,
            });
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq)]
pub struct Grouped {
    pub groups: Vec<Group>,
    pub settled: bool,
}

/// Group candidate hits and return the groups ranked in `[offset, offset + limit)`.
///
/// Groups are ranked by their best hit (in [`compare_hits`] order); each keeps its best
/// `group_size` hits in ranking order. A key that appears more than once counts once, with
/// its best hit. `hits` need not be sorted.
///
/// `settled` is true when adding more candidates that rank after all of `hits` could not
/// change the answer: at least `offset + limit` groups exist and each of the first
/// `offset + limit` already has `group_size` hits. `group_size == 0` or `limit == 0` gives
/// no groups and `settled == true`.
pub fn top_groups(
    hits: &[Hit],
    group_of: impl Fn(u64) -> u64,
    offset: usize,
    limit: usize,
    group_size: usize,
) -> Grouped {
    if group_size == 0 || limit == 0 {
        return Grouped {
            groups: Vec::new(),
            settled: true,
        };
    }
    let wanted = offset.saturating_add(limit);
    let mut sorted = hits.to_vec();
    sort_hits(&mut sorted);

    let mut groups: Vec<Group> = Vec::new();
    let mut slots: HashMap<u64, usize> = HashMap::new();
    let mut seen_keys = HashSet::new();
    let mut full = 0usize;
    for hit in sorted {
        if !seen_keys.insert(hit.key) {
            continue;
        }
        match slots.entry(group_of(hit.key)) {
            Entry::Occupied(slot) => {
                if let Some(group) = groups.get_mut(*slot.get()) {
                    if group.hits.len() < group_size {
                        group.hits.push(hit);
                        if group.hits.len() == group_size {
                            full += 1;
                        }
                    }
                }
            }
            Entry::Vacant(slot) => {
                // Hits arrive in ranking order, so a group first seen once `wanted` groups
                // exist ranks after all of them and can never enter the page.
                if groups.len() < wanted {
                    let group = *slot.key();
                    slot.insert(groups.len());
                    groups.push(Group {
                        group,
                        hits: vec![hit],
                    });
                    if group_size == 1 {
                        full += 1;
                    }
                }
            }
        }
        if full == wanted {
            break;
        }
    }
    // `full` only counts stored groups and at most `wanted` are stored.
    let settled = full == wanted;
    let start = offset.min(groups.len());
    Grouped {
        groups: groups.split_off(start),
        settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hit(key: u64, distance: f32) -> Hit {
        Hit { key, distance }
    }

    #[test]
    fn order_is_total_with_nan_last() {
        let mut hits = vec![
            hit(5, f32::NAN),
            hit(3, 1.0),
            hit(1, 1.0),
            hit(9, -0.0),
            hit(2, 0.0),
            hit(4, f32::INFINITY),
            hit(0, f32::NAN),
            hit(7, f32::NEG_INFINITY),
        ];
        sort_hits(&mut hits);
        let keys: Vec<u64> = hits.iter().map(|h| h.key).collect();
        assert_eq!(keys, vec![7, 2, 9, 1, 3, 4, 0, 5]);
        // Equal distances defer to the key; only copies of one key look at the zero's sign.
        assert_eq!(compare_hits(&hit(1, 0.0), &hit(2, -0.0)), Ordering::Less);
        assert_eq!(compare_hits(&hit(2, -0.0), &hit(2, 0.0)), Ordering::Less);
        assert_eq!(compare_hits(&hit(2, 0.5), &hit(2, 0.5)), Ordering::Equal);
    }

    #[test]
    fn merge_basics() {
        let a = vec![hit(1, 0.1), hit(2, 0.5), hit(3, 0.9)];
        let b = vec![hit(2, 0.2), hit(4, 0.5), hit(1, 0.95)];
        let merged = merge_top_k(&[a.clone(), b.clone()], 10);
        assert_eq!(
            merged,
            vec![hit(1, 0.1), hit(2, 0.2), hit(4, 0.5), hit(3, 0.9)]
        );
        assert_eq!(
            merge_top_k(&[a.clone(), b.clone()], 2),
            vec![hit(1, 0.1), hit(2, 0.2)]
        );
        assert!(merge_top_k(&[a, b], 0).is_empty());
        assert!(merge_top_k(&[], 5).is_empty());
        assert!(merge_top_k(&[vec![], vec![]], 5).is_empty());
    }

    #[test]
    fn grouping_basics_and_settled() {
        // Groups are key / 10.
        let hits = vec![
            hit(10, 0.5),
            hit(11, 0.1),
            hit(20, 0.2),
            hit(12, 0.3),
            hit(30, 0.4),
            hit(21, 0.6),
            hit(11, 0.05), // duplicate key: the better copy wins
        ];
        let g = top_groups(&hits, |k| k / 10, 0, 2, 2);
        assert_eq!(
            g.groups,
            vec![
                Group {
                    group: 1,
                    hits: vec![hit(11, 0.05), hit(12, 0.3)]
                },
                Group {
                    group: 2,
                    hits: vec![hit(20, 0.2), hit(21, 0.6)]
                },
            ]
        );
        assert!(g.settled);
        let g = top_groups(&hits, |k| k / 10, 0, 3, 2);
        assert_eq!(g.groups.len(), 3);
        assert_eq!(
            g.groups[2],
            Group {
                group: 3,
                hits: vec![hit(30, 0.4)]
            }
        );
        assert!(!g.settled, "group 3 could still gain a hit");
        let g = top_groups(&hits, |k| k / 10, 2, 5, 1);
        assert_eq!(
            g.groups,
            vec![Group {
                group: 3,
                hits: vec![hit(30, 0.4)]
            }]
        );
        assert!(!g.settled, "fewer than offset + limit groups");
        let g = top_groups(&hits, |k| k / 10, 0, 3, 1);
        assert!(g.settled);
        let g = top_groups(&hits, |k| k / 10, 10, 1, 1);
        assert!(g.groups.is_empty() && !g.settled);
        for (limit, size) in [(0, 3), (3, 0)] {
            let g = top_groups(&hits, |k| k / 10, 0, limit, size);
            assert_eq!(
                g,
                Grouped {
                    groups: vec![],
                    settled: true
                }
            );
        }
        let g = top_groups(&hits, |k| k / 10, usize::MAX, usize::MAX, usize::MAX);
        assert!(g.groups.is_empty() && !g.settled);
        let g = top_groups(&[], |k| k, 0, 1, 1);
        assert!(g.groups.is_empty() && !g.settled);
    }

    #[test]
    fn group_ties_break_by_key() {
        let hits = vec![hit(8, 1.0), hit(3, 1.0), hit(5, 1.0), hit(4, 1.0)];
        let g = top_groups(&hits, |k| k % 2, 0, 2, 5);
        assert_eq!(
            g.groups[0],
            Group {
                group: 1,
                hits: vec![hit(3, 1.0), hit(5, 1.0)]
            }
        );
        assert_eq!(
            g.groups[1],
            Group {
                group: 0,
                hits: vec![hit(4, 1.0), hit(8, 1.0)]
            }
        );
    }

    fn distance() -> impl Strategy<Value = f32> {
        prop_oneof![
            8 => (0u8..6).prop_map(|d| d as f32 * 0.25),
            1 => Just(-0.0f32),
            1 => Just(f32::NAN),
        ]
    }

    fn hits() -> impl Strategy<Value = Vec<Hit>> {
        proptest::collection::vec(
            (0u64..40, distance()).prop_map(|(key, distance)| Hit { key, distance }),
            0..60,
        )
    }

    /// Brute force: best hit per key, then all groups fully ranked, then sliced.
    fn reference(
        hits: &[Hit],
        group_of: impl Fn(u64) -> u64,
        offset: usize,
        limit: usize,
        size: usize,
    ) -> Grouped {
        let mut sorted = hits.to_vec();
        sort_hits(&mut sorted);
        let mut best: Vec<Hit> = Vec::new();
        for h in sorted {
            if !best.iter().any(|b| b.key == h.key) {
                best.push(h);
            }
        }
        let mut ids: Vec<u64> = Vec::new();
        for h in &best {
            let g = group_of(h.key);
            if !ids.contains(&g) {
                ids.push(g);
            }
        }
        let all: Vec<Group> = ids
            .iter()
            .map(|&g| Group {
                group: g,
                hits: best
                    .iter()
                    .copied()
                    .filter(|h| group_of(h.key) == g)
                    .take(size)
                    .collect(),
            })
            .collect();
        if size == 0 || limit == 0 {
            return Grouped {
                groups: vec![],
                settled: true,
            };
        }
        let wanted = offset.saturating_add(limit);
        let settled = all.len() >= wanted && all.iter().take(wanted).all(|g| g.hits.len() >= size);
        Grouped {
            groups: all.into_iter().skip(offset).take(limit).collect(),
            settled,
        }
    }

    fn same(a: &Grouped, b: &Grouped) -> bool {
        // NaN != NaN, so compare the bit patterns of distances.
        let flat = |g: &Grouped| -> Vec<(u64, Vec<(u64, u32)>)> {
            g.groups
                .iter()
                .map(|gr| {
                    (
                        gr.group,
                        gr.hits
                            .iter()
                            .map(|h| (h.key, h.distance.to_bits()))
                            .collect(),
                    )
                })
                .collect()
        };
        a.settled == b.settled && flat(a) == flat(b)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn top_groups_matches_reference(hits in hits(), modulus in 1u64..12, offset in 0usize..8,
                                        limit in 0usize..8, size in 0usize..5) {
            let got = top_groups(&hits, |k| k % modulus, offset, limit, size);
            let want = reference(&hits, |k| k % modulus, offset, limit, size);
            prop_assert!(same(&got, &want), "got {:?} want {:?}", got, want);
        }

        #[test]
        fn pages_neither_repeat_nor_skip(hits in hits(), modulus in 1u64..12, page in 1usize..5, size in 1usize..4) {
            let everything = top_groups(&hits, |k| k % modulus, 0, usize::MAX, size);
            let mut paged = Vec::new();
            let mut offset = 0;
            loop {
                let g = top_groups(&hits, |k| k % modulus, offset, page, size);
                prop_assert!(g.groups.len() <= page);
                if g.groups.is_empty() {
                    break;
                }
                paged.extend(g.groups);
                offset += page;
            }
            let ids: Vec<u64> = paged.iter().map(|g| g.group).collect();
            let all_ids: Vec<u64> = everything.groups.iter().map(|g| g.group).collect();
            prop_assert_eq!(ids, all_ids);
            let paged = Grouped { groups: paged, settled: false };
            let everything = Grouped { groups: everything.groups, settled: false };
            prop_assert!(same(&paged, &everything));
        }

        #[test]
        fn settled_answers_survive_worse_candidates(hits in hits(), extra in hits(), modulus in 1u64..8,
                                                    offset in 0usize..4, limit in 1usize..4, size in 1usize..3) {
            let before = top_groups(&hits, |k| k % modulus, offset, limit, size);
            // New candidates must rank after every existing one: fresh, larger keys, and
            // larger distances (only NaN ranks after an existing NaN).
            let any_nan = hits.iter().any(|h| h.distance.is_nan());
            let worse: Vec<Hit> = extra
                .iter()
                .map(|h| Hit {
                    key: h.key + 1000,
                    distance: if any_nan || h.distance.is_nan() { f32::NAN } else { 100.0 + h.distance },
                })
                .collect();
            let mut more = hits.clone();
            more.extend(worse);
            let after = top_groups(&more, |k| k % modulus, offset, limit, size);
            if before.settled {
                prop_assert!(same(&before, &after));
            }
        }

        #[test]
        fn merge_matches_sorting_everything(hits in hits(), shards in 1usize..5, k in 0usize..70) {
            let mut lists = vec![Vec::new(); shards];
            for (i, h) in hits.iter().enumerate() {
                lists[i % shards].push(*h);
            }
            for list in &mut lists {
                sort_hits(list);
            }
            let mut all = hits.clone();
            sort_hits(&mut all);
            let mut want: Vec<Hit> = Vec::new();
            for h in all {
                if !want.iter().any(|w| w.key == h.key) {
                    want.push(h);
                }
            }
            want.truncate(k);
            let got = merge_top_k(&lists, k);
            let bits = |v: &[Hit]| v.iter().map(|h| (h.key, h.distance.to_bits())).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want));
        }
    }
}
