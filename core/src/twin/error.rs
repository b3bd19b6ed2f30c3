//! Why a twin write was refused.

use crate::{ErrorCode, HubError};

/// A refused twin write. Each maps to an IoT Hub code in one place (the `From` below).
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
    #[error("invalid property name '{key}': {why}")]
    InvalidKey {
        /// The offending key (shortened when long).
        key: String,
        /// Which rule it breaks.
        why: &'static str,
    },
}

impl From<&TwinError> for HubError {
    fn from(e: &TwinError) -> Self {
        let code = match e {
            TwinError::NotJson(_) => ErrorCode::IotHubFormatError,
            TwinError::NotAnObject | TwinError::SectionNotObject(_) | TwinError::InvalidKey { .. } => {
                ErrorCode::ArgumentInvalid
            }
        };
        HubError::new(code, e.to_string())
    }
}
