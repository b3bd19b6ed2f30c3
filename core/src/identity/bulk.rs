//! Bulk registry operations (`POST /devices`, spec §3.2): up to 100 create, update or delete
//! requests in one call.

use crate::{ErrorCode, HubError};
use serde::Deserialize;
use serde_json::Value;

/// Most devices in one bulk request.
pub const MAX_BULK_DEVICES: usize = 100;

/// What to do with one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BulkAction {
    /// Create; fails if the id exists.
    Create,
    /// Create or update (`createOrUpdate`, `update`).
    Upsert,
    /// Update only if the identity etag matches.
    UpdateIfMatch(String),
    /// Delete.
    Delete,
    /// Delete only if the identity etag matches.
    DeleteIfMatch(String),
}

/// One device of a bulk request.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkItem {
    /// The device id.
    pub device_id: String,
    /// What to do.
    pub action: BulkAction,
    /// The identity body for create/update, in `PUT /devices/{id}` form.
    pub body: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportImportDevice {
    id: String,
    import_mode: Option<String>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    status: Option<Value>,
    status_reason: Option<Value>,
    authentication: Option<Value>,
    capabilities: Option<Value>,
}

/// Parses a bulk body: a JSON array of ExportImportDevice, at most [`MAX_BULK_DEVICES`].
pub fn parse(body: &str) -> Result<Vec<BulkItem>, HubError> {
    let devices: Vec<ExportImportDevice> = serde_json::from_str(body)
        .map_err(|e| HubError::unreadable("the body must be a JSON array of devices with 'id' and 'importMode'", &e))?;
    if devices.len() > MAX_BULK_DEVICES {
        return Err(HubError::new(
            ErrorCode::TooManyDevices,
            format!("{} devices in one bulk request; at most {MAX_BULK_DEVICES}", devices.len()),
        ));
    }
    devices.into_iter().map(item).collect()
}

fn item(d: ExportImportDevice) -> Result<BulkItem, HubError> {
    let mode = d.import_mode.as_deref().unwrap_or("createOrUpdate");
    let etag = || {
        d.etag.clone().ok_or_else(|| {
            HubError::new(ErrorCode::ArgumentInvalid, format!("device '{}': importMode '{mode}' needs an eTag", d.id))
        })
    };
    let action = match mode.to_ascii_lowercase().as_str() {
        "create" => BulkAction::Create,
        "createorupdate" | "update" => BulkAction::Upsert,
        "updateifmatchetag" | "createorupdateifmatchetag" => BulkAction::UpdateIfMatch(etag()?),
        "delete" => BulkAction::Delete,
        "deleteifmatchetag" => BulkAction::DeleteIfMatch(etag()?),
        other => {
            return Err(HubError::new(
                ErrorCode::ArgumentInvalid,
                format!("device '{}': importMode '{other}' is not supported (create, createOrUpdate, update, updateIfMatchETag, delete, deleteIfMatchETag)", d.id),
            ))
        }
    };
    let body = serde_json::json!({
        "deviceId": d.id,
        "status": d.status,
        "statusReason": d.status_reason,
        "authentication": d.authentication,
        "capabilities": d.capabilities,
    });
    Ok(BulkItem { device_id: d.id, action, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let items = parse(
            r#"[{"id":"a","importMode":"create"},{"id":"b"},{"id":"c","importMode":"deleteIfMatchETag","eTag":"MQ=="}]"#,
        )
        .unwrap();
        assert_eq!(items[0].action, BulkAction::Create);
        assert_eq!(items[1].action, BulkAction::Upsert);
        assert_eq!(items[2].action, BulkAction::DeleteIfMatch("MQ==".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(parse("{}").unwrap_err().code, ErrorCode::ArgumentInvalid);
        assert_eq!(parse("[").unwrap_err().code, ErrorCode::IotHubFormatError);
        assert_eq!(parse(r#"[{"id":"a","importMode":"fly"}]"#).unwrap_err().code, ErrorCode::ArgumentInvalid);
        assert_eq!(
            parse(r#"[{"id":"a","importMode":"deleteIfMatchETag"}]"#).unwrap_err().code,
            ErrorCode::ArgumentInvalid
        );
        let many = format!("[{}]", (0..101).map(|i| format!(r#"{{"id":"d{i}"}}"#)).collect::<Vec<_>>().join(","));
        assert_eq!(parse(&many).unwrap_err().code, ErrorCode::TooManyDevices);
    }
}
