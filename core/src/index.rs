//! The collection index: what one collection needs in memory to answer searches.
//!
//! It joins three structures that must agree key for key:
//! - a usearch HNSW graph whose vectors are stored at the collection's precision (f32, f16,
//!   i8 or bits), the approximate candidate generator;
//! - an exact vector store (f32 rows, or packed bits), addressed by key, so candidates can be
//!   re-ranked exactly and small filtered sets can be scanned exactly with the SIMD kernels;
//! - the live-key bitset, the group column and the field indexes that filters run on.
//!
//! Keys are dense (the engine hands out small integers and reuses freed ones), so every per-key
//! structure is a flat array indexed by key. A single writer mutates at a time; searches take a
//! shared lock and never wait for one another. The HNSW insertion itself, the slow part of an
//! add, runs under the shared lock (usearch allows concurrent add and search), so searches keep
//! going while a batch is being indexed.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use usearch::{b1x8, Index as Hnsw, IndexOptions, MetricKind, ScalarKind};

use crate::bitset::Bitset;
use crate::distance::{self, Metric};
use crate::error::{CoreError, CoreResult};
use crate::fields::{FieldIndexes, FieldValue};
use crate::filter::{self, Expr};
use crate::group::{self, Group, Hit};

/// Largest key the index accepts. Keys address flat per-key arrays, so they must stay small;
/// the engine allocates them densely from zero.
pub const MAX_KEY: u64 = (u32::MAX - 1) as u64;
/// Cost ratio of a graph node visit to an exact row scan, used by the planner (see
/// `prefer_exact_scan`).
const EXACT_SCAN_RATIO: f64 = 18.0;
/// Batches smaller than this are inserted into the graph on one thread.
const PARALLEL_ADD_MIN: usize = 1024;
/// Filter results kept per index (see `CollectionIndex::allowed`).
const FILTER_CACHE_SIZE: usize = 32;
/// Group id of a record that has no group: it forms a group of its own.
pub const NO_GROUP: u64 = u64::MAX;

const SNAPSHOT_MAGIC: &[u8; 8] = b"LKLKIDX1";
const SNAPSHOT_VERSION: u32 = 2;
const HNSW_FILE: &str = "hnsw.usearch";
const STATE_FILE: &str = "state.bin";

/// How vectors are stored inside the HNSW graph. The exact store is always f32 (or bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    F16,
    I8,
    Binary,
}

impl Precision {
    pub fn parse(name: &str) -> Option<Precision> {
        match name {
            "f32" | "float32" => Some(Precision::F32),
            "f16" | "float16" => Some(Precision::F16),
            "i8" | "int8" => Some(Precision::I8),
            "b1" | "binary" | "bits" => Some(Precision::Binary),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::I8 => "i8",
            Precision::Binary => "binary",
        }
    }

    fn code(self) -> u8 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::I8 => 2,
            Precision::Binary => 3,
        }
    }

    fn from_code(code: u8) -> Option<Precision> {
        [
            Precision::F32,
            Precision::F16,
            Precision::I8,
            Precision::Binary,
        ]
        .into_iter()
        .find(|p| p.code() == code)
    }
}

/// Settings fixed when a collection is created (the search expansion may change later).
#[derive(Clone, Debug, PartialEq)]
pub struct IndexConfig {
    /// Dimensions of a vector; for `Precision::Binary`, the number of bits (a multiple of 8).
    pub ndim: usize,
    pub metric: Metric,
    pub precision: Precision,
    /// HNSW graph degree (usearch `connectivity`, hnswlib/faiss `M`).
    pub connectivity: usize,
    /// Beam width while building (`efConstruction`).
    pub expansion_add: usize,
    /// Default beam width while searching (`ef`); a search may override it.
    pub expansion_search: usize,
    /// Metadata fields with bitmap/range indexes.
    pub fields: Vec<String>,
    /// A filtered search whose passing set has at most this many keys is answered by an exact
    /// scan of just those vectors instead of a graph search; 0 lets the planner's cost model
    /// decide from the selectivity and the beam width.
    pub exact_threshold: usize,
}

impl IndexConfig {
    pub fn new(ndim: usize, metric: Metric, precision: Precision) -> IndexConfig {
        IndexConfig {
            ndim,
            metric,
            precision,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            fields: Vec::new(),
            exact_threshold: 0,
        }
    }

    fn validate(&self) -> CoreResult<()> {
        let bad = |message: String| Err(CoreError::InvalidArgument(message));
        if self.ndim == 0 || self.ndim > 65_536 {
            return bad(format!(
                "ndim must be between 1 and 65536, got {}",
                self.ndim
            ));
        }
        if self.connectivity < 2 || self.connectivity > 256 {
            return bad(format!(
                "connectivity must be between 2 and 256, got {}",
                self.connectivity
            ));
        }
        if self.expansion_add == 0 || self.expansion_add > 4096 {
            return bad(format!(
                "expansion_add must be between 1 and 4096, got {}",
                self.expansion_add
            ));
        }
        if self.expansion_search == 0 || self.expansion_search > 4096 {
            return bad(format!(
                "expansion_search must be between 1 and 4096, got {}",
                self.expansion_search
            ));
        }
        match (self.precision, self.metric) {
            (Precision::Binary, Metric::Hamming) => {
                if self.ndim % 8 != 0 {
                    return bad(format!("binary vectors need a multiple of 8 bits, got {}", self.ndim));
                }
            }
            (Precision::Binary, _) | (_, Metric::Hamming) => {
                return Err(CoreError::Unsupported(
                    "the hamming metric goes with binary precision, and binary precision with hamming".into(),
                ))
            }
            (Precision::I8, Metric::Cos) => {}
            (Precision::I8, _) => {
                return Err(CoreError::Unsupported(
                    "i8 precision needs the cosine metric (vectors are scaled to unit length before quantizing)"
                        .into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn is_binary(&self) -> bool {
        self.precision == Precision::Binary
    }

    /// Elements of one row in the exact store: f32 values, or bytes for bits.
    fn row_len(&self) -> usize {
        if self.is_binary() {
            self.ndim / 8
        } else {
            self.ndim
        }
    }

    fn hnsw_options(&self) -> IndexOptions {
        // Cosine vectors are normalized on the way in, so the graph can use the cheaper inner
        // product, except for i8 where usearch's cosine kernel is what undoes its scaling.
        let metric = match (self.metric, self.precision) {
            (Metric::Cos, Precision::I8) => MetricKind::Cos,
            (Metric::Cos, _) | (Metric::Ip, _) => MetricKind::IP,
            (Metric::L2sq, _) => MetricKind::L2sq,
            (Metric::Hamming, _) => MetricKind::Hamming,
        };
        let quantization = match self.precision {
            Precision::F32 => ScalarKind::F32,
            Precision::F16 => ScalarKind::F16,
            Precision::I8 => ScalarKind::I8,
            Precision::Binary => ScalarKind::B1,
        };
        IndexOptions {
            dimensions: self.ndim,
            metric,
            quantization,
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            // usearch's beam is max(expansion, wanted); with 1 here the caller's `wanted`
            // (max(ef, needed)) is the beam, so each search picks its own ef without touching
            // shared state.
            expansion_search: 1,
            multi: false,
        }
    }
}

/// A batch of vectors handed to `add` or `search`, row-major.
#[derive(Clone, Copy, Debug)]
pub enum Vectors<'a> {
    F32(&'a [f32]),
    Bits(&'a [u8]),
}

impl Vectors<'_> {
    fn len(&self) -> usize {
        match self {
            Vectors::F32(values) => values.len(),
            Vectors::Bits(bytes) => bytes.len(),
        }
    }
}

/// Which strategy answered a search; reported back so the planner can be observed and tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing can match (empty collection or empty filter result).
    Empty,
    /// Graph search, candidates re-ranked exactly.
    Graph,
    /// Graph search restricted to the filter's bitset by usearch's predicate search.
    FilteredGraph,
    /// Exact scan of the passing keys (few passing keys, an explicit request, or a fallback
    /// because the graph could not produce enough passing candidates).
    Exact,
}

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::Empty => "empty",
            Plan::Graph => "graph",
            Plan::FilteredGraph => "filtered_graph",
            Plan::Exact => "exact",
        }
    }
}

/// Options of one search.
#[derive(Clone, Debug, Default)]
pub struct SearchOptions {
    pub limit: usize,
    pub offset: usize,
    /// Beam width; `None` uses the index's `expansion_search`.
    pub ef: Option<usize>,
    /// Force an exact scan.
    pub exact: bool,
    pub filter: Option<Expr>,
    /// A stable text form of `filter` (the caller's canonical JSON, say): when given, the
    /// filter's result is cached until the next write.
    pub filter_key: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    pub plan: Plan,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupedResult {
    pub groups: Vec<Group>,
    pub plan: Plan,
}

/// Counters the core keeps instead of logging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub count: usize,
    pub capacity: usize,
    pub removed_since_rebuild: usize,
    pub memory_bytes: usize,
    pub searches_graph: u64,
    pub searches_filtered_graph: u64,
    pub searches_exact: u64,
    pub exact_fallbacks: u64,
    pub rebuilds: u64,
}

/// The exact vectors, one row per key (rows of free keys hold stale data and are never read:
/// every reader checks the live bitset first).
#[derive(Clone, Debug, Default)]
struct Store {
    floats: Vec<f32>,
    bits: Vec<u8>,
}

struct State {
    hnsw: Hnsw,
    store: Store,
    /// Number of key slots the store and group column cover.
    slots: usize,
    live: Bitset,
    /// `live.count()`, kept so a search does not popcount the whole bitset.
    live_count: usize,
    /// Bumped by every write that changes the live keys or field values (filter cache validity).
    generation: u64,
    groups: Vec<u64>,
    fields: FieldIndexes,
    removed_since_rebuild: usize,
}

#[derive(Default)]
struct Counters {
    graph: AtomicU64,
    filtered_graph: AtomicU64,
    exact: AtomicU64,
    fallbacks: AtomicU64,
    rebuilds: AtomicU64,
}

/// One collection's in-memory index. Cheap to share between threads (`&self` everywhere).
pub struct CollectionIndex {
    config: IndexConfig,
    state: RwLock<State>,
    /// Serializes writers, so the slow part of an add can run under the shared lock.
    writer: Mutex<()>,
    counters: Counters,
    default_ef: AtomicUsize,
    filter_cache: Mutex<Vec<(String, u64, Arc<Bitset>)>>,
    /// One rebuild at a time.
    rebuilding: Mutex<()>,
    /// While a rebuild builds its graph (without the writer lock), the keys that writers add,
    /// replace or remove meanwhile; the rebuild brings its graph up to date with them.
    rebuild_log: Mutex<Option<Vec<u64>>>,
}

fn check_ef(ef: usize) -> CoreResult<()> {
    if ef == 0 || ef > 4096 {
        return Err(CoreError::InvalidArgument(format!(
            "ef must be between 1 and 4096, got {ef}"
        )));
    }
    Ok(())
}

fn new_hnsw(config: &IndexConfig, capacity: usize) -> CoreResult<Hnsw> {
    let hnsw = Hnsw::new(&config.hnsw_options())?;
    hnsw.reserve_capacity_and_threads(capacity.max(64), hnsw_threads())?;
    Ok(hnsw)
}

/// Thread slots usearch reserves: enough for every search thread we may run at once.
fn hnsw_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(4)
        * 4
}

/// Worker threads for batch add and batch search.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl CollectionIndex {
    pub fn new(config: IndexConfig) -> CoreResult<CollectionIndex> {
        config.validate()?;
        let hnsw = new_hnsw(&config, 0)?;
        let fields = FieldIndexes::new(&config.fields);
        Ok(CollectionIndex {
            state: RwLock::new(State {
                hnsw,
                store: Store::default(),
                slots: 0,
                live: Bitset::new(0),
                live_count: 0,
                generation: 0,
                groups: Vec::new(),
                fields,
                removed_since_rebuild: 0,
            }),
            default_ef: AtomicUsize::new(config.expansion_search),
            filter_cache: Mutex::new(Vec::new()),
            config,
            writer: Mutex::new(()),
            counters: Counters::default(),
            rebuilding: Mutex::new(()),
            rebuild_log: Mutex::new(None),
        })
    }

    /// Notes keys a writer changes, for a rebuild under way (callers hold the writer lock).
    fn log_for_rebuild(&self, keys: impl IntoIterator<Item = u64>) {
        if let Some(log) = self.rebuild_log.lock().as_mut() {
            log.extend(keys);
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.state.read().live_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: u64) -> bool {
        self.state.read().live.contains(key)
    }

    /// All live keys, ascending.
    pub fn keys(&self) -> Vec<u64> {
        self.state.read().live.to_vec()
    }

    /// Changes the default beam width of later searches.
    pub fn set_expansion_search(&self, ef: usize) -> CoreResult<()> {
        check_ef(ef)?;
        self.default_ef.store(ef, Ordering::Relaxed);
        Ok(())
    }

    pub fn expansion_search(&self) -> usize {
        self.default_ef.load(Ordering::Relaxed)
    }

    pub fn reserve(&self, capacity: usize) -> CoreResult<()> {
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        self.ensure_slots(&mut state, capacity)?;
        let hnsw_capacity = state.hnsw.capacity();
        if capacity > hnsw_capacity {
            state
                .hnsw
                .reserve_capacity_and_threads(capacity, hnsw_threads())?;
        }
        Ok(())
    }

    fn ensure_slots(&self, state: &mut State, slots: usize) -> CoreResult<()> {
        if slots <= state.slots {
            return Ok(());
        }
        let row = self.config.row_len();
        let bytes = slots.checked_mul(row).ok_or(CoreError::KeyOutOfRange {
            key: slots as u64,
            max: MAX_KEY,
        })?;
        if self.config.is_binary() {
            state.store.bits.resize(bytes, 0);
        } else {
            state.store.floats.resize(bytes, 0.0);
        }
        state.groups.resize(slots, NO_GROUP);
        state.live.grow(slots);
        state.slots = slots;
        Ok(())
    }

    /// Checks a batch and returns its rows in store form (cosine rows normalized).
    fn prepare(&self, vectors: Vectors<'_>, rows: usize) -> CoreResult<Store> {
        let row = self.config.row_len();
        if vectors.len() != rows * row {
            let got = if rows == 0 {
                vectors.len()
            } else {
                vectors.len() / rows.max(1)
            };
            return Err(CoreError::DimensionMismatch {
                expected: self.config.ndim,
                got,
            });
        }
        match (vectors, self.config.is_binary()) {
            (Vectors::F32(values), false) => {
                let mut floats = values.to_vec();
                for (index, chunk) in floats.chunks_exact_mut(row.max(1)).enumerate() {
                    if chunk.iter().any(|value| !value.is_finite()) {
                        return Err(CoreError::NonFiniteVector { row: index });
                    }
                    if self.config.metric == Metric::Cos && !distance::normalize(chunk) {
                        return Err(CoreError::ZeroVector { row: index });
                    }
                }
                Ok(Store {
                    floats,
                    bits: Vec::new(),
                })
            }
            (Vectors::Bits(bytes), true) => Ok(Store {
                floats: Vec::new(),
                bits: bytes.to_vec(),
            }),
            (Vectors::F32(_), true) => Err(CoreError::InvalidArgument(
                "this index holds binary vectors: pass packed bytes (uint8)".into(),
            )),
            (Vectors::Bits(_), false) => Err(CoreError::InvalidArgument(
                "this index holds float vectors: pass float32 values".into(),
            )),
        }
    }

    /// Adds (or replaces) vectors under `keys`, with optional group ids. The batch is checked
    /// whole before anything changes: a bad row leaves the index as it was.
    pub fn add(
        &self,
        keys: &[u64],
        vectors: Vectors<'_>,
        groups: Option<&[u64]>,
        threads: usize,
    ) -> CoreResult<()> {
        let prepared = self.prepare(vectors, keys.len())?;
        if let Some(groups) = groups {
            if groups.len() != keys.len() {
                return Err(CoreError::LengthMismatch {
                    what: "groups",
                    expected: keys.len(),
                    got: groups.len(),
                });
            }
        }
        let mut seen = Bitset::new(0);
        for &key in keys {
            if key > MAX_KEY {
                return Err(CoreError::KeyOutOfRange { key, max: MAX_KEY });
            }
            if seen.contains(key) {
                return Err(CoreError::InvalidArgument(format!(
                    "key {key} appears twice in one batch"
                )));
            }
            seen.insert(key);
        }
        if keys.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock();
        let row = self.config.row_len();
        // Phase 1, exclusive and short: make room, drop replaced keys from the graph, copy rows.
        {
            let mut state = self.state.write();
            state.generation += 1;
            let max_key = keys.iter().copied().max().unwrap_or(0) as usize;
            let wanted = (max_key + 1).max(state.slots);
            if wanted > state.slots {
                let grown = wanted.max(state.slots + state.slots / 2);
                self.ensure_slots(&mut state, grown)?;
            }
            let needed = state.hnsw.size() + keys.len();
            if needed > state.hnsw.capacity() {
                let grown = needed.max(state.hnsw.capacity() * 3 / 2);
                state
                    .hnsw
                    .reserve_capacity_and_threads(grown, hnsw_threads())?;
            }
            self.log_for_rebuild(keys.iter().copied());
            for (index, &key) in keys.iter().enumerate() {
                let slot = key as usize;
                if state.live.contains(key) || state.hnsw.contains(key) {
                    state.hnsw.remove(key)?;
                    state.live.remove(key);
                    state.live_count -= 1;
                    state.removed_since_rebuild += 1;
                }
                if self.config.is_binary() {
                    state.store.bits[slot * row..(slot + 1) * row]
                        .copy_from_slice(&prepared.bits[index * row..(index + 1) * row]);
                } else {
                    state.store.floats[slot * row..(slot + 1) * row]
                        .copy_from_slice(&prepared.floats[index * row..(index + 1) * row]);
                }
                state.groups[slot] = groups.map_or(NO_GROUP, |groups| groups[index]);
            }
        }
        // Phase 2, shared: the graph insertions, in parallel, while searches go on.
        {
            let state = self.state.read();
            // Small batches go in on one thread: concurrent inserts of a few nodes that are near
            // each other can miss linking them, and the speed-up only matters for bulk loads.
            let threads = if keys.len() < PARALLEL_ADD_MIN {
                1
            } else {
                threads.clamp(1, 64).min(keys.len())
            };
            let chunk = keys.len().div_ceil(threads);
            let errors: Vec<CoreResult<()>> = std::thread::scope(|scope| {
                let handles: Vec<_> = keys
                    .chunks(chunk)
                    .enumerate()
                    .map(|(part, part_keys)| {
                        let state = &state;
                        let prepared = &prepared;
                        let config = &self.config;
                        scope.spawn(move || -> CoreResult<()> {
                            for (offset, &key) in part_keys.iter().enumerate() {
                                let index = part * chunk + offset;
                                if config.is_binary() {
                                    let bytes = &prepared.bits[index * row..(index + 1) * row];
                                    state.hnsw.add(key, b1x8::from_u8s(bytes))?;
                                } else {
                                    state.hnsw.add(
                                        key,
                                        &prepared.floats[index * row..(index + 1) * row],
                                    )?;
                                }
                            }
                            Ok(())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| {
                        handle.join().unwrap_or_else(|_| {
                            Err(CoreError::Index("an add thread panicked".into()))
                        })
                    })
                    .collect()
            });
            for result in errors {
                result?;
            }
        }
        // Phase 3, exclusive and short: the new keys become visible to filtered searches.
        let mut state = self.state.write();
        for &key in keys {
            state.live.insert(key);
        }
        state.live_count = state.live.count();
        state.generation += 1;
        Ok(())
    }

    /// Removes keys; returns how many were present. Field values must be removed by the caller
    /// (`unindex_fields`) with the values it indexed, before the key is reused.
    pub fn remove(&self, keys: &[u64]) -> CoreResult<usize> {
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        state.generation += 1;
        self.log_for_rebuild(keys.iter().copied());
        let mut removed = 0;
        for &key in keys {
            if state.live.contains(key) {
                state.hnsw.remove(key)?;
                state.live.remove(key);
                state.live_count -= 1;
                if let Some(group) = state.groups.get_mut(key as usize) {
                    *group = NO_GROUP;
                }
                state.removed_since_rebuild += 1;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Sets the group of existing keys (metadata updates move a record between groups).
    pub fn set_groups(&self, keys: &[u64], groups: &[u64]) -> CoreResult<()> {
        if keys.len() != groups.len() {
            return Err(CoreError::LengthMismatch {
                what: "groups",
                expected: keys.len(),
                got: groups.len(),
            });
        }
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        for (&key, &group) in keys.iter().zip(groups) {
            if let Some(slot) = state.groups.get_mut(key as usize) {
                *slot = group;
            }
        }
        Ok(())
    }

    /// Adds field values (`key`, `field`, all values of that field in the record).
    pub fn index_fields(&self, entries: &[(u64, String, Vec<FieldValue>)]) -> CoreResult<()> {
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        state.generation += 1;
        for (key, field, values) in entries {
            state.fields.insert(*key, field, values)?;
        }
        Ok(())
    }

    /// Removes field values previously given to `index_fields`.
    pub fn unindex_fields(&self, entries: &[(u64, String, Vec<FieldValue>)]) -> CoreResult<()> {
        let _writer = self.writer.lock();
        let mut state = self.state.write();
        state.generation += 1;
        for (key, field, values) in entries {
            state.fields.remove(*key, field, values)?;
        }
        Ok(())
    }

    pub fn is_indexed_field(&self, field: &str) -> bool {
        self.state.read().fields.is_indexed(field)
    }

    /// Copies of stored vectors (normalized for cosine); missing keys are reported.
    pub fn get_vectors(&self, keys: &[u64]) -> CoreResult<StoredVectors> {
        let state = self.state.read();
        let row = self.config.row_len();
        let mut out = StoredVectors {
            floats: Vec::new(),
            bits: Vec::new(),
            found: Vec::with_capacity(keys.len()),
        };
        for &key in keys {
            let present = state.live.contains(key);
            out.found.push(present);
            let slot = key as usize;
            if self.config.is_binary() {
                if present {
                    out.bits
                        .extend_from_slice(&state.store.bits[slot * row..(slot + 1) * row]);
                } else {
                    out.bits.extend(std::iter::repeat(0).take(row));
                }
            } else if present {
                out.floats
                    .extend_from_slice(&state.store.floats[slot * row..(slot + 1) * row]);
            } else {
                out.floats.extend(std::iter::repeat(0.0).take(row));
            }
        }
        Ok(out)
    }

    /// The keys passing a filter (a subset of the live keys).
    pub fn evaluate(&self, expr: &Expr) -> CoreResult<Bitset> {
        let state = self.state.read();
        filter::evaluate(expr, &state.fields, &state.live)
    }

    fn prepare_query(&self, query: Vectors<'_>) -> CoreResult<Store> {
        let prepared = self.prepare(query, 1).map_err(|error| match error {
            CoreError::NonFiniteVector { .. } => CoreError::NonFiniteVector { row: 0 },
            other => other,
        })?;
        Ok(prepared)
    }

    /// Exact distances of one query to the rows of `candidates`, best `k` in total order.
    fn exact_top_k<I: Iterator<Item = u64>>(
        &self,
        state: &State,
        query: &Store,
        candidates: I,
        k: usize,
    ) -> Vec<Hit> {
        let row = self.config.row_len();
        let pairs = if self.config.is_binary() {
            distance::scan_topk_bits_iter(&query.bits, &state.store.bits, row, candidates, k)
        } else {
            distance::scan_topk_f32_iter(
                self.config.metric,
                &query.floats,
                &state.store.floats,
                row,
                candidates,
                k,
            )
        };
        // Cosine distances of unit vectors lie in [0, 2]; rounding can dip a hair below 0 for a
        // record's own vector, which would print as "-0.0000".
        let floor = if self.config.metric == Metric::Cos {
            0.0
        } else {
            f32::NEG_INFINITY
        };
        pairs
            .into_iter()
            .map(|(key, distance)| Hit {
                key,
                distance: distance.max(floor),
            })
            .collect()
    }

    /// Graph candidates (at least `wanted`, beam `ef`), re-ranked exactly; `allowed` restricts
    /// them by usearch's predicate search.
    fn graph_candidates(
        &self,
        state: &State,
        query: &Store,
        wanted: usize,
        allowed: Option<&Bitset>,
    ) -> CoreResult<Vec<Hit>> {
        let matches = match (allowed, self.config.is_binary()) {
            (None, false) => state.hnsw.search(&query.floats, wanted)?,
            (None, true) => state.hnsw.search(b1x8::from_u8s(&query.bits), wanted)?,
            (Some(allowed), false) => state
                .hnsw
                .filtered_search(&query.floats, wanted, |key| allowed.contains(key))?,
            (Some(allowed), true) => {
                state
                    .hnsw
                    .filtered_search(b1x8::from_u8s(&query.bits), wanted, |key| {
                        allowed.contains(key)
                    })?
            }
        };
        let live = &state.live;
        let candidates = matches.keys.into_iter().filter(|&key| live.contains(key));
        // Re-rank with the exact vectors: lossy graph storage (i8, f16) then costs no recall.
        Ok(self.exact_top_k(state, query, candidates, wanted))
    }

    /// The planner's choice for a filtered search with `passing` of `total` keys passing.
    ///
    /// An exact scan costs about `passing` row reads; a filtered graph search costs about
    /// `ef / selectivity` node visits, since the walk must cross non-passing nodes to collect
    /// `ef` passing ones. Equal costs give `passing^2 = EXACT_SCAN_RATIO * ef * total`; the ratio
    /// was measured on 512-d vectors (an i8 graph against an f32 row scan). A non-zero
    /// `exact_threshold` in the configuration replaces the model with a fixed bound.
    fn prefer_exact_scan(&self, passing: usize, total: usize, ef: usize) -> bool {
        if self.config.exact_threshold > 0 {
            return passing <= self.config.exact_threshold;
        }
        let passing = passing as f64;
        passing * passing <= EXACT_SCAN_RATIO * ef as f64 * total as f64
    }

    /// Best `needed` hits for one query under the planner; `needed` counts from rank 0.
    fn ranked(
        &self,
        state: &State,
        query: &Store,
        needed: usize,
        options: &SearchOptions,
        allowed: Option<&Bitset>,
    ) -> CoreResult<(Vec<Hit>, Plan)> {
        let live_count = match allowed {
            Some(allowed) => allowed.count(),
            None => state.live_count,
        };
        if live_count == 0 || needed == 0 {
            return Ok((Vec::new(), Plan::Empty));
        }
        let want = needed.min(live_count);
        let ef = match options.ef {
            Some(ef) => {
                check_ef(ef)?;
                ef
            }
            None => self.expansion_search(),
        };
        let exact = options.exact
            || live_count <= ef.max(needed)
            || allowed.is_some_and(|_| self.prefer_exact_scan(live_count, state.live_count, ef));
        if exact {
            self.counters.exact.fetch_add(1, Ordering::Relaxed);
            let hits = match allowed {
                Some(allowed) => self.exact_top_k(state, query, allowed.iter(), want),
                None => self.exact_top_k(state, query, state.live.iter(), want),
            };
            return Ok((hits, Plan::Exact));
        }
        // The beam is max(ef, wanted): for every page within the first `ef` ranks the candidate
        // set is the same, so pages of one query never repeat or skip a record.
        let wanted = ef.max(needed);
        let (mut hits, plan) = match allowed {
            None => (
                self.graph_candidates(state, query, wanted, None)?,
                Plan::Graph,
            ),
            Some(allowed) => (
                self.graph_candidates(state, query, wanted, Some(allowed))?,
                Plan::FilteredGraph,
            ),
        };
        if hits.len() < want {
            // The graph walk ran out of passing nodes (a strict filter, or many removals):
            // the promise is `limit` results whenever that many match, so scan exactly.
            self.counters.fallbacks.fetch_add(1, Ordering::Relaxed);
            self.counters.exact.fetch_add(1, Ordering::Relaxed);
            hits = match allowed {
                Some(allowed) => self.exact_top_k(state, query, allowed.iter(), want),
                None => self.exact_top_k(state, query, state.live.iter(), want),
            };
            return Ok((hits, Plan::Exact));
        }
        match plan {
            Plan::Graph => self.counters.graph.fetch_add(1, Ordering::Relaxed),
            _ => self.counters.filtered_graph.fetch_add(1, Ordering::Relaxed),
        };
        hits.truncate(needed);
        Ok((hits, plan))
    }

    /// The passing keys of the search's filter. With a `filter_key`, results are cached until
    /// the next write, so an application repeating a filter (a category, a price band) pays for
    /// its evaluation once.
    fn allowed(&self, state: &State, options: &SearchOptions) -> CoreResult<Option<Arc<Bitset>>> {
        let expr = match &options.filter {
            None | Some(Expr::All) => return Ok(None),
            Some(expr) => expr,
        };
        let Some(cache_key) = &options.filter_key else {
            return Ok(Some(Arc::new(filter::evaluate(
                expr,
                &state.fields,
                &state.live,
            )?)));
        };
        let generation = state.generation;
        {
            let cache = self.filter_cache.lock();
            if let Some((_, _, bitset)) = cache
                .iter()
                .find(|(key, gen, _)| *gen == generation && key == cache_key)
            {
                return Ok(Some(bitset.clone()));
            }
        }
        let bitset = Arc::new(filter::evaluate(expr, &state.fields, &state.live)?);
        let mut cache = self.filter_cache.lock();
        cache.retain(|(_, gen, _)| *gen == generation);
        if cache.len() >= FILTER_CACHE_SIZE {
            cache.remove(0);
        }
        cache.push((cache_key.clone(), generation, bitset.clone()));
        Ok(Some(bitset))
    }

    /// k-nearest search for one query: hits ranked [offset, offset + limit).
    pub fn search(&self, query: Vectors<'_>, options: &SearchOptions) -> CoreResult<SearchResult> {
        let query = self.prepare_query(query)?;
        let state = self.state.read();
        let allowed = self.allowed(&state, options)?;
        let needed = options.offset.saturating_add(options.limit);
        let (hits, plan) = self.ranked(&state, &query, needed, options, allowed.as_deref())?;
        Ok(SearchResult {
            hits: hits.into_iter().skip(options.offset).collect(),
            plan,
        })
    }

    /// Search for many queries at once, split over `threads`; the filter is evaluated once.
    pub fn search_batch(
        &self,
        queries: Vectors<'_>,
        count: usize,
        options: &SearchOptions,
        threads: usize,
    ) -> CoreResult<Vec<SearchResult>> {
        let row = self.config.row_len();
        if queries.len() != count * row {
            return Err(CoreError::DimensionMismatch {
                expected: self.config.ndim,
                got: queries.len() / count.max(1),
            });
        }
        let prepared = self.prepare(queries, count)?;
        let state = self.state.read();
        let allowed = self.allowed(&state, options)?;
        let needed = options.offset.saturating_add(options.limit);
        let threads = threads.clamp(1, 64).min(count.max(1));
        let chunk = count.div_ceil(threads).max(1);
        let state_ref = &*state;
        let allowed_ref = allowed.as_deref();
        let parts: Vec<CoreResult<Vec<SearchResult>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..count)
                .step_by(chunk)
                .map(|start| {
                    let prepared = &prepared;
                    scope.spawn(move || -> CoreResult<Vec<SearchResult>> {
                        let end = (start + chunk).min(count);
                        let mut out = Vec::with_capacity(end - start);
                        for index in start..end {
                            let query = if self.config.is_binary() {
                                Store {
                                    floats: Vec::new(),
                                    bits: prepared.bits[index * row..(index + 1) * row].to_vec(),
                                }
                            } else {
                                Store {
                                    floats: prepared.floats[index * row..(index + 1) * row]
                                        .to_vec(),
                                    bits: Vec::new(),
                                }
                            };
                            let (hits, plan) =
                                self.ranked(state_ref, &query, needed, options, allowed_ref)?;
                            out.push(SearchResult {
                                hits: hits.into_iter().skip(options.offset).collect(),
                                plan,
                            });
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(CoreError::Index("a search thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut results = Vec::with_capacity(count);
        for part in parts {
            results.extend(part?);
        }
        Ok(results)
    }

    /// Top groups (by group id) with the best `group_size` hits each, groups ranked
    /// [offset, offset + limit). The candidate pool grows until the answer is settled.
    pub fn search_grouped(
        &self,
        query: Vectors<'_>,
        options: &SearchOptions,
        group_size: usize,
    ) -> CoreResult<GroupedResult> {
        let query = self.prepare_query(query)?;
        let state = self.state.read();
        let allowed = self.allowed(&state, options)?;
        let total = match &allowed {
            Some(allowed) => allowed.count(),
            None => state.live_count,
        };
        let groups_needed = options.offset.saturating_add(options.limit);
        if total == 0 || groups_needed == 0 || group_size == 0 {
            return Ok(GroupedResult {
                groups: Vec::new(),
                plan: Plan::Empty,
            });
        }
        let group_of = |key: u64| match state.groups.get(key as usize).copied() {
            Some(NO_GROUP) | None => key | (1 << 63),
            Some(group) => group,
        };
        let mut pool = groups_needed
            .saturating_mul(group_size)
            .saturating_mul(2)
            .max(64);
        loop {
            let pool_now = pool.min(total);
            let (hits, plan) =
                self.ranked(&state, &query, pool_now, options, allowed.as_deref())?;
            let grouped =
                group::top_groups(&hits, group_of, options.offset, options.limit, group_size);
            let exhausted = pool_now >= total || hits.len() < pool_now;
            if grouped.settled || exhausted {
                let groups = grouped
                    .groups
                    .into_iter()
                    .map(|mut group| {
                        if group.group & (1 << 63) != 0 && group.group != NO_GROUP {
                            group.group = NO_GROUP;
                        }
                        group
                    })
                    .collect();
                return Ok(GroupedResult { groups, plan });
            }
            pool = pool.saturating_mul(4);
        }
    }

    /// Whether enough keys were removed since the last rebuild that rebuilding the graph would
    /// give memory back and restore graph quality.
    pub fn needs_rebuild(&self) -> bool {
        let state = self.state.read();
        let live = state.live_count;
        state.removed_since_rebuild > 1_000.max(live / 4)
    }

    /// Rebuilds the HNSW graph from the exact store (live keys only) and swaps it in.
    /// Searches and writes go on meanwhile: the graph is built from the keys live at the start,
    /// reading their vectors in short shared-lock sections; then, as a writer, the keys written
    /// since are brought up to date in it (removed, re-added with their current vector) and
    /// the new graph replaces the old one.
    pub fn rebuild(&self, threads: usize) -> CoreResult<()> {
        let _one = self.rebuilding.lock();
        let keys = {
            let _writer = self.writer.lock();
            let state = self.state.read();
            *self.rebuild_log.lock() = Some(Vec::new());
            state.live.to_vec()
        };
        let built = self.build_graph(&keys, threads);
        let fresh = match built {
            Ok(fresh) => fresh,
            Err(error) => {
                *self.rebuild_log.lock() = None;
                return Err(error);
            }
        };
        // Catch up with the writes made meanwhile while writers go on, until few are left...
        let mut replaced = 0;
        for _ in 0..8 {
            let pending = self
                .rebuild_log
                .lock()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default();
            if pending.len() < 1_000 {
                self.log_pending(pending);
                break;
            }
            match self.catch_up(&fresh, pending, None) {
                Ok(count) => replaced += count,
                Err(error) => {
                    *self.rebuild_log.lock() = None;
                    return Err(error);
                }
            }
        }
        // ...then the rest as a writer, and the swap.
        let _writer = self.writer.lock();
        let changed = self.rebuild_log.lock().take().unwrap_or_default();
        let mut state = self.state.write();
        replaced += self.catch_up(&fresh, changed, Some(&state))?;
        state.hnsw = fresh;
        state.removed_since_rebuild = replaced;
        // Trailing free slots give their memory back too.
        let last_live = state.live.iter().last().map_or(0, |key| key as usize + 1);
        if last_live < state.slots / 2 {
            let row = self.config.row_len();
            state.slots = last_live;
            state.store.floats.truncate(if self.config.is_binary() {
                0
            } else {
                last_live * row
            });
            state.store.floats.shrink_to_fit();
            state.store.bits.truncate(if self.config.is_binary() {
                last_live * row
            } else {
                0
            });
            state.store.bits.shrink_to_fit();
            state.groups.truncate(last_live);
            state.groups.shrink_to_fit();
        }
        self.counters.rebuilds.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Puts keys back in the log (a catch-up round that found too few to be worth it).
    fn log_pending(&self, keys: Vec<u64>) {
        if let Some(log) = self.rebuild_log.lock().as_mut() {
            log.extend(keys);
        }
    }

    /// Brings `fresh` up to date for `changed` keys: each is removed from it if there, and
    /// added again with its current vector if live. With `held` (the writer's exclusive state)
    /// it reads from that; without, it takes the shared lock per key. Returns the removals.
    fn catch_up(
        &self,
        fresh: &Hnsw,
        mut changed: Vec<u64>,
        held: Option<&State>,
    ) -> CoreResult<usize> {
        changed.sort_unstable();
        changed.dedup();
        if changed.is_empty() {
            return Ok(0);
        }
        let row = self.config.row_len();
        fresh.reserve_capacity_and_threads(fresh.size() + changed.len(), hnsw_threads())?;
        let mut replaced = 0;
        let mut floats: Vec<f32> = Vec::with_capacity(row);
        let mut bits: Vec<u8> = Vec::with_capacity(row);
        for &key in &changed {
            let slot = key as usize;
            let copy = |state: &State, floats: &mut Vec<f32>, bits: &mut Vec<u8>| -> bool {
                let live = state.live.contains(key);
                if live {
                    floats.clear();
                    bits.clear();
                    if self.config.is_binary() {
                        bits.extend_from_slice(&state.store.bits[slot * row..(slot + 1) * row]);
                    } else {
                        floats.extend_from_slice(&state.store.floats[slot * row..(slot + 1) * row]);
                    }
                }
                live
            };
            let live = match held {
                Some(state) => copy(state, &mut floats, &mut bits),
                None => copy(&self.state.read(), &mut floats, &mut bits),
            };
            if fresh.contains(key) {
                fresh.remove(key)?;
                replaced += 1;
            }
            if live {
                if self.config.is_binary() {
                    fresh.add(key, b1x8::from_u8s(&bits))?;
                } else {
                    fresh.add(key, &floats)?;
                }
            }
        }
        Ok(replaced)
    }

    /// A new graph of `keys`, built on `threads` threads. Each copies the vectors of a few
    /// hundred keys at a time under the shared lock and inserts them without it, so writers
    /// (and the searches queued behind a writer) never wait long.
    fn build_graph(&self, keys: &[u64], threads: usize) -> CoreResult<Hnsw> {
        const BLOCK: usize = 256;
        let fresh = new_hnsw(&self.config, keys.len())?;
        let row = self.config.row_len();
        let binary = self.config.is_binary();
        let threads = threads.clamp(1, 64).min(keys.len().max(1));
        let chunk = keys.len().div_ceil(threads).max(1);
        let results: Vec<CoreResult<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = keys
                .chunks(chunk)
                .map(|part| {
                    let fresh = &fresh;
                    scope.spawn(move || -> CoreResult<()> {
                        let mut floats: Vec<f32> = Vec::new();
                        let mut bits: Vec<u8> = Vec::new();
                        for block in part.chunks(BLOCK) {
                            {
                                let state = self.state.read();
                                floats.clear();
                                bits.clear();
                                for &key in block {
                                    let slot = key as usize;
                                    if binary {
                                        bits.extend_from_slice(
                                            &state.store.bits[slot * row..(slot + 1) * row],
                                        );
                                    } else {
                                        floats.extend_from_slice(
                                            &state.store.floats[slot * row..(slot + 1) * row],
                                        );
                                    }
                                }
                            }
                            for (index, &key) in block.iter().enumerate() {
                                if binary {
                                    fresh.add(
                                        key,
                                        b1x8::from_u8s(&bits[index * row..(index + 1) * row]),
                                    )?;
                                } else {
                                    fresh.add(key, &floats[index * row..(index + 1) * row])?;
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        Err(CoreError::Index("a rebuild thread panicked".into()))
                    })
                })
                .collect()
        });
        for result in results {
            result?;
        }
        Ok(fresh)
    }

    pub fn memory_usage(&self) -> usize {
        let state = self.state.read();
        state.hnsw.memory_usage()
            + state.store.floats.capacity() * 4
            + state.store.bits.capacity()
            + state.groups.capacity() * 8
            + state.live.memory_usage()
            + state.fields.memory_usage()
    }

    pub fn stats(&self) -> IndexStats {
        let memory_bytes = self.memory_usage();
        let state = self.state.read();
        IndexStats {
            count: state.live_count,
            capacity: state.slots,
            removed_since_rebuild: state.removed_since_rebuild,
            memory_bytes,
            searches_graph: self.counters.graph.load(Ordering::Relaxed),
            searches_filtered_graph: self.counters.filtered_graph.load(Ordering::Relaxed),
            searches_exact: self.counters.exact.load(Ordering::Relaxed),
            exact_fallbacks: self.counters.fallbacks.load(Ordering::Relaxed),
            rebuilds: self.counters.rebuilds.load(Ordering::Relaxed),
        }
    }

    /// Writes a snapshot into `directory` (created; files written then fsynced). `sequence` is the
    /// storage sequence number the snapshot reflects; it comes back from `load`.
    pub fn save(&self, directory: &Path, sequence: u64) -> CoreResult<()> {
        let _writer = self.writer.lock();
        let state = self.state.read();
        fs::create_dir_all(directory)?;
        let hnsw_path = directory.join(HNSW_FILE);
        let hnsw_path_str = hnsw_path
            .to_str()
            .ok_or_else(|| CoreError::Io("snapshot path is not valid UTF-8".into()))?;
        state.hnsw.save(hnsw_path_str)?;
        File::open(&hnsw_path)?.sync_all()?;
        let hnsw_crc = file_crc(&hnsw_path)?;
        let state_path = directory.join(STATE_FILE);
        let file = File::create(&state_path)?;
        // Everything is checksummed (the graph file by its CRC in the header): a torn or damaged
        // snapshot is refused at load, and the engine rebuilds from its database instead.
        let mut out = Checksummed::new(BufWriter::with_capacity(1 << 20, file));
        out.write_all(SNAPSHOT_MAGIC)?;
        out.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        out.write_all(&sequence.to_le_bytes())?;
        out.write_all(&(self.config.ndim as u64).to_le_bytes())?;
        out.write_all(&[
            metric_code(self.config.metric),
            self.config.precision.code(),
        ])?;
        out.write_all(&(state.slots as u64).to_le_bytes())?;
        out.write_all(&(state.removed_since_rebuild as u64).to_le_bytes())?;
        out.write_all(&hnsw_crc.to_le_bytes())?;
        let live = state.live.to_vec();
        out.write_all(&(live.len() as u64).to_le_bytes())?;
        for key in &live {
            out.write_all(&(*key as u32).to_le_bytes())?;
        }
        for group in &state.groups[..state.slots] {
            out.write_all(&group.to_le_bytes())?;
        }
        if self.config.is_binary() {
            out.write_all(&state.store.bits[..state.slots * self.config.row_len()])?;
        } else {
            for value in &state.store.floats[..state.slots * self.config.row_len()] {
                out.write_all(&value.to_le_bytes())?;
            }
        }
        state.fields.save(&mut out)?;
        let crc = out.hasher.clone().finalize();
        let mut out = out.inner;
        out.write_all(&crc.to_le_bytes())?;
        let file = out
            .into_inner()
            .map_err(|error| CoreError::Io(error.to_string()))?;
        file.sync_all()?;
        Ok(())
    }

    /// Loads a snapshot written by `save` for the same configuration; returns it and the
    /// sequence number it reflects. Any mismatch or damage is `CoreError::Corrupt`.
    pub fn load(config: IndexConfig, directory: &Path) -> CoreResult<(CollectionIndex, u64)> {
        config.validate()?;
        let state_path = directory.join(STATE_FILE);
        let file = File::open(&state_path)?;
        let file_len = file.metadata()?.len();
        let mut input = Checksummed::new(BufReader::with_capacity(1 << 20, file));
        let corrupt = |what: &str| CoreError::Corrupt(format!("{}: {what}", state_path.display()));
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| corrupt("too short"))?;
        if &magic != SNAPSHOT_MAGIC {
            return Err(corrupt("not a Lookalike index snapshot"));
        }
        let version = read_u32(&mut input).map_err(|_| corrupt("truncated header"))?;
        if version != SNAPSHOT_VERSION {
            return Err(corrupt(&format!("unknown snapshot version {version}")));
        }
        let sequence = read_u64(&mut input).map_err(|_| corrupt("truncated header"))?;
        let ndim = read_u64(&mut input).map_err(|_| corrupt("truncated header"))? as usize;
        let mut codes = [0u8; 2];
        input
            .read_exact(&mut codes)
            .map_err(|_| corrupt("truncated header"))?;
        if ndim != config.ndim
            || codes[0] != metric_code(config.metric)
            || Precision::from_code(codes[1]) != Some(config.precision)
        {
            return Err(corrupt("snapshot was written for another configuration"));
        }
        let slots = read_u64(&mut input).map_err(|_| corrupt("truncated header"))? as usize;
        let removed_since_rebuild =
            read_u64(&mut input).map_err(|_| corrupt("truncated header"))? as usize;
        let hnsw_crc = read_u32(&mut input).map_err(|_| corrupt("truncated header"))?;
        let live_count = read_u64(&mut input).map_err(|_| corrupt("truncated header"))? as usize;
        let row = config.row_len();
        let element: usize = if config.is_binary() { 1 } else { 4 };
        let needed = (live_count as u128) * 4
            + (slots as u128) * 8
            + (slots as u128) * (row as u128) * (element as u128);
        if slots as u64 > MAX_KEY + 1 || live_count > slots || needed > file_len as u128 {
            return Err(corrupt("sizes in the header do not fit the file"));
        }
        let mut live = Bitset::new(slots);
        let mut buffer = vec![0u8; live_count * 4];
        input
            .read_exact(&mut buffer)
            .map_err(|_| corrupt("truncated live keys"))?;
        for bytes in buffer.chunks_exact(4) {
            let key = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
            if key as usize >= slots {
                return Err(corrupt("live key out of range"));
            }
            live.insert(key);
        }
        let mut buffer = vec![0u8; slots * 8];
        input
            .read_exact(&mut buffer)
            .map_err(|_| corrupt("truncated groups"))?;
        let groups: Vec<u64> = buffer
            .chunks_exact(8)
            .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
            .collect();
        let mut store = Store::default();
        let mut buffer = vec![0u8; slots * row * element];
        input
            .read_exact(&mut buffer)
            .map_err(|_| corrupt("truncated vectors"))?;
        if config.is_binary() {
            store.bits = buffer;
        } else {
            store.floats = buffer
                .chunks_exact(4)
                .map(|bytes| f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                .collect();
        }
        let fields = FieldIndexes::load(&mut input)?;
        let computed = input.hasher.clone().finalize();
        let stored = read_u32(&mut input.inner).map_err(|_| corrupt("missing checksum"))?;
        if computed != stored {
            return Err(corrupt("checksum mismatch"));
        }
        let hnsw_path = directory.join(HNSW_FILE);
        if file_crc(&hnsw_path).map_err(|_| corrupt("graph file unreadable"))? != hnsw_crc {
            return Err(corrupt("graph file checksum mismatch"));
        }
        let hnsw = Hnsw::new(&config.hnsw_options())?;
        let hnsw_path_str = hnsw_path
            .to_str()
            .ok_or_else(|| CoreError::Io("snapshot path is not valid UTF-8".into()))?;
        hnsw.load(hnsw_path_str)
            .map_err(|error| corrupt(&format!("graph: {}", error.what())))?;
        hnsw.reserve_capacity_and_threads(hnsw.capacity().max(slots).max(64), hnsw_threads())?;
        if hnsw.size() != live_count {
            return Err(corrupt("graph and live keys disagree"));
        }
        let index = CollectionIndex {
            state: RwLock::new(State {
                hnsw,
                store,
                slots,
                live_count: live.count(),
                generation: 0,
                live,
                groups,
                fields,
                removed_since_rebuild,
            }),
            default_ef: AtomicUsize::new(config.expansion_search),
            filter_cache: Mutex::new(Vec::new()),
            config,
            writer: Mutex::new(()),
            counters: Counters::default(),
            rebuilding: Mutex::new(()),
            rebuild_log: Mutex::new(None),
        };
        Ok((index, sequence))
    }
}

/// Vectors copied out of the store, with which of the requested keys were present.
#[derive(Clone, Debug, Default)]
pub struct StoredVectors {
    pub floats: Vec<f32>,
    pub bits: Vec<u8>,
    pub found: Vec<bool>,
}

/// A reader or writer that checksums every byte passing through it.
struct Checksummed<T> {
    inner: T,
    hasher: crc32fast::Hasher,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Checksummed<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

fn file_crc(path: &Path) -> CoreResult<u32> {
    let mut file = File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buffer[..read]);
    }
}

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::Cos => 0,
        Metric::Ip => 1,
        Metric::L2sq => 2,
        Metric::Hamming => 3,
    }
}

fn read_u32<R: Read>(input: &mut R) -> std::io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64<R: Read>(input: &mut R) -> std::io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn vectors(n: usize, ndim: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n * ndim).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
    }

    fn index(n: usize, ndim: usize, fields: &[&str]) -> (CollectionIndex, Vec<f32>) {
        let mut config = IndexConfig::new(ndim, Metric::Cos, Precision::F32);
        config.fields = fields.iter().map(|f| f.to_string()).collect();
        config.exact_threshold = 100;
        let index = CollectionIndex::new(config).unwrap();
        let data = vectors(n, ndim, 7);
        let keys: Vec<u64> = (0..n as u64).collect();
        index.add(&keys, Vectors::F32(&data), None, 2).unwrap();
        let entries: Vec<(u64, String, Vec<FieldValue>)> = (0..n as u64)
            .map(|key| {
                (
                    key,
                    "bucket".to_string(),
                    vec![FieldValue::Num((key % 100) as f64)],
                )
            })
            .collect();
        if !fields.is_empty() {
            index.index_fields(&entries).unwrap();
        }
        (index, data)
    }

    fn brute_force(
        data: &[f32],
        ndim: usize,
        query: &[f32],
        allowed: impl Fn(u64) -> bool,
        k: usize,
    ) -> Vec<u64> {
        let mut q = query.to_vec();
        distance::normalize(&mut q);
        let mut scored: Vec<(f32, u64)> = data
            .chunks_exact(ndim)
            .enumerate()
            .filter(|(key, _)| allowed(*key as u64))
            .map(|(key, row)| {
                let mut r = row.to_vec();
                distance::normalize(&mut r);
                (1.0 - distance::scalar::dot_f32(&q, &r), key as u64)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.into_iter().take(k).map(|(_, key)| key).collect()
    }

    fn filter_lt(bound: f64) -> Expr {
        Expr::Range {
            field: "bucket".into(),
            lower: None,
            upper: Some((bound, false)),
        }
    }

    #[test]
    fn planner_scans_exactly_when_few_keys_pass() {
        let (index, data) = index(3000, 16, &["bucket"]);
        let query = &data[..16];
        let options = SearchOptions {
            limit: 10,
            filter: Some(filter_lt(2.0)),
            ..Default::default()
        };
        let result = index.search(Vectors::F32(query), &options).unwrap();
        assert_eq!(result.plan, Plan::Exact);
        let truth = brute_force(&data, 16, query, |key| key % 100 < 2, 10);
        assert_eq!(
            result.hits.iter().map(|hit| hit.key).collect::<Vec<_>>(),
            truth
        );
    }

    #[test]
    fn planner_uses_the_filtered_graph_for_broad_filters() {
        let (index, data) = index(3000, 16, &["bucket"]);
        let query = &data[16 * 5..16 * 6];
        let options = SearchOptions {
            limit: 10,
            ef: Some(128),
            filter: Some(filter_lt(50.0)),
            ..Default::default()
        };
        let result = index.search(Vectors::F32(query), &options).unwrap();
        assert_eq!(result.plan, Plan::FilteredGraph);
        assert_eq!(result.hits.len(), 10);
        assert!(result.hits.iter().all(|hit| hit.key % 100 < 50));
        let truth = brute_force(&data, 16, query, |key| key % 100 < 50, 10);
        let found = result
            .hits
            .iter()
            .filter(|hit| truth.contains(&hit.key))
            .count();
        assert!(found >= 8, "recall {found}/10");
    }

    #[test]
    fn unfiltered_search_is_reranked_exactly_and_paged_stably() {
        let (index, data) = index(2000, 16, &[]);
        let query = &data[16 * 9..16 * 10];
        let all = index
            .search(
                Vectors::F32(query),
                &SearchOptions {
                    limit: 40,
                    ef: Some(64),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(all.plan, Plan::Graph);
        assert_eq!(all.hits[0].key, 9);
        assert!(all.hits[0].distance.abs() < 1e-5);
        for page in 0..4 {
            let options = SearchOptions {
                limit: 10,
                offset: page * 10,
                ef: Some(64),
                ..Default::default()
            };
            let hits = index.search(Vectors::F32(query), &options).unwrap().hits;
            assert_eq!(hits, all.hits[page * 10..page * 10 + 10]);
        }
    }

    #[test]
    fn removed_keys_never_come_back_and_rebuild_keeps_answers() {
        let (index, data) = index(1500, 8, &["bucket"]);
        let removed: Vec<u64> = (0..1500).filter(|key| key % 3 == 0).collect();
        assert_eq!(index.remove(&removed).unwrap(), 500);
        assert_eq!(index.remove(&removed).unwrap(), 0);
        let query = &data[..8];
        let options = SearchOptions {
            limit: 20,
            exact: true,
            ..Default::default()
        };
        let before = index.search(Vectors::F32(query), &options).unwrap();
        assert!(before.hits.iter().all(|hit| hit.key % 3 != 0));
        index.rebuild(2).unwrap();
        assert_eq!(index.search(Vectors::F32(query), &options).unwrap(), before);
        let graph = index
            .search(
                Vectors::F32(query),
                &SearchOptions {
                    limit: 20,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(graph.hits.iter().all(|hit| hit.key % 3 != 0));
    }

    #[test]
    fn grouped_search_matches_reference() {
        let (index, data) = index(800, 8, &[]);
        let groups: Vec<u64> = (0..800u64).map(|key| key % 37).collect();
        let keys: Vec<u64> = (0..800).collect();
        index.set_groups(&keys, &groups).unwrap();
        let query = &data[8 * 3..8 * 4];
        let ranked = brute_force(&data, 8, query, |_| true, 800);
        let mut expected: Vec<(u64, Vec<u64>)> = Vec::new();
        for key in ranked {
            match expected.iter_mut().find(|(group, _)| *group == key % 37) {
                Some((_, members)) if members.len() < 2 => members.push(key),
                Some(_) => {}
                None => expected.push((key % 37, vec![key])),
            }
        }
        let options = SearchOptions {
            limit: 4,
            offset: 2,
            exact: true,
            ..Default::default()
        };
        let result = index
            .search_grouped(Vectors::F32(query), &options, 2)
            .unwrap();
        let got: Vec<(u64, Vec<u64>)> = result
            .groups
            .iter()
            .map(|g| (g.group, g.hits.iter().map(|hit| hit.key).collect()))
            .collect();
        assert_eq!(got, expected[2..6].to_vec());
    }

    #[test]
    fn bad_input_is_an_error_and_changes_nothing() {
        let (index, _) = index(100, 4, &["bucket"]);
        let nan = [1.0, f32::NAN, 0.0, 0.0];
        assert!(matches!(
            index.add(&[500], Vectors::F32(&nan), None, 1),
            Err(CoreError::NonFiniteVector { .. })
        ));
        assert!(matches!(
            index.add(&[500], Vectors::F32(&[1.0; 3]), None, 1),
            Err(CoreError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            index.add(&[500], Vectors::F32(&[0.0; 4]), None, 1),
            Err(CoreError::ZeroVector { .. })
        ));
        assert!(matches!(
            index.add(&[7, 7], Vectors::F32(&[1.0; 8]), None, 1),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            index.add(&[MAX_KEY + 1], Vectors::F32(&[1.0; 4]), None, 1),
            Err(CoreError::KeyOutOfRange { .. })
        ));
        assert!(matches!(
            index.add(&[1], Vectors::Bits(&[1; 4]), None, 1),
            Err(CoreError::InvalidArgument(_))
        ));
        assert_eq!(index.len(), 100);
        let query = SearchOptions {
            limit: 3,
            ef: Some(0),
            ..Default::default()
        };
        assert!(index.search(Vectors::F32(&[1.0; 4]), &query).is_err());
        let unknown = SearchOptions {
            limit: 3,
            filter: Some(Expr::Eq {
                field: "nope".into(),
                value: FieldValue::Null,
            }),
            ..Default::default()
        };
        assert!(index.search(Vectors::F32(&[1.0; 4]), &unknown).is_err());
        let mut config = IndexConfig::new(4, Metric::L2sq, Precision::I8);
        assert!(matches!(
            CollectionIndex::new(config.clone()),
            Err(CoreError::Unsupported(_))
        ));
        config.precision = Precision::F32;
        config.ndim = 0;
        assert!(CollectionIndex::new(config).is_err());
    }

    #[test]
    fn snapshot_round_trip_and_damage() {
        let (index, data) = index(700, 8, &["bucket"]);
        index.remove(&[1, 2, 3]).unwrap();
        let directory =
            std::env::temp_dir().join(format!("lookalike-index-test-{}", std::process::id()));
        index.save(&directory, 42).unwrap();
        let (loaded, sequence) = CollectionIndex::load(index.config().clone(), &directory).unwrap();
        assert_eq!(sequence, 42);
        assert_eq!(loaded.len(), 697);
        let options = SearchOptions {
            limit: 10,
            filter: Some(filter_lt(30.0)),
            ..Default::default()
        };
        assert_eq!(
            loaded.search(Vectors::F32(&data[..8]), &options).unwrap(),
            index.search(Vectors::F32(&data[..8]), &options).unwrap()
        );
        let mut other = index.config().clone();
        other.ndim = 9;
        assert!(matches!(
            CollectionIndex::load(other, &directory),
            Err(CoreError::Corrupt(_))
        ));
        let state = directory.join(STATE_FILE);
        let bytes = fs::read(&state).unwrap();
        for cut in [0, 7, 30, bytes.len() / 2, bytes.len() - 1] {
            fs::write(&state, &bytes[..cut]).unwrap();
            assert!(
                CollectionIndex::load(index.config().clone(), &directory).is_err(),
                "cut at {cut}"
            );
        }
        for position in [60, bytes.len() / 2, bytes.len() - 3] {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            fs::write(&state, &flipped).unwrap();
            assert!(
                CollectionIndex::load(index.config().clone(), &directory).is_err(),
                "flip at {position}"
            );
        }
        fs::write(&state, &bytes).unwrap();
        assert!(CollectionIndex::load(index.config().clone(), &directory).is_ok());
        let graph = directory.join(HNSW_FILE);
        let mut graph_bytes = fs::read(&graph).unwrap();
        let middle = graph_bytes.len() / 2;
        graph_bytes[middle] ^= 0x10;
        fs::write(&graph, &graph_bytes).unwrap();
        assert!(matches!(
            CollectionIndex::load(index.config().clone(), &directory),
            Err(CoreError::Corrupt(_))
        ));
        fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn binary_vectors_use_hamming() {
        let config = IndexConfig::new(64, Metric::Hamming, Precision::Binary);
        let index = CollectionIndex::new(config).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let rows: Vec<u8> = (0..200 * 8).map(|_| rng.gen()).collect();
        let keys: Vec<u64> = (0..200).collect();
        index.add(&keys, Vectors::Bits(&rows), None, 2).unwrap();
        let mut query = rows[8 * 17..8 * 18].to_vec();
        query[0] ^= 0b101;
        let result = index
            .search(
                Vectors::Bits(&query),
                &SearchOptions {
                    limit: 1,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            result.hits[0],
            Hit {
                key: 17,
                distance: 2.0
            }
        );
    }
}
