//! The query evaluator against the SQL compiler, on the SQLite the fleet index runs: the
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! article's queries over a generated fleet, and random queries over random twins.

use proptest::prelude::*;
use rusqlite::Connection;
use serde_json::{json, Map, Value};
use twinhub_core::fixture;
use twinhub_core::query::aggregate::{self, accumulate, partial_from_row};
use twinhub_core::query::ast::{
    Aggregate, ArithOp, CmpOp, Collection, Expr, Function, Item, ItemKind, Literal, Path, Query, Select,
};
use twinhub_core::query::eval::matches;
use twinhub_core::query::sql::{aggregate_statement, rows_statement, twins_statement, values_statement, Statement};
use twinhub_core::query::{self, parse};
use twinhub_core::UnixMillis;

mod support;
use support::bind;

fn table(docs: &[Value]) -> Connection {
    support::load(docs, true)
}

fn sql_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => json!(String::from_utf8_lossy(t)),
    }
}

fn sql_ids(db: &Connection, q: &Query) -> Vec<String> {
    let Statement { sql, params } = rows_statement(q, None, 1_000_000);
    let mut stmt = db.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let rows = stmt
        .query_map(rusqlite::params_from_iter(bind(&params)), |r| r.get::<_, String>(0))
        .unwrap_or_else(|e| panic!("{e}: {sql}"));
    rows.map(|r| r.expect("row")).collect()
}

fn eval_ids(docs: &[Value], q: &Query) -> Vec<String> {
    let mut ids: Vec<String> = docs
        .iter()
        .filter(|d| matches(q.filter.as_ref(), d))
        .map(|d| d["deviceId"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sql_groups(db: &Connection, q: &Query) -> Vec<Value> {
    let Statement { sql, params } = aggregate_statement(q);
    let mut stmt = db.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.query(rusqlite::params_from_iter(bind(&params))).expect("aggregate");
    let mut parts = Vec::new();
    while let Some(row) = rows.next().expect("row") {
        let mut map = Map::new();
        for (i, name) in names.iter().enumerate() {
            map.insert(name.clone(), sql_value(row.get_ref(i).expect("column")));
        }
        parts.push(partial_from_row(q, &map));
    }
    aggregate::rows(q, aggregate::merge(parts))
}

fn eval_groups(docs: &[Value], q: &Query) -> Vec<Value> {
    let mut groups = aggregate::Groups::default();
    for d in docs {
        accumulate(q, d, &mut groups);
    }
    aggregate::rows(q, groups.into_vec())
}

// ---- the article's queries over the fixture fleet ------------------------------------------

fn fleet_docs(n: usize) -> (Vec<fixture::FixtureDevice>, Vec<Value>) {
    let devices = fixture::fleet(42, n);
    let docs = devices.iter().map(|d| d.twin_json(UnixMillis(1_780_000_000_000)).expect("twin")).collect();
    (devices, docs)
}

/// Long `IN` lists (one JSON array each) and long `OR` chains (every value folded into one
/// array past 100 parameters) give the evaluator's rows, with numbers and strings mixed.
#[test]
fn folded_parameters_give_the_same_rows() {
    let (_, docs) = fleet_docs(400);
    let db = table(&docs);
    let ids: Vec<String> = docs.iter().step_by(3).map(|d| d["deviceId"].as_str().unwrap().to_owned()).collect();
    let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    let floors = "1, 2.0, 'x', true, null, 7, 8, 9, 10";
    let texts = [
        format!("SELECT * FROM devices WHERE deviceId IN [{}]", quoted.join(", ")),
        format!("SELECT * FROM devices WHERE NOT (deviceId IN [{}])", quoted.join(", ")),
        format!("SELECT * FROM devices WHERE tags.location.floor IN [{floors}] OR deviceId IN [{}]", quoted.join(",")),
        format!(
            "SELECT * FROM devices WHERE {}",
            ids.iter().map(|i| format!("deviceId = '{i}'")).collect::<Vec<_>>().join(" OR ")
        ),
        format!(
            "SELECT * FROM devices WHERE tags.location.floor > 2 AND ({})",
            (0..120).map(|i| format!("properties.reported.lastTemperature > {i}.5")).collect::<Vec<_>>().join(" OR ")
        ),
    ];
    for text in texts {
        let q = parse(&text).expect("parses");
        let stmt = rows_statement(&q, None, 1_000_000);
        assert!(stmt.params.len() <= 100, "{} parameters", stmt.params.len());
        assert_eq!(sql_ids(&db, &q), eval_ids(&docs, &q), "{}", &text[..80]);
    }
}

#[test]
fn article_queries_return_exactly_the_right_devices() {
    let (devices, docs) = fleet_docs(1500);
    let db = table(&docs);
    let mut cases = fixture::article_queries();
    cases.push(fixture::ArticleQuery {
        name: "floors and NOT IN",
        text: "SELECT * FROM devices WHERE tags.location.floor >= 3 AND tags.location.floor < 5 \
               AND NOT (tags.deployment.region IN ['eastus', 'westus'])",
        expect: |d| {
            let floor = d.tags["location"]["floor"].as_i64().unwrap_or(0);
            (3..5).contains(&floor)
                && !["eastus", "westus"].contains(&d.tags["deployment"]["region"].as_str().unwrap_or(""))
        },
    });
    for case in cases {
        let expected: Vec<String> = devices.iter().filter(|d| (case.expect)(d)).map(|d| d.device_id.clone()).collect();
        let q = parse(case.text).expect("parses");
        assert!(!expected.is_empty() && expected.len() < devices.len(), "{}: a selective case", case.name);
        assert_eq!(eval_ids(&docs, &q), expected, "evaluator: {}", case.name);
        assert_eq!(sql_ids(&db, &q), expected, "SQL: {}", case.name);
    }
}

#[test]
fn group_by_firmware_counts_devices() {
    let (devices, docs) = fleet_docs(1500);
    let db = table(&docs);
    let text = fixture::FIRMWARE_GROUP_QUERY
        .replace("COUNT() AS devices", "COUNT() AS devices, AVG(properties.reported.lastTemperature) AS t");
    let q = parse(&text).expect("parses");
    let rows = eval_groups(&docs, &q);
    // Averages agree to rounding: SQLite sums floats with compensation, the evaluator plainly.
    let close = |a: &Value, b: &Value| (a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(1.0)).abs() < 1e-9;
    let sql_rows = sql_groups(&db, &q);
    assert_eq!(sql_rows.len(), rows.len());
    for (s, e) in sql_rows.iter().zip(&rows) {
        assert_eq!((&s["firmware"], &s["devices"]), (&e["firmware"], &e["devices"]));
        assert!(close(&s["t"], &e["t"]), "{s} vs {e}");
    }
    for fw in ["2.1.0", "2.0.5", "1.9.8"] {
        let n = devices.iter().filter(|d| d.reported["firmwareVersion"] == fw).count();
        let row = rows.iter().find(|r| r["firmware"] == fw).expect("a group per firmware");
        assert_eq!(row["devices"], json!(n), "{fw}");
    }
    assert_eq!(rows.len(), 3);
    let total = parse("SELECT COUNT() AS total FROM devices").expect("parses");
    assert_eq!(sql_groups(&db, &total), vec![json!({"total": 1500})]);
}

// ---- random queries over random twins ------------------------------------------------------

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(Value::from),
        prop_oneof![Just(0.5), Just(2.5), Just(-1.5)].prop_map(Value::from),
        prop_oneof![Just(""), Just("a"), Just("ab"), Just("b"), Just("é"), Just("ba")].prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => scalar(),
        1 => Just(json!({"c": 1})),
        1 => Just(json!([1, "a"])),
    ]
}

const PATHS: &[&[&str]] = &[&["a"], &["b", "c"], &["b"], &["tags", "x"], &["missing"], &["deviceId"], &["b", "d"]];

fn path() -> impl Strategy<Value = Path> {
    prop::sample::select(PATHS).prop_map(|p| p.iter().map(|s| (*s).to_owned()).collect())
}

fn doc(i: usize) -> impl Strategy<Value = Value> {
    (
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
        prop::option::of(value()),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(move |(a, c, d, x, b_is_object, drift)| {
            let mut root = json!({ "deviceId": format!("d{i:02}") });
            // No desired property, one caught up, one pending, one refused (`IS_DRIFTING()`,
            // `HAS_REFUSED()`).
            let reported = match drift {
                1 => json!({ "p": 1 }),
                2 => json!({ "p": 0 }),
                _ => json!({ "p": { "value": 0, "ac": 400, "av": 1 } }),
            };
            if drift > 0 {
                root["properties"] = json!({ "desired": { "p": 1 }, "reported": reported });
            }
            if let Some(a) = a {
                root["a"] = a;
            }
            if b_is_object {
                let mut b = json!({});
                if let Some(c) = c {
                    b["c"] = c;
                }
                if let Some(d) = d {
                    b["d"] = d;
                }
                root["b"] = b;
            } else if let Some(c) = c {
                root["b"] = c;
            }
            if let Some(x) = x {
                root["tags"] = json!({ "x": x });
            }
            root
        })
}

fn docs() -> impl Strategy<Value = Vec<Value>> {
    (1usize..25).prop_flat_map(|n| (0..n).map(doc).collect::<Vec<_>>())
}

fn literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        Just(Literal::Undefined),
        Just(Literal::Null),
        any::<bool>().prop_map(Literal::Bool),
        (-3i64..4).prop_map(|n| Literal::Number(n as f64)),
        prop_oneof![Just(0.5), Just(2.5), Just(-1.5)].prop_map(Literal::Number),
        prop_oneof![Just(""), Just("a"), Just("ab"), Just("b"), Just("é")].prop_map(|s| Literal::Str(s.into())),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        3 => path().prop_map(Expr::Path),
        2 => literal().prop_map(Expr::Literal),
        1 => prop::collection::vec(literal(), 0..3).prop_map(|l| Expr::Literal(Literal::Array(l))),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        let cmp = prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]);
        let arith = prop::sample::select(vec![ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::Rem]);
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            (cmp, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Compare(op, Box::new(a), Box::new(b))),
            (arith, inner.clone(), inner.clone()).prop_map(|(op, a, b)| Expr::Arith(op, Box::new(a), Box::new(b))),
            (inner.clone(), prop::collection::vec(literal(), 0..4), any::<bool>())
                .prop_map(|(e, list, negated)| Expr::In { expr: Box::new(e), list, negated }),
            (prop::sample::select(Function::ALL.to_vec()), inner.clone(), inner.clone()).prop_map(|(f, a, b)| {
                let args = [a, b].into_iter().take(f.arity()).collect();
                Expr::Call(f, args)
            }),
        ]
    })
}

fn filtered(filter: Expr) -> Query {
    Query { top: None, select: Select::Star, from: Collection::Devices, filter: Some(filter), group_by: None }
}

fn grouped(filter: Option<Expr>, group: Path, arg: Expr) -> Query {
    let item = |kind, name: &str| Item { kind, name: name.to_owned() };
    let items = vec![
        item(ItemKind::Path(group.clone()), "key"),
        item(ItemKind::Aggregate(Aggregate::Count, None), "n"),
        item(ItemKind::Aggregate(Aggregate::Sum, Some(arg.clone())), "sum"),
        item(ItemKind::Aggregate(Aggregate::Avg, Some(arg.clone())), "avg"),
        item(ItemKind::Aggregate(Aggregate::Min, Some(arg.clone())), "min"),
        item(ItemKind::Aggregate(Aggregate::Max, Some(arg)), "max"),
    ];
    Query { top: None, select: Select::Items(items), from: Collection::Devices, filter, group_by: Some(group) }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// The evaluator and the compiled SQL keep the same rows.
    #[test]
    fn evaluator_and_sql_keep_the_same_rows(docs in docs(), filter in expr()) {
        let db = table(&docs);
        let q = filtered(filter);
        prop_assert_eq!(sql_ids(&db, &q), eval_ids(&docs, &q), "{:?}", q.filter);
    }

    /// ...and the same groups and aggregates.
    #[test]
    fn evaluator_and_sql_group_alike(docs in docs(), filter in prop::option::of(expr()), group in path(), arg in expr()) {
        let db = table(&docs);
        let q = grouped(filter, group, arg);
        prop_assert_eq!(sql_groups(&db, &q), eval_groups(&docs, &q));
    }

    /// Text that parses gives SQL that SQLite accepts; text that does not gives an error, never a panic.
    #[test]
    fn any_text_parses_or_errors(text in "SELECT [ -~]{0,60}") {
        if let Ok(q) = parse(&text) {
            let db = table(&[]);
            if query::aggregate::is_aggregate(&q) {
                sql_groups(&db, &q);
            } else {
                sql_ids(&db, &q);
            }
        }
    }
}

#[test]
fn twins_statement_reads_the_named_devices_that_exist() {
    let (_, docs) = fleet_docs(300);
    let db = table(&docs);
    let mut wanted: Vec<String> = docs.iter().step_by(3).map(|d| d["deviceId"].as_str().unwrap().to_owned()).collect();
    wanted.push("no-such-device".into());
    let Statement { sql, params } = twins_statement(&wanted);
    assert_eq!(params.len(), 1, "one bound array, whatever the number of ids");
    let mut stmt = db.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let rows: Vec<(String, Value)> = stmt
        .query_map(rusqlite::params_from_iter(bind(&params)), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| r.map(|(id, twin)| (id, serde_json::from_str(&twin).unwrap())).unwrap())
        .collect();
    let mut expected: Vec<String> = wanted[..wanted.len() - 1].to_vec();
    expected.sort();
    assert_eq!(rows.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), expected);
    for (id, twin) in &rows {
        assert_eq!(twin["deviceId"], id.as_str(), "the row's twin is its device's");
    }
}

/// The overview's alert breakdown reads one value per alerting device: the path's value as
/// JSON for the twins that define it (strings, objects, null alike), nothing for the rest.
#[test]
fn values_statement_reads_one_path_of_the_named_devices() {
    let docs = vec![
        json!({ "deviceId": "a", "tags": { "location": { "building": "A" } } }),
        json!({ "deviceId": "b", "tags": { "location": { "building": { "wing": 2 } } } }),
        json!({ "deviceId": "c", "tags": { "location": { "building": null } } }),
        json!({ "deviceId": "d", "tags": {} }),
        json!({ "deviceId": "e", "tags": { "location": { "building": "E" } } }),
    ];
    let db = table(&docs);
    let ids: Vec<String> = ["a", "b", "c", "d", "gone"].iter().map(|s| (*s).to_owned()).collect();
    let path: Vec<String> = ["tags", "location", "building"].iter().map(|s| (*s).to_owned()).collect();
    let Statement { sql, params } = values_statement(&ids, &path);
    assert_eq!(params.len(), 2, "the ids as one array, and the path");
    let mut stmt = db.prepare(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let rows: Vec<(String, Value)> = stmt
        .query_map(rusqlite::params_from_iter(bind(&params)), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| r.map(|(id, v)| (id, serde_json::from_str(&v).unwrap())).unwrap())
        .collect();
    assert_eq!(
        rows,
        vec![("a".to_owned(), json!("A")), ("b".to_owned(), json!({ "wing": 2 })), ("c".to_owned(), Value::Null)]
    );
}
