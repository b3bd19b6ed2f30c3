//! Authentication: SAS tokens (spec §4.1), connection strings (§4.3) and access policies (§4.4).

mod connection_string;
mod policy;
mod sas;

pub use connection_string::{ConnectionString, Credential};
pub use policy::{Permissions, Policy, PolicyConfigError, BUILT_IN, OWNER_POLICY};
pub use sas::{sign, SasToken};

/// Why a token or connection string was refused. Messages are safe to show: they never include
/// a key or a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token is past its `se`.
    #[error("the SAS token expired at {expiry} (now {now})")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The verifier's clock, in seconds.
        now: u64,
    },
    /// A field the format requires is absent.
    #[error("the {0} is missing a required field '{1}'")]
    MissingField(&'static str, &'static str),
    /// The `Authorization` header carries no token.
    #[error("missing Authorization header with a SharedAccessSignature")]
    MissingToken,
    /// The token does not parse.
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    /// A connection string does not parse.
    #[error("malformed connection string: {0}")]
    MalformedConnectionString(String),
    /// The signature does not match the key.
    #[error("the SAS token's signature does not match")]
    BadSignature,
    /// The policy lacks a permission the operation needs.
    #[error("policy '{policy}' lacks the {needed} permission")]
    PermissionDenied {
        /// The policy used.
        policy: String,
        /// The permission the operation needs.
        needed: &'static str,
    },
    /// The token's `sr` does not cover the resource.
    #[error("the SAS token's resource '{0}' does not cover this hub")]
    WrongResource(String),
    /// The `skn` names no policy of this hub.
    #[error("unknown shared access policy '{0}'")]
    UnknownPolicy(String),
}

impl From<&AuthError> for crate::HubError {
    fn from(e: &AuthError) -> Self {
        crate::HubError::new(crate::ErrorCode::IotHubUnauthorizedAccess, e.to_string())
    }
}
