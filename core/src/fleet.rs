//! Fleet index placement: which index shard holds a device's projection.

/// The index shard for `device_id` among `shards` (FNV-1a: stable across builds and runtimes,
/// unlike `std`'s randomly seeded hasher).
pub fn shard_of(device_id: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in device_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards.max(1)
}

/// Clamps `GET /devices?top=` as IoT Hub does: 1 to 1000, anything else means 1000.
pub fn clamp_top(top: Option<&str>) -> usize {
    match top.and_then(|t| t.parse::<usize>().ok()) {
        Some(n) if (1..=1000).contains(&n) => n,
        _ => 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("dev1", 4), shard_of("dev1", 4));
        assert!((0..1000).all(|i| shard_of(&format!("d{i}"), 4) < 4));
        assert_eq!(shard_of("anything", 0), 0);
    }

    #[test]
    fn top_is_clamped() {
        assert_eq!(clamp_top(Some("5")), 5);
        assert_eq!(clamp_top(Some("0")), 1000);
        assert_eq!(clamp_top(Some("5000")), 1000);
        assert_eq!(clamp_top(Some("x")), 1000);
        assert_eq!(clamp_top(None), 1000);
    }
}
