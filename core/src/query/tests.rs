use super::aggregate;
use super::ast::{CmpOp, Expr, ItemKind, Literal};
use super::eval::{matches, project};
use super::*;
use serde_json::{json, Value};

/// The sample twin of the query documentation (spec §6.8), in the service shape.
fn sample() -> Value {
    json!({
        "deviceId": "myDeviceId",
        "etag": "AAAAAAAAAAc=",
        "status": "enabled",
        "connectionState": "Disconnected",
        "lastActivityTime": "2021-05-07T00:50:38.0543092Z",
        "version": 4,
        "tags": { "location": { "region": "US", "plant": "Redmond43" }, "group": { "name": "g1" } },
        "properties": {
            "desired": { "telemetryConfig": { "configId": "db00ebf5", "sendFrequency": "5m" }, "$version": 1 },
            "reported": {
                "telemetryConfig": { "configId": "db00ebf5", "sendFrequencyInSecs": 300, "status": "Success" },
                "connectivity": { "type": "cellular" },
                "nothing": null,
                "$version": 7
            }
        },
        "capabilities": { "iotEdge": false }
    })
}

fn keeps(text: &str) -> bool {
    let q = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    matches(q.filter.as_ref(), &sample())
}

fn error(text: &str) -> String {
    parse(text).map(|_| ()).expect_err(text).to_string()
}

#[test]
fn documented_examples_match_the_sample_twin() {
    assert!(keeps("SELECT * FROM devices WHERE tags.location.region = 'US'"));
    assert!(keeps(
        "SELECT * FROM devices WHERE tags.location.region = 'US' AND properties.reported.telemetryConfig.sendFrequencyInSecs >= 60"
    ));
    assert!(!keeps("SELECT * FROM devices WHERE properties.reported.connectivity IN ['wired', 'wifi']"));
    assert!(keeps("SELECT * FROM devices WHERE is_defined(properties.reported.connectivity)"));
    assert!(keeps("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'myDev')"));
    assert!(keeps("SELECT * FROM devices WHERE capabilities.iotEdge = false"));
    assert!(keeps("select * from devices where DeviceId = 'myDeviceId'"));
    assert!(keeps("SELECT * FROM devices WHERE devices.deviceId = \"myDeviceId\""));
    assert!(keeps("SELECT * FROM devices WHERE tags.[[group]].name = 'g1'"));
    assert!(keeps("SELECT * FROM devices WHERE tags.group.name = 'g1'"));
}

#[test]
fn semantics_of_undefined_null_and_types() {
    assert!(keeps("SELECT * FROM devices WHERE properties.reported.nothing = null"));
    assert!(!keeps("SELECT * FROM devices WHERE properties.reported.missing = null"));
    assert!(keeps("SELECT * FROM devices WHERE IS_DEFINED(properties.reported.nothing)"));
    assert!(!keeps("SELECT * FROM devices WHERE IS_DEFINED(properties.reported.missing)"));
    // Cross-type and object comparisons are undefined: neither they nor their negation match.
    assert!(!keeps("SELECT * FROM devices WHERE version = '4'"));
    assert!(!keeps("SELECT * FROM devices WHERE NOT (version = '4')"));
    assert!(!keeps("SELECT * FROM devices WHERE tags.location = tags.location"));
    assert!(!keeps("SELECT * FROM devices WHERE NOT (properties.reported.missing = 1)"));
    assert!(keeps("SELECT * FROM devices WHERE version = 4 OR properties.reported.missing = 1"));
    assert!(!keeps("SELECT * FROM devices WHERE version = 4 AND properties.reported.missing = 1"));
    assert!(keeps("SELECT * FROM devices WHERE version * 2 + 1 = 9 AND version / 8 = 0.5 AND version % 3 = 1"));
    assert!(!keeps("SELECT * FROM devices WHERE version / 0 = 0"));
    assert!(keeps("SELECT * FROM devices WHERE lastActivityTime > '2021-01-01'"));
    assert!(keeps("SELECT * FROM devices WHERE status NIN ['disabled'] AND version IN [1, 4, 'x']"));
    assert!(keeps("SELECT * FROM devices WHERE ENDSWITH(deviceId, 'Id') AND NOT STARTSWITH(deviceId, 'x')"));
    assert!(keeps("SELECT * FROM devices WHERE 0x10 = 16 AND -version = -4 AND version <> 5 AND version != 5"));
    assert!(keeps("SELECT * FROM devices WHERE 'a\\'b' != 'ab' AND \"\\u00e9\" = 'é'"));
}

#[test]
fn escapes_in_strings() {
    let q = parse(r#"SELECT * FROM devices WHERE tags.x = 'a\'b\"c\\d\u00e9\n'"#).expect("parses");
    let Some(Expr::Compare(CmpOp::Eq, _, right)) = q.filter else { panic!("a comparison") };
    assert_eq!(*right, Expr::Literal(Literal::Str("a'b\"c\\dé\n".into())));
}

#[test]
fn projections_are_keyed_by_alias_or_last_segment() {
    let q = parse("SELECT DeviceId, LastActivityTime, tags.location.region AS r, tags.missing FROM devices")
        .expect("parses");
    let Select::Items(items) = &q.select else { panic!("items") };
    assert_eq!(
        project(items, &sample()),
        json!({"deviceId": "myDeviceId", "lastActivityTime": "2021-05-07T00:50:38.0543092Z", "r": "US"})
    );
    assert_eq!(item_type(&q), "Raw");
    assert_eq!(item_type(&parse("SELECT * FROM devices").expect("parses")), "Twin");
    assert_eq!(item_type(&parse("SELECT * FROM devices.jobs").expect("parses")), "DeviceJob");
}

#[test]
fn group_by_counts_and_whole_collection_aggregates() {
    let docs: Vec<Value> = ["1.0", "1.1", "1.0", "1.0"]
        .iter()
        .enumerate()
        .map(|(i, fw)| json!({"deviceId": format!("d{i}"), "version": i, "properties": {"reported": {"fw": fw}}}))
        .chain([json!({"deviceId": "d9", "version": 10})])
        .collect();
    let run = |text: &str| {
        let q = parse(text).expect("parses");
        let mut groups = aggregate::Groups::default();
        for d in &docs {
            aggregate::accumulate(&q, d, &mut groups);
        }
        aggregate::rows(&q, groups.into_vec())
    };
    assert_eq!(
        run("SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw"),
        vec![json!({"fw": "1.0", "n": 3}), json!({"fw": "1.1", "n": 1}), json!({"n": 1})]
    );
    assert_eq!(
        run("SELECT COUNT() AS total, SUM(version), AVG(version) AS avg, MIN(version), MAX(version) FROM devices"),
        vec![json!({"total": 5, "$1": 16, "avg": 3.2, "$2": 0, "$3": 10})]
    );
    assert_eq!(run("SELECT COUNT() AS n FROM devices WHERE version > 100"), vec![json!({"n": 0})]);
    assert_eq!(
        run("SELECT TOP 1 properties.reported.fw, COUNT() FROM devices GROUP BY properties.reported.fw"),
        vec![json!({"fw": "1.0", "$1": 3})]
    );
}

#[test]
fn errors_point_at_the_place() {
    assert_eq!(
        error("SELECT * FROM devices WHERE tags.location.building ="),
        "expected a value after '=', found end of query at 1:53"
    );
    assert_eq!(error("SELECT * FROM devices\nWHERE x = 'abc"), "unterminated string: it has no closing quote at 2:11");
    assert!(error("SELECT * FROM devices WHERE FOO(deviceId)").starts_with("unknown function 'FOO'"));
    assert_eq!(error("SELECT * FROM devices WHERE is_defined(a, b)"), "IS_DEFINED takes 1 argument, not 2 at 1:29");
    assert_eq!(error("SELECT * FROM devices WHERE startswith(a)"), "STARTSWITH takes 2 arguments, not 1 at 1:29");
    assert!(error("SELECT deviceId, COUNT() FROM devices").contains("without GROUP BY"));
    assert!(error("SELECT * FROM devices WHERE COUNT() > 1").contains("belongs in the SELECT list"));
    assert!(error("SELECT tags.a, COUNT() FROM devices GROUP BY tags.b").contains("neither the GROUP BY"));
    assert!(error("SELECT * FROM devices GROUP BY tags.b").contains("cannot be grouped"));
    assert!(error("SELECT TOP 0 * FROM devices").starts_with("TOP must be a whole number from 1 to 1000000, not 0"));
    assert!(error("SELECT TOP -5 * FROM devices").contains("not -5"));
    assert!(error("SELECT TOP 99999999999 * FROM devices").contains("TOP must be"));
    assert!(error("SELECT TOP 1.5 * FROM devices").contains("TOP must be"));
    assert!(error("SELECT * FROM things").starts_with("expected 'devices'"));
    assert!(error("SELECT * FROM devices WHERE").starts_with("expected a value after 'WHERE', found end of query"));
    assert!(error("SELECT * FROM devices WHERE a = 1 b").starts_with("expected the end of the query"));
    assert!(error("SELECT * FROM devices WHERE a IN 'x'").contains("array of constants"));
    assert!(error("SELECT * FROM devices WHERE a = #").starts_with("unexpected character '#'"));
    assert!(error("SELECT * FROM devices WHERE tags.[[a\"b]] = 1").contains("cannot be queried"));
}

#[test]
fn length_limit_is_8192_characters() {
    let base = "SELECT * FROM devices WHERE deviceId = '";
    let fill = |n: usize| format!("{base}{}'", "é".repeat(n - base.len() - 1));
    assert!(parse(&fill(8192)).is_ok());
    assert!(error(&fill(8193)).starts_with("the query is longer than 8192 characters"));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // 4,000 levels fit in the length limit; 10,000 do not, and are refused for their length.
    let text = format!("SELECT * FROM devices WHERE {}1 = 1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(error(&text).contains("longer than 8192"));
    for depth in [65, 2_000] {
        let text = format!("SELECT * FROM devices WHERE {}1 = 1{}", "(".repeat(depth * 2), ")".repeat(depth * 2));
        assert!(error(&text).contains("nests more than 64 levels"), "{depth}");
        let nots = format!("SELECT * FROM devices WHERE {}true", "NOT ".repeat(depth));
        assert!(error(&nots).contains("nests more than 64 levels"), "{depth}");
    }
    // One path 300 times: one bound value, so the depth limit is what refuses it.
    let chain = format!("SELECT * FROM devices WHERE version = {}", vec!["version"; 300].join(" + "));
    assert!(error(&chain).contains("operators deep"));
    // Long AND/OR chains stay flat and are fine.
    let ors = (0..300).map(|i| format!("deviceId = 'd{i}'")).collect::<Vec<_>>().join(" OR ");
    assert!(parse(&format!("SELECT * FROM devices WHERE {ors}")).is_ok());
    let nested_ok = format!("SELECT * FROM devices WHERE {}1 = 1{}", "(".repeat(60), ")".repeat(60));
    assert!(parse(&nested_ok).is_ok());
}

#[test]
fn aggregates_name_unaliased_items_by_position() {
    let q = parse("SELECT COUNT(), MAX(version) AS hi, SUM(version) FROM devices").expect("parses");
    let Select::Items(items) = &q.select else { panic!("items") };
    let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["$1", "hi", "$2"]);
    assert!(matches!(items[0].kind, ItemKind::Aggregate(..)));
}

#[test]
fn groups_merge_as_sql_groups() {
    use aggregate::{merge, GroupPartial};
    let part = |key: Option<Value>| GroupPartial { key, count: 1, numbers: Vec::new() };
    let groups = merge([
        part(Some(json!(1))),
        part(Some(json!(1.0))),
        part(Some(json!(0))),
        part(Some(json!(-0.0))),
        part(Some(json!("1"))),
        part(Some(json!(true))),
        part(Some(json!({"a": 1, "b": 2}))),
        part(Some(serde_json::from_str(r#"{"b": 2, "a": 1}"#).expect("json"))),
        part(Some(json!({"a": 1.0, "b": 2}))),
        part(None),
        part(None),
    ]);
    let counts: Vec<u64> = groups.iter().map(|g| g.count).collect();
    // 1 and 1.0; 0 and -0; "1"; true; the two key orders; a 1.0 inside an object; undefined.
    assert_eq!(counts, [2, 2, 1, 1, 2, 1, 2]);
}

/// Every constant and path is a bound parameter, and SQLite (and Cloudflare) allow 100 per
/// statement: long `IN` lists bind one JSON array, and a statement past 100 binds one array of
/// all its values. The parser refuses a query past [`parser::MAX_BOUND_VALUES`] with the
/// position of the value past the limit.
#[test]
fn any_number_of_constants_compiles_within_100_parameters() {
    let ids = |n: usize| (0..n).map(|i| format!("'d{i}'")).collect::<Vec<_>>().join(",");
    let long_in = parse(&format!("SELECT * FROM devices WHERE deviceId IN [{}]", ids(900))).expect("900 ids");
    assert_eq!(sql::rows_statement(&long_in, Some("d0"), 101).params.len(), 4, "path, numbers, strings, page key");
    let ors = (0..300).map(|i| format!("deviceId = 'd{i}'")).collect::<Vec<_>>().join(" OR ");
    let long_or = parse(&format!("SELECT * FROM devices WHERE {ors}")).expect("300 ORs");
    let stmt = sql::rows_statement(&long_or, Some("d0"), 101);
    assert_eq!(stmt.params.len(), 1, "folded into one array");
    assert!(stmt.sql.contains("json_extract(?1, '$[300]')"), "{}", &stmt.sql[..200]);
    assert!(sql::ids_statement(&long_or).params.len() <= 100);
    assert!(sql::aggregate_statement(&long_or).params.len() <= 100);
    let past = format!("SELECT * FROM devices WHERE deviceId IN [{}]", ids(parser::MAX_BOUND_VALUES));
    let err = parse(&past).unwrap_err();
    assert!(err.message.contains("at most 1000"), "{}", err.message);
    let last = past.rfind("'d999'").unwrap();
    assert_eq!(err.at.col as usize, last + 1, "the caret is on the value past the limit");
    // Paths count once each, however often they repeat.
    let repeated = format!("SELECT * FROM devices WHERE {}", vec!["tags.a = 1"; 900].join(" OR "));
    assert!(parse(&repeated).is_err(), "900 constants and one path is 901");
    let repeated = format!("SELECT * FROM devices WHERE {}", vec!["tags.a = tags.b"; 400].join(" OR "));
    assert!(parse(&repeated).is_ok(), "two paths, however often");
}

/// twinhub's drift functions (the overview's links): no argument, read from the twin's desired
/// and reported sections as the drift table reads them.
#[test]
fn drift_functions_select_drifting_and_refusing_twins() {
    let refusing = json!({ "properties": {
        "desired": { "mode": "eco", "interval": 5 },
        "reported": { "mode": { "value": "off", "ac": 400, "av": 2 }, "interval": 5 },
    } });
    let pending = json!({ "properties": { "desired": { "interval": 5 }, "reported": {} } });
    let caught_up = json!({ "properties": { "desired": { "interval": 5 }, "reported": { "interval": 5.0 } } });
    let selects = |text: &str, doc: &Value| matches(parse(text).expect(text).filter.as_ref(), doc);
    let drifting = "SELECT * FROM devices WHERE IS_DRIFTING()";
    let refused = "SELECT * FROM devices WHERE has_refused()";
    assert!(selects(drifting, &refusing) && selects(drifting, &pending) && !selects(drifting, &caught_up));
    assert!(selects(refused, &refusing) && !selects(refused, &pending) && !selects(refused, &caught_up));
    assert!(error("SELECT * FROM devices WHERE IS_DRIFTING(tags)").contains("takes 0 arguments"));
}
