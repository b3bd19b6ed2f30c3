//! IoT Plug and Play: the model a device announces. A device names its model (a DTMI such as
//! `dtmi:com:example:Thermostat;1`) in its MQTT CONNECT user name, `...&model-id={dtmi}` (spec
//! §5.2); the hub keeps it as the twin's `modelId`, which queries can select on.

/// The longest model id kept (DTDL v3's bound on a DTMI).
pub const MAX_MODEL_ID_LEN: usize = 2048;

/// Whether `id` is a DTMI as DTDL defines it: `dtmi:` then `:`-separated segments (each a
/// letter, then letters, digits or `_`, not ending in `_`), then `;` and a version of 1 to 9
/// digits without a leading zero.
pub fn is_model_id(id: &str) -> bool {
    if id.len() > MAX_MODEL_ID_LEN {
        return false;
    }
    let Some(rest) = id.strip_prefix("dtmi:") else { return false };
    let Some((path, version)) = rest.rsplit_once(';') else { return false };
    let version_ok =
        (1..=9).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_digit()) && !version.starts_with('0');
    let segment_ok = |s: &str| {
        let bytes = s.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphabetic)
            && bytes.last().is_some_and(|b| *b != b'_')
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    version_ok && path.split(':').all(segment_ok)
}

/// A `model-id` that is no DTMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the user name's model-id is not a DTMI (dtmi:segment:...;version)")]
pub struct NotAModelId;

/// The model id a CONNECT user name announces (`{host}/{clientId}/?...&model-id={dtmi}`,
/// percent-encoded): `Ok(None)` when it announces none.
pub fn announced_model_id(username: &str) -> Result<Option<String>, NotAModelId> {
    let Some((_, query)) = username.split_once('?') else { return Ok(None) };
    let Some(raw) = query.split('&').find_map(|p| p.strip_prefix("model-id=")) else { return Ok(None) };
    let id = percent_encoding::percent_decode_str(raw).decode_utf8().map_err(|_| NotAModelId)?;
    if is_model_id(&id) {
        Ok(Some(id.into_owned()))
    } else {
        Err(NotAModelId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_dtmis() {
        for good in ["dtmi:com:example:Thermostat;1", "dtmi:a;123456789", "dtmi:x_1:y;2"] {
            assert!(is_model_id(good), "{good}");
        }
        for bad in [
            "",
            "dtmi:",
            "dtmi:com:example;0",
            "dtmi:com:example",
            "dtmi:1com;1",
            "dtmi:com_;1",
            "dtmi:a;1234567890",
            "dtmi:a b;1",
            "urn:x;1",
        ] {
            assert!(!is_model_id(bad), "{bad}");
        }
        assert!(!is_model_id(&format!("dtmi:{};1", "a".repeat(MAX_MODEL_ID_LEN))));
    }

    #[test]
    fn the_user_name_announces_the_model() {
        let name = "hub/d1/?api-version=2020-09-30&DeviceClientType=py&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1";
        assert_eq!(announced_model_id(name), Ok(Some("dtmi:com:example:Thermostat;1".to_owned())));
        assert_eq!(announced_model_id("hub/d1/?api-version=2021-04-12"), Ok(None));
        assert_eq!(announced_model_id("hub/d1/"), Ok(None));
        assert_eq!(announced_model_id("hub/d1/?model-id=not-a-dtmi"), Err(NotAModelId));
    }
}
