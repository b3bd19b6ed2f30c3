//! Shared access policies and their permissions (spec §4.4).

/// The name of the all-powerful built-in policy, whose key `make dev` generates.
pub const OWNER_POLICY: &str = "iothubowner";

/// A set of IoT Hub permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    /// Read device identities.
    pub const REGISTRY_READ: Self = Self(1);
    /// Create, update and delete device identities.
    pub const REGISTRY_WRITE: Self = Self(2);
    /// Twins, queries, methods, jobs: the service-facing operations.
    pub const SERVICE_CONNECT: Self = Self(4);
    /// Act as a device.
    pub const DEVICE_CONNECT: Self = Self(8);
    /// All of the above.
    pub const ALL: Self = Self(15);

    /// Whether every permission in `needed` is present.
    pub fn contains(self, needed: Self) -> bool {
        self.0 & needed.0 == needed.0
    }

    /// The union of two sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The IoT Hub name of a single permission, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::REGISTRY_READ => "RegistryRead",
            Self::REGISTRY_WRITE => "RegistryWrite",
            Self::SERVICE_CONNECT => "ServiceConnect",
            Self::DEVICE_CONNECT => "DeviceConnect",
            _ => "combined",
        }
    }
}

/// A shared access policy: a name, a key and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `skn` in tokens, `SharedAccessKeyName` in connection strings.
    pub name: String,
    /// The base64 key. Never logged or returned.
    pub key: String,
    /// What tokens signed with this key may do.
    pub permissions: Permissions,
}

impl Policy {
    /// The built-in owner policy with the given key.
    pub fn owner(key: impl Into<String>) -> Self {
        Self { name: OWNER_POLICY.to_owned(), key: key.into(), permissions: Permissions::ALL }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_has_everything() {
        let p = Policy::owner("k");
        assert!(p.permissions.contains(Permissions::REGISTRY_WRITE.union(Permissions::SERVICE_CONNECT)));
        assert!(!Permissions::REGISTRY_READ.contains(Permissions::REGISTRY_WRITE));
    }
}
