//! `lookalike-core`: the native half of Lookalike.
//!
//! It knows vectors, `u64` keys, bitsets and groups; nothing about images, models, JSON or HTTP.
//! - [`distance`]: SIMD distance kernels with runtime dispatch and a scalar reference.
//! - [`bitset`]: dense bitsets over keys, the currency of filtering.
//! - [`fields`]: field indexes (keyword/bool bitmaps, numeric ranges, `exists`).
//! - [`filter`]: filter expressions, evaluated into a bitset over the field indexes.
//! - [`group`]: top-k groups with the best hits of each.
//! - [`index`]: the collection index: usearch HNSW + exact vector store + planner.
//! - `py`: PyO3 bindings, behind the `python` feature.

pub mod bitset;
pub mod distance;
pub mod error;
pub mod fields;
pub mod filter;
pub mod group;
pub mod index;

#[cfg(feature = "python")]
mod py;

pub use error::{CoreError, CoreResult};
