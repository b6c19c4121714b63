//! Dense bitsets over record keys, the currency of filtering.
//!
//! A filter is evaluated once into a `Bitset`, and the HNSW predicate search then asks
//! `contains` for every node it visits: that call has to be one bounds check and one word
//! load, which a compressed bitmap cannot offer. Keys are dense (a collection hands them out
//! from 0 upward), so a plain word vector is also the smallest representation for the
//! selective-to-broad filters we see.
//!
//! Invariant kept by every method: `words.len() == len.div_ceil(64)` and every bit at or
//! above `len` is clear. `contains` relies on it to skip the `len` comparison, and the
//! derived `PartialEq` relies on it to compare sets rather than garbage tail bits.

use roaring::RoaringBitmap;

/// The largest universe a bitset covers: every key a `u32` can hold (512 MiB of words).
/// Filterable keys are `< 2^32` (the field indexes store `u32`), so clamping here turns
/// an absurd caller-supplied length into a bounded allocation instead of an abort.
pub const MAX_LEN: usize = (u32::MAX as usize).saturating_add(1);

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitset {
    words: Vec<u64>,
    len: usize,
}

#[inline]
fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

impl Bitset {
    /// An empty set over the universe `0..len` (`len` is clamped to [`MAX_LEN`]).
    pub fn new(len: usize) -> Self {
        let len = len.min(MAX_LEN);
        Bitset {
            words: vec![0; words_for(len)],
            len,
        }
    }

    /// Every key of `0..len` set (`len` is clamped to [`MAX_LEN`]).
    pub fn full(len: usize) -> Self {
        let len = len.min(MAX_LEN);
        let mut words = vec![u64::MAX; words_for(len)];
        let tail = len % 64;
        if tail != 0 {
            if let Some(last) = words.last_mut() {
                *last = (1u64 << tail) - 1;
            }
        }
        Bitset { words, len }
    }

    /// Size of the universe (`0..len`), not the number of keys set: see [`Bitset::count`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no key is set, whatever the universe size.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Number of keys set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether `key` is set; `false` for keys outside the universe.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        // Bits at or above `len` are always clear, so the slice bounds check alone decides
        // out-of-range keys: one predictable branch plus one load on the HNSW hot path.
        match usize::try_from(key >> 6)
            .ok()
            .and_then(|i| self.words.get(i))
        {
            Some(word) => (word >> (key & 63)) & 1 != 0,
            None => false,
        }
    }

    /// Set `key`, growing the universe to `key + 1` if needed. Keys at or above
    /// [`MAX_LEN`] cannot be filterable and are ignored (use [`Bitset::try_insert`] to get an
    /// error instead): growing to them would mean allocating gigabytes or aborting.
    pub fn insert(&mut self, key: u64) {
        let _ = self.try_insert(key);
    }

    /// Like [`Bitset::insert`] but reports keys at or above [`MAX_LEN`].
    pub fn try_insert(&mut self, key: u64) -> crate::error::CoreResult<()> {
        let k = match usize::try_from(key) {
            Ok(k) if k < MAX_LEN => k,
            _ => {
                return Err(crate::error::CoreError::KeyOutOfRange {
                    key,
                    max: (MAX_LEN - 1) as u64,
                })
            }
        };
        if k >= self.len {
            self.grow(k + 1);
        }
        self.words[k >> 6] |= 1u64 << (k & 63);
        Ok(())
    }

    /// Clear `key`; a no-op outside the universe. The universe never shrinks.
    pub fn remove(&mut self, key: u64) {
        if let Some(word) = usize::try_from(key >> 6)
            .ok()
            .and_then(|i| self.words.get_mut(i))
        {
            *word &= !(1u64 << (key & 63));
        }
    }

    /// Widen the universe to `len` (clamped to [`MAX_LEN`]); new keys are clear. Never shrinks.
    pub fn grow(&mut self, len: usize) {
        let len = len.min(MAX_LEN);
        if len > self.len {
            self.words.resize(words_for(len), 0);
            self.len = len;
        }
    }

    /// Intersection in place. The universe becomes the larger of both; keys outside
    /// `other`'s universe count as clear there.
    pub fn and_with(&mut self, other: &Bitset) {
        self.grow(other.len);
        let common = other.words.len().min(self.words.len());
        for (a, b) in self.words[..common].iter_mut().zip(&other.words[..common]) {
            *a &= *b;
        }
        self.words[common..].fill(0);
    }

    /// Union in place; the universe becomes the larger of both.
    pub fn or_with(&mut self, other: &Bitset) {
        self.grow(other.len);
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
    }

    /// Difference (`self \ other`) in place; the universe becomes the larger of both.
    pub fn and_not_with(&mut self, other: &Bitset) {
        self.grow(other.len);
        // `!b` sets bits past `other.len`, but the matching bits of `self` are clear past
        // `self.len` and `self.len >= other.len` now, so the tail invariant holds.
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !*b;
        }
    }

    /// The set keys in ascending order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            words: &self.words,
            index: 0,
            current: self.words.first().copied().unwrap_or(0),
        }
    }

    pub fn to_vec(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.count());
        out.extend(self.iter());
        out
    }

    /// The keys of `bitmap` that fall inside the universe `0..len`; keys at or above `len`
    /// are dropped so that the result's universe is exactly what the caller asked for.
    pub fn from_roaring(bitmap: &RoaringBitmap, len: usize) -> Self {
        let mut out = Bitset::new(len);
        let len = out.len;
        // Ascending iteration lets us stop at the first key outside the universe.
        for key in bitmap.iter() {
            let k = key as usize;
            if k >= len {
                break;
            }
            out.words[k >> 6] |= 1u64 << (k & 63);
        }
        out
    }

    /// Add every key of `bitmap`, growing the universe to cover them (like `insert`).
    pub fn or_roaring(&mut self, bitmap: &RoaringBitmap) {
        if let Some(max) = bitmap.max() {
            self.grow(max as usize + 1);
        }
        for key in bitmap.iter() {
            let k = key as usize;
            // Always in bounds after the grow above; `get_mut` keeps it panic-free regardless.
            if let Some(word) = self.words.get_mut(k >> 6) {
                *word |= 1u64 << (k & 63);
            }
        }
    }

    /// The keys of `keys` inside `0..len` (others dropped, as in `from_roaring`).
    pub fn from_keys(keys: &[u64], len: usize) -> Self {
        let mut out = Bitset::new(len);
        let len = out.len as u64;
        for &key in keys {
            if key < len {
                out.words[(key >> 6) as usize] |= 1u64 << (key & 63);
            }
        }
        out
    }

    /// Bytes held, for the collection's memory report.
    pub fn memory_usage(&self) -> usize {
        std::mem::size_of::<Self>() + self.words.capacity() * std::mem::size_of::<u64>()
    }
}

/// Ascending iterator over the set keys of a [`Bitset`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    words: &'a [u64],
    index: usize,
    current: u64,
}

impl Iterator for Iter<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        // Skipping whole zero words keeps sparse sets cheap; within a word, clearing the
        // lowest set bit visits only the set bits.
        while self.current == 0 {
            self.index += 1;
            self.current = *self.words.get(self.index)?;
        }
        let bit = self.current.trailing_zeros() as u64;
        self.current &= self.current - 1;
        Some(((self.index as u64) << 6) | bit)
    }
}

impl<'a> IntoIterator for &'a Bitset {
    type Item = u64;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn model_of(bits: &Bitset) -> BTreeSet<u64> {
        bits.iter().collect()
    }

    fn tail_clear(bits: &Bitset) -> bool {
        bits.words.len() == bits.len.div_ceil(64)
            && match bits.len % 64 {
                0 => true,
                tail => bits.words.last().is_none_or(|w| w >> tail == 0),
            }
    }

    #[test]
    fn word_boundaries() {
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129] {
            let full = Bitset::full(len);
            assert_eq!(full.len(), len);
            assert_eq!(full.count(), len);
            assert_eq!(full.to_vec(), (0..len as u64).collect::<Vec<_>>());
            assert!(!full.contains(len as u64));
            assert!(tail_clear(&full));
            let empty = Bitset::new(len);
            assert!(empty.is_empty());
            assert_eq!(empty.count(), 0);
        }
        let mut b = Bitset::new(0);
        for key in [63u64, 64, 65] {
            b.insert(key);
            assert!(b.contains(key));
        }
        assert_eq!(b.len(), 66);
        assert_eq!(b.to_vec(), vec![63, 64, 65]);
        assert!(!b.contains(62) && !b.contains(66) && !b.contains(u64::MAX));
        b.remove(64);
        assert_eq!(b.to_vec(), vec![63, 65]);
        b.remove(1_000_000);
        assert_eq!(b.len(), 66);
    }

    #[test]
    fn huge_keys_do_not_allocate_or_panic() {
        let mut b = Bitset::new(10);
        b.insert(u64::MAX);
        b.insert(MAX_LEN as u64);
        assert_eq!(b.len(), 10);
        assert!(b.try_insert(u64::MAX).is_err());
        assert!(!b.contains(u64::MAX));
        b.remove(u64::MAX);
        assert_eq!(Bitset::from_keys(&[u64::MAX, 3], 10).to_vec(), vec![3]);
    }

    #[test]
    fn differing_lengths() {
        let mut a = Bitset::from_keys(&[1, 5, 70], 80);
        let b = Bitset::from_keys(&[5, 130], 200);
        let mut or = a.clone();
        or.or_with(&b);
        assert_eq!(or.len(), 200);
        assert_eq!(or.to_vec(), vec![1, 5, 70, 130]);
        let mut and = a.clone();
        and.and_with(&b);
        assert_eq!(and.len(), 200);
        assert_eq!(and.to_vec(), vec![5]);
        let mut and2 = b.clone();
        and2.and_with(&a);
        assert_eq!(and2, and);
        a.and_not_with(&b);
        assert_eq!(a.to_vec(), vec![1, 70]);
        assert!(tail_clear(&a));
        let mut c = Bitset::full(65);
        c.and_not_with(&Bitset::new(3));
        assert_eq!(c.count(), 65);
        assert!(tail_clear(&c));
    }

    #[test]
    fn roaring_conversions() {
        let bitmap: RoaringBitmap = [0u32, 63, 64, 65, 1000, 70_000].into_iter().collect();
        let b = Bitset::from_roaring(&bitmap, 1001);
        assert_eq!(b.len(), 1001);
        assert_eq!(b.to_vec(), vec![0, 63, 64, 65, 1000]);
        let mut c = Bitset::new(5);
        c.or_roaring(&bitmap);
        assert_eq!(c.len(), 70_001);
        assert_eq!(c.count(), 6);
        c.or_roaring(&RoaringBitmap::new());
        assert_eq!(c.len(), 70_001);
        assert!(b.memory_usage() >= 16 * 8);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        Grow(usize),
        And(Vec<u64>, usize),
        Or(Vec<u64>, usize),
        AndNot(Vec<u64>, usize),
        OrRoaring(Vec<u32>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u64..300;
        let other = (proptest::collection::vec(0u64..300, 0..40), 0usize..300);
        prop_oneof![
            key.clone().prop_map(Op::Insert),
            key.prop_map(Op::Remove),
            (0usize..300).prop_map(Op::Grow),
            other.clone().prop_map(|(k, l)| Op::And(k, l)),
            other.clone().prop_map(|(k, l)| Op::Or(k, l)),
            other.prop_map(|(k, l)| Op::AndNot(k, l)),
            proptest::collection::vec(0u32..300, 0..40).prop_map(Op::OrRoaring),
        ]
    }

    proptest! {
        #[test]
        fn matches_btreeset_model(start in 0usize..200, full in any::<bool>(),
                                  ops in proptest::collection::vec(op(), 0..40)) {
            let mut bits = if full { Bitset::full(start) } else { Bitset::new(start) };
            let mut model: BTreeSet<u64> = if full { (0..start as u64).collect() } else { BTreeSet::new() };
            let mut len = start;
            for op in ops {
                match op {
                    Op::Insert(k) => { bits.insert(k); model.insert(k); len = len.max(k as usize + 1); }
                    Op::Remove(k) => { bits.remove(k); model.remove(&k); }
                    Op::Grow(l) => { bits.grow(l); len = len.max(l); }
                    Op::And(keys, l) => {
                        let other = Bitset::from_keys(&keys, l);
                        let o: BTreeSet<u64> = keys.into_iter().filter(|&k| (k as usize) < l).collect();
                        prop_assert_eq!(model_of(&other), o.clone());
                        bits.and_with(&other);
                        model = model.intersection(&o).copied().collect();
                        len = len.max(l);
                    }
                    Op::Or(keys, l) => {
                        let other = Bitset::from_keys(&keys, l);
                        let o: BTreeSet<u64> = keys.into_iter().filter(|&k| (k as usize) < l).collect();
                        bits.or_with(&other);
                        model.extend(o);
                        len = len.max(l);
                    }
                    Op::AndNot(keys, l) => {
                        let other = Bitset::from_keys(&keys, l);
                        let o: BTreeSet<u64> = keys.into_iter().filter(|&k| (k as usize) < l).collect();
                        bits.and_not_with(&other);
                        model = model.difference(&o).copied().collect();
                        len = len.max(l);
                    }
                    Op::OrRoaring(keys) => {
                        let bitmap: RoaringBitmap = keys.iter().copied().collect();
                        bits.or_roaring(&bitmap);
                        if let Some(m) = keys.iter().max() { len = len.max(*m as usize + 1); }
                        model.extend(keys.into_iter().map(u64::from));
                    }
                }
                prop_assert!(tail_clear(&bits));
                prop_assert_eq!(bits.len(), len);
                prop_assert_eq!(bits.count(), model.len());
                prop_assert_eq!(bits.is_empty(), model.is_empty());
            }
            let listed = bits.to_vec();
            prop_assert!(listed.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(&listed, &model.iter().copied().collect::<Vec<_>>());
            for k in 0..(len as u64 + 70) {
                prop_assert_eq!(bits.contains(k), model.contains(&k));
            }
            let bitmap: RoaringBitmap = listed.iter().map(|&k| k as u32).collect();
            prop_assert_eq!(Bitset::from_roaring(&bitmap, len), bits.clone());
            prop_assert_eq!(Bitset::from_keys(&listed, len), bits);
        }
    }
}
