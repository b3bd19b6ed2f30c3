//! Aggregates and GROUP BY. Each index shard computes partial aggregates per group in SQL
//! ([`super::sql::aggregate_statement`]); the evaluator computes the same partials in memory
//! ([`accumulate`]); [`merge`] adds up partials from any number of sources and [`rows`] turns
//! them into result rows. AVG is carried as sum and count, so shards merge exactly.
//!
//! SUM, AVG, MIN and MAX read numbers only; a group with no numbers has no such key in its row.

use super::ast::{Aggregate, ItemKind, Query, Select};
use super::eval::{eval, lookup, matches, Val};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// One group's partial aggregates.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupPartial {
    /// The GROUP BY value; `None` when it is undefined, or when the query has no GROUP BY.
    pub key: Option<Value>,
    /// Rows in the group.
    pub count: u64,
    /// Per select item (same index), the numbers seen.
    pub numbers: Vec<Numbers>,
}

/// The numbers an aggregate saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Numbers {
    pub sum: f64,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Numbers {
    fn add(&mut self, other: &Numbers) {
        self.sum += other.sum;
        self.count += other.count;
        self.min = combine(self.min, other.min, f64::min);
        self.max = combine(self.max, other.max, f64::max);
    }
}

fn combine(a: Option<f64>, b: Option<f64>, pick: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(pick(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Whether the query answers with aggregate rows rather than one row per twin.
pub fn is_aggregate(query: &Query) -> bool {
    query.group_by.is_some()
        || matches!(&query.select, Select::Items(items) if items.iter().any(|i| matches!(i.kind, ItemKind::Aggregate(..))))
}

fn item_count(query: &Query) -> usize {
    match &query.select {
        Select::Items(items) => items.len(),
        Select::Star => 0,
    }
}

/// Groups being built: partials in first-seen order, found by key through a hash index, since
/// a GROUP BY on a property most twins differ in (`deviceId`, a timestamp) has as many groups
/// as twins, and a linear search per row or per shard partial would be quadratic.
#[derive(Debug, Default)]
pub struct Groups {
    list: Vec<GroupPartial>,
    index: HashMap<String, usize>,
}

impl Groups {
    /// Adds a partial to its group, or starts the group.
    pub fn add(&mut self, part: GroupPartial) {
        let id = key_id(part.key.as_ref());
        match self.index.get(&id).and_then(|&i| self.list.get_mut(i)) {
            Some(g) => {
                g.count += part.count;
                for (mine, theirs) in g.numbers.iter_mut().zip(&part.numbers) {
                    mine.add(theirs);
                }
            }
            None => {
                self.index.insert(id, self.list.len());
                self.list.push(part);
            }
        }
    }

    /// The groups, in the order their keys were first seen.
    pub fn into_vec(self) -> Vec<GroupPartial> {
        self.list
    }
}

/// Adds one document to in-memory partials (the evaluator's side of aggregation).
pub fn accumulate(query: &Query, doc: &Value, groups: &mut Groups) {
    if !matches(query.filter.as_ref(), doc) {
        return;
    }
    let key = query.group_by.as_ref().and_then(|p| lookup(doc, p)).cloned();
    let mut numbers = vec![Numbers::default(); item_count(query)];
    if let Select::Items(items) = &query.select {
        for (slot, item) in numbers.iter_mut().zip(items) {
            if let ItemKind::Aggregate(agg, Some(arg)) = &item.kind {
                if *agg != Aggregate::Count {
                    if let Val::Num(n) = eval(arg, doc) {
                        *slot = Numbers { sum: n, count: 1, min: Some(n), max: Some(n) };
                    }
                }
            }
        }
    }
    groups.add(GroupPartial { key, count: 1, numbers });
}

/// Adds up partials from many sources into one list of groups.
pub fn merge(parts: impl IntoIterator<Item = GroupPartial>) -> Vec<GroupPartial> {
    let mut groups = Groups::default();
    for p in parts {
        groups.add(p);
    }
    groups.into_vec()
}

/// A key's identity for grouping, as SQL's GROUP BY groups: numbers by value (1 and 1.0, 0 and
/// -0 together), everything else by JSON equality (object key order does not matter).
fn key_id(key: Option<&Value>) -> String {
    match key {
        None => "u".to_owned(),
        Some(Value::Number(n)) => match n.as_f64() {
            // + 0.0 turns -0 into 0; Display is the shortest text that round-trips.
            Some(x) => format!("n{}", x + 0.0),
            None => format!("N{n}"),
        },
        Some(v) => {
            let mut out = "j".to_owned();
            canonical_json(v, &mut out);
            out
        }
    }
}

/// JSON text with object keys sorted, recursively.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The result rows, largest group first (ties in key order), as at most `top` rows. A query
/// without GROUP BY always has exactly one row, even over no twins.
pub fn rows(query: &Query, mut groups: Vec<GroupPartial>) -> Vec<Value> {
    if query.group_by.is_none() && groups.is_empty() {
        groups.push(GroupPartial { key: None, count: 0, numbers: vec![Numbers::default(); item_count(query)] });
    }
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| key_order(a.key.as_ref(), b.key.as_ref())));
    let Select::Items(items) = &query.select else { return Vec::new() };
    let limit = query.top.and_then(|t| usize::try_from(t).ok()).unwrap_or(usize::MAX);
    groups
        .iter()
        .take(limit)
        .map(|g| {
            let mut row = Map::new();
            for (i, item) in items.iter().enumerate() {
                let numbers = g.numbers.get(i).cloned().unwrap_or_default();
                let value = match &item.kind {
                    ItemKind::Path(_) => g.key.clone(),
                    ItemKind::Aggregate(Aggregate::Count, _) => Some(Value::from(g.count)),
                    ItemKind::Aggregate(agg, _) if numbers.count > 0 => match agg {
                        Aggregate::Sum => number(numbers.sum),
                        Aggregate::Avg => number(numbers.sum / numbers.count as f64),
                        Aggregate::Min => numbers.min.and_then(number),
                        _ => numbers.max.and_then(number),
                    },
                    ItemKind::Aggregate(..) => None,
                };
                if let Some(v) = value {
                    row.insert(item.name.clone(), v);
                }
            }
            Value::Object(row)
        })
        .collect()
}

/// A number as JSON, integral values without a fraction (`3`, not `3.0`).
fn number(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Some(Value::from(n as i64))
    } else {
        serde_json::Number::from_f64(n).map(Value::Number)
    }
}

/// Null, Booleans, numbers, strings, the rest by JSON text, and undefined last.
fn key_order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None => 7,
            Some(Value::Null) => 1,
            Some(Value::Bool(_)) => 2,
            Some(Value::Number(_)) => 3,
            Some(Value::String(_)) => 4,
            Some(Value::Array(_)) => 5,
            Some(Value::Object(_)) => 6,
        }
    }
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        _ => Ordering::Equal,
    })
}

/// Reads one row of [`super::sql::aggregate_statement`]'s result.
pub fn partial_from_row(query: &Query, row: &Map<String, Value>) -> GroupPartial {
    let key = match (row.get("k_class").and_then(Value::as_str), row.get("k_value")) {
        (None, _) => None,
        (Some("null"), _) => Some(Value::Null),
        (Some("true"), Some(v)) => Some(Value::Bool(v.as_f64().is_some_and(|n| n != 0.0))),
        (Some("array" | "object"), Some(Value::String(text))) => serde_json::from_str(text).ok(),
        (Some(_), v) => v.cloned(),
    };
    let count = row.get("n").and_then(Value::as_f64).map_or(0, |n| n as u64);
    let numbers = (0..item_count(query))
        .map(|i| {
            let get = |name: &str| row.get(&format!("{name}{i}")).and_then(Value::as_f64);
            Numbers {
                sum: get("s").unwrap_or(0.0),
                count: get("c").map_or(0, |n| n as u64),
                min: get("lo"),
                max: get("hi"),
            }
        })
        .collect();
    GroupPartial { key, count, numbers }
}
