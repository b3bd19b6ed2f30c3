//! Telemetry series for charts: numeric fields picked out of message bodies and downsampled to
//! min / max / average per time bucket, so a chart never draws more points than it has pixels.

use crate::UnixMillis;
use serde::Serialize;
use serde_json::Value;

/// Most buckets one series may ask for.
pub const MAX_BUCKETS: usize = 1_000;

/// One numeric reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// When the hub enqueued the message.
    pub time: UnixMillis,
    /// The field's value.
    pub value: f64,
}

/// The readings of one time bucket. Buckets without readings are left out.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, Unix ms.
    pub start: u64,
    /// Readings in it.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub avg: f64,
}

/// The number at dotted `path` (`temperature`, `sensors.inside.temp`) of a JSON body.
pub fn numeric_field(body: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(body, |v, key| v.get(key))?.as_f64()
}

/// Splits `[from, to)` into `buckets` equal spans and summarizes the points in each.
pub fn downsample(points: &[Point], from: UnixMillis, to: UnixMillis, buckets: usize) -> Vec<Bucket> {
    let buckets = buckets.clamp(1, MAX_BUCKETS) as u64;
    let span = to.0.saturating_sub(from.0).max(1);
    let width = span.div_ceil(buckets).max(1);
    let mut out: Vec<Bucket> = Vec::new();
    let mut sorted: Vec<&Point> =
        points.iter().filter(|p| p.time >= from && p.time < to && p.value.is_finite()).collect();
    sorted.sort_by_key(|p| p.time);
    for p in sorted {
        let start = from.0 + (p.time.0 - from.0) / width * width;
        match out.last_mut() {
            Some(b) if b.start == start => {
                b.count += 1;
                b.min = b.min.min(p.value);
                b.max = b.max.max(p.value);
                b.avg += (p.value - b.avg) / b.count as f64;
            }
            _ => out.push(Bucket { start, count: 1, min: p.value, max: p.value, avg: p.value }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields() {
        let body = json!({"temperature": 21.5, "sensors": {"inside": {"temp": 19}}, "label": "x"});
        assert_eq!(numeric_field(&body, "temperature"), Some(21.5));
        assert_eq!(numeric_field(&body, "sensors.inside.temp"), Some(19.0));
        assert_eq!(numeric_field(&body, "label"), None);
        assert_eq!(numeric_field(&body, "missing.path"), None);
    }

    #[test]
    fn buckets() {
        let points: Vec<Point> = [(0, 1.0), (5, 3.0), (10, 10.0), (25, -2.0), (99, 7.0), (100, 1000.0)]
            .iter()
            .map(|&(t, v)| Point { time: UnixMillis(1_000 + t), value: v })
            .collect();
        let b = downsample(&points, UnixMillis(1_000), UnixMillis(1_100), 10);
        assert_eq!(b.len(), 4, "{b:?}");
        assert_eq!(b[0], Bucket { start: 1_000, count: 2, min: 1.0, max: 3.0, avg: 2.0 });
        assert_eq!(b[1].start, 1_010);
        assert_eq!(b[2], Bucket { start: 1_020, count: 1, min: -2.0, max: -2.0, avg: -2.0 });
        assert_eq!(b[3].start, 1_090);
        // The end is exclusive, and one bucket holds everything in range.
        assert_eq!(downsample(&points, UnixMillis(1_000), UnixMillis(1_100), 1)[0].count, 5);
    }
}
