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

    /// A permission by its IoT Hub name (`RegistryRead`, `RegistryWrite`, `ServiceConnect`,
    /// `DeviceConnect`), case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::REGISTRY_READ, Self::REGISTRY_WRITE, Self::SERVICE_CONNECT, Self::DEVICE_CONNECT]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
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

/// The built-in policies of every IoT hub and their permissions (spec §4.4).
pub const BUILT_IN: &[(&str, Permissions)] = &[
    (OWNER_POLICY, Permissions::ALL),
    ("service", Permissions::SERVICE_CONNECT),
    ("device", Permissions::DEVICE_CONNECT),
    ("registryRead", Permissions::REGISTRY_READ),
    ("registryReadWrite", Permissions::REGISTRY_READ.union(Permissions::REGISTRY_WRITE)),
];

impl Policy {
    /// The built-in owner policy with the given key.
    pub fn owner(key: impl Into<String>) -> Self {
        Self { name: OWNER_POLICY.to_owned(), key: key.into(), permissions: Permissions::ALL }
    }

    /// The hub's policies. `config` (the `TWINHUB_POLICIES` JSON, optional) lists policies as
    /// `[{"name": .., "key": .., "permissions": ["ServiceConnect", ..]}]`; `permissions` may be
    /// left out for built-in names. Built-in policies the config does not name get a key derived
    /// from the owner key (HMAC-SHA256 of `twinhub-policy:<name>`), so a hub has all five out of
    /// the box, as Azure's do, while only one secret needs keeping.
    pub fn all(owner_key: &str, config: Option<&str>) -> Result<Vec<Self>, PolicyConfigError> {
        let mut policies = vec![Self::owner(owner_key)];
        if let Some(text) = config.filter(|t| !t.trim().is_empty()) {
            let entries: Vec<PolicyEntry> = serde_json::from_str(text)
                .map_err(|e| PolicyConfigError(format!("not a JSON list of policies: {e}")))?;
            for entry in entries {
                let permissions = match &entry.permissions {
                    Some(names) => names.iter().try_fold(Permissions::default(), |acc, n| {
                        Permissions::parse(n).map(|p| acc.union(p)).ok_or_else(|| {
                            PolicyConfigError(format!("unknown permission '{n}' in policy '{}'", entry.name))
                        })
                    })?,
                    None => built_in_permissions(&entry.name).ok_or_else(|| {
                        PolicyConfigError(format!("policy '{}' needs a permissions list", entry.name))
                    })?,
                };
                policies.retain(|p| p.name != entry.name);
                policies.push(Self { name: entry.name, key: entry.key, permissions });
            }
        }
        for (name, permissions) in BUILT_IN {
            if !policies.iter().any(|p| p.name == *name) {
                let key = derive_key(owner_key, name)
                    .ok_or_else(|| PolicyConfigError("the owner key is not base64".into()))?;
                policies.push(Self { name: (*name).to_owned(), key, permissions: *permissions });
            }
        }
        Ok(policies)
    }
}

/// A bad `TWINHUB_POLICIES`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy configuration: {0}")]
pub struct PolicyConfigError(pub String);

#[derive(serde::Deserialize)]
struct PolicyEntry {
    name: String,
    key: String,
    permissions: Option<Vec<String>>,
}

fn built_in_permissions(name: &str) -> Option<Permissions> {
    BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

fn derive_key(owner_key: &str, name: &str) -> Option<String> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = STANDARD.decode(owner_key.trim()).ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("twinhub-policy:{name}").as_bytes());
    Some(STANDARD.encode(mac.finalize().into_bytes()))
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

    const OWNER: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn five_built_in_policies_by_default() {
        let all = Policy::all(OWNER, None).unwrap();
        let names: Vec<_> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["iothubowner", "service", "device", "registryRead", "registryReadWrite"]);
        let service = &all[1];
        assert!(service.permissions.contains(Permissions::SERVICE_CONNECT));
        assert!(!service.permissions.contains(Permissions::REGISTRY_READ));
        assert_ne!(service.key, OWNER);
        // Derived keys are stable and distinct.
        assert_eq!(Policy::all(OWNER, None).unwrap()[1].key, service.key);
        assert_ne!(all[2].key, service.key);
    }

    #[test]
    fn config_overrides_and_adds() {
        let cfg = r#"[{"name":"service","key":"c2VydmljZQ=="},{"name":"ops","key":"b3Bz","permissions":["registryread","ServiceConnect"]}]"#;
        let all = Policy::all(OWNER, Some(cfg)).unwrap();
        assert_eq!(all.iter().find(|p| p.name == "service").unwrap().key, "c2VydmljZQ==");
        let ops = all.iter().find(|p| p.name == "ops").unwrap();
        assert!(ops.permissions.contains(Permissions::REGISTRY_READ.union(Permissions::SERVICE_CONNECT)));
        assert!(Policy::all(OWNER, Some("nope")).is_err());
        assert!(Policy::all(OWNER, Some(r#"[{"name":"x","key":"k"}]"#)).is_err());
        assert!(Policy::all(OWNER, Some(r#"[{"name":"x","key":"k","permissions":["Fly"]}]"#)).is_err());
    }
}
