//! Field indexes: the per-field inverted indexes that filter leaves are answered from.
//!
//! Filters must be evaluated without touching every record's metadata, so each indexed
//! field keeps, per distinct value, the roaring bitmap of keys holding it: strings and
//! booleans by exact value, numbers in an ordered map so a range is a union of a contiguous
//! run of bitmaps, plus `null` and `exists` bitmaps. Roaring keeps these compact for both
//! rare and common values; the filter turns the answers into dense [`Bitset`]s.
//!
//! Values of different JSON types never compare equal (the string "1" is not the number 1,
//! `true` is not 1), while numbers compare numerically (1 == 1.0, -0.0 == 0.0), as in MongoDB.
//!
//! [`Bitset`]: crate::bitset::Bitset

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::ops::Bound;

use roaring::{MultiOps, RoaringBitmap};

use crate::error::{CoreError, CoreResult};

/// One value a record's field holds (arrays are flattened by the caller).
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A number usable as an ordered map key. Construction rejects NaN and folds -0.0 into 0.0,
/// so that `total_cmp` (a total order) agrees with numeric equality on everything stored.
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl Num {
    fn new(value: f64) -> Option<Num> {
        if value.is_nan() {
            None
        } else if value == 0.0 {
            Some(Num(0.0))
        } else {
            Some(Num(value))
        }
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Everything indexed about one field.
#[derive(Clone, Debug, Default, PartialEq)]
struct FieldIndex {
    exists: RoaringBitmap,
    nulls: RoaringBitmap,
    trues: RoaringBitmap,
    falses: RoaringBitmap,
    // Entries whose bitmap becomes empty are dropped, so equal contents mean equal maps
    // (tests compare whole indexes) and removed values give their memory back.
    strings: BTreeMap<String, RoaringBitmap>,
    numbers: BTreeMap<Num, RoaringBitmap>,
}

/// The field indexes of one collection; the set of indexed fields is fixed at creation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldIndexes {
    fields: BTreeMap<String, FieldIndex>,
}

fn not_indexed(field: &str) -> CoreError {
    CoreError::InvalidArgument(format!("field {field:?} is not indexed"))
}

fn bound(limit: Option<(f64, bool)>, field: &str) -> CoreResult<Bound<Num>> {
    match limit {
        None => Ok(Bound::Unbounded),
        Some((value, inclusive)) => {
            let num = Num::new(value).ok_or_else(|| {
                CoreError::InvalidArgument(format!("range bound on field {field:?} is NaN"))
            })?;
            Ok(if inclusive {
                Bound::Included(num)
            } else {
                Bound::Excluded(num)
            })
        }
    }
}

/// Whether `(lower, upper)` can hold anything. `BTreeMap::range` panics on inverted bounds
/// and on equal exclusive ones, and user-supplied bounds can be either.
fn bounds_nonempty(lower: &Bound<Num>, upper: &Bound<Num>) -> bool {
    match (lower, upper) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Included(lo), Bound::Included(hi)) => lo <= hi,
        (Bound::Included(lo) | Bound::Excluded(lo), Bound::Included(hi) | Bound::Excluded(hi)) => {
            lo < hi
        }
    }
}

fn bitmap_usage(bitmap: &RoaringBitmap) -> usize {
    // The portable serialized size tracks the container payloads, which dominate memory.
    std::mem::size_of::<RoaringBitmap>() + bitmap.serialized_size()
}

/// Rough per-entry cost of a B-tree map slot beyond the key and value themselves.
const MAP_ENTRY_OVERHEAD: usize = 16;

impl FieldIndex {
    fn numbers_in(
        &self,
        lower: Bound<Num>,
        upper: Bound<Num>,
    ) -> impl Iterator<Item = &RoaringBitmap> {
        let nonempty = bounds_nonempty(&lower, &upper);
        // An always-valid range stands in for an empty one so that `range` never panics.
        let range = if nonempty {
            (lower, upper)
        } else {
            (Bound::Excluded(Num(0.0)), Bound::Included(Num(0.0)))
        };
        self.numbers.range(range).map(|(_, bitmap)| bitmap)
    }

    fn memory_usage(&self) -> usize {
        let fixed = bitmap_usage(&self.exists)
            + bitmap_usage(&self.nulls)
            + bitmap_usage(&self.trues)
            + bitmap_usage(&self.falses);
        let strings: usize = self
            .strings
            .iter()
            .map(|(s, b)| {
                std::mem::size_of::<String>() + s.capacity() + bitmap_usage(b) + MAP_ENTRY_OVERHEAD
            })
            .sum();
        let numbers: usize = self
            .numbers
            .values()
            .map(|b| std::mem::size_of::<Num>() + bitmap_usage(b) + MAP_ENTRY_OVERHEAD)
            .sum();
        std::mem::size_of::<Self>() + fixed + strings + numbers
    }
}

impl FieldIndexes {
    /// Indexes for `fields` (duplicates collapse), all empty.
    pub fn new(fields: &[String]) -> Self {
        FieldIndexes {
            fields: fields
                .iter()
                .map(|f| (f.clone(), FieldIndex::default()))
                .collect(),
        }
    }

    /// The indexed field names, sorted.
    pub fn field_names(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }

    pub fn is_indexed(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    fn field(&self, field: &str) -> CoreResult<&FieldIndex> {
        self.fields.get(field).ok_or_else(|| not_indexed(field))
    }

    /// Index one record's values of one field: all the values the field has in that record
    /// (array elements flattened; a scalar is a one-element slice; an empty slice means the
    /// field is absent and nothing is recorded). Validates everything before changing
    /// anything, so an error leaves the index as it was.
    ///
    /// Call it at most once per (key, field) between removals: an update is `remove` with
    /// the old values, then `insert` with the new ones.
    pub fn insert(&mut self, key: u64, field: &str, values: &[FieldValue]) -> CoreResult<()> {
        let index = self
            .fields
            .get_mut(field)
            .ok_or_else(|| not_indexed(field))?;
        let key = u32::try_from(key).map_err(|_| CoreError::KeyOutOfRange {
            key,
            max: u64::from(u32::MAX),
        })?;
        if values
            .iter()
            .any(|v| matches!(v, FieldValue::Num(x) if x.is_nan()))
        {
            return Err(CoreError::InvalidArgument(format!(
                "field {field:?}: NaN cannot be indexed"
            )));
        }
        if values.is_empty() {
            return Ok(());
        }
        for value in values {
            match value {
                FieldValue::Str(s) => match index.strings.get_mut(s.as_str()) {
                    Some(bitmap) => {
                        bitmap.insert(key);
                    }
                    None => {
                        let mut bitmap = RoaringBitmap::new();
                        bitmap.insert(key);
                        index.strings.insert(s.clone(), bitmap);
                    }
                },
                FieldValue::Num(x) => {
                    if let Some(num) = Num::new(*x) {
                        index.numbers.entry(num).or_default().insert(key);
                    }
                }
                FieldValue::Bool(true) => {
                    index.trues.insert(key);
                }
                FieldValue::Bool(false) => {
                    index.falses.insert(key);
                }
                FieldValue::Null => {
                    index.nulls.insert(key);
                }
            }
        }
        index.exists.insert(key);
        Ok(())
    }

    /// Undo `insert` given the same values. Anything absent (including keys beyond `u32` and
    /// NaN, which `insert` never stores) is skipped; emptied entries are dropped.
    pub fn remove(&mut self, key: u64, field: &str, values: &[FieldValue]) -> CoreResult<()> {
        let index = self
            .fields
            .get_mut(field)
            .ok_or_else(|| not_indexed(field))?;
        let Ok(key) = u32::try_from(key) else {
            return Ok(());
        };
        if values.is_empty() {
            return Ok(());
        }
        for value in values {
            match value {
                FieldValue::Str(s) => {
                    if let Some(bitmap) = index.strings.get_mut(s.as_str()) {
                        bitmap.remove(key);
                        if bitmap.is_empty() {
                            index.strings.remove(s.as_str());
                        }
                    }
                }
                FieldValue::Num(x) => {
                    if let Some(num) = Num::new(*x) {
                        if let Some(bitmap) = index.numbers.get_mut(&num) {
                            bitmap.remove(key);
                            if bitmap.is_empty() {
                                index.numbers.remove(&num);
                            }
                        }
                    }
                }
                FieldValue::Bool(true) => {
                    index.trues.remove(key);
                }
                FieldValue::Bool(false) => {
                    index.falses.remove(key);
                }
                FieldValue::Null => {
                    index.nulls.remove(key);
                }
            }
        }
        index.exists.remove(key);
        Ok(())
    }

    /// Forget every record, keeping the set of indexed fields.
    pub fn clear(&mut self) {
        for index in self.fields.values_mut() {
            *index = FieldIndex::default();
        }
    }

    /// Keys whose field has any value equal to `value`. `Null` matches only explicit nulls
    /// (a missing field is `exists`' complement, which the filter compiler combines itself);
    /// NaN equals nothing.
    pub fn equal(&self, field: &str, value: &FieldValue) -> CoreResult<RoaringBitmap> {
        let index = self.field(field)?;
        Ok(match value {
            FieldValue::Str(s) => index.strings.get(s.as_str()).cloned().unwrap_or_default(),
            FieldValue::Num(x) => Num::new(*x)
                .and_then(|num| index.numbers.get(&num).cloned())
                .unwrap_or_default(),
            FieldValue::Bool(true) => index.trues.clone(),
            FieldValue::Bool(false) => index.falses.clone(),
            FieldValue::Null => index.nulls.clone(),
        })
    }

    /// Keys whose field has any number within the bounds (`(value, inclusive)`, `None` for
    /// unbounded). Only numbers match. A NaN bound is an `InvalidArgument`; inverted bounds
    /// give an empty set.
    pub fn range(
        &self,
        field: &str,
        lower: Option<(f64, bool)>,
        upper: Option<(f64, bool)>,
    ) -> CoreResult<RoaringBitmap> {
        let index = self.field(field)?;
        let lower = bound(lower, field)?;
        let upper = bound(upper, field)?;
        Ok(index.numbers_in(lower, upper).union())
    }

    /// Keys for which the field is present (with any value, `null` included).
    pub fn exists(&self, field: &str) -> CoreResult<RoaringBitmap> {
        Ok(self.field(field)?.exists.clone())
    }

    /// Cheap upper bound on `equal(..).len()`, without cloning.
    pub(crate) fn equal_count(&self, field: &str, value: &FieldValue) -> CoreResult<u64> {
        let index = self.field(field)?;
        Ok(match value {
            FieldValue::Str(s) => index.strings.get(s.as_str()).map_or(0, RoaringBitmap::len),
            FieldValue::Num(x) => Num::new(*x)
                .and_then(|num| index.numbers.get(&num))
                .map_or(0, RoaringBitmap::len),
            FieldValue::Bool(true) => index.trues.len(),
            FieldValue::Bool(false) => index.falses.len(),
            FieldValue::Null => index.nulls.len(),
        })
    }

    /// Cheap upper bound on `range(..).len()`: the sum over the matching values, capped by
    /// the `exists` count (every match has the field), with no union computed.
    pub(crate) fn range_count(
        &self,
        field: &str,
        lower: Option<(f64, bool)>,
        upper: Option<(f64, bool)>,
    ) -> CoreResult<u64> {
        let index = self.field(field)?;
        let cap = index.exists.len();
        let mut total = 0u64;
        for bitmap in index.numbers_in(bound(lower, field)?, bound(upper, field)?) {
            total = total.saturating_add(bitmap.len());
            if total >= cap {
                return Ok(cap);
            }
        }
        Ok(total)
    }

    pub(crate) fn exists_count(&self, field: &str) -> CoreResult<u64> {
        Ok(self.field(field)?.exists.len())
    }

    /// Write every index in the layout described at [`FORMAT_VERSION`]. Writes are buffered
    /// here, so an unbuffered file is fine.
    pub fn save<W: Write>(&self, writer: W) -> CoreResult<()> {
        let mut out = HashingWriter {
            inner: io::BufWriter::new(writer),
            hash: FNV_OFFSET,
        };
        out.write_all(&MAGIC)?;
        out.write_all(&FORMAT_VERSION.to_le_bytes())?;
        write_len(&mut out, self.fields.len())?;
        let mut scratch = Vec::new();
        for (name, index) in &self.fields {
            write_bytes(&mut out, name.as_bytes())?;
            for bitmap in [&index.exists, &index.nulls, &index.trues, &index.falses] {
                write_bitmap(&mut out, bitmap, &mut scratch)?;
            }
            write_len(&mut out, index.strings.len())?;
            for (value, bitmap) in &index.strings {
                write_bytes(&mut out, value.as_bytes())?;
                write_bitmap(&mut out, bitmap, &mut scratch)?;
            }
            write_len(&mut out, index.numbers.len())?;
            for (value, bitmap) in &index.numbers {
                out.write_all(&value.0.to_bits().to_le_bytes())?;
                write_bitmap(&mut out, bitmap, &mut scratch)?;
            }
        }
        let hash = out.hash;
        let mut inner = out.inner;
        inner.write_all(&hash.to_le_bytes())?;
        inner.flush()?;
        Ok(())
    }

    /// Read indexes written by [`FieldIndexes::save`], validating the structure (sorted,
    /// unique, non-NaN, non-empty entries; well-formed bitmaps) and a trailing checksum.
    /// Bad or truncated bytes give `CoreError::Corrupt`, never a panic, and no length read
    /// from the input is trusted for an allocation. Reads exactly the saved bytes, so the
    /// section can sit inside a larger stream; pass a buffered reader for speed.
    pub fn load<R: Read>(reader: R) -> CoreResult<Self> {
        let mut input = HashingReader {
            inner: reader,
            hash: FNV_OFFSET,
        };
        let mut magic = [0u8; 8];
        read_exact(&mut input, &mut magic)?;
        if magic != MAGIC {
            return Err(corrupt("not a field index file (bad magic)"));
        }
        let version = read_u32(&mut input)?;
        if version != FORMAT_VERSION {
            return Err(corrupt(&format!(
                "field index format version {version} is not supported (expected {FORMAT_VERSION})"
            )));
        }
        let field_count = read_u64(&mut input)?;
        let mut fields = BTreeMap::new();
        let mut last_name: Option<String> = None;
        for _ in 0..field_count {
            let name = read_string(&mut input)?;
            if last_name.as_ref().is_some_and(|last| *last >= name) {
                return Err(corrupt("field names are not sorted and unique"));
            }
            let mut index = FieldIndex {
                exists: read_bitmap(&mut input)?,
                nulls: read_bitmap(&mut input)?,
                trues: read_bitmap(&mut input)?,
                falses: read_bitmap(&mut input)?,
                ..FieldIndex::default()
            };
            let string_count = read_u64(&mut input)?;
            let mut last_value: Option<String> = None;
            for _ in 0..string_count {
                let value = read_string(&mut input)?;
                if last_value.as_ref().is_some_and(|last| *last >= value) {
                    return Err(corrupt("string values are not sorted and unique"));
                }
                let bitmap = read_nonempty_bitmap(&mut input)?;
                last_value = Some(value.clone());
                index.strings.insert(value, bitmap);
            }
            let number_count = read_u64(&mut input)?;
            let mut last_number: Option<Num> = None;
            for _ in 0..number_count {
                let raw = f64::from_bits(read_u64(&mut input)?);
                let number = match Num::new(raw) {
                    Some(n) if n.0.to_bits() == raw.to_bits() => n,
                    _ => return Err(corrupt("numeric value is NaN or negative zero")),
                };
                if last_number.is_some_and(|last| last >= number) {
                    return Err(corrupt("numeric values are not sorted and unique"));
                }
                let bitmap = read_nonempty_bitmap(&mut input)?;
                last_number = Some(number);
                index.numbers.insert(number, bitmap);
            }
            last_name = Some(name.clone());
            fields.insert(name, index);
        }
        let computed = input.hash;
        let mut stored = [0u8; 8];
        read_exact(&mut input.inner, &mut stored)?;
        if u64::from_le_bytes(stored) != computed {
            return Err(corrupt("checksum mismatch"));
        }
        Ok(FieldIndexes { fields })
    }

    /// Approximate bytes held by all indexes, for the collection's memory report.
    pub fn memory_usage(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .fields
                .iter()
                .map(|(name, index)| name.capacity() + MAP_ENTRY_OVERHEAD + index.memory_usage())
                .sum::<usize>()
    }
}

const MAGIC: [u8; 8] = *b"LKFIDX\r\n";

/// Version of the serialized layout written by [`FieldIndexes::save`]; bump it when the
/// layout changes. The layout, all integers little-endian:
///
/// ```text
/// magic "LKFIDX\r\n" | version u32 | field count u64 |
/// per field, sorted by name:
///     name | exists | nulls | trues | falses |
///     string count u64 | (string | bitmap)* sorted by string |
///     number count u64 | (f64 bits u64 | bitmap)* sorted numerically, no NaN or -0.0 |
/// FNV-1a 64 of every preceding byte (u64)
/// ```
///
/// string = byte length u64 + UTF-8 bytes; bitmap = byte length u64 + roaring's portable
/// serialization. The length prefixes let `load` read a bitmap into an exactly-sized
/// buffer and check that roaring consumed all of it; the checksum catches damage that
/// still parses.
pub const FORMAT_VERSION: u32 = 1;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

struct HashingWriter<W> {
    inner: W,
    hash: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash = fnv(self.hash, buf.get(..n).unwrap_or(buf));
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hash: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // `get` guards against a misbehaving reader reporting more than the buffer holds.
        self.hash = fnv(self.hash, buf.get(..n).unwrap_or(buf));
        Ok(n)
    }
}

fn write_len<W: Write>(out: &mut W, len: usize) -> io::Result<()> {
    out.write_all(&(len as u64).to_le_bytes())
}

fn write_bytes<W: Write>(out: &mut W, bytes: &[u8]) -> io::Result<()> {
    write_len(out, bytes.len())?;
    out.write_all(bytes)
}

fn write_bitmap<W: Write>(
    out: &mut W,
    bitmap: &RoaringBitmap,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    scratch.clear();
    bitmap.serialize_into(&mut *scratch)?;
    write_bytes(out, scratch)
}

fn corrupt(message: &str) -> CoreError {
    CoreError::Corrupt(message.to_string())
}

fn io_error(error: io::Error) -> CoreError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        corrupt("field index data is truncated")
    } else {
        CoreError::Io(error.to_string())
    }
}

fn read_exact<R: Read>(input: &mut R, buf: &mut [u8]) -> CoreResult<()> {
    input.read_exact(buf).map_err(io_error)
}

fn read_u32<R: Read>(input: &mut R) -> CoreResult<u32> {
    let mut buf = [0u8; 4];
    read_exact(input, &mut buf)?;
    Ok(u32::from_le_bytes(buf))
}

fn read_u64<R: Read>(input: &mut R) -> CoreResult<u64> {
    let mut buf = [0u8; 8];
    read_exact(input, &mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// A length-prefixed byte string. The buffer grows only as bytes actually arrive, so a
/// forged length cannot make us allocate more than the input holds.
fn read_blob<R: Read>(input: &mut R) -> CoreResult<Vec<u8>> {
    let len = read_u64(input)?;
    let mut buf = Vec::new();
    input.take(len).read_to_end(&mut buf).map_err(io_error)?;
    if buf.len() as u64 != len {
        return Err(corrupt("field index data is truncated"));
    }
    Ok(buf)
}

fn read_string<R: Read>(input: &mut R) -> CoreResult<String> {
    String::from_utf8(read_blob(input)?).map_err(|_| corrupt("a name or value is not valid UTF-8"))
}

fn read_bitmap<R: Read>(input: &mut R) -> CoreResult<RoaringBitmap> {
    let bytes = read_blob(input)?;
    let mut rest = &bytes[..];
    let bitmap =
        RoaringBitmap::deserialize_from(&mut rest).map_err(|_| corrupt("malformed bitmap"))?;
    if !rest.is_empty() {
        return Err(corrupt("bitmap has trailing bytes"));
    }
    Ok(bitmap)
}

fn read_nonempty_bitmap<R: Read>(input: &mut R) -> CoreResult<RoaringBitmap> {
    let bitmap = read_bitmap(input)?;
    if bitmap.is_empty() {
        return Err(corrupt("value entry with no keys"));
    }
    Ok(bitmap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn keys(bitmap: &RoaringBitmap) -> Vec<u32> {
        bitmap.iter().collect()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.to_string())
    }

    fn n(v: f64) -> FieldValue {
        FieldValue::Num(v)
    }

    fn sample() -> FieldIndexes {
        let mut idx = FieldIndexes::new(&names(&["color", "price", "tags", "flag", "price"]));
        idx.insert(0, "color", &[s("red")]).unwrap();
        idx.insert(1, "color", &[s("blue")]).unwrap();
        idx.insert(2, "color", &[n(1.0)]).unwrap();
        idx.insert(3, "color", &[FieldValue::Null]).unwrap();
        idx.insert(0, "price", &[n(-5.5)]).unwrap();
        idx.insert(1, "price", &[n(0.0)]).unwrap();
        idx.insert(2, "price", &[n(-0.0)]).unwrap();
        idx.insert(3, "price", &[n(10.0)]).unwrap();
        idx.insert(4, "price", &[n(1e300), n(-1e300)]).unwrap();
        idx.insert(5, "price", &[s("10")]).unwrap();
        idx.insert(0, "tags", &[s("a"), s("b"), s("a")]).unwrap();
        idx.insert(1, "tags", &[s("b"), n(3.0), FieldValue::Bool(true)])
            .unwrap();
        idx.insert(2, "tags", &[]).unwrap();
        idx.insert(0, "flag", &[FieldValue::Bool(true)]).unwrap();
        idx.insert(1, "flag", &[FieldValue::Bool(false)]).unwrap();
        idx.insert(2, "flag", &[n(1.0)]).unwrap();
        idx
    }

    #[test]
    fn fields_are_fixed() {
        let mut idx = sample();
        assert_eq!(
            idx.field_names(),
            names(&["color", "flag", "price", "tags"])
        );
        assert!(idx.is_indexed("tags") && !idx.is_indexed("nope"));
        assert!(
            matches!(idx.insert(0, "nope", &[n(1.0)]), Err(CoreError::InvalidArgument(m)) if m.contains("nope"))
        );
        assert!(idx.remove(0, "nope", &[n(1.0)]).is_err());
        assert!(idx.equal("nope", &n(1.0)).is_err());
        assert!(idx.range("nope", None, None).is_err());
        assert!(idx.exists("nope").is_err());
    }

    #[test]
    fn equality_semantics() {
        let idx = sample();
        assert_eq!(keys(&idx.equal("color", &s("red")).unwrap()), vec![0]);
        assert_eq!(
            keys(&idx.equal("color", &s("green")).unwrap()),
            Vec::<u32>::new()
        );
        // Strings never equal numbers, in either direction.
        assert_eq!(
            keys(&idx.equal("color", &s("1")).unwrap()),
            Vec::<u32>::new()
        );
        assert_eq!(keys(&idx.equal("price", &n(10.0)).unwrap()), vec![3]);
        assert_eq!(keys(&idx.equal("price", &s("10")).unwrap()), vec![5]);
        // Ints and floats, and both zeros, are one number.
        assert_eq!(keys(&idx.equal("color", &n(1.0)).unwrap()), vec![2]);
        assert_eq!(keys(&idx.equal("price", &n(0.0)).unwrap()), vec![1, 2]);
        assert_eq!(keys(&idx.equal("price", &n(-0.0)).unwrap()), vec![1, 2]);
        assert_eq!(
            keys(&idx.equal("price", &n(f64::NAN)).unwrap()),
            Vec::<u32>::new()
        );
        // Bools never equal numbers.
        assert_eq!(
            keys(&idx.equal("flag", &FieldValue::Bool(true)).unwrap()),
            vec![0]
        );
        assert_eq!(
            keys(&idx.equal("flag", &FieldValue::Bool(false)).unwrap()),
            vec![1]
        );
        assert_eq!(keys(&idx.equal("flag", &n(1.0)).unwrap()), vec![2]);
        assert_eq!(
            keys(&idx.equal("color", &FieldValue::Null).unwrap()),
            vec![3]
        );
        // Arrays match on any element.
        assert_eq!(keys(&idx.equal("tags", &s("b")).unwrap()), vec![0, 1]);
        assert_eq!(keys(&idx.equal("tags", &s("a")).unwrap()), vec![0]);
        assert_eq!(keys(&idx.equal("tags", &n(3.0)).unwrap()), vec![1]);
        assert_eq!(keys(&idx.exists("tags").unwrap()), vec![0, 1]);
        assert_eq!(keys(&idx.exists("color").unwrap()), vec![0, 1, 2, 3]);
    }

    #[test]
    fn ranges() {
        let idx = sample();
        let r = |lo, hi| keys(&idx.range("price", lo, hi).unwrap());
        assert_eq!(r(None, None), vec![0, 1, 2, 3, 4]);
        assert_eq!(r(Some((0.0, true)), None), vec![1, 2, 3, 4]);
        assert_eq!(r(Some((0.0, false)), None), vec![3, 4]);
        assert_eq!(r(Some((-0.0, false)), None), vec![3, 4]);
        assert_eq!(r(None, Some((0.0, false))), vec![0, 4]);
        assert_eq!(r(None, Some((-0.0, true))), vec![0, 1, 2, 4]);
        assert_eq!(r(Some((-5.5, true)), Some((10.0, true))), vec![0, 1, 2, 3]);
        assert_eq!(r(Some((-5.5, false)), Some((10.0, false))), vec![1, 2]);
        assert_eq!(r(Some((-6.0, true)), Some((-5.0, true))), vec![0]);
        assert_eq!(r(Some((10.0, true)), Some((10.0, true))), vec![3]);
        assert_eq!(
            r(Some((10.0, false)), Some((10.0, true))),
            Vec::<u32>::new()
        );
        assert_eq!(
            r(Some((10.0, false)), Some((10.0, false))),
            Vec::<u32>::new()
        );
        assert_eq!(
            r(Some((11.0, true)), Some((-11.0, true))),
            Vec::<u32>::new()
        );
        assert_eq!(
            r(Some((f64::NEG_INFINITY, true)), Some((f64::INFINITY, true))),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(r(Some((1e299, true)), None), vec![4]);
        // Strings and bools are not numbers.
        assert_eq!(keys(&idx.range("color", None, None).unwrap()), vec![2]);
        assert_eq!(
            keys(&idx.range("flag", Some((0.0, true)), None).unwrap()),
            vec![2]
        );
        assert!(matches!(
            idx.range("price", Some((f64::NAN, true)), None),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(idx.range("price", None, Some((f64::NAN, false))).is_err());
        assert_eq!(idx.range_count("price", None, None).unwrap(), 6); // key 4 counted twice: an upper bound
        assert_eq!(
            idx.range_count("price", Some((20.0, true)), Some((-20.0, true)))
                .unwrap(),
            0
        );
    }

    #[test]
    fn rejects_nan_and_big_keys_atomically() {
        let mut idx = sample();
        let before = idx.clone();
        assert!(matches!(
            idx.insert(9, "price", &[n(1.0), n(f64::NAN)]),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(
            matches!(idx.insert(1 << 32, "price", &[n(1.0)]), Err(CoreError::KeyOutOfRange { key, max }) if key == 1 << 32 && max == u32::MAX as u64)
        );
        assert_eq!(idx, before);
        idx.insert(u32::MAX as u64, "price", &[n(1.0)]).unwrap();
        assert_eq!(keys(&idx.equal("price", &n(1.0)).unwrap()), vec![u32::MAX]);
        idx.remove(u32::MAX as u64, "price", &[n(1.0)]).unwrap();
        idx.remove(1 << 40, "price", &[n(1.0)]).unwrap();
        idx.remove(0, "price", &[n(f64::NAN), n(12345.0), s("zzz")])
            .unwrap();
        let mut expected = before.clone();
        expected.fields.get_mut("price").unwrap().exists.remove(0);
        assert_eq!(idx, expected);
    }

    #[test]
    fn remove_restores_prior_state_and_clear() {
        let mut idx = sample();
        let before = idx.clone();
        let values = [
            s("new"),
            s("red"),
            n(-0.0),
            n(42.0),
            FieldValue::Bool(false),
            FieldValue::Null,
            n(42.0),
        ];
        idx.insert(77, "color", &values).unwrap();
        assert_eq!(keys(&idx.equal("color", &n(0.0)).unwrap()), vec![77]);
        idx.remove(77, "color", &values).unwrap();
        assert_eq!(idx, before);
        // Removing a record entirely gives its entries' memory back.
        let mut idx2 = FieldIndexes::new(&names(&["f"]));
        let empty = idx2.clone();
        idx2.insert(3, "f", &[s("x"), n(1.5)]).unwrap();
        assert!(idx2.memory_usage() > empty.memory_usage());
        idx2.remove(3, "f", &[s("x"), n(1.5)]).unwrap();
        assert_eq!(idx2, empty);
        assert_eq!(idx2.memory_usage(), empty.memory_usage());
        idx.clear();
        assert_eq!(
            idx,
            FieldIndexes::new(&names(&["color", "price", "tags", "flag"]))
        );
    }

    #[test]
    fn save_load_round_trip() {
        let idx = sample();
        let mut bytes = Vec::new();
        idx.save(&mut bytes).unwrap();
        let loaded = FieldIndexes::load(&bytes[..]).unwrap();
        assert_eq!(loaded, idx);
        // Exactly the saved bytes are consumed, so a section can be embedded.
        let mut stream = bytes.clone();
        stream.extend_from_slice(b"next");
        let mut reader = &stream[..];
        assert_eq!(FieldIndexes::load(&mut reader).unwrap(), idx);
        assert_eq!(reader, b"next");
        let empty = FieldIndexes::new(&[]);
        let mut bytes = Vec::new();
        empty.save(&mut bytes).unwrap();
        assert_eq!(FieldIndexes::load(&bytes[..]).unwrap(), empty);
    }

    #[test]
    fn load_rejects_bad_bytes() {
        let idx = sample();
        let mut bytes = Vec::new();
        idx.save(&mut bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    FieldIndexes::load(&bytes[..cut]),
                    Err(CoreError::Corrupt(_))
                ),
                "cut {cut}"
            );
        }
        let mut wrong_version = bytes.clone();
        wrong_version[8] = 2;
        assert!(
            matches!(FieldIndexes::load(&wrong_version[..]), Err(CoreError::Corrupt(m)) if m.contains("version"))
        );
        let mut bad_sum = bytes.clone();
        let last = bad_sum.len() - 1;
        bad_sum[last] ^= 1;
        assert!(
            matches!(FieldIndexes::load(&bad_sum[..]), Err(CoreError::Corrupt(m)) if m.contains("checksum"))
        );
        // A huge forged length must not allocate: field count u64::MAX, then nothing.
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        forged.extend_from_slice(&u64::MAX.to_le_bytes());
        forged.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            FieldIndexes::load(&forged[..]),
            Err(CoreError::Corrupt(_))
        ));
    }

    /// Saves `idx` with the checksum recomputed after `mutate`, so the structural checks
    /// (not the checksum) are what must catch the damage.
    fn resealed(idx: &FieldIndexes, mutate: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = Vec::new();
        idx.save(&mut bytes).unwrap();
        bytes.truncate(bytes.len() - 8);
        mutate(&mut bytes);
        let hash = fnv(FNV_OFFSET, &bytes);
        bytes.extend_from_slice(&hash.to_le_bytes());
        bytes
    }

    #[test]
    fn load_validates_structure() {
        let mut idx = FieldIndexes::new(&names(&["f"]));
        idx.insert(1, "f", &[n(2.0)]).unwrap();
        // A forged negative zero, which `insert` never stores.
        let neg_zero = resealed(&idx, |b| {
            let at = b
                .windows(8)
                .position(|w| w == 2.0f64.to_bits().to_le_bytes())
                .unwrap();
            b[at..at + 8].copy_from_slice(&(-0.0f64).to_bits().to_le_bytes());
        });
        assert!(
            matches!(FieldIndexes::load(&neg_zero[..]), Err(CoreError::Corrupt(m)) if m.contains("zero"))
        );
        let nan = resealed(&idx, |b| {
            let at = b
                .windows(8)
                .position(|w| w == 2.0f64.to_bits().to_le_bytes())
                .unwrap();
            b[at..at + 8].copy_from_slice(&f64::NAN.to_bits().to_le_bytes());
        });
        assert!(matches!(
            FieldIndexes::load(&nan[..]),
            Err(CoreError::Corrupt(_))
        ));
        let mut two = FieldIndexes::new(&names(&["a", "b"]));
        two.insert(1, "a", &[s("x")]).unwrap();
        let unsorted = resealed(&two, |b| {
            let at = b
                .windows(9)
                .position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'b'])
                .unwrap();
            b[at + 8] = b'a';
        });
        assert!(
            matches!(FieldIndexes::load(&unsorted[..]), Err(CoreError::Corrupt(m)) if m.contains("sorted"))
        );
    }

    fn value() -> impl Strategy<Value = FieldValue> {
        prop_oneof![
            "[a-c]{0,2}".prop_map(FieldValue::Str),
            (-3i32..4).prop_map(|v| FieldValue::Num(v as f64 / 2.0)),
            Just(FieldValue::Num(-0.0)),
            any::<bool>().prop_map(FieldValue::Bool),
            Just(FieldValue::Null),
        ]
    }

    fn records() -> impl Strategy<Value = Vec<(u64, usize, Vec<FieldValue>)>> {
        proptest::collection::vec(
            (
                0u64..200,
                0usize..3,
                proptest::collection::vec(value(), 0..4),
            ),
            0..30,
        )
    }

    const FIELDS: [&str; 3] = ["x", "y", "z"];

    fn build(records: &[(u64, usize, Vec<FieldValue>)]) -> FieldIndexes {
        let mut idx = FieldIndexes::new(&names(&FIELDS));
        let mut seen = std::collections::HashSet::new();
        for (key, field, values) in records {
            if seen.insert((*key, *field)) {
                idx.insert(*key, FIELDS[*field], values).unwrap();
            }
        }
        idx
    }

    proptest! {
        #[test]
        fn insert_remove_and_round_trip(records in records(), extra in (200u64..210, 0usize..3, proptest::collection::vec(value(), 0..5))) {
            let idx = build(&records);
            let mut bytes = Vec::new();
            idx.save(&mut bytes).unwrap();
            prop_assert_eq!(FieldIndexes::load(&bytes[..]).unwrap(), idx.clone());
            let mut changed = idx.clone();
            let (key, field, values) = extra;
            changed.insert(key, FIELDS[field], &values).unwrap();
            prop_assert_eq!(changed.exists(FIELDS[field]).unwrap().contains(key as u32), !values.is_empty());
            changed.remove(key, FIELDS[field], &values).unwrap();
            prop_assert_eq!(changed, idx);
        }

        #[test]
        fn load_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), with_header in any::<bool>()) {
            let mut input = Vec::new();
            if with_header {
                input.extend_from_slice(&MAGIC);
                input.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            }
            input.extend_from_slice(&bytes);
            prop_assert!(FieldIndexes::load(&input[..]).is_err());
        }

        #[test]
        fn load_never_panics_on_damaged_files(records in records(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>(), reseal in any::<bool>()) {
            let idx = build(&records);
            let damage = |b: &mut Vec<u8>| {
                for (at, byte) in &flips {
                    let i = at.index(b.len());
                    b[i] ^= byte | 1;
                }
            };
            let mut original = Vec::new();
            idx.save(&mut original).unwrap();
            let bytes = if reseal {
                resealed(&idx, damage)
            } else {
                let mut b = original.clone();
                damage(&mut b);
                b
            };
            // Resealed damage may happen to leave a valid file; it must never panic, and
            // without resealing the checksum must notice (unless the flips cancelled out).
            let result = FieldIndexes::load(&bytes[..]);
            if !reseal && bytes != original {
                prop_assert!(matches!(result, Err(CoreError::Corrupt(_))));
            }
            let end = cut.index(bytes.len());
            prop_assert!(FieldIndexes::load(&bytes[..end]).is_err());
        }
    }
}
