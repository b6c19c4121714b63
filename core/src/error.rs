//! One error type for the whole core. Every fallible public function returns `CoreResult`;
//! nothing in the core panics on user input. The Python layer maps each variant to one
//! exception class in one place (`py/mod.rs`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    #[error("vector has {got} dimensions, the index expects {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("vector {row} contains NaN or infinity")]
    NonFiniteVector { row: usize },
    #[error("vector {row} has zero length and cannot be used with the cosine metric")]
    ZeroVector { row: usize },
    #[error("{what} must have {expected} entries, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("key {key} is out of range (at most {max})")]
    KeyOutOfRange { key: u64, max: u64 },
    #[error("key {key} is not in the index")]
    KeyNotFound { key: u64 },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    #[error("index error: {0}")]
    Index(String),
    #[error("i/o error: {0}")]
    Io(String),
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl From<std::io::Error> for CoreError {
    fn from(error: std::io::Error) -> Self {
        CoreError::Io(error.to_string())
    }
}

impl From<cxx::Exception> for CoreError {
    fn from(error: cxx::Exception) -> Self {
        CoreError::Index(error.what().to_string())
    }
}
