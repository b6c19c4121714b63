//! Model-based property test of `CollectionIndex`: random sequences of adds (new and replaced
//! keys, with groups and field values), removals, field updates, group moves, rebuilds and
//! snapshot round trips, checked after each step against a plain model (a map of key ->
//! vector, group, field values) with brute-force search, filtering and grouping.
//!
//! Vectors have small integer components and the metric is `l2sq` or `ip`, so every distance is
//! exact in `f32`: exact searches must equal the brute force hit for hit (ties broken by key,
//! as the core promises). Planner-chosen searches run with tiny beams and fixed thresholds so
//! the graph, filtered-graph and exact plans all occur; they must return only passing live keys,
//! at their true distances, in ranking order, and `limit` hits whenever that many pass.
//!
//! Filters come from a small pool per case and carry a cache key half the time, so a cached
//! filter result is reused across writes: a stale cache shows up as a wrong answer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use lookalike_core::distance::Metric;
use lookalike_core::fields::FieldValue;
use lookalike_core::filter::Expr;
use lookalike_core::group::Hit;
use lookalike_core::index::{
    CollectionIndex, IndexConfig, Plan, Precision, SearchOptions, Vectors, NO_GROUP,
};
use proptest::prelude::*;

const NDIM: usize = 4;
const FIELDS: [&str; 2] = ["f", "g"];
const KEYS: u64 = 40;

#[derive(Clone, Debug)]
struct Rec {
    vector: Vec<f32>,
    group: u64,
    fields: [Vec<FieldValue>; 2],
}

#[derive(Clone, Debug)]
struct Search {
    query: Vec<f32>,
    limit: usize,
    offset: usize,
    exact: bool,
    ef: Option<usize>,
    filter: Option<usize>,
    cached: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Add(Vec<(u64, Rec)>),
    Remove(Vec<u64>),
    SetFields(u64, [Vec<FieldValue>; 2]),
    SetGroup(u64, u64),
    Rebuild,
    SaveLoad,
    Search(Search),
    Grouped(Search, usize),
    Batch(Vec<Vec<f32>>, Search),
    Evaluate(usize),
}

// -- strategies --------------------------------------------------------------------------------

fn vector() -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec((-3i8..4).prop_map(f32::from), NDIM)
        .prop_filter("not zero", |v| v.iter().any(|x| *x != 0.0))
}

fn value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        prop::sample::select(vec!["x", "y", "1"]).prop_map(|s| FieldValue::Str(s.to_string())),
        (-2i32..3).prop_map(|v| FieldValue::Num(f64::from(v) * 0.5)),
        Just(FieldValue::Num(-0.0)),
        any::<bool>().prop_map(FieldValue::Bool),
        Just(FieldValue::Null),
    ]
}

fn field_values() -> impl Strategy<Value = [Vec<FieldValue>; 2]> {
    let values = || proptest::collection::vec(value(), 0..3);
    (values(), values()).prop_map(|(f, g)| [f, g])
}

fn group() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 0u64..4, 1 => Just(NO_GROUP)]
}

fn record() -> impl Strategy<Value = Rec> {
    (vector(), group(), field_values()).prop_map(|(vector, group, fields)| Rec {
        vector,
        group,
        fields,
    })
}

fn field() -> impl Strategy<Value = String> {
    prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string)
}

fn bound() -> impl Strategy<Value = Option<(f64, bool)>> {
    proptest::option::of(((-3i32..4).prop_map(|v| f64::from(v) * 0.5), any::<bool>()))
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        Just(Expr::All),
        Just(Expr::Nothing),
        (field(), value()).prop_map(|(field, value)| Expr::Eq { field, value }),
        (field(), proptest::collection::vec(value(), 0..3))
            .prop_map(|(field, values)| Expr::In { field, values }),
        (field(), bound(), bound()).prop_map(|(field, lower, upper)| Expr::Range {
            field,
            lower,
            upper
        }),
        field().prop_map(|field| Expr::Exists { field }),
        proptest::collection::vec(0u64..KEYS + 5, 0..8).prop_map(Expr::Keys),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Expr::And),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Expr::Or),
            inner.prop_map(|e| Expr::Not(Box::new(e))),
        ]
    })
}

fn search() -> impl Strategy<Value = Search> {
    (
        vector(),
        1usize..6,
        0usize..4,
        prop::bool::weighted(0.35),
        proptest::option::of(1usize..5),
        proptest::option::of(0usize..3),
        any::<bool>(),
    )
        .prop_map(|(query, limit, offset, exact, ef, filter, cached)| Search {
            query,
            limit,
            offset,
            exact,
            ef,
            filter,
            cached,
        })
}

fn batch(sizes: std::ops::Range<usize>) -> impl Strategy<Value = Vec<(u64, Rec)>> {
    proptest::collection::btree_map(0..KEYS, record(), sizes)
        .prop_map(|map| map.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => batch(1..8).prop_map(Op::Add),
        2 => proptest::collection::vec(0..KEYS + 3, 0..5).prop_map(Op::Remove),
        2 => (0..KEYS, field_values()).prop_map(|(key, fields)| Op::SetFields(key, fields)),
        1 => (0..KEYS, group()).prop_map(|(key, group)| Op::SetGroup(key, group)),
        1 => Just(Op::Rebuild),
        1 => Just(Op::SaveLoad),
        5 => search().prop_map(Op::Search),
        2 => (search(), 1usize..4).prop_map(|(search, size)| Op::Grouped(search, size)),
        1 => (proptest::collection::vec(vector(), 0..4), search()).prop_map(|(queries, search)| Op::Batch(queries, search)),
        2 => (0usize..3).prop_map(Op::Evaluate),
    ]
}

// -- the reference -----------------------------------------------------------------------------

fn same_value(a: &FieldValue, b: &FieldValue) -> bool {
    match (a, b) {
        (FieldValue::Str(x), FieldValue::Str(y)) => x == y,
        (FieldValue::Num(x), FieldValue::Num(y)) => x == y,
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x == y,
        (FieldValue::Null, FieldValue::Null) => true,
        _ => false,
    }
}

fn field_index(name: &str) -> usize {
    FIELDS
        .iter()
        .position(|f| *f == name)
        .expect("a known field")
}

/// Whether a live record passes `expr`, read straight off its values.
fn passes(expr: &Expr, key: u64, rec: &Rec) -> bool {
    let values = |field: &str| &rec.fields[field_index(field)];
    match expr {
        Expr::All => true,
        Expr::Nothing => false,
        Expr::Eq { field, value } => values(field).iter().any(|v| same_value(v, value)),
        Expr::In {
            field,
            values: wanted,
        } => values(field)
            .iter()
            .any(|v| wanted.iter().any(|w| same_value(v, w))),
        Expr::Range {
            field,
            lower,
            upper,
        } => values(field).iter().any(|v| match v {
            FieldValue::Num(x) => {
                lower.is_none_or(|(lo, inclusive)| if inclusive { *x >= lo } else { *x > lo })
                    && upper
                        .is_none_or(|(hi, inclusive)| if inclusive { *x <= hi } else { *x < hi })
            }
            _ => false,
        }),
        Expr::Exists { field } => !values(field).is_empty(),
        Expr::Keys(keys) => keys.contains(&key),
        Expr::And(children) => children.iter().all(|c| passes(c, key, rec)),
        Expr::Or(children) => children.iter().any(|c| passes(c, key, rec)),
        Expr::Not(inner) => !passes(inner, key, rec),
    }
}

fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2sq => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        _ => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(),
    }
}

struct Model {
    metric: Metric,
    records: BTreeMap<u64, Rec>,
}

impl Model {
    /// Every passing record, ranked by (distance, key).
    fn ranked(&self, query: &[f32], filter: Option<&Expr>) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .records
            .iter()
            .filter(|(key, rec)| filter.is_none_or(|f| passes(f, **key, rec)))
            .map(|(key, rec)| Hit {
                key: *key,
                distance: distance(self.metric, &rec.vector, query),
            })
            .collect();
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.key.cmp(&b.key)));
        hits
    }
}

fn entries(key: u64, fields: &[Vec<FieldValue>; 2]) -> Vec<(u64, String, Vec<FieldValue>)> {
    FIELDS
        .iter()
        .zip(fields)
        .map(|(name, values)| (key, name.to_string(), values.clone()))
        .collect()
}

static SNAPSHOTS: AtomicUsize = AtomicUsize::new(0);

fn snapshot_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "lookalike-index-model-{}-{}",
        std::process::id(),
        SNAPSHOTS.fetch_add(1, Ordering::Relaxed)
    ))
}

// -- the run -----------------------------------------------------------------------------------

fn options(pool: &[Expr], s: &Search, exact: bool) -> SearchOptions {
    let filter = s.filter.map(|i| pool[i].clone());
    SearchOptions {
        limit: s.limit,
        offset: s.offset,
        ef: s.ef,
        exact,
        filter_key: (s.cached && filter.is_some()).then(|| format!("{filter:?}")),
        filter,
    }
}

fn check_search(
    index: &CollectionIndex,
    model: &Model,
    pool: &[Expr],
    s: &Search,
) -> Result<(), TestCaseError> {
    let options = options(pool, s, s.exact);
    let filter = options.filter.clone();
    let result = index
        .search(Vectors::F32(&s.query), &options)
        .map_err(|e| TestCaseError::fail(format!("search failed: {e}")))?;
    let ranked = model.ranked(&s.query, filter.as_ref());
    let window: Vec<Hit> = ranked
        .iter()
        .skip(s.offset)
        .take(s.limit)
        .copied()
        .collect();
    if s.exact || result.plan == Plan::Exact {
        // An exact answer is the brute force's, ties broken by key.
        prop_assert_eq!(&result.hits, &window, "plan {:?}", result.plan);
        return Ok(());
    }
    // A graph answer: passing live keys at their true distances, in order, `limit` of them
    // whenever that many pass (the planner falls back to a scan when the walk runs short).
    prop_assert_eq!(result.hits.len(), window.len(), "plan {:?}", result.plan);
    for hit in &result.hits {
        let truth = ranked.iter().find(|h| h.key == hit.key);
        prop_assert!(
            truth.is_some(),
            "key {} does not pass or is not live",
            hit.key
        );
        prop_assert_eq!(truth.map(|h| h.distance), Some(hit.distance));
    }
    prop_assert!(result
        .hits
        .windows(2)
        .all(|w| (w[0].distance, w[0].key) < (w[1].distance, w[1].key)));
    if filter.as_ref().is_some_and(|f| *f != Expr::All) {
        prop_assert!(
            result.plan != Plan::Graph,
            "a filtered search used the plain graph"
        );
    }
    Ok(())
}

/// A batch search answers each query as a search of that query alone would.
fn check_batch(
    index: &CollectionIndex,
    pool: &[Expr],
    queries: &[Vec<f32>],
    s: &Search,
) -> Result<(), TestCaseError> {
    let options = options(pool, s, s.exact);
    let rows: Vec<f32> = queries.concat();
    let batch = index
        .search_batch(Vectors::F32(&rows), queries.len(), &options, 2)
        .map_err(|e| TestCaseError::fail(format!("batch search failed: {e}")))?;
    prop_assert_eq!(batch.len(), queries.len());
    for (query, got) in queries.iter().zip(&batch) {
        let alone = index.search(Vectors::F32(query), &options).unwrap();
        prop_assert_eq!(got, &alone);
    }
    Ok(())
}

fn check_grouped(
    index: &CollectionIndex,
    model: &Model,
    pool: &[Expr],
    s: &Search,
    size: usize,
) -> Result<(), TestCaseError> {
    let options = options(pool, s, true);
    let filter = options.filter.clone();
    let result = index
        .search_grouped(Vectors::F32(&s.query), &options, size)
        .map_err(|e| TestCaseError::fail(format!("grouped search failed: {e}")))?;
    // Naive group-by over the sorted hits: a record without a group is a group of its own.
    let mut groups: Vec<(u64, Vec<Hit>)> = Vec::new();
    for hit in model.ranked(&s.query, filter.as_ref()) {
        let group = model.records[&hit.key].group;
        match groups
            .iter_mut()
            .find(|(g, _)| group != NO_GROUP && *g == group)
        {
            Some((_, hits)) if hits.len() < size => hits.push(hit),
            Some(_) => {}
            None => groups.push((group, vec![hit])),
        }
    }
    let expected: Vec<(u64, Vec<Hit>)> = groups.into_iter().skip(s.offset).take(s.limit).collect();
    let got: Vec<(u64, Vec<Hit>)> = result
        .groups
        .into_iter()
        .map(|g| (g.group, g.hits))
        .collect();
    prop_assert_eq!(got, expected);
    Ok(())
}

fn run(
    metric: Metric,
    exact_threshold: usize,
    pool: Vec<Expr>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut config = IndexConfig::new(NDIM, metric, Precision::F32);
    config.fields = FIELDS.iter().map(|f| f.to_string()).collect();
    config.exact_threshold = exact_threshold;
    config.expansion_add = 16;
    let mut index = CollectionIndex::new(config.clone()).unwrap();
    let mut model = Model {
        metric,
        records: BTreeMap::new(),
    };
    for op in ops {
        match op {
            Op::Add(batch) => {
                // As the engine does: the old field values of a replaced key go first.
                let old: Vec<_> = batch
                    .iter()
                    .filter_map(|(key, _)| model.records.get(key).map(|r| entries(*key, &r.fields)))
                    .flatten()
                    .collect();
                index.unindex_fields(&old).unwrap();
                let keys: Vec<u64> = batch.iter().map(|(key, _)| *key).collect();
                let rows: Vec<f32> = batch.iter().flat_map(|(_, r)| r.vector.clone()).collect();
                let groups: Vec<u64> = batch.iter().map(|(_, r)| r.group).collect();
                index
                    .add(&keys, Vectors::F32(&rows), Some(&groups), 2)
                    .unwrap();
                let new: Vec<_> = batch
                    .iter()
                    .flat_map(|(key, r)| entries(*key, &r.fields))
                    .collect();
                index.index_fields(&new).unwrap();
                model.records.extend(batch);
            }
            Op::Remove(keys) => {
                let mut unique = keys.clone();
                unique.sort_unstable();
                unique.dedup();
                let old: Vec<_> = unique
                    .iter()
                    .filter_map(|key| model.records.get(key).map(|r| entries(*key, &r.fields)))
                    .flatten()
                    .collect();
                index.unindex_fields(&old).unwrap();
                let present = unique
                    .iter()
                    .filter(|k| model.records.contains_key(k))
                    .count();
                prop_assert_eq!(index.remove(&keys).unwrap(), present);
                for key in unique {
                    model.records.remove(&key);
                }
            }
            Op::SetFields(key, fields) => {
                if let Some(rec) = model.records.get_mut(&key) {
                    index.unindex_fields(&entries(key, &rec.fields)).unwrap();
                    index.index_fields(&entries(key, &fields)).unwrap();
                    rec.fields = fields;
                }
            }
            Op::SetGroup(key, group) => {
                if let Some(rec) = model.records.get_mut(&key) {
                    index.set_groups(&[key], &[group]).unwrap();
                    rec.group = group;
                }
            }
            Op::Rebuild => index.rebuild(2).unwrap(),
            Op::SaveLoad => {
                let directory = snapshot_dir();
                index.save(&directory, 7).unwrap();
                let loaded = CollectionIndex::load(config.clone(), &directory);
                let _ = std::fs::remove_dir_all(&directory);
                let (loaded, sequence) = loaded.unwrap();
                prop_assert_eq!(sequence, 7);
                index = loaded;
            }
            Op::Search(s) => check_search(&index, &model, &pool, &s)?,
            Op::Grouped(s, size) => check_grouped(&index, &model, &pool, &s, size)?,
            Op::Batch(queries, s) => check_batch(&index, &pool, &queries, &s)?,
            Op::Evaluate(i) => {
                let got = index.evaluate(&pool[i]).unwrap().to_vec();
                let expected: Vec<u64> = model
                    .records
                    .iter()
                    .filter(|(key, rec)| passes(&pool[i], **key, rec))
                    .map(|(key, _)| *key)
                    .collect();
                prop_assert_eq!(got, expected, "{:?}", pool[i]);
            }
        }
        // After every step: the live keys and the stored vectors are the model's.
        prop_assert_eq!(index.len(), model.records.len());
        prop_assert_eq!(
            index.keys(),
            model.records.keys().copied().collect::<Vec<_>>()
        );
        let asked: Vec<u64> = (0..KEYS).collect();
        let stored = index.get_vectors(&asked).unwrap();
        for key in asked {
            let present = model.records.get(&key);
            prop_assert_eq!(stored.found[key as usize], present.is_some());
            if let Some(rec) = present {
                let at = key as usize * NDIM;
                prop_assert_eq!(&stored.floats[at..at + NDIM], &rec.vector[..]);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn index_matches_model(metric in prop_oneof![Just(Metric::L2sq), Just(Metric::Ip)],
                           exact_threshold in prop_oneof![Just(0usize), 1usize..6],
                           pool in proptest::collection::vec(expr(), 3),
                           first in batch(5..30),
                           ops in proptest::collection::vec(op(), 1..40)) {
        run(metric, exact_threshold, pool, [vec![Op::Add(first)], ops].concat())?;
    }
}
