//! Filter expressions and their evaluation into the set of passing keys.
//!
//! The Python layer compiles a MongoDB-style filter into an [`Expr`] tree; evaluating it
//! once up front into a dense [`Bitset`] lets the planner decide between an exact scan of
//! the passing keys and an HNSW predicate search (which probes `Bitset::contains` per
//! visited node) knowing exactly how selective the filter is.
//!
//! Trees come from user input, so everything that could fail is checked by one iterative
//! pass before evaluation starts: that makes errors independent of evaluation order and
//! short-circuits, and bounds the depth of the recursive evaluator by [`MAX_DEPTH`].

use roaring::MultiOps;

use crate::bitset::Bitset;
use crate::error::{CoreError, CoreResult};
use crate::fields::{FieldIndexes, FieldValue};

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Every live key.
    All,
    /// No key.
    Nothing,
    /// Any value of the field equals `value`.
    Eq {
        field: String,
        value: FieldValue,
    },
    /// Any value of the field equals any of `values`.
    In {
        field: String,
        values: Vec<FieldValue>,
    },
    /// Any numeric value of the field lies within the bounds (`(value, inclusive)`).
    Range {
        field: String,
        lower: Option<(f64, bool)>,
        upper: Option<(f64, bool)>,
    },
    /// The field is present (with any value, `null` included).
    Exists {
        field: String,
    },
    /// A key set computed elsewhere (e.g. over non-indexed metadata).
    Keys(Vec<u64>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// The live keys that the inner expression rejects.
    Not(Box<Expr>),
}

/// The deepest expression accepted, counting a leaf as depth 1.
pub const MAX_DEPTH: usize = 64;

/// Nesting depth of `expr`: 1 for a leaf (and for an empty `And`/`Or`), plus one per
/// enclosing `And`/`Or`/`Not`. Iterative, so arbitrarily deep input cannot overflow the
/// stack here.
pub fn depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1usize)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        match node {
            Expr::And(children) | Expr::Or(children) => {
                stack.extend(children.iter().map(|c| (c, level + 1)));
            }
            Expr::Not(inner) => stack.push((inner, level + 1)),
            _ => {}
        }
    }
    deepest
}

/// Evaluate `expr` into the set of passing keys, always a subset of `live` (the keys
/// currently in the collection) and over the same universe (`len() == live.len()`).
/// `Not(x)` is `live` minus `x`; `And([])` is `live`; `Or([])` is empty.
///
/// Errors (`InvalidArgument`): a field that is not indexed (named in the message), a NaN
/// range bound, or nesting deeper than [`MAX_DEPTH`].
pub fn evaluate(expr: &Expr, fields: &FieldIndexes, live: &Bitset) -> CoreResult<Bitset> {
    validate(expr, fields)?;
    Evaluator::new(fields, live).eval(expr)
}

/// A cheap upper bound on `evaluate(..)?.count()`, computed from bitmap cardinalities
/// without materializing any set, for the planner to pick a strategy before evaluating.
/// Same errors as [`evaluate`].
pub fn count_upper_bound(expr: &Expr, fields: &FieldIndexes, live: &Bitset) -> CoreResult<usize> {
    validate(expr, fields)?;
    Evaluator::new(fields, live).estimate(expr)
}

fn validate(expr: &Expr, fields: &FieldIndexes) -> CoreResult<()> {
    let mut stack = vec![(expr, 1usize)];
    while let Some((node, level)) = stack.pop() {
        if level > MAX_DEPTH {
            return Err(CoreError::InvalidArgument(format!(
                "filter is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let field = match node {
            Expr::All | Expr::Nothing | Expr::Keys(_) => None,
            Expr::Eq { field, .. } | Expr::In { field, .. } | Expr::Exists { field } => Some(field),
            Expr::Range {
                field,
                lower,
                upper,
            } => {
                if [lower, upper]
                    .iter()
                    .any(|b| b.is_some_and(|(v, _)| v.is_nan()))
                {
                    return Err(CoreError::InvalidArgument(format!(
                        "range bound on field {field:?} is NaN"
                    )));
                }
                Some(field)
            }
            Expr::And(children) | Expr::Or(children) => {
                stack.extend(children.iter().map(|c| (c, level + 1)));
                None
            }
            Expr::Not(inner) => {
                stack.push((inner, level + 1));
                None
            }
        };
        if let Some(field) = field {
            if !fields.is_indexed(field) {
                return Err(CoreError::InvalidArgument(format!(
                    "field {field:?} is not indexed and cannot be filtered on"
                )));
            }
        }
    }
    Ok(())
}

/// Evaluation state shared down the (validated, so depth-bounded) recursion.
struct Evaluator<'a> {
    fields: &'a FieldIndexes,
    live: &'a Bitset,
    live_count: usize,
}

fn saturate(count: u64) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

impl<'a> Evaluator<'a> {
    fn new(fields: &'a FieldIndexes, live: &'a Bitset) -> Self {
        Evaluator {
            fields,
            live,
            live_count: live.count(),
        }
    }

    /// A field-index answer restricted to the live universe.
    fn leaf(&self, bitmap: &roaring::RoaringBitmap) -> Bitset {
        let mut out = Bitset::from_roaring(bitmap, self.live.len());
        out.and_with(self.live);
        out
    }

    fn eval(&self, expr: &Expr) -> CoreResult<Bitset> {
        let len = self.live.len();
        Ok(match expr {
            Expr::All => self.live.clone(),
            Expr::Nothing => Bitset::new(len),
            Expr::Eq { field, value } => self.leaf(&self.fields.equal(field, value)?),
            Expr::In { field, values } => {
                let union = values.iter().map(|v| self.fields.equal(field, v)).union()?;
                self.leaf(&union)
            }
            Expr::Range {
                field,
                lower,
                upper,
            } => self.leaf(&self.fields.range(field, *lower, *upper)?),
            Expr::Exists { field } => self.leaf(&self.fields.exists(field)?),
            Expr::Keys(keys) => {
                let mut out = Bitset::from_keys(keys, len);
                out.and_with(self.live);
                out
            }
            Expr::And(children) => {
                // Most selective first, so the accumulator is small early and an empty
                // intersection skips the remaining children entirely.
                let mut order = Vec::with_capacity(children.len());
                for child in children {
                    order.push((self.estimate(child)?, child));
                }
                order.sort_by_key(|(estimate, _)| *estimate);
                let mut acc = self.live.clone();
                for (_, child) in order {
                    if acc.is_empty() {
                        break;
                    }
                    acc.and_with(&self.eval(child)?);
                }
                acc
            }
            Expr::Or(children) => {
                let mut acc = Bitset::new(len);
                for child in children {
                    acc.or_with(&self.eval(child)?);
                }
                acc
            }
            Expr::Not(inner) => {
                let mut acc = self.live.clone();
                acc.and_not_with(&self.eval(inner)?);
                acc
            }
        })
    }

    fn estimate(&self, expr: &Expr) -> CoreResult<usize> {
        let raw = match expr {
            Expr::All | Expr::Not(_) => self.live_count,
            Expr::Nothing => 0,
            Expr::Eq { field, value } => saturate(self.fields.equal_count(field, value)?),
            Expr::In { field, values } => {
                let mut total = 0usize;
                for value in values {
                    total = total.saturating_add(saturate(self.fields.equal_count(field, value)?));
                }
                total
            }
            Expr::Range {
                field,
                lower,
                upper,
            } => saturate(self.fields.range_count(field, *lower, *upper)?),
            Expr::Exists { field } => saturate(self.fields.exists_count(field)?),
            Expr::Keys(keys) => keys.len(),
            Expr::And(children) => {
                let mut least = self.live_count;
                for child in children {
                    least = least.min(self.estimate(child)?);
                }
                least
            }
            Expr::Or(children) => {
                let mut total = 0usize;
                for child in children {
                    total = total.saturating_add(self.estimate(child)?);
                }
                total
            }
        };
        Ok(raw.min(self.live_count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIELDS: [&str; 3] = ["a", "b", "c"];

    fn names() -> Vec<String> {
        FIELDS.iter().map(|s| s.to_string()).collect()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.to_string())
    }

    fn eq(field: &str, value: FieldValue) -> Expr {
        Expr::Eq {
            field: field.to_string(),
            value,
        }
    }

    /// A record: for each of FIELDS, its values (empty = absent).
    type Record = [Vec<FieldValue>; 3];

    fn index(records: &[Record]) -> FieldIndexes {
        let mut idx = FieldIndexes::new(&names());
        for (key, record) in records.iter().enumerate() {
            for (f, values) in record.iter().enumerate() {
                idx.insert(key as u64, FIELDS[f], values).unwrap();
            }
        }
        idx
    }

    fn values_equal(a: &FieldValue, b: &FieldValue) -> bool {
        match (a, b) {
            (FieldValue::Str(x), FieldValue::Str(y)) => x == y,
            (FieldValue::Num(x), FieldValue::Num(y)) => x == y,
            (FieldValue::Bool(x), FieldValue::Bool(y)) => x == y,
            (FieldValue::Null, FieldValue::Null) => true,
            _ => false,
        }
    }

    fn field_of(field: &str) -> usize {
        FIELDS.iter().position(|f| *f == field).unwrap()
    }

    /// The reference: evaluates one record directly, the way the spec reads.
    fn passes(expr: &Expr, key: u64, record: &Record) -> bool {
        match expr {
            Expr::All => true,
            Expr::Nothing => false,
            Expr::Eq { field, value } => record[field_of(field)]
                .iter()
                .any(|v| values_equal(v, value)),
            Expr::In { field, values } => record[field_of(field)]
                .iter()
                .any(|v| values.iter().any(|w| values_equal(v, w))),
            Expr::Range {
                field,
                lower,
                upper,
            } => record[field_of(field)].iter().any(|v| match v {
                FieldValue::Num(x) => {
                    lower.is_none_or(|(lo, inc)| if inc { *x >= lo } else { *x > lo })
                        && upper.is_none_or(|(hi, inc)| if inc { *x <= hi } else { *x < hi })
                }
                _ => false,
            }),
            Expr::Exists { field } => !record[field_of(field)].is_empty(),
            Expr::Keys(keys) => keys.contains(&key),
            Expr::And(children) => children.iter().all(|c| passes(c, key, record)),
            Expr::Or(children) => children.iter().any(|c| passes(c, key, record)),
            Expr::Not(inner) => !passes(inner, key, record),
        }
    }

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            prop::sample::select(vec!["x", "y", "1", ""]).prop_map(s),
            (-4i32..5).prop_map(|v| FieldValue::Num(v as f64 * 0.5)),
            Just(FieldValue::Num(-0.0)),
            any::<bool>().prop_map(FieldValue::Bool),
            Just(FieldValue::Null),
        ]
    }

    fn query_value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![9 => value(), 1 => Just(FieldValue::Num(f64::NAN))]
    }

    fn bound() -> impl Strategy<Value = Option<(f64, bool)>> {
        proptest::option::of(((-5i32..6).prop_map(|v| v as f64 * 0.5), any::<bool>()))
    }

    fn field() -> impl Strategy<Value = String> {
        prop::sample::select(FIELDS.to_vec()).prop_map(str::to_string)
    }

    fn expr() -> impl Strategy<Value = Expr> {
        let leaf = prop_oneof![
            Just(Expr::All),
            Just(Expr::Nothing),
            (field(), query_value()).prop_map(|(field, value)| Expr::Eq { field, value }),
            (field(), proptest::collection::vec(query_value(), 0..4))
                .prop_map(|(field, values)| Expr::In { field, values }),
            (field(), bound(), bound()).prop_map(|(field, lower, upper)| Expr::Range {
                field,
                lower,
                upper
            }),
            field().prop_map(|field| Expr::Exists { field }),
            proptest::collection::vec(0u64..80, 0..10).prop_map(Expr::Keys),
        ];
        leaf.prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Expr::And),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Expr::Or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    fn record() -> impl Strategy<Value = Record> {
        let values = || proptest::collection::vec(value(), 0..3);
        (values(), values(), values()).prop_map(|(a, b, c)| [a, b, c])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_reference(records in proptest::collection::vec(record(), 0..70),
                             live_mask in proptest::collection::vec(any::<bool>(), 70),
                             extra_len in 0usize..10,
                             expr in expr()) {
            let idx = index(&records);
            // Some indexed records are not live, and the universe may extend past them.
            let len = records.len() + extra_len;
            let mut live = Bitset::new(len);
            for (key, _) in live_mask.iter().enumerate().take(records.len()).filter(|(_, l)| **l) {
                live.insert(key as u64);
            }
            let got = evaluate(&expr, &idx, &live).unwrap();
            prop_assert_eq!(got.len(), live.len());
            let expected: Vec<u64> = live
                .iter()
                .filter(|&k| passes(&expr, k, &records[k as usize]))
                .collect();
            prop_assert_eq!(got.to_vec(), expected);
            prop_assert!(count_upper_bound(&expr, &idx, &live).unwrap() >= got.count());
        }
    }

    fn sample() -> (FieldIndexes, Bitset) {
        let records: Vec<Record> = vec![
            [vec![s("x")], vec![FieldValue::Num(1.0)], vec![]],
            [
                vec![s("y")],
                vec![FieldValue::Num(2.0)],
                vec![FieldValue::Null],
            ],
            [
                vec![],
                vec![FieldValue::Num(3.0), s("3")],
                vec![FieldValue::Bool(true)],
            ],
            [vec![s("x")], vec![], vec![]],
        ];
        let idx = index(&records);
        let live = Bitset::from_keys(&[0, 1, 2], 4);
        (idx, live)
    }

    #[test]
    fn not_stays_within_live() {
        let (idx, live) = sample();
        let not_x = Expr::Not(Box::new(eq("a", s("x"))));
        assert_eq!(evaluate(&not_x, &idx, &live).unwrap().to_vec(), vec![1, 2]);
        let not_nothing = Expr::Not(Box::new(Expr::Nothing));
        assert_eq!(evaluate(&not_nothing, &idx, &live).unwrap(), live);
        assert_eq!(evaluate(&Expr::And(vec![]), &idx, &live).unwrap(), live);
        assert!(evaluate(&Expr::Or(vec![]), &idx, &live).unwrap().is_empty());
        // Key 3 is indexed but not live; keys beyond the universe are ignored.
        assert_eq!(
            evaluate(&eq("a", s("x")), &idx, &live).unwrap().to_vec(),
            vec![0]
        );
        assert_eq!(
            evaluate(&Expr::Keys(vec![3, 1, 99, u64::MAX]), &idx, &live)
                .unwrap()
                .to_vec(),
            vec![1]
        );
        let exists_c = Expr::Exists { field: "c".into() };
        assert_eq!(
            evaluate(&exists_c, &idx, &live).unwrap().to_vec(),
            vec![1, 2]
        );
        let range = Expr::Range {
            field: "b".into(),
            lower: Some((1.0, false)),
            upper: None,
        };
        assert_eq!(evaluate(&range, &idx, &live).unwrap().to_vec(), vec![1, 2]);
        let inv = Expr::In {
            field: "b".into(),
            values: vec![s("3"), FieldValue::Num(1.0)],
        };
        assert_eq!(evaluate(&inv, &idx, &live).unwrap().to_vec(), vec![0, 2]);
        assert_eq!(count_upper_bound(&Expr::All, &idx, &live).unwrap(), 3);
        assert_eq!(count_upper_bound(&eq("a", s("x")), &idx, &live).unwrap(), 2);
    }

    #[test]
    fn errors_name_the_field_whatever_the_order() {
        let (idx, live) = sample();
        let bad = eq("secret", s("x"));
        for expr in [
            bad.clone(),
            Expr::And(vec![Expr::Nothing, bad.clone()]),
            Expr::Or(vec![Expr::All, Expr::Not(Box::new(bad.clone()))]),
            Expr::Exists {
                field: "secret".into(),
            },
        ] {
            match evaluate(&expr, &idx, &live) {
                Err(CoreError::InvalidArgument(m)) => assert!(m.contains("secret"), "{m}"),
                other => panic!("{other:?}"),
            }
            assert!(count_upper_bound(&expr, &idx, &live).is_err());
        }
        let nan = Expr::Range {
            field: "b".into(),
            lower: None,
            upper: Some((f64::NAN, true)),
        };
        assert!(matches!(
            evaluate(&nan, &idx, &live),
            Err(CoreError::InvalidArgument(_))
        ));
    }

    fn nested(levels: usize) -> Expr {
        let mut expr = eq("a", s("x"));
        for i in 0..levels {
            expr = if i % 2 == 0 {
                Expr::Not(Box::new(expr))
            } else {
                Expr::And(vec![Expr::All, expr])
            };
        }
        expr
    }

    #[test]
    fn max_depth() {
        let (idx, live) = sample();
        let ok = nested(MAX_DEPTH - 1);
        assert_eq!(depth(&ok), MAX_DEPTH);
        // 32 Nots (an even number) around `a == x`, interleaved with `And(All, ..)`.
        let result = evaluate(&ok, &idx, &live).unwrap();
        assert_eq!(result.to_vec(), vec![0]);
        let too_deep = nested(MAX_DEPTH);
        assert_eq!(depth(&too_deep), MAX_DEPTH + 1);
        assert!(
            matches!(evaluate(&too_deep, &idx, &live), Err(CoreError::InvalidArgument(m)) if m.contains("nested"))
        );
        assert_eq!(depth(&Expr::And(vec![])), 1);
        assert_eq!(
            depth(&Expr::Or(vec![Expr::All, Expr::Not(Box::new(Expr::All))])),
            3
        );
    }

    #[test]
    fn very_deep_input_is_rejected_without_recursion() {
        let (idx, live) = sample();
        let mut expr = Expr::All;
        for _ in 0..200_000 {
            expr = Expr::Not(Box::new(expr));
        }
        assert_eq!(depth(&expr), 200_001);
        assert!(evaluate(&expr, &idx, &live).is_err());
        // Dropping a chain this long recursively would overflow the test thread's stack.
        while let Expr::Not(inner) = expr {
            expr = *inner;
        }
    }
}
