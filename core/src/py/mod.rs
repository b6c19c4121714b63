//! PyO3 bindings: the private module `lookalike._core`.
//!
//! All Python-facing code lives here, so the rest of the crate stays plain Rust. Batches cross
//! the boundary as numpy arrays; inputs are copied into owned memory and the work runs with
//! the GIL released (`py.detach`). Every `CoreError` becomes a Python exception in one place,
//! `to_py_err`, using the classes of `lookalike.errors`.

use std::path::PathBuf;

use numpy::{
    IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PySequence, PyString, PyTuple};

use crate::distance::{self, Metric};
use crate::error::CoreError;
use crate::fields::FieldValue;
use crate::filter::{Expr, MAX_DEPTH};
use crate::index::{
    self, CollectionIndex, IndexConfig, Precision, SearchOptions, SearchResult, Vectors,
};

/// The one mapping from core errors to the exception classes of `lookalike.errors`.
fn to_py_err(py: Python<'_>, error: CoreError) -> PyErr {
    let class_name = match &error {
        CoreError::DimensionMismatch { .. } => "DimensionMismatchError",
        CoreError::NonFiniteVector { .. } | CoreError::ZeroVector { .. } => "InvalidVectorError",
        CoreError::LengthMismatch { .. }
        | CoreError::KeyOutOfRange { .. }
        | CoreError::InvalidArgument(_) => "InvalidInputError",
        CoreError::KeyNotFound { .. } => "NotFoundError",
        CoreError::Unsupported(_) => "UnsupportedError",
        CoreError::Index(_) => "InternalError",
        CoreError::Io(_) => "StorageError",
        CoreError::Corrupt(_) => "CorruptSnapshotError",
    };
    let message = error.to_string();
    match py
        .import("lookalike.errors")
        .and_then(|module| module.getattr(class_name))
        .and_then(|class| class.call1((message.clone(),)))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(_) => PyValueError::new_err(message),
    }
}

trait IntoPyResult<T> {
    fn py_result(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, CoreError> {
    fn py_result(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|error| to_py_err(py, error))
    }
}

fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    to_py_err(py, CoreError::InvalidArgument(message.into()))
}

fn field_value(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<FieldValue> {
    if value.is_none() {
        Ok(FieldValue::Null)
    } else if value.is_instance_of::<PyBool>() {
        Ok(FieldValue::Bool(value.extract::<bool>()?))
    } else if value.is_instance_of::<PyInt>() {
        // Integers beyond f64's exact range compare approximately, like in most databases.
        Ok(FieldValue::Num(value.extract::<f64>()?))
    } else if value.is_instance_of::<PyFloat>() {
        let number = value.extract::<f64>()?;
        if number.is_nan() {
            return Err(invalid(py, "NaN cannot be indexed or compared"));
        }
        Ok(FieldValue::Num(number))
    } else if value.is_instance_of::<PyString>() {
        Ok(FieldValue::Str(value.extract::<String>()?))
    } else {
        Err(invalid(
            py,
            format!("unsupported field value type {}", value.get_type().name()?),
        ))
    }
}

fn bound(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    inclusive: &Bound<'_, PyAny>,
) -> PyResult<Option<(f64, bool)>> {
    if value.is_none() {
        return Ok(None);
    }
    let number: f64 = value.extract()?;
    if number.is_nan() {
        return Err(invalid(py, "NaN is not a valid range bound"));
    }
    Ok(Some((number, inclusive.extract::<bool>()?)))
}

/// Converts the tuple form built by `lookalike.filters` into an `Expr`.
fn parse_expr(py: Python<'_>, node: &Bound<'_, PyAny>, depth: usize) -> PyResult<Expr> {
    if depth > MAX_DEPTH {
        return Err(invalid(
            py,
            format!("filter is nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    let tuple = node
        .downcast::<PyTuple>()
        .map_err(|_| invalid(py, "a compiled filter node must be a tuple"))?;
    if tuple.is_empty() {
        return Err(invalid(py, "empty filter node"));
    }
    let op: String = tuple.get_item(0)?.extract()?;
    let arity = |n: usize| -> PyResult<()> {
        if tuple.len() != n {
            return Err(invalid(
                py,
                format!("filter node {op:?} takes {} arguments", n - 1),
            ));
        }
        Ok(())
    };
    let children = |item: Bound<'_, PyAny>| -> PyResult<Vec<Expr>> {
        let list = item
            .downcast::<PySequence>()
            .map_err(|_| invalid(py, "expected a list of filter nodes"))?;
        let mut out = Vec::with_capacity(list.len()?);
        for child in list.try_iter()? {
            out.push(parse_expr(py, &child?, depth + 1)?);
        }
        Ok(out)
    };
    Ok(match op.as_str() {
        "all" => Expr::All,
        "none" => Expr::Nothing,
        "eq" => {
            arity(3)?;
            Expr::Eq {
                field: tuple.get_item(1)?.extract()?,
                value: field_value(py, &tuple.get_item(2)?)?,
            }
        }
        "in" => {
            arity(3)?;
            let values = tuple.get_item(2)?;
            let mut parsed = Vec::new();
            for value in values.try_iter()? {
                parsed.push(field_value(py, &value?)?);
            }
            Expr::In {
                field: tuple.get_item(1)?.extract()?,
                values: parsed,
            }
        }
        "range" => {
            arity(6)?;
            Expr::Range {
                field: tuple.get_item(1)?.extract()?,
                lower: bound(py, &tuple.get_item(2)?, &tuple.get_item(3)?)?,
                upper: bound(py, &tuple.get_item(4)?, &tuple.get_item(5)?)?,
            }
        }
        "exists" => {
            arity(2)?;
            Expr::Exists {
                field: tuple.get_item(1)?.extract()?,
            }
        }
        "keys" => {
            arity(2)?;
            let item = tuple.get_item(1)?;
            let keys: Vec<u64> = match item.extract::<PyReadonlyArray1<'_, u64>>() {
                Ok(array) => array.as_array().to_vec(),
                Err(_) => item.extract()?,
            };
            Expr::Keys(keys)
        }
        "and" => {
            arity(2)?;
            Expr::And(children(tuple.get_item(1)?)?)
        }
        "or" => {
            arity(2)?;
            Expr::Or(children(tuple.get_item(1)?)?)
        }
        "not" => {
            arity(2)?;
            Expr::Not(Box::new(parse_expr(py, &tuple.get_item(1)?, depth + 1)?))
        }
        other => return Err(invalid(py, format!("unknown filter node {other:?}"))),
    })
}

fn parse_filter(py: Python<'_>, filter: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Expr>> {
    match filter {
        None => Ok(None),
        Some(node) if node.is_none() => Ok(None),
        Some(node) => Ok(Some(parse_expr(py, node, 1)?)),
    }
}

fn field_entries(
    py: Python<'_>,
    entries: &Bound<'_, PyAny>,
) -> PyResult<Vec<(u64, String, Vec<FieldValue>)>> {
    let mut out = Vec::new();
    for entry in entries.try_iter()? {
        let entry = entry?;
        let (key, field, values): (u64, String, Bound<'_, PyAny>) = entry.extract()?;
        let mut parsed = Vec::new();
        for value in values.try_iter()? {
            parsed.push(field_value(py, &value?)?);
        }
        out.push((key, field, parsed));
    }
    Ok(out)
}

/// Owned copy of a batch of vectors, float32 or packed bits.
enum OwnedVectors {
    Floats(Vec<f32>, usize),
    Bits(Vec<u8>, usize),
}

impl OwnedVectors {
    fn from_py(py: Python<'_>, array: &Bound<'_, PyAny>) -> PyResult<OwnedVectors> {
        if let Ok(floats) = array.extract::<PyReadonlyArray2<'_, f32>>() {
            let rows = floats.shape()[0];
            return Ok(OwnedVectors::Floats(
                floats.as_array().iter().copied().collect(),
                rows,
            ));
        }
        if let Ok(bytes) = array.extract::<PyReadonlyArray2<'_, u8>>() {
            let rows = bytes.shape()[0];
            return Ok(OwnedVectors::Bits(
                bytes.as_array().iter().copied().collect(),
                rows,
            ));
        }
        Err(invalid(
            py,
            "vectors must be a 2-d numpy array of float32 (or uint8 for binary vectors)",
        ))
    }

    fn rows(&self) -> usize {
        match self {
            OwnedVectors::Floats(_, rows) | OwnedVectors::Bits(_, rows) => *rows,
        }
    }

    fn view(&self) -> Vectors<'_> {
        match self {
            OwnedVectors::Floats(values, _) => Vectors::F32(values),
            OwnedVectors::Bits(bytes, _) => Vectors::Bits(bytes),
        }
    }
}

fn keys_from(array: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    match array.extract::<PyReadonlyArray1<'_, u64>>() {
        Ok(keys) => Ok(keys.as_array().to_vec()),
        Err(_) => array.extract::<Vec<u64>>(),
    }
}

/// A collection's in-memory index (HNSW graph, exact vectors, field indexes).
#[pyclass(frozen, module = "lookalike._core")]
pub struct Index {
    inner: CollectionIndex,
}

#[allow(clippy::too_many_arguments)]
fn make_config(
    py: Python<'_>,
    ndim: usize,
    metric: &str,
    precision: &str,
    connectivity: usize,
    expansion_add: usize,
    expansion_search: usize,
    fields: Vec<String>,
    exact_threshold: usize,
) -> PyResult<IndexConfig> {
    let metric = Metric::parse(metric).ok_or_else(|| {
        invalid(
            py,
            format!("unknown metric {metric:?} (use cos, ip, l2sq or hamming)"),
        )
    })?;
    let precision = Precision::parse(precision).ok_or_else(|| {
        invalid(
            py,
            format!("unknown precision {precision:?} (use f32, f16, i8 or binary)"),
        )
    })?;
    let mut config = IndexConfig::new(ndim, metric, precision);
    config.connectivity = connectivity;
    config.expansion_add = expansion_add;
    config.expansion_search = expansion_search;
    config.fields = fields;
    config.exact_threshold = exact_threshold;
    Ok(config)
}

fn results_to_numpy<'py>(
    py: Python<'py>,
    results: Vec<SearchResult>,
    limit: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let rows = results.len();
    let mut keys = vec![u64::MAX; rows * limit];
    let mut distances = vec![f32::INFINITY; rows * limit];
    let mut counts = Vec::with_capacity(rows);
    let mut plans = Vec::with_capacity(rows);
    for (row, result) in results.iter().enumerate() {
        for (column, hit) in result.hits.iter().take(limit).enumerate() {
            keys[row * limit + column] = hit.key;
            distances[row * limit + column] = hit.distance;
        }
        counts.push(result.hits.len().min(limit) as u32);
        plans.push(result.plan.name());
    }
    let keys = PyArray1::from_vec(py, keys).reshape([rows, limit])?;
    let distances = PyArray1::from_vec(py, distances).reshape([rows, limit])?;
    let counts = counts.into_pyarray(py);
    let plans = PyList::new(py, plans)?;
    PyTuple::new(
        py,
        [
            keys.into_any(),
            distances.into_any(),
            counts.into_any(),
            plans.into_any(),
        ],
    )
}

#[pymethods]
impl Index {
    #[new]
    #[pyo3(signature = (ndim, *, metric = "cos", precision = "f32", connectivity = 16, expansion_add = 128,
                        expansion_search = 64, fields = Vec::new(), exact_threshold = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        ndim: usize,
        metric: &str,
        precision: &str,
        connectivity: usize,
        expansion_add: usize,
        expansion_search: usize,
        fields: Vec<String>,
        exact_threshold: usize,
    ) -> PyResult<Index> {
        let config = make_config(
            py,
            ndim,
            metric,
            precision,
            connectivity,
            expansion_add,
            expansion_search,
            fields,
            exact_threshold,
        )?;
        Ok(Index {
            inner: CollectionIndex::new(config).py_result(py)?,
        })
    }

    /// Loads a snapshot directory; returns `(index, sequence)`.
    #[staticmethod]
    #[pyo3(signature = (path, ndim, *, metric = "cos", precision = "f32", connectivity = 16, expansion_add = 128,
                        expansion_search = 64, fields = Vec::new(), exact_threshold = 0))]
    #[allow(clippy::too_many_arguments)]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        ndim: usize,
        metric: &str,
        precision: &str,
        connectivity: usize,
        expansion_add: usize,
        expansion_search: usize,
        fields: Vec<String>,
        exact_threshold: usize,
    ) -> PyResult<(Index, u64)> {
        let config = make_config(
            py,
            ndim,
            metric,
            precision,
            connectivity,
            expansion_add,
            expansion_search,
            fields,
            exact_threshold,
        )?;
        let (inner, sequence) = py
            .detach(|| CollectionIndex::load(config, &path))
            .py_result(py)?;
        Ok((Index { inner }, sequence))
    }

    fn save(&self, py: Python<'_>, path: PathBuf, sequence: u64) -> PyResult<()> {
        py.detach(|| self.inner.save(&path, sequence)).py_result(py)
    }

    #[getter]
    fn ndim(&self) -> usize {
        self.inner.config().ndim
    }

    #[getter]
    fn metric(&self) -> &'static str {
        self.inner.config().metric.name()
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.inner.config().precision.name()
    }

    #[getter]
    fn expansion_search(&self) -> usize {
        self.inner.expansion_search()
    }

    #[setter]
    fn set_expansion_search(&self, py: Python<'_>, ef: usize) -> PyResult<()> {
        self.inner.set_expansion_search(ef).py_result(py)
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __contains__(&self, key: u64) -> bool {
        self.inner.contains(key)
    }

    fn keys<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u64>> {
        self.inner.keys().into_pyarray(py)
    }

    fn reserve(&self, py: Python<'_>, capacity: usize) -> PyResult<()> {
        py.detach(|| self.inner.reserve(capacity)).py_result(py)
    }

    /// Adds or replaces vectors. `groups` (uint64, optional) are the records' group ids.
    #[pyo3(signature = (keys, vectors, groups = None, threads = None))]
    fn add(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        groups: Option<&Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<()> {
        let keys = keys_from(keys)?;
        let vectors = OwnedVectors::from_py(py, vectors)?;
        if vectors.rows() != keys.len() {
            return Err(to_py_err(
                py,
                CoreError::LengthMismatch {
                    what: "vectors",
                    expected: keys.len(),
                    got: vectors.rows(),
                },
            ));
        }
        let groups = groups
            .filter(|groups| !groups.is_none())
            .map(keys_from)
            .transpose()?;
        let threads = threads.unwrap_or_else(index::default_threads);
        py.detach(|| {
            self.inner
                .add(&keys, vectors.view(), groups.as_deref(), threads)
        })
        .py_result(py)
    }

    fn remove(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<usize> {
        let keys = keys_from(keys)?;
        py.detach(|| self.inner.remove(&keys)).py_result(py)
    }

    fn set_groups(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        groups: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let keys = keys_from(keys)?;
        let groups = keys_from(groups)?;
        py.detach(|| self.inner.set_groups(&keys, &groups))
            .py_result(py)
    }

    /// Indexes field values: an iterable of `(key, field, [values])`.
    fn index_fields(&self, py: Python<'_>, entries: &Bound<'_, PyAny>) -> PyResult<()> {
        let entries = field_entries(py, entries)?;
        py.detach(|| self.inner.index_fields(&entries))
            .py_result(py)
    }

    /// Removes field values given earlier to `index_fields`.
    fn unindex_fields(&self, py: Python<'_>, entries: &Bound<'_, PyAny>) -> PyResult<()> {
        let entries = field_entries(py, entries)?;
        py.detach(|| self.inner.unindex_fields(&entries))
            .py_result(py)
    }

    fn is_indexed_field(&self, field: &str) -> bool {
        self.inner.is_indexed_field(field)
    }

    /// The live keys passing a compiled filter, ascending.
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        filter: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let expr = parse_expr(py, filter, 1)?;
        let bitset = py.detach(|| self.inner.evaluate(&expr)).py_result(py)?;
        Ok(bitset.to_vec().into_pyarray(py))
    }

    /// Stored vectors of `keys` (normalized for cosine) and which keys were present.
    fn get_vectors<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let keys = keys_from(keys)?;
        let stored = py.detach(|| self.inner.get_vectors(&keys)).py_result(py)?;
        let rows = keys.len();
        let vectors = if self.inner.config().precision == Precision::Binary {
            PyArray1::from_vec(py, stored.bits)
                .reshape([rows, self.inner.config().ndim / 8])?
                .into_any()
        } else {
            PyArray1::from_vec(py, stored.floats)
                .reshape([rows, self.inner.config().ndim])?
                .into_any()
        };
        PyTuple::new(py, [vectors, stored.found.into_pyarray(py).into_any()])
    }

    /// Batch k-nearest search: returns `(keys[n, limit], distances[n, limit], counts[n], plans)`.
    /// Missing hits (fewer than `limit` matches) have key 2**64-1 and distance inf.
    #[pyo3(signature = (queries, limit, *, offset = 0, filter = None, ef = None, exact = false, threads = None, filter_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        limit: usize,
        offset: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        exact: bool,
        threads: Option<usize>,
        filter_key: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let queries = OwnedVectors::from_py(py, queries)?;
        let options = SearchOptions {
            limit,
            offset,
            ef,
            exact,
            filter: parse_filter(py, filter)?,
            filter_key,
        };
        let count = queries.rows();
        let threads = threads.unwrap_or(1);
        let results = if count == 1 {
            py.detach(|| {
                self.inner
                    .search(queries.view(), &options)
                    .map(|result| vec![result])
            })
        } else {
            py.detach(|| {
                self.inner
                    .search_batch(queries.view(), count, &options, threads)
            })
        }
        .py_result(py)?;
        results_to_numpy(py, results, limit)
    }

    /// Grouped search for one query: returns `(groups, plan)` where groups is a list of
    /// `(group_id, keys, distances)`; records without a group have group id 2**64-1.
    #[pyo3(signature = (query, limit, group_size, *, offset = 0, filter = None, ef = None, exact = false, filter_key = None))]
    #[allow(clippy::too_many_arguments)]
    fn search_grouped<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
        limit: usize,
        group_size: usize,
        offset: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        exact: bool,
        filter_key: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let query = OwnedVectors::from_py(py, query)?;
        if query.rows() != 1 {
            return Err(invalid(py, "search_grouped takes exactly one query row"));
        }
        let options = SearchOptions {
            limit,
            offset,
            ef,
            exact,
            filter: parse_filter(py, filter)?,
            filter_key,
        };
        let result = py
            .detach(|| {
                self.inner
                    .search_grouped(query.view(), &options, group_size)
            })
            .py_result(py)?;
        let groups = PyList::empty(py);
        for group in result.groups {
            let keys: Vec<u64> = group.hits.iter().map(|hit| hit.key).collect();
            let distances: Vec<f32> = group.hits.iter().map(|hit| hit.distance).collect();
            groups.append((
                group.group,
                keys.into_pyarray(py),
                distances.into_pyarray(py),
            ))?;
        }
        PyTuple::new(
            py,
            [
                groups.into_any(),
                PyString::new(py, result.plan.name()).into_any(),
            ],
        )
    }

    fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild()
    }

    #[pyo3(signature = (threads = None))]
    fn rebuild(&self, py: Python<'_>, threads: Option<usize>) -> PyResult<()> {
        let threads = threads.unwrap_or_else(index::default_threads);
        py.detach(|| self.inner.rebuild(threads)).py_result(py)
    }

    fn memory_usage(&self) -> usize {
        self.inner.memory_usage()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.inner.stats();
        let dict = PyDict::new(py);
        dict.set_item("count", stats.count)?;
        dict.set_item("capacity", stats.capacity)?;
        dict.set_item("removed_since_rebuild", stats.removed_since_rebuild)?;
        dict.set_item("memory_bytes", stats.memory_bytes)?;
        dict.set_item("searches_graph", stats.searches_graph)?;
        dict.set_item("searches_filtered_graph", stats.searches_filtered_graph)?;
        dict.set_item("searches_exact", stats.searches_exact)?;
        dict.set_item("exact_fallbacks", stats.exact_fallbacks)?;
        dict.set_item("rebuilds", stats.rebuilds)?;
        Ok(dict)
    }
}

/// The SIMD level the distance kernels dispatched to ("avx512", "avx2", "neon" or "scalar").
#[pyfunction]
fn simd_capabilities() -> &'static str {
    distance::capabilities()
}

/// Exact distances between one query and rows (float32), by the core's kernels; `metric` as in
/// `Index`. Cosine inputs are normalized here. For tests and re-ranking outside an index.
#[pyfunction]
fn distances<'py>(
    py: Python<'py>,
    metric: &str,
    query: PyReadonlyArray1<'py, f32>,
    rows: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let metric =
        Metric::parse(metric).ok_or_else(|| invalid(py, format!("unknown metric {metric:?}")))?;
    if metric == Metric::Hamming {
        return Err(invalid(py, "use packed bytes for hamming"));
    }
    let ndim = rows.shape()[1];
    if query.len() != ndim {
        return Err(to_py_err(
            py,
            CoreError::DimensionMismatch {
                expected: ndim,
                got: query.len(),
            },
        ));
    }
    let mut query: Vec<f32> = query.as_array().to_vec();
    let mut rows: Vec<f32> = rows.as_array().iter().copied().collect();
    let out = py.detach(|| {
        if metric == Metric::Cos {
            distance::normalize(&mut query);
            for row in rows.chunks_exact_mut(ndim.max(1)) {
                distance::normalize(row);
            }
        }
        rows.chunks_exact(ndim.max(1))
            .map(|row| distance::distance_f32(metric, &query, row))
            .collect::<Vec<f32>>()
    });
    Ok(out.into_pyarray(py))
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Index>()?;
    module.add_function(wrap_pyfunction!(simd_capabilities, module)?)?;
    module.add_function(wrap_pyfunction!(distances, module)?)?;
    module.add("MAX_KEY", index::MAX_KEY)?;
    module.add("NO_GROUP", index::NO_GROUP)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
