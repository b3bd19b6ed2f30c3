//! Telemetry series for charts: numeric fields picked out of message bodies and downsampled to
//! min / max / average per time bucket, so a chart never draws more points than it has pixels.

use crate::{ErrorCode, HubError, UnixMillis};
use serde::{Deserialize, Serialize};
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

/// The latest time a window may reach (Unix ms; 2^53 - 1, what a JavaScript number holds
/// exactly).
pub const MAX_TIME_MS: u64 = (1 << 53) - 1;

/// A fleet series' window: `[from, to)` cut into buckets `width` ms wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Unix ms.
    pub from: u64,
    pub to: u64,
    pub width: u64,
}

impl Window {
    /// `[from, to)` in at most `buckets` buckets (1 to [`MAX_BUCKETS`]).
    pub fn new(from: u64, to: u64, buckets: usize) -> Result<Self, HubError> {
        if from >= to {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "from must be before to (Unix ms)"));
        }
        // Times travel to SQLite as JavaScript numbers, exact to 2^53.
        if to > MAX_TIME_MS {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, "to is past any time a message was enqueued"));
        }
        if !(1..=MAX_BUCKETS).contains(&buckets) {
            return Err(HubError::new(ErrorCode::ArgumentInvalid, format!("buckets must be 1 to {MAX_BUCKETS}")));
        }
        Ok(Self { from, to, width: (to - from).div_ceil(buckets as u64).max(1) })
    }

    /// Where bucket `index` starts.
    pub fn start_of(&self, index: u64) -> u64 {
        self.from.saturating_add(index.saturating_mul(self.width))
    }
}

/// A body field's dotted path (`temperature`, `sensors.inside.temp`) as an SQLite JSON path
/// (`$.sensors.inside.temp`). Each name is letters, digits, `_` or `-`, so the path is never
/// read as anything but names.
pub fn json_path(field: &str) -> Result<String, HubError> {
    let names: Vec<&str> = field.split('.').collect();
    let plain = |n: &&str| {
        !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if field.is_empty() || names.len() > 8 || !names.iter().all(plain) {
        return Err(HubError::new(
            ErrorCode::ArgumentInvalid,
            "field must be a dotted path of names (letters, digits, _ or -), such as temperature or sensors.inside.temp",
        ));
    }
    Ok(format!("$.{field}"))
}

/// The most bytes of device keys one partition read carries: they are bound to its statement
/// as one JSON array, a single SQL value, which Cloudflare caps at 2 MB.
pub const MAX_KEYS_BYTES: usize = 1024 * 1024;

/// The partition reads a fleet request makes: one per partition with no selection (`None`:
/// every device), else each partition's share of the selected keys (the partition its events
/// go to), cut into pieces of at most `max_bytes` of JSON. A partition with none of them is
/// not read.
pub fn partition_reads(
    devices: Option<&[String]>,
    partitions: u32,
    max_bytes: usize,
) -> Vec<(u32, Option<Vec<String>>)> {
    let Some(devices) = devices else { return (0..partitions).map(|p| (p, None)).collect() };
    let mut shares: Vec<Vec<&String>> = (0..partitions).map(|_| Vec::new()).collect();
    for key in devices {
        if let Some(share) = shares.get_mut(crate::eventhub::partition_of_key(key, partitions) as usize) {
            share.push(key);
        }
    }
    let mut reads = Vec::new();
    for (p, share) in (0u32..).zip(shares) {
        let mut piece: Vec<String> = Vec::new();
        let mut bytes = 2;
        for key in share {
            // Quoted and comma-separated; escapes make a key longer, never shorter.
            let size = serde_json::to_string(key).map_or(key.len() + 2, |k| k.len()) + 1;
            if !piece.is_empty() && bytes + size > max_bytes {
                reads.push((p, Some(std::mem::take(&mut piece))));
                bytes = 2;
            }
            bytes += size;
            piece.push(key.clone());
        }
        if !piece.is_empty() {
            reads.push((p, Some(piece)));
        }
    }
    reads
}

/// One bucket of one partition's readings: mergeable with the same bucket of the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// The bucket's index in its [`Window`].
    pub bucket: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
}

/// The partitions' partials as one series: a bucket per index that has readings, in time
/// order (min of mins, max of maxes, the sums over the counts).
pub fn merge(window: &Window, partials: impl IntoIterator<Item = Partial>) -> Vec<Bucket> {
    let mut by_bucket: std::collections::BTreeMap<u64, Partial> = std::collections::BTreeMap::new();
    for p in partials.into_iter().filter(|p| p.count > 0 && p.min.is_finite() && p.max.is_finite() && p.sum.is_finite())
    {
        by_bucket
            .entry(p.bucket)
            .and_modify(|m| {
                m.count += p.count;
                m.min = m.min.min(p.min);
                m.max = m.max.max(p.max);
                m.sum += p.sum;
            })
            .or_insert(p);
    }
    by_bucket
        .into_values()
        .map(|p| Bucket {
            start: window.start_of(p.bucket),
            count: p.count,
            min: p.min,
            max: p.max,
            avg: p.sum / p.count as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fleet_window_and_its_field() {
        let w = Window::new(1_000, 2_000, 10).unwrap();
        assert_eq!((w.width, w.start_of(3)), (100, 1_300));
        assert_eq!(Window::new(0, 7, 3).unwrap().width, 3, "rounded up: the last bucket ends at or after to");
        assert!(Window::new(2_000, 2_000, 10).is_err());
        assert!(Window::new(0, 1, 0).is_err());
        assert!(Window::new(0, 1, MAX_BUCKETS + 1).is_err());
        assert!(Window::new(0, u64::MAX, 10).is_err(), "past what SQLite is given exactly");
        assert_eq!(json_path("sensors.inside.temp").unwrap(), "$.sensors.inside.temp");
        for bad in ["", "a..b", "a.", "$.a", "a'b", "a[0]", "a b", "a\"b"] {
            assert_eq!(json_path(bad).unwrap_err().code, ErrorCode::ArgumentInvalid, "{bad}");
        }
    }

    #[test]
    fn a_selection_is_read_where_its_events_are_in_pieces_a_statement_can_bind() {
        assert_eq!(partition_reads(None, 3, MAX_KEYS_BYTES), vec![(0, None), (1, None), (2, None)]);
        let keys: Vec<String> = (0..100).map(|i| format!("device-{i:03}")).collect();
        let reads = partition_reads(Some(&keys), 4, MAX_KEYS_BYTES);
        assert!(reads.len() <= 4, "one read per partition that has any");
        for (p, share) in &reads {
            let share = share.as_ref().unwrap();
            assert!(share.iter().all(|k| crate::eventhub::partition_of_key(k, 4) == *p));
        }
        assert_eq!(reads.iter().map(|(_, s)| s.as_ref().unwrap().len()).sum::<usize>(), 100);
        let small = partition_reads(Some(&keys), 1, 100);
        assert!(small.len() > 1, "cut into pieces");
        for (_, share) in &small {
            assert!(serde_json::to_string(share.as_ref().unwrap()).unwrap().len() <= 100);
        }
        assert_eq!(small.iter().map(|(_, s)| s.as_ref().unwrap().len()).sum::<usize>(), 100, "none lost");
        assert!(partition_reads(Some(&[]), 4, MAX_KEYS_BYTES).is_empty(), "nothing selected: nothing read");
        let module = vec!["d1/m1".to_owned()];
        assert_eq!(partition_reads(Some(&module), 4, MAX_KEYS_BYTES)[0].0, crate::eventhub::partition_of("d1", 4));
    }

    #[test]
    fn partitions_merge_bucket_by_bucket() {
        let w = Window::new(0, 100, 10).unwrap();
        let p = |bucket, count, min, max, sum| Partial { bucket, count, min, max, sum };
        let merged = merge(&w, [p(2, 2, 1.0, 3.0, 4.0), p(0, 1, 5.0, 5.0, 5.0), p(2, 2, -1.0, 2.0, 1.0)]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], Bucket { start: 0, count: 1, min: 5.0, max: 5.0, avg: 5.0 });
        assert_eq!(merged[1], Bucket { start: 20, count: 4, min: -1.0, max: 3.0, avg: 1.25 });
        assert!(merge(&w, [p(1, 0, 0.0, 0.0, 0.0), p(1, 1, f64::NAN, 1.0, 1.0)]).is_empty(), "empty and unreadable");
    }

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
