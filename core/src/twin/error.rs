//! Why a twin write was refused.

use crate::{ErrorCode, HubError};

/// A refused twin write. Each maps to an IoT Hub code in one place (the `From` below); messages
/// name the key, path or limit so a person can act on them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwinError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A section (`tags`, `properties.desired`) is present but not an object.
    #[error("'{0}' must be a JSON object")]
    SectionNotObject(&'static str),
    /// A key breaks IoT Hub's key rules.
    #[error("invalid property name '{key}' in {at}: {why}")]
    InvalidKey {
        /// The offending key (its first 64 characters).
        key: String,
        /// Where it is.
        at: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// Objects nested deeper than the limit.
    #[error("{path} is nested deeper than {max} levels")]
    TooDeep {
        /// The object that is too deep.
        path: String,
        /// The limit.
        max: usize,
    },
    /// One value over the per-value limit.
    #[error("{path} is {size} bytes; a property value may be at most {max} bytes")]
    ValueTooLarge {
        /// The value's path.
        path: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A section over its size limit after the write.
    #[error("{section} would be {size} bytes; the limit is {max} bytes")]
    SectionTooLarge {
        /// Which section.
        section: &'static str,
        /// Its size after the write.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An integer outside ±2^52.
    #[error("{path} is {value}; integers must be between -4503599627370496 and 4503599627370495")]
    IntegerOutOfRange {
        /// The value's path.
        path: String,
        /// The number as written.
        value: String,
    },
}

impl From<&TwinError> for HubError {
    fn from(e: &TwinError) -> Self {
        let code = match e {
            TwinError::NotJson(_) => ErrorCode::IotHubFormatError,
            TwinError::NotAnObject
            | TwinError::SectionNotObject(_)
            | TwinError::InvalidKey { .. }
            | TwinError::TooDeep { .. }
            | TwinError::ValueTooLarge { .. }
            | TwinError::SectionTooLarge { .. }
            | TwinError::IntegerOutOfRange { .. } => ErrorCode::ArgumentInvalid,
        };
        HubError::new(code, e.to_string())
    }
}
