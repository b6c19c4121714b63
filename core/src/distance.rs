//! Distance kernels for exact scans and exact re-ranking.
//!
//! usearch's HNSW graph only finds *approximate* neighbours. Lookalike re-scores every candidate
//! against the exact vectors it keeps, and a filtered search that passes few keys skips the graph
//! and scans those rows directly (up to ~10,000 rows of 512-d `f32` per query). These loops are
//! the hottest code of the query path, so each kernel has hand-written SIMD versions, and the
//! fastest one the CPU supports is chosen once at run time: one build (one wheel) has to run on
//! old and new machines alike, so nothing can be chosen at compile time.
//!
//! The ISA paths are AVX-512 (F/BW/VL, plus VNNI for `i8` and VPOPCNTDQ for bits when present),
//! AVX2+FMA(+F16C), POPCNT, NEON on aarch64, and [`scalar`], which is both the portable fallback
//! and the reference every SIMD version is tested against.
//!
//! Conventions shared by every function here:
//! - Two slices of unequal length never panic: only the common prefix (the shorter length) is
//!   compared. Callers validate dimensions; this is a guard, not a feature.
//! - [`dot_i8`] accumulates in `i32` with wrapping, which is exact below 131,072 components
//!   (|-128 * -128| * 131,072 = 2^31); every implementation wraps the same way.
//! - [`hamming`] saturates at `u32::MAX` (only reachable beyond 512 MiB per vector).
//! - Distances: smaller is closer (see [`distance_f32`]).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use half::f16;

/// A distance metric, named as in the public API and in usearch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine distance, `1 - dot(a, b)` on vectors the caller normalized to unit length.
    Cos,
    /// Inner-product distance, `1 - dot(a, b)`.
    Ip,
    /// Squared Euclidean distance.
    L2sq,
    /// Number of differing bits between packed bit vectors.
    Hamming,
}

impl Metric {
    /// Parses a metric name, ASCII case-insensitively: `cos`/`cosine`, `ip`/`inner_product`/`dot`,
    /// `l2sq`/`l2`/`euclidean`, `hamming`. Unknown names give `None`.
    pub fn parse(name: &str) -> Option<Metric> {
        const NAMES: [(&str, Metric); 9] = [
            ("cos", Metric::Cos),
            ("cosine", Metric::Cos),
            ("ip", Metric::Ip),
            ("inner_product", Metric::Ip),
            ("dot", Metric::Ip),
            ("l2sq", Metric::L2sq),
            ("l2", Metric::L2sq),
            ("euclidean", Metric::L2sq),
            ("hamming", Metric::Hamming),
        ];
        NAMES
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|&(_, metric)| metric)
    }

    /// The canonical name, which [`Metric::parse`] accepts: `cos`, `ip`, `l2sq` or `hamming`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cos => "cos",
            Metric::Ip => "ip",
            Metric::L2sq => "l2sq",
            Metric::Hamming => "hamming",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Portable implementations: the fallback where no SIMD path applies and the reference every
/// SIMD kernel is tested against.
///
/// Floats are summed in 8 independent lanes rather than one running total: that keeps a single
/// dependency chain from bounding the speed, lets the compiler vectorize with baseline SIMD
/// (SSE2 on x86_64), and is no less accurate than a single sum.
pub mod scalar {
    use half::f16;
    use half::slice::HalfFloatSliceExt;

    const LANES: usize = 8;

    fn lanes_sum(acc: [f32; LANES]) -> f32 {
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
    }

    /// Dot product of the common prefix of `a` and `b`.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        lanes_sum(acc) + tail
    }

    /// Squared Euclidean distance of the common prefix of `a` and `b`.
    pub fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0f32; LANES];
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| (x - y) * (x - y))
            .sum();
        for (x, y) in ca.zip(cb) {
            for i in 0..LANES {
                let d = x[i] - y[i];
                acc[i] += d * d;
            }
        }
        lanes_sum(acc) + tail
    }

    /// Dot product of the common prefix of `a` and `b`, in `i32` with wrapping (exact below
    /// 131,072 components).
    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let mut acc = 0i32;
        for (&x, &y) in a[..n].iter().zip(&b[..n]) {
            // One product always fits in i32; only the running sum can wrap.
            acc = acc.wrapping_add(i32::from(x) * i32::from(y));
        }
        acc
    }

    /// Dot product of the common prefix of `a` and `b`, converted to `f32` and summed in `f32`.
    pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
        // Converting block by block with `half`'s slice conversion (exact, and vectorized where
        // the CPU allows) is ~50x faster than `f16::to_f32` per element, which re-checks the
        // CPU's features on every call.
        const BLOCK: usize = 256;
        let n = a.len().min(b.len());
        let (mut xs, mut ys) = ([0f32; BLOCK], [0f32; BLOCK]);
        let mut total = 0f32;
        for (x, y) in a[..n].chunks(BLOCK).zip(b[..n].chunks(BLOCK)) {
            let len = x.len();
            x.convert_to_f32_slice(&mut xs[..len]);
            y.convert_to_f32_slice(&mut ys[..len]);
            total += dot_f32(&xs[..len], &ys[..len]);
        }
        total
    }

    /// Number of differing bits in the common prefix of the packed bit vectors `a` and `b`,
    /// saturating at `u32::MAX`.
    pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let mut total: u64 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| u64::from((x ^ y).count_ones()))
            .sum();
        for (x, y) in ca.zip(cb) {
            total += u64::from((load_u64(x) ^ load_u64(y)).count_ones());
        }
        saturate_u32(total)
    }

    /// The 8 bytes of a chunk as one word (byte order is irrelevant to a popcount).
    #[inline(always)]
    pub(super) fn load_u64(chunk: &[u8]) -> u64 {
        <[u8; 8]>::try_from(chunk).map_or(0, u64::from_ne_bytes)
    }

    #[inline(always)]
    pub(super) fn saturate_u32(total: u64) -> u32 {
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

type F32Kernel = unsafe fn(&[f32], &[f32]) -> f32;
type I8Kernel = unsafe fn(&[i8], &[i8]) -> i32;
type F16Kernel = unsafe fn(&[f16], &[f16]) -> f32;
type BitsKernel = unsafe fn(&[u8], &[u8]) -> u32;

/// The implementations chosen for this CPU. Every pointer here is either a safe function or an
/// ISA-specific one whose features were detected before it was stored, and every kernel handles
/// unequal lengths itself; that is what makes calling them sound.
struct Kernels {
    level: &'static str,
    dot_f32: F32Kernel,
    l2sq_f32: F32Kernel,
    dot_i8: I8Kernel,
    dot_f16: F16Kernel,
    hamming: BitsKernel,
}

const SCALAR_KERNELS: Kernels = Kernels {
    level: "scalar",
    dot_f32: scalar::dot_f32,
    l2sq_f32: scalar::l2sq_f32,
    dot_i8: scalar::dot_i8,
    dot_f16: scalar::dot_f16,
    hamming: scalar::hamming,
};

/// The choice takes several feature checks; made once and kept as plain function pointers, it
/// leaves one load and one indirect call per distance.
#[inline]
fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(detect)
}

fn detect() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        x86::detect()
    }
    #[cfg(target_arch = "aarch64")]
    {
        if neon::available() {
            return neon::KERNELS;
        }
        SCALAR_KERNELS
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        SCALAR_KERNELS
    }
}

/// The SIMD level the kernels were dispatched to: `"avx512"`, `"avx2"`, `"neon"` or `"scalar"`.
/// (On an AVX-512 CPU, `i8` uses VNNI and bits use VPOPCNTDQ when those are present too.)
pub fn capabilities() -> &'static str {
    kernels().level
}

/// Dot product (fastest available implementation); the common prefix if lengths differ.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: see `Kernels`: features were detected before the pointer was stored.
    unsafe { (kernels().dot_f32)(a, b) }
}

/// Squared Euclidean distance (fastest available implementation); the common prefix if lengths
/// differ.
#[inline]
pub fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: see `Kernels`.
    unsafe { (kernels().l2sq_f32)(a, b) }
}

/// Dot product of `i8` vectors in `i32` with wrapping (exact below 131,072 components); the
/// common prefix if lengths differ.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    // SAFETY: see `Kernels`.
    unsafe { (kernels().dot_i8)(a, b) }
}

/// Dot product of half-precision vectors, converted with F16C/AVX-512 and summed in `f32`; the
/// common prefix if lengths differ.
#[inline]
pub fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
    // SAFETY: see `Kernels`.
    unsafe { (kernels().dot_f16)(a, b) }
}

/// Number of differing bits between packed bit vectors (POPCNT / AVX-512 VPOPCNTDQ), saturating
/// at `u32::MAX`; the common prefix if lengths differ.
#[inline]
pub fn hamming(a: &[u8], b: &[u8]) -> u32 {
    // SAFETY: see `Kernels`.
    unsafe { (kernels().hamming)(a, b) }
}

/// Distance where smaller is closer, matching usearch's conventions for float vectors:
/// - `Cos` and `Ip`: `1 - dot(a, b)`. `Cos` assumes the caller already normalized both vectors
///   to unit length (see [`normalize`]); it is then exactly the cosine distance.
/// - `L2sq`: squared Euclidean distance.
/// - `Hamming` is defined on packed bits (use [`hamming`] / [`scan_topk_bits`]); given floats it
///   falls back to `L2sq` so that a misrouted call still yields a meaningful, finite ordering.
///
/// Unequal lengths compare the common prefix.
#[inline]
pub fn distance_f32(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cos | Metric::Ip => 1.0 - dot_f32(a, b),
        Metric::L2sq | Metric::Hamming => l2sq_f32(a, b),
    }
}

/// Normalizes `v` in place to unit L2 norm. Returns `false`, leaving `v` unchanged, if the norm
/// is zero or not finite (any NaN or infinite component, or an empty vector).
///
/// Vectors whose squared norm over- or underflows `f32` (components beyond ~1e19 or below ~1e-19)
/// are still normalized correctly: they take a slower `f64` path.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm2 = dot_f32(v, v);
    // A finite squared norm implies finite components; the lower bound keeps 1/sqrt precise.
    if norm2.is_finite() && norm2 >= 1e-30 {
        let inv = 1.0 / norm2.sqrt();
        v.iter_mut().for_each(|x| *x *= inv);
        return true;
    }
    // Rare: NaN/inf (rejected below), all zeros, or a magnitude that f32 squares cannot hold.
    let norm2: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if !(norm2.is_finite() && norm2 > 0.0) {
        return false;
    }
    let inv = 1.0 / norm2.sqrt();
    v.iter_mut().for_each(|x| *x = (f64::from(*x) * inv) as f32);
    true
}

// ---------------------------------------------------------------------------------------------
// Exact top-k scans
// ---------------------------------------------------------------------------------------------

/// Exact top-k over a row-major matrix `rows` (row `r` is `rows[r*ndim..(r+1)*ndim]`),
/// restricted to the row ids in `candidates`, with [`distance_f32`]'s conventions.
///
/// Returns at most `k` `(row_id, distance)` pairs sorted by ascending distance, ties broken by
/// ascending row id (a total order, so pages of results are stable). Never panics:
/// - row ids beyond the last full row are skipped, and so are rows whose distance is NaN
///   (non-finite data cannot be ranked);
/// - a row id listed twice is reported once;
/// - `k == 0` or `ndim == 0` gives an empty result;
/// - if `query.len() != ndim`, the common prefix is compared.
pub fn scan_topk_f32(
    metric: Metric,
    query: &[f32],
    rows: &[f32],
    ndim: usize,
    candidates: &[u64],
    k: usize,
) -> Vec<(u64, f32)> {
    scan_topk_f32_iter(metric, query, rows, ndim, candidates.iter().copied(), k)
}

/// [`scan_topk_f32`] with the candidates given by an iterator (e.g. the members of a bitset).
pub fn scan_topk_f32_iter(
    metric: Metric,
    query: &[f32],
    rows: &[f32],
    ndim: usize,
    candidates: impl Iterator<Item = u64>,
    k: usize,
) -> Vec<(u64, f32)> {
    let query = &query[..query.len().min(ndim)];
    let kernels = kernels();
    // The metric is resolved once, outside the loop, and each branch gets its own copy of the
    // loop with the kernel call in it.
    match metric {
        Metric::Cos | Metric::Ip => {
            let dot = kernels.dot_f32;
            // SAFETY: see `Kernels`.
            scan_rows(rows, ndim, candidates, k, |row| {
                1.0 - unsafe { dot(query, row) }
            })
        }
        Metric::L2sq | Metric::Hamming => {
            let l2sq = kernels.l2sq_f32;
            // SAFETY: see `Kernels`.
            scan_rows(rows, ndim, candidates, k, |row| unsafe { l2sq(query, row) })
        }
    }
}

/// Exact top-k over packed bit vectors of `nbytes` bytes per row; the distance is the number of
/// differing bits, as `f32` (exact up to 2^24 bits). Same contract as [`scan_topk_f32`]
/// (`nbytes == 0` gives an empty result).
pub fn scan_topk_bits(
    query: &[u8],
    rows: &[u8],
    nbytes: usize,
    candidates: &[u64],
    k: usize,
) -> Vec<(u64, f32)> {
    scan_topk_bits_iter(query, rows, nbytes, candidates.iter().copied(), k)
}

/// [`scan_topk_bits`] with the candidates given by an iterator (e.g. the members of a bitset).
pub fn scan_topk_bits_iter(
    query: &[u8],
    rows: &[u8],
    nbytes: usize,
    candidates: impl Iterator<Item = u64>,
    k: usize,
) -> Vec<(u64, f32)> {
    let query = &query[..query.len().min(nbytes)];
    let hamming = kernels().hamming;
    // SAFETY: see `Kernels`.
    scan_rows(
        rows,
        nbytes,
        candidates,
        k,
        |row| unsafe { hamming(query, row) } as f32,
    )
}

/// How many candidates ahead a row is prefetched. Candidate rows are scattered through the
/// store, so without this each row starts with a cache miss; a distance over a 2 KiB row takes
/// ~30 ns, and a handful of rows ahead covers the ~100 ns memory latency.
const PREFETCH_AHEAD: usize = 4;

#[inline(always)]
fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // At most this much of a row is prefetched: the hardware prefetcher follows a row on
        // its own once it has seen its first lines, and prefetching a long row in full costs
        // load slots.
        const PREFETCH_MAX_BYTES: usize = 512;
        let bytes = std::mem::size_of_val(row).min(PREFETCH_MAX_BYTES);
        let base = row.as_ptr().cast::<i8>();
        let mut offset = 0;
        while offset < bytes {
            // SAFETY: the address is inside `row`; a prefetch never faults anyway.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(offset)) };
            offset += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = row;
    }
}

/// The scan shared by every metric: look each candidate's row up (skipping ids out of range),
/// prefetch a few candidates ahead, and keep the best `k` by (distance, id).
fn scan_rows<T>(
    rows: &[T],
    row_len: usize,
    candidates: impl Iterator<Item = u64>,
    k: usize,
    mut distance: impl FnMut(&[T]) -> f32,
) -> Vec<(u64, f32)> {
    if k == 0 || row_len == 0 {
        return Vec::new();
    }
    let nrows = rows.len() / row_len;
    let row = |id: u64| -> Option<&[T]> {
        let r = usize::try_from(id).ok().filter(|&r| r < nrows)?;
        rows.get(r * row_len..(r + 1) * row_len)
    };

    let mut candidates = candidates.fuse();
    let mut top = TopK::new(k, candidates.size_hint().0);
    // A ring of the next PREFETCH_AHEAD candidates, whose rows are already on their way.
    let mut ring = [0u64; PREFETCH_AHEAD];
    let mut pending = 0;
    for id in candidates.by_ref().take(PREFETCH_AHEAD) {
        if let Some(r) = row(id) {
            prefetch(r);
        }
        ring[pending] = id;
        pending += 1;
    }
    let mut head = 0;
    while pending > 0 {
        let id = ring[head];
        match candidates.next() {
            // The ring stays full while candidates remain, so the newest goes where the oldest was.
            Some(next) => {
                if let Some(r) = row(next) {
                    prefetch(r);
                }
                ring[head] = next;
            }
            None => pending -= 1,
        }
        head = (head + 1) % PREFETCH_AHEAD;
        if let Some(r) = row(id) {
            top.offer(id, distance(r));
        }
    }
    top.into_sorted()
}

/// A scored row; ordered by (distance, id), which is total once NaN is kept out.
#[derive(Clone, Copy, Debug)]
struct Hit {
    distance: f32,
    id: u64,
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        // partial_cmp also makes -0.0 and 0.0 equal, so such ties fall to the id.
        self.distance
            .partial_cmp(&other.distance)
            .unwrap_or(Ordering::Equal)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Hit {}

/// Hashes row ids with one multiply: they are small dense integers, not attacker-chosen strings
/// worth SipHash's cost.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

/// The best `k` hits seen so far: a max-heap whose top is the worst kept hit, so a new row costs
/// one comparison unless it beats that. `members` keeps a row listed twice from taking two places.
struct TopK {
    k: usize,
    heap: BinaryHeap<Hit>,
    members: HashSet<u64, BuildHasherDefault<IdHasher>>,
}

impl TopK {
    fn new(k: usize, expected: usize) -> Self {
        // `k` may be huge ("everything"): size by what can actually arrive.
        let capacity = k.min(expected.max(16)).min(1 << 16);
        TopK {
            k,
            heap: BinaryHeap::with_capacity(capacity),
            members: HashSet::with_capacity_and_hasher(capacity, BuildHasherDefault::default()),
        }
    }

    #[inline]
    fn offer(&mut self, id: u64, distance: f32) {
        if distance.is_nan() {
            return;
        }
        let hit = Hit { distance, id };
        if self.heap.len() < self.k {
            if self.members.insert(id) {
                self.heap.push(hit);
            }
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // A repeated id has the same (distance, id) as its kept twin, so it is either not
            // better than the worst or caught by `members`.
            if hit < *worst && self.members.insert(id) {
                self.members.remove(&worst.id);
                *worst = hit;
            }
        }
    }

    fn into_sorted(self) -> Vec<(u64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|hit| (hit.id, hit.distance))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// x86_64
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{avx2, avx512, scalar, Kernels, SCALAR_KERNELS};

    pub(super) fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    pub(super) fn has_f16c() -> bool {
        is_x86_feature_detected!("f16c")
    }

    pub(super) fn has_popcnt() -> bool {
        is_x86_feature_detected!("popcnt")
    }

    /// F, BW and VL together: the byte/word ops and the narrow masked loads of the tails need
    /// all three (every AVX-512 CPU since Skylake-SP has them).
    pub(super) fn has_avx512() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }

    pub(super) fn has_avx512_vnni() -> bool {
        has_avx512() && is_x86_feature_detected!("avx512vnni")
    }

    pub(super) fn has_avx512_vpopcntdq() -> bool {
        has_avx512() && is_x86_feature_detected!("avx512vpopcntdq")
    }

    /// Counts bits eight bytes at a time with the POPCNT instruction (which the compiler may only
    /// emit where the feature is enabled).
    ///
    /// # Safety
    /// The CPU must support POPCNT.
    #[target_feature(enable = "popcnt")]
    pub(super) unsafe fn hamming_popcnt(a: &[u8], b: &[u8]) -> u32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        // Independent counters, so the popcnt/add chains overlap.
        let mut acc = [0u64; 4];
        let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
        let (ta, tb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..4 {
                let (xs, ys) = (&x[8 * i..8 * i + 8], &y[8 * i..8 * i + 8]);
                acc[i] += u64::from((scalar::load_u64(xs) ^ scalar::load_u64(ys)).count_ones());
            }
        }
        let mut total = acc.iter().sum::<u64>();
        let (ca, cb) = (ta.chunks_exact(8), tb.chunks_exact(8));
        total += ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| u64::from((x ^ y).count_ones()))
            .sum::<u64>();
        for (x, y) in ca.zip(cb) {
            total += u64::from((scalar::load_u64(x) ^ scalar::load_u64(y)).count_ones());
        }
        scalar::saturate_u32(total)
    }

    pub(super) fn detect() -> Kernels {
        let hamming: super::BitsKernel = if has_avx512_vpopcntdq() {
            avx512::hamming
        } else if has_popcnt() {
            hamming_popcnt
        } else {
            scalar::hamming
        };
        if has_avx512() {
            return Kernels {
                level: "avx512",
                dot_f32: avx512::dot_f32,
                l2sq_f32: avx512::l2sq_f32,
                dot_i8: if has_avx512_vnni() {
                    avx512::dot_i8_vnni
                } else {
                    avx512::dot_i8
                },
                dot_f16: avx512::dot_f16,
                hamming,
            };
        }
        if has_avx2() {
            return Kernels {
                level: "avx2",
                dot_f32: avx2::dot_f32,
                l2sq_f32: avx2::l2sq_f32,
                dot_i8: avx2::dot_i8,
                dot_f16: if has_f16c() {
                    avx2::dot_f16
                } else {
                    scalar::dot_f16
                },
                hamming,
            };
        }
        Kernels {
            hamming,
            ..SCALAR_KERNELS
        }
    }
}

/// AVX2 + FMA (+ F16C for `f16`). 256-bit vectors; tails shorter than one vector go to the
/// scalar code, since AVX2 has no cheap masked loads for every element size.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::scalar;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum_ps(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // Four accumulators cover the FMA latency (4 cycles) at one FMA per cycle, which is what
        // two loads per FMA allow.
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads [i, i + 8) with i + 8 <= n.
        unsafe {
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 8 * j;
                    *acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(off)),
                        _mm256_loadu_ps(pb.add(off)),
                        *acc,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum_ps(sum) + scalar::dot_f32(&a[i..n], &b[i..n])
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads [i, i + 8) with i + 8 <= n.
        unsafe {
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 8 * j;
                    let d =
                        _mm256_sub_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)));
                    *acc = _mm256_fmadd_ps(d, d, *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
                acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum_ps(sum) + scalar::l2sq_f32(&a[i..n], &b[i..n])
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        // f16 is a transparent u16, so 8 of them are one 128-bit load.
        let (pa, pb) = (a.as_ptr().cast::<u16>(), b.as_ptr().cast::<u16>());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads [i, i + 8) with i + 8 <= n.
        unsafe {
            let load = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            while i + 32 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 8 * j;
                    *acc = _mm256_fmadd_ps(load(pa.add(off)), load(pb.add(off)), *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(load(pa.add(i)), load(pb.add(i)), acc[0]);
                i += 8;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum_ps(sum) + scalar::dot_f16(&a[i..n], &b[i..n])
        }
    }

    /// Sign-extends to i16 and multiplies pairwise into i32 (`vpmaddwd`): exact, since a pair of
    /// products is at most 2 * 128 * 128 = 32,768.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_si256();
        let mut acc1 = _mm256_setzero_si256();
        let mut i = 0;
        // SAFETY: every load reads [i, i + 16) with i + 16 <= n.
        unsafe {
            let load = |p: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
            while i + 32 <= n {
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(load(pa.add(i)), load(pb.add(i))));
                acc1 = _mm256_add_epi32(
                    acc1,
                    _mm256_madd_epi16(load(pa.add(i + 16)), load(pb.add(i + 16))),
                );
                i += 32;
            }
            while i + 16 <= n {
                acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(load(pa.add(i)), load(pb.add(i))));
                i += 16;
            }
            hsum_epi32(_mm256_add_epi32(acc0, acc1))
                .wrapping_add(scalar::dot_i8(&a[i..n], &b[i..n]))
        }
    }
}

/// AVX-512 (F/BW/VL; VNNI and VPOPCNTDQ variants where named). Tails use masked loads, which
/// never touch the masked-off lanes, so there is no scalar remainder loop.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::scalar;

    /// The lowest `n` bits set, for `n < 64`.
    #[inline(always)]
    fn low_bits(n: usize) -> u64 {
        (1u64 << n) - 1
    }

    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // Four chains of FMAs hide their latency; more would only add reduction work for the
        // typical 512-d vector (8 iterations).
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: full loads read [i, i + 16) with i + 16 <= n; the masked load reads only
        // the n - i < 16 remaining elements.
        unsafe {
            while i + 64 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 16 * j;
                    *acc = _mm512_fmadd_ps(
                        _mm512_loadu_ps(pa.add(off)),
                        _mm512_loadu_ps(pb.add(off)),
                        *acc,
                    );
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i)),
                    _mm512_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 16;
            }
            if i < n {
                let m = low_bits(n - i) as __mmask16;
                acc[1] = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, pa.add(i)),
                    _mm512_maskz_loadu_ps(m, pb.add(i)),
                    acc[1],
                );
            }
            _mm512_reduce_add_ps(_mm512_add_ps(
                _mm512_add_ps(acc[0], acc[1]),
                _mm512_add_ps(acc[2], acc[3]),
            ))
        }
    }

    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: as in `dot_f32`.
        unsafe {
            while i + 64 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 16 * j;
                    let d =
                        _mm512_sub_ps(_mm512_loadu_ps(pa.add(off)), _mm512_loadu_ps(pb.add(off)));
                    *acc = _mm512_fmadd_ps(d, d, *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
                acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
                i += 16;
            }
            if i < n {
                let m = low_bits(n - i) as __mmask16;
                let d = _mm512_sub_ps(
                    _mm512_maskz_loadu_ps(m, pa.add(i)),
                    _mm512_maskz_loadu_ps(m, pb.add(i)),
                );
                acc[1] = _mm512_fmadd_ps(d, d, acc[1]);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(
                _mm512_add_ps(acc[0], acc[1]),
                _mm512_add_ps(acc[2], acc[3]),
            ))
        }
    }

    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        // f16 is a transparent u16: 16 of them are one 256-bit load, converted to 16 f32.
        let (pa, pb) = (a.as_ptr().cast::<i16>(), b.as_ptr().cast::<i16>());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: as in `dot_f32`, counted in 16-bit elements.
        unsafe {
            let load = |p: *const i16| _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
            while i + 64 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 16 * j;
                    *acc = _mm512_fmadd_ps(load(pa.add(off)), load(pb.add(off)), *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] = _mm512_fmadd_ps(load(pa.add(i)), load(pb.add(i)), acc[0]);
                i += 16;
            }
            if i < n {
                let m = low_bits(n - i) as __mmask16;
                let x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, pa.add(i)));
                let y = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, pb.add(i)));
                acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(
                _mm512_add_ps(acc[0], acc[1]),
                _mm512_add_ps(acc[2], acc[3]),
            ))
        }
    }

    /// Without VNNI: sign-extend 32 bytes to i16 and multiply pairwise into i32 (`vpmaddwd`).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_si512();
        let mut acc1 = _mm512_setzero_si512();
        let mut i = 0;
        // SAFETY: full loads read [i, i + 32) with i + 32 <= n; the masked load reads only the
        // n - i < 32 remaining bytes.
        unsafe {
            let load = |p: *const i8| _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast()));
            while i + 64 <= n {
                acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(load(pa.add(i)), load(pb.add(i))));
                acc1 = _mm512_add_epi32(
                    acc1,
                    _mm512_madd_epi16(load(pa.add(i + 32)), load(pb.add(i + 32))),
                );
                i += 64;
            }
            while i + 32 <= n {
                acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(load(pa.add(i)), load(pb.add(i))));
                i += 32;
            }
            if i < n {
                let m = low_bits(n - i) as __mmask32;
                let x = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, pa.add(i)));
                let y = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, pb.add(i)));
                acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(x, y));
            }
            _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1))
        }
    }

    /// With VNNI: `vpdpbusd` multiplies *unsigned* by signed bytes, so `a` is biased to
    /// `a + 128` (a sign-bit flip) and the excess `128 * sum(b)` is taken off at the end; the
    /// sum of `b` comes from a second `vpdpbusd` against ones. The four-product sums inside
    /// `vpdpbusd` (at most 4 * 255 * 128) cannot overflow, and everything else wraps like the
    /// scalar reference.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn dot_i8_vnni(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let sign = _mm512_set1_epi8(i8::MIN);
        let ones = _mm512_set1_epi8(1);
        let mut dot0 = _mm512_setzero_si512();
        let mut dot1 = _mm512_setzero_si512();
        let mut sum0 = _mm512_setzero_si512();
        let mut sum1 = _mm512_setzero_si512();
        let mut i = 0;
        // SAFETY: full loads read [i, i + 64) with i + 64 <= n; the masked load reads only the
        // n - i < 64 remaining bytes (zeros elsewhere, which add nothing to either sum).
        unsafe {
            let load = |p: *const i8| _mm512_loadu_si512(p.cast());
            while i + 128 <= n {
                let (x0, y0) = (load(pa.add(i)), load(pb.add(i)));
                let (x1, y1) = (load(pa.add(i + 64)), load(pb.add(i + 64)));
                dot0 = _mm512_dpbusd_epi32(dot0, _mm512_xor_si512(x0, sign), y0);
                sum0 = _mm512_dpbusd_epi32(sum0, ones, y0);
                dot1 = _mm512_dpbusd_epi32(dot1, _mm512_xor_si512(x1, sign), y1);
                sum1 = _mm512_dpbusd_epi32(sum1, ones, y1);
                i += 128;
            }
            if i + 64 <= n {
                let (x, y) = (load(pa.add(i)), load(pb.add(i)));
                dot0 = _mm512_dpbusd_epi32(dot0, _mm512_xor_si512(x, sign), y);
                sum0 = _mm512_dpbusd_epi32(sum0, ones, y);
                i += 64;
            }
            if i < n {
                let m = low_bits(n - i);
                let (x, y) = (
                    _mm512_maskz_loadu_epi8(m, pa.add(i)),
                    _mm512_maskz_loadu_epi8(m, pb.add(i)),
                );
                dot1 = _mm512_dpbusd_epi32(dot1, _mm512_xor_si512(x, sign), y);
                sum1 = _mm512_dpbusd_epi32(sum1, ones, y);
            }
            let biased = _mm512_reduce_add_epi32(_mm512_add_epi32(dot0, dot1));
            let sum_b = _mm512_reduce_add_epi32(_mm512_add_epi32(sum0, sum1));
            biased.wrapping_sub(sum_b.wrapping_mul(128))
        }
    }

    /// Population count of 64-bit lanes (`vpopcntq`), summed in 64-bit lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VPOPCNTDQ.
    #[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
    pub(super) unsafe fn hamming(a: &[u8], b: &[u8]) -> u32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr().cast::<i8>(), b.as_ptr().cast::<i8>());
        let mut acc0 = _mm512_setzero_si512();
        let mut acc1 = _mm512_setzero_si512();
        let mut i = 0;
        // SAFETY: as in `dot_i8_vnni`.
        unsafe {
            let diff = |i: usize| {
                _mm512_xor_si512(
                    _mm512_loadu_si512(pa.add(i).cast()),
                    _mm512_loadu_si512(pb.add(i).cast()),
                )
            };
            while i + 128 <= n {
                acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(diff(i)));
                acc1 = _mm512_add_epi64(acc1, _mm512_popcnt_epi64(diff(i + 64)));
                i += 128;
            }
            if i + 64 <= n {
                acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(diff(i)));
                i += 64;
            }
            if i < n {
                let m = low_bits(n - i);
                let x = _mm512_xor_si512(
                    _mm512_maskz_loadu_epi8(m, pa.add(i)),
                    _mm512_maskz_loadu_epi8(m, pb.add(i)),
                );
                acc1 = _mm512_add_epi64(acc1, _mm512_popcnt_epi64(x));
            }
            scalar::saturate_u32(_mm512_reduce_add_epi64(_mm512_add_epi64(acc0, acc1)) as u64)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// aarch64
// ---------------------------------------------------------------------------------------------

/// NEON (Advanced SIMD), part of every aarch64 CPU; 128-bit vectors, scalar tails.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use half::f16;
    use half::slice::HalfFloatSliceExt;

    use super::{scalar, Kernels};

    pub(super) fn available() -> bool {
        std::arch::is_aarch64_feature_detected!("neon")
    }

    pub(super) const KERNELS: Kernels = Kernels {
        level: "neon",
        dot_f32,
        l2sq_f32,
        dot_i8,
        dot_f16,
        hamming,
    };

    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        // SAFETY: every load reads [i, i + 4) with i + 4 <= n.
        unsafe {
            while i + 16 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 4 * j;
                    *acc = vfmaq_f32(*acc, vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)));
                }
                i += 16;
            }
            while i + 4 <= n {
                acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                i += 4;
            }
            let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            vaddvq_f32(sum) + scalar::dot_f32(&a[i..n], &b[i..n])
        }
    }

    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn l2sq_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        // SAFETY: every load reads [i, i + 4) with i + 4 <= n.
        unsafe {
            while i + 16 <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let off = i + 4 * j;
                    let d = vsubq_f32(vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)));
                    *acc = vfmaq_f32(*acc, d, d);
                }
                i += 16;
            }
            while i + 4 <= n {
                let d = vsubq_f32(vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                acc[0] = vfmaq_f32(acc[0], d, d);
                i += 4;
            }
            let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            vaddvq_f32(sum) + scalar::l2sq_f32(&a[i..n], &b[i..n])
        }
    }

    /// Widening multiplies (`smull`, exact in i16 since |-128 * -128| = 16,384) accumulated
    /// pairwise into i32 (`sadalp`).
    ///
    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = vdupq_n_s32(0);
        let mut acc1 = vdupq_n_s32(0);
        let mut i = 0;
        // SAFETY: every load reads [i, i + 16) with i + 16 <= n.
        unsafe {
            while i + 16 <= n {
                let (x, y) = (vld1q_s8(pa.add(i)), vld1q_s8(pb.add(i)));
                acc0 = vpadalq_s16(acc0, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
                acc1 = vpadalq_s16(acc1, vmull_high_s8(x, y));
                i += 16;
            }
            vaddvq_s32(vaddq_s32(acc0, acc1)).wrapping_add(scalar::dot_i8(&a[i..n], &b[i..n]))
        }
    }

    /// Converts blocks to f32 with `half` (which uses the FP16 conversion instructions where
    /// present; the NEON f16 intrinsics are not stable Rust yet), then runs the f32 kernel.
    ///
    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
        const BLOCK: usize = 256;
        let n = a.len().min(b.len());
        let (mut xs, mut ys) = ([0f32; BLOCK], [0f32; BLOCK]);
        let mut total = 0f32;
        for (x, y) in a[..n].chunks(BLOCK).zip(b[..n].chunks(BLOCK)) {
            let len = x.len();
            x.convert_to_f32_slice(&mut xs[..len]);
            y.convert_to_f32_slice(&mut ys[..len]);
            // SAFETY: NEON is enabled on this function, hence supported.
            total += unsafe { dot_f32(&xs[..len], &ys[..len]) };
        }
        total
    }

    /// # Safety
    /// The CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn hamming(a: &[u8], b: &[u8]) -> u32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut total = 0u64;
        let mut i = 0;
        // SAFETY: every load reads [i, i + 16) with i + 16 <= n.
        unsafe {
            let count = |i: usize| vcntq_u8(veorq_u8(vld1q_u8(pa.add(i)), vld1q_u8(pb.add(i))));
            while i + 64 <= n {
                // Four byte counts of at most 8 each still fit in a byte: one widening sum per
                // 64 bytes.
                let c = vaddq_u8(
                    vaddq_u8(count(i), count(i + 16)),
                    vaddq_u8(count(i + 32), count(i + 48)),
                );
                total += u64::from(vaddlvq_u8(c));
                i += 64;
            }
            while i + 16 <= n {
                total += u64::from(vaddlvq_u8(count(i)));
                i += 16;
            }
        }
        scalar::saturate_u32(total + u64::from(scalar::hamming(&a[i..n], &b[i..n])))
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const LENGTHS: [usize; 22] = [
        0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 127, 128, 129, 511, 512, 513, 1280, 1537,
    ];

    fn f32_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    fn i8_vec(rng: &mut StdRng, n: usize) -> Vec<i8> {
        (0..n).map(|_| rng.gen::<i8>()).collect()
    }

    fn u8_vec(rng: &mut StdRng, n: usize) -> Vec<u8> {
        (0..n).map(|_| rng.gen::<u8>()).collect()
    }

    fn to_f16(v: &[f32]) -> Vec<f16> {
        v.iter().map(|&x| f16::from_f32(x)).collect()
    }

    /// Every implementation of a kernel that this CPU can run, by name: the dispatched one and
    /// each ISA-specific one, called directly.
    fn dot_f32_impls() -> Vec<(&'static str, F32Kernel)> {
        let mut v: Vec<(&'static str, F32Kernel)> = vec![("dispatched", dot_f32)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                v.push(("avx2", avx2::dot_f32));
            }
            if x86::has_avx512() {
                v.push(("avx512", avx512::dot_f32));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            v.push(("neon", neon::dot_f32));
        }
        v
    }

    fn l2sq_f32_impls() -> Vec<(&'static str, F32Kernel)> {
        let mut v: Vec<(&'static str, F32Kernel)> = vec![("dispatched", l2sq_f32)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                v.push(("avx2", avx2::l2sq_f32));
            }
            if x86::has_avx512() {
                v.push(("avx512", avx512::l2sq_f32));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            v.push(("neon", neon::l2sq_f32));
        }
        v
    }

    fn dot_f16_impls() -> Vec<(&'static str, F16Kernel)> {
        let mut v: Vec<(&'static str, F16Kernel)> = vec![("dispatched", dot_f16)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() && x86::has_f16c() {
                v.push(("avx2", avx2::dot_f16));
            }
            if x86::has_avx512() {
                v.push(("avx512", avx512::dot_f16));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            v.push(("neon", neon::dot_f16));
        }
        v
    }

    fn dot_i8_impls() -> Vec<(&'static str, I8Kernel)> {
        let mut v: Vec<(&'static str, I8Kernel)> = vec![("dispatched", dot_i8)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                v.push(("avx2", avx2::dot_i8));
            }
            if x86::has_avx512() {
                v.push(("avx512", avx512::dot_i8));
            }
            if x86::has_avx512_vnni() {
                v.push(("avx512vnni", avx512::dot_i8_vnni));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            v.push(("neon", neon::dot_i8));
        }
        v
    }

    fn hamming_impls() -> Vec<(&'static str, BitsKernel)> {
        let mut v: Vec<(&'static str, BitsKernel)> = vec![("dispatched", hamming)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_popcnt() {
                v.push(("popcnt", x86::hamming_popcnt));
            }
            if x86::has_avx512_vpopcntdq() {
                v.push(("avx512vpopcntdq", avx512::hamming));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if neon::available() {
            v.push(("neon", neon::hamming));
        }
        v
    }

    /// Float sums in different orders differ by rounding relative to the magnitude of the
    /// terms, not of the (possibly cancelling) result.
    fn assert_close(got: f32, want: f32, magnitude: f64, what: &str) {
        let tolerance = 1e-4 * magnitude.max(1e-3);
        assert!(
            (f64::from(got) - f64::from(want)).abs() <= tolerance,
            "{what}: got {got}, want {want} (tolerance {tolerance})"
        );
    }

    fn abs_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) * f64::from(y)).abs())
            .sum()
    }

    #[test]
    fn print_capabilities() {
        let level = capabilities();
        println!("distance kernels dispatched to: {level}");
        assert!(["avx512", "avx2", "neon", "scalar"].contains(&level));
        #[cfg(target_arch = "x86_64")]
        {
            println!(
                "avx512 (f/bw/vl): {}, avx512vnni: {}, avx512vpopcntdq: {}, avx2+fma: {}, f16c: {}, popcnt: {}",
                x86::has_avx512(),
                x86::has_avx512_vnni(),
                x86::has_avx512_vpopcntdq(),
                x86::has_avx2(),
                x86::has_f16c(),
                x86::has_popcnt()
            );
            let expected = if x86::has_avx512() {
                "avx512"
            } else if x86::has_avx2() {
                "avx2"
            } else {
                "scalar"
            };
            assert_eq!(level, expected);
        }
    }

    #[test]
    fn scalar_reference_matches_exact_arithmetic() {
        let mut rng = StdRng::seed_from_u64(1);
        for &n in &LENGTHS {
            let (a, b) = (f32_vec(&mut rng, n), f32_vec(&mut rng, n));
            let dot: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| f64::from(x) * f64::from(y))
                .sum();
            assert_close(
                scalar::dot_f32(&a, &b),
                dot as f32,
                abs_dot(&a, &b),
                "scalar dot_f32",
            );
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            assert_close(scalar::l2sq_f32(&a, &b), l2 as f32, l2, "scalar l2sq_f32");
            let (ha, hb) = (to_f16(&a), to_f16(&b));
            let dot16: f64 = ha
                .iter()
                .zip(&hb)
                .map(|(x, y)| f64::from(x.to_f32()) * f64::from(y.to_f32()))
                .sum();
            assert_close(
                scalar::dot_f16(&ha, &hb),
                dot16 as f32,
                abs_dot(&a, &b),
                "scalar dot_f16",
            );
            let (ia, ib) = (i8_vec(&mut rng, n), i8_vec(&mut rng, n));
            let dot8: i64 = ia
                .iter()
                .zip(&ib)
                .map(|(&x, &y)| i64::from(x) * i64::from(y))
                .sum();
            assert_eq!(i64::from(scalar::dot_i8(&ia, &ib)), dot8);
            let (ua, ub) = (u8_vec(&mut rng, n), u8_vec(&mut rng, n));
            let bits: u32 = ua
                .iter()
                .zip(&ub)
                .map(|(&x, &y)| {
                    (0..8)
                        .filter(|bit| (x >> bit) & 1 != (y >> bit) & 1)
                        .count() as u32
                })
                .sum();
            assert_eq!(scalar::hamming(&ua, &ub), bits);
        }
    }

    #[test]
    fn dot_f32_every_impl_matches_scalar() {
        let mut rng = StdRng::seed_from_u64(2);
        for (name, kernel) in dot_f32_impls() {
            for &n in &LENGTHS {
                for _ in 0..3 {
                    let (a, b) = (f32_vec(&mut rng, n), f32_vec(&mut rng, n));
                    let got = unsafe { kernel(&a, &b) };
                    assert_close(
                        got,
                        scalar::dot_f32(&a, &b),
                        abs_dot(&a, &b),
                        &format!("{name} dot_f32 n={n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn l2sq_f32_every_impl_matches_scalar() {
        let mut rng = StdRng::seed_from_u64(3);
        for (name, kernel) in l2sq_f32_impls() {
            for &n in &LENGTHS {
                for _ in 0..3 {
                    let (a, b) = (f32_vec(&mut rng, n), f32_vec(&mut rng, n));
                    let want = scalar::l2sq_f32(&a, &b);
                    let got = unsafe { kernel(&a, &b) };
                    assert_close(
                        got,
                        want,
                        f64::from(want),
                        &format!("{name} l2sq_f32 n={n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn dot_f16_every_impl_matches_scalar() {
        let mut rng = StdRng::seed_from_u64(4);
        for (name, kernel) in dot_f16_impls() {
            for &n in &LENGTHS {
                for _ in 0..3 {
                    let (a, b) = (f32_vec(&mut rng, n), f32_vec(&mut rng, n));
                    let (ha, hb) = (to_f16(&a), to_f16(&b));
                    let got = unsafe { kernel(&ha, &hb) };
                    assert_close(
                        got,
                        scalar::dot_f16(&ha, &hb),
                        abs_dot(&a, &b),
                        &format!("{name} dot_f16 n={n}"),
                    );
                }
            }
        }
    }

    #[test]
    fn dot_i8_every_impl_matches_scalar_exactly() {
        let mut rng = StdRng::seed_from_u64(5);
        for (name, kernel) in dot_i8_impls() {
            for &n in &LENGTHS {
                let random = (i8_vec(&mut rng, n), i8_vec(&mut rng, n));
                let extremes: Vec<(Vec<i8>, Vec<i8>)> = vec![
                    (vec![-128; n], vec![-128; n]),
                    (vec![127; n], vec![-128; n]),
                    (vec![-128; n], vec![127; n]),
                    (vec![127; n], vec![127; n]),
                    // Random picks among the extremes and zero, to mix signs within a vector.
                    (
                        (0..n)
                            .map(|_| [-128, 127, 0, -1, 1][rng.gen_range(0..5)])
                            .collect(),
                        (0..n)
                            .map(|_| [-128, 127, 0, -1, 1][rng.gen_range(0..5)])
                            .collect(),
                    ),
                    random,
                ];
                for (a, b) in &extremes {
                    let got = unsafe { kernel(a, b) };
                    assert_eq!(
                        got,
                        scalar::dot_i8(a, b),
                        "{name} dot_i8 n={n} a[..4]={:?} b[..4]={:?}",
                        &a[..n.min(4)],
                        &b[..n.min(4)]
                    );
                }
            }
        }
    }

    #[test]
    fn dot_i8_wraps_identically_past_i32() {
        // 200,000 * 16,384 exceeds i32::MAX: every implementation must wrap like the reference.
        let n = 200_000;
        let (a, b) = (vec![-128i8; n], vec![-128i8; n]);
        let exact = n as i64 * 16_384;
        let want = scalar::dot_i8(&a, &b);
        assert_eq!(want, exact as i32);
        for (name, kernel) in dot_i8_impls() {
            assert_eq!(unsafe { kernel(&a, &b) }, want, "{name}");
        }
    }

    #[test]
    fn hamming_every_impl_matches_scalar_exactly() {
        let mut rng = StdRng::seed_from_u64(6);
        for (name, kernel) in hamming_impls() {
            for &n in &LENGTHS {
                let cases = vec![
                    (u8_vec(&mut rng, n), u8_vec(&mut rng, n)),
                    (vec![0xFF; n], vec![0; n]),
                    (vec![0xA5; n], vec![0xA5; n]),
                ];
                for (a, b) in &cases {
                    assert_eq!(
                        unsafe { kernel(a, b) },
                        scalar::hamming(a, b),
                        "{name} hamming n={n}"
                    );
                }
                assert_eq!(
                    unsafe { kernel(&cases[1].0, &cases[1].1) },
                    8 * n as u32,
                    "{name} all bits n={n}"
                );
            }
        }
    }

    #[test]
    fn unaligned_slices_match_scalar() {
        // Offsets of one element put every load off its natural alignment.
        let mut rng = StdRng::seed_from_u64(7);
        let n = 700;
        let (a, b) = (f32_vec(&mut rng, n + 3), f32_vec(&mut rng, n + 3));
        let (a, b) = (&a[1..n + 1], &b[3..n + 3]);
        for (name, kernel) in dot_f32_impls() {
            assert_close(
                unsafe { kernel(a, b) },
                scalar::dot_f32(a, b),
                abs_dot(a, b),
                name,
            );
        }
        for (name, kernel) in l2sq_f32_impls() {
            let want = scalar::l2sq_f32(a, b);
            assert_close(unsafe { kernel(a, b) }, want, f64::from(want), name);
        }
        let (ha, hb) = (to_f16(a), to_f16(b));
        for (name, kernel) in dot_f16_impls() {
            assert_close(
                unsafe { kernel(&ha[1..], &hb[1..]) },
                scalar::dot_f16(&ha[1..], &hb[1..]),
                abs_dot(a, b),
                name,
            );
        }
        let (ia, ib) = (i8_vec(&mut rng, n + 3), i8_vec(&mut rng, n + 3));
        for (name, kernel) in dot_i8_impls() {
            assert_eq!(
                unsafe { kernel(&ia[1..], &ib[3..]) },
                scalar::dot_i8(&ia[1..], &ib[3..]),
                "{name}"
            );
        }
        let (ua, ub) = (u8_vec(&mut rng, n + 3), u8_vec(&mut rng, n + 3));
        for (name, kernel) in hamming_impls() {
            assert_eq!(
                unsafe { kernel(&ua[1..], &ub[3..]) },
                scalar::hamming(&ua[1..], &ub[3..]),
                "{name}"
            );
        }
    }

    #[test]
    fn unequal_lengths_compare_the_common_prefix() {
        let mut rng = StdRng::seed_from_u64(8);
        for &(la, lb) in &[(0, 5), (5, 0), (17, 100), (100, 17), (513, 512), (64, 65)] {
            let (a, b) = (f32_vec(&mut rng, la), f32_vec(&mut rng, lb));
            let n = la.min(lb);
            for (name, kernel) in dot_f32_impls() {
                let want = scalar::dot_f32(&a[..n], &b[..n]);
                assert_close(
                    unsafe { kernel(&a, &b) },
                    want,
                    abs_dot(&a[..n], &b[..n]),
                    name,
                );
            }
            for (name, kernel) in l2sq_f32_impls() {
                let want = scalar::l2sq_f32(&a[..n], &b[..n]);
                assert_close(unsafe { kernel(&a, &b) }, want, f64::from(want), name);
            }
            assert_eq!(scalar::dot_f32(&a, &b), scalar::dot_f32(&a[..n], &b[..n]));
            let (ha, hb) = (to_f16(&a), to_f16(&b));
            for (name, kernel) in dot_f16_impls() {
                let want = scalar::dot_f16(&ha[..n], &hb[..n]);
                assert_close(
                    unsafe { kernel(&ha, &hb) },
                    want,
                    abs_dot(&a[..n], &b[..n]),
                    name,
                );
            }
            let (ia, ib) = (i8_vec(&mut rng, la), i8_vec(&mut rng, lb));
            for (name, kernel) in dot_i8_impls() {
                assert_eq!(
                    unsafe { kernel(&ia, &ib) },
                    scalar::dot_i8(&ia[..n], &ib[..n]),
                    "{name}"
                );
            }
            let (ua, ub) = (u8_vec(&mut rng, la), u8_vec(&mut rng, lb));
            for (name, kernel) in hamming_impls() {
                assert_eq!(
                    unsafe { kernel(&ua, &ub) },
                    scalar::hamming(&ua[..n], &ub[..n]),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn distance_f32_follows_usearch_conventions() {
        let a = [0.6f32, 0.8, 0.0];
        let b = [0.0f32, 0.6, 0.8];
        assert!((distance_f32(Metric::Cos, &a, &b) - (1.0 - 0.48)).abs() < 1e-6);
        assert!((distance_f32(Metric::Ip, &a, &b) - (1.0 - 0.48)).abs() < 1e-6);
        assert!(distance_f32(Metric::Cos, &a, &a).abs() < 1e-6);
        let l2 = 0.36 + 0.04 + 0.64;
        assert!((distance_f32(Metric::L2sq, &a, &b) - l2).abs() < 1e-6);
        assert_eq!(
            distance_f32(Metric::Hamming, &a, &b),
            distance_f32(Metric::L2sq, &a, &b)
        );
        assert_eq!(distance_f32(Metric::L2sq, &[], &[]), 0.0);
        assert_eq!(distance_f32(Metric::Ip, &[], &[]), 1.0);
    }

    #[test]
    fn metric_parse_and_name() {
        for (name, metric) in [
            ("cos", Metric::Cos),
            ("cosine", Metric::Cos),
            ("COSINE", Metric::Cos),
            ("ip", Metric::Ip),
            ("inner_product", Metric::Ip),
            ("dot", Metric::Ip),
            ("l2sq", Metric::L2sq),
            ("l2", Metric::L2sq),
            ("euclidean", Metric::L2sq),
            ("L2sq", Metric::L2sq),
            ("hamming", Metric::Hamming),
        ] {
            assert_eq!(Metric::parse(name), Some(metric), "{name}");
        }
        for name in ["", "cos ", "l1", "manhattan", "jaccard", "hammingx"] {
            assert_eq!(Metric::parse(name), None, "{name:?}");
        }
        for metric in [Metric::Cos, Metric::Ip, Metric::L2sq, Metric::Hamming] {
            assert_eq!(Metric::parse(metric.name()), Some(metric));
            assert_eq!(metric.to_string(), metric.name());
        }
        assert_eq!(
            [
                Metric::Cos.name(),
                Metric::Ip.name(),
                Metric::L2sq.name(),
                Metric::Hamming.name()
            ],
            ["cos", "ip", "l2sq", "hamming"]
        );
    }

    #[test]
    fn normalize_gives_unit_vectors() {
        let mut rng = StdRng::seed_from_u64(9);
        for &n in &[1, 3, 16, 512, 1537] {
            let mut v = f32_vec(&mut rng, n);
            v[0] = 0.5; // never all zeros
            let original = v.clone();
            assert!(normalize(&mut v));
            let norm: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "n={n} norm={norm}");
            // Same direction.
            let cos = scalar::dot_f32(&v, &original) / scalar::dot_f32(&original, &original).sqrt();
            assert!((cos - 1.0).abs() < 1e-5);
        }
        let mut v = vec![3.0f32, 4.0];
        assert!(normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
    }

    #[test]
    fn normalize_handles_extreme_magnitudes() {
        for scale in [
            1e-30f32,
            1e-20,
            1e20,
            1e30,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ] {
            let mut v = vec![scale, scale, -scale, 0.0];
            assert!(normalize(&mut v), "scale {scale}");
            let norm: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "scale {scale}: norm {norm}");
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn normalize_rejects_zero_and_non_finite_leaving_input_unchanged() {
        let cases: Vec<Vec<f32>> = vec![
            vec![],
            vec![0.0; 7],
            vec![-0.0, 0.0],
            vec![1.0, f32::NAN, 2.0],
            vec![f32::NAN; 3],
            vec![1.0, f32::INFINITY],
            vec![f32::NEG_INFINITY, 0.0],
            vec![f32::INFINITY, f32::NAN],
        ];
        for case in cases {
            let mut v = case.clone();
            assert!(!normalize(&mut v), "{case:?}");
            let same = v.iter().zip(&case).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same && v.len() == case.len(), "{case:?} changed to {v:?}");
        }
    }

    /// Brute force: every distinct in-range candidate, fully sorted by (distance, id).
    fn brute_force(mut scored: Vec<(u64, f32)>, k: usize) -> Vec<(u64, f32)> {
        scored.retain(|(_, d)| !d.is_nan());
        scored.sort_by(|x, y| x.1.partial_cmp(&y.1).unwrap().then(x.0.cmp(&y.0)));
        scored.dedup_by_key(|x| x.0);
        scored.truncate(k);
        scored
    }

    #[test]
    fn scan_topk_f32_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(10);
        for &ndim in &[1usize, 3, 16, 100, 512] {
            let nrows = 300;
            let mut rows = f32_vec(&mut rng, nrows * ndim);
            let mut query = f32_vec(&mut rng, ndim);
            normalize(&mut query);
            for row in rows.chunks_exact_mut(ndim) {
                normalize(row);
            }
            let mut candidates: Vec<u64> =
                (0..nrows as u64).filter(|_| rng.gen_bool(0.6)).collect();
            // Shuffle, so the scan does not see ids in order.
            for i in (1..candidates.len()).rev() {
                candidates.swap(i, rng.gen_range(0..=i));
            }
            for metric in [Metric::Cos, Metric::Ip, Metric::L2sq, Metric::Hamming] {
                let scored: Vec<(u64, f32)> = candidates
                    .iter()
                    .map(|&id| {
                        let r = id as usize;
                        (
                            id,
                            distance_f32(metric, &query, &rows[r * ndim..(r + 1) * ndim]),
                        )
                    })
                    .collect();
                for &k in &[
                    1,
                    2,
                    10,
                    50,
                    candidates.len(),
                    candidates.len() + 5,
                    usize::MAX,
                ] {
                    let want = brute_force(scored.clone(), k);
                    let got = scan_topk_f32(metric, &query, &rows, ndim, &candidates, k);
                    assert_eq!(got, want, "metric {metric} ndim {ndim} k {k}");
                    let got_iter = scan_topk_f32_iter(
                        metric,
                        &query,
                        &rows,
                        ndim,
                        candidates.iter().copied(),
                        k,
                    );
                    assert_eq!(got_iter, want, "iter: metric {metric} ndim {ndim} k {k}");
                }
            }
        }
    }

    #[test]
    fn scan_topk_breaks_ties_by_ascending_id() {
        // Rows 0..10 are two distinct vectors alternating, so five rows share each distance.
        let ndim = 4;
        let a = [1.0f32, 0.0, 0.0, 0.0];
        let b = [0.0f32, 1.0, 0.0, 0.0];
        let rows: Vec<f32> = (0..10)
            .flat_map(|r| if r % 2 == 0 { a } else { b })
            .collect();
        let candidates: Vec<u64> = vec![9, 7, 5, 3, 1, 8, 6, 4, 2, 0];
        let got = scan_topk_f32(Metric::Ip, &a, &rows, ndim, &candidates, 3);
        assert_eq!(got, vec![(0, 0.0), (2, 0.0), (4, 0.0)]);
        let got = scan_topk_f32(Metric::Ip, &a, &rows, ndim, &candidates, 7);
        let ids: Vec<u64> = got.iter().map(|h| h.0).collect();
        assert_eq!(ids, vec![0, 2, 4, 6, 8, 1, 3]);
        // All rows equidistant: the lowest ids win, in order.
        let same = vec![1.0f32; 10 * ndim];
        let got = scan_topk_f32(Metric::L2sq, &[1.0; 4], &same, ndim, &candidates, 4);
        assert_eq!(got, vec![(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]);
        // Bits: same.
        let bits = vec![0u8; 10 * 2];
        let got = scan_topk_bits(&[0, 0], &bits, 2, &candidates, 3);
        assert_eq!(got, vec![(0, 0.0), (1, 0.0), (2, 0.0)]);
    }

    #[test]
    fn scan_topk_edge_cases_never_panic() {
        let ndim = 3;
        let rows: Vec<f32> = (0..5 * ndim).map(|x| x as f32).collect();
        let q = [0.0f32, 1.0, 2.0];
        // k = 0.
        assert!(scan_topk_f32(Metric::L2sq, &q, &rows, ndim, &[0, 1, 2], 0).is_empty());
        // Empty candidates, empty rows, ndim = 0.
        assert!(scan_topk_f32(Metric::L2sq, &q, &rows, ndim, &[], 5).is_empty());
        assert!(scan_topk_f32(Metric::L2sq, &q, &[], ndim, &[0, 1], 5).is_empty());
        assert!(scan_topk_f32(Metric::L2sq, &q, &rows, 0, &[0, 1], 5).is_empty());
        assert!(scan_topk_f32_iter(Metric::Cos, &q, &rows, ndim, std::iter::empty(), 5).is_empty());
        // k larger than the candidates.
        let got = scan_topk_f32(Metric::L2sq, &q, &rows, ndim, &[4, 0, 2], 100);
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2, 4]);
        // Out-of-range ids (including ones that would overflow r * ndim) are skipped.
        let huge = [u64::MAX, 5, 1 << 62, (usize::MAX / 3) as u64, 1, 6];
        let got = scan_topk_f32(Metric::L2sq, &q, &rows, ndim, &huge, 10);
        assert_eq!(got, vec![(1, 27.0)]);
        // A trailing partial row is not a row.
        let got = scan_topk_f32(Metric::L2sq, &q, &rows[..14], ndim, &[3, 4], 10);
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![3]);
        // Query longer or shorter than ndim: the common prefix.
        let got = scan_topk_f32(Metric::L2sq, &[0.0, 1.0, 2.0, 99.0], &rows, ndim, &[0], 1);
        assert_eq!(got, vec![(0, 0.0)]);
        let got = scan_topk_f32(Metric::L2sq, &[3.0], &rows, ndim, &[1], 1);
        assert_eq!(got, vec![(1, 0.0)]);
        // Duplicate candidates are reported once, at every k.
        for k in 1..6 {
            let got = scan_topk_f32(Metric::L2sq, &q, &rows, ndim, &[2, 0, 2, 0, 1, 1, 0], k);
            let want: Vec<u64> = vec![0, 1, 2].into_iter().take(k).collect();
            assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), want, "k {k}");
        }
        // Bits: out of range, nbytes = 0, k = 0, duplicates.
        let bits = vec![0u8, 1, 3, 7, 15];
        assert!(scan_topk_bits(&[0], &bits, 0, &[0, 1], 3).is_empty());
        assert!(scan_topk_bits(&[0], &bits, 1, &[0, 1], 0).is_empty());
        let got = scan_topk_bits(&[0], &bits, 1, &[4, 9, 3, u64::MAX, 4, 0], 10);
        assert_eq!(got, vec![(0, 0.0), (3, 3.0), (4, 4.0)]);
    }

    #[test]
    fn scan_topk_skips_nan_rows() {
        let ndim = 2;
        let rows = vec![
            1.0f32,
            0.0,
            f32::NAN,
            0.0,
            0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let got = scan_topk_f32(Metric::L2sq, &[1.0, 0.0], &rows, ndim, &[0, 1, 2, 3], 10);
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(got[2].1, f32::INFINITY);
        // A NaN query ranks nothing.
        assert!(
            scan_topk_f32(Metric::Ip, &[f32::NAN, 0.0], &rows, ndim, &[0, 1, 2, 3], 10).is_empty()
        );
    }

    #[test]
    fn scan_topk_bits_matches_brute_force() {
        let mut rng = StdRng::seed_from_u64(11);
        for &nbytes in &[1usize, 8, 13, 64, 200] {
            let nrows = 400;
            let rows = u8_vec(&mut rng, nrows * nbytes);
            let query = u8_vec(&mut rng, nbytes);
            let candidates: Vec<u64> = (0..nrows as u64 + 20)
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            let scored: Vec<(u64, f32)> = candidates
                .iter()
                .filter(|&&id| (id as usize) < nrows)
                .map(|&id| {
                    let r = id as usize;
                    (
                        id,
                        scalar::hamming(&query, &rows[r * nbytes..(r + 1) * nbytes]) as f32,
                    )
                })
                .collect();
            for &k in &[1, 5, 33, 1000] {
                let want = brute_force(scored.clone(), k);
                assert_eq!(
                    scan_topk_bits(&query, &rows, nbytes, &candidates, k),
                    want,
                    "nbytes {nbytes} k {k}"
                );
                let got_iter =
                    scan_topk_bits_iter(&query, &rows, nbytes, candidates.iter().copied(), k);
                assert_eq!(got_iter, want, "iter: nbytes {nbytes} k {k}");
            }
        }
    }

    fn bounded_f32() -> impl Strategy<Value = f32> {
        -1000.0f32..1000.0
    }

    proptest! {
        #[test]
        fn prop_dispatched_f32_agrees_with_scalar(
            pairs in prop::collection::vec((bounded_f32(), bounded_f32()), 0..700)
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            assert_close(dot_f32(&a, &b), scalar::dot_f32(&a, &b), abs_dot(&a, &b), "dot_f32");
            let want = scalar::l2sq_f32(&a, &b);
            assert_close(l2sq_f32(&a, &b), want, f64::from(want), "l2sq_f32");
            let (ha, hb) = (to_f16(&a), to_f16(&b));
            let magnitude: f64 =
                ha.iter().zip(&hb).map(|(x, y)| f64::from(x.to_f32() * y.to_f32()).abs()).sum();
            assert_close(dot_f16(&ha, &hb), scalar::dot_f16(&ha, &hb), magnitude, "dot_f16");
        }

        #[test]
        fn prop_dispatched_integer_kernels_equal_scalar(
            a in prop::collection::vec(any::<i8>(), 0..700),
            b in prop::collection::vec(any::<i8>(), 0..700),
        ) {
            prop_assert_eq!(dot_i8(&a, &b), scalar::dot_i8(&a, &b));
            let ua: Vec<u8> = a.iter().map(|&x| x as u8).collect();
            let ub: Vec<u8> = b.iter().map(|&x| x as u8).collect();
            prop_assert_eq!(hamming(&ua, &ub), scalar::hamming(&ua, &ub));
        }

        #[test]
        fn prop_scan_topk_matches_brute_force(
            ids in prop::collection::vec(0u64..60, 0..80),
            k in 0usize..70,
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (ndim, nrows) = (5, 50);
            // Coarse values, so that equal distances (ties) are common.
            let rows: Vec<f32> =
                (0..nrows * ndim).map(|_| rng.gen_range(-2i32..=2) as f32).collect();
            let query: Vec<f32> = (0..ndim).map(|_| rng.gen_range(-2i32..=2) as f32).collect();
            let scored: Vec<(u64, f32)> = ids
                .iter()
                .filter(|&&id| (id as usize) < nrows)
                .map(|&id| {
                    let r = id as usize;
                    (id, scalar::l2sq_f32(&query, &rows[r * ndim..(r + 1) * ndim]))
                })
                .collect();
            let want = brute_force(scored, k);
            prop_assert_eq!(scan_topk_f32(Metric::L2sq, &query, &rows, ndim, &ids, k), want);
        }
    }
}
