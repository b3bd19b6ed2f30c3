//! The compiler from a query to SQLite SQL over the fleet index, a table of JSON twins.
//!
//! It must give exactly the rows of the in-memory evaluator ([`super::eval`]), so it spells
//! out the same semantics in SQL: every comparison checks with `json_type` that both sides are
//! primitives of one type (SQLite would happily compare `1 = true` or a string with an
//! object's JSON text), `undefined` is SQL `NULL`, and `AND`/`OR`/`NOT` use SQLite's
//! three-valued logic, which is the evaluator's. Constants and JSON paths are bound
//! parameters, never spliced into the SQL.

use super::ast::{Aggregate, ArithOp, CmpOp, Collection, Expr, Function, ItemKind, Literal, Path, Query, Select};
use serde_json::Value;
use std::collections::HashMap;

/// The fleet index table. One row per device ever seen; a deleted device keeps its row with
/// `identity` NULL (a tombstone) so an older, late push cannot resurrect it. `twin` holds the
/// service view of the twin (what `GET /twins/{id}` returns) as JSONB, or as JSON text for rows
/// written before JSONB; SQLite's JSON functions read both. `drifting` and `refused` are the
/// twin's `core::twin::drift::DriftCounts`, written with it (NULL in rows written before them,
/// until the shard's alarm fills them from the twin).
pub const INDEX_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS device (
    device_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    identity TEXT,
    twin BLOB,
    drifting INTEGER,
    refused INTEGER
)";

/// What an index created before the drift columns is given (each is refused once it is there).
pub const INDEX_MIGRATIONS: [&str; 2] =
    ["ALTER TABLE device ADD COLUMN drifting INTEGER", "ALTER TABLE device ADD COLUMN refused INTEGER"];

/// The document column.
const DOC: &str = "twin";

/// Bound parameters a statement may have: SQLite's default limit, which Cloudflare enforces
/// on Durable Object SQL (local workerd does not). Past it, [`Compiler::finish`] folds them.
pub const MAX_PARAMS: usize = 100;

/// Constants an `IN` list binds one by one; a longer list binds one JSON array.
const MAX_LISTED_CONSTANTS: usize = 8;

/// SQL text with its bound parameters (strings and numbers), numbered `?1`, `?2`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// One page of matching twins, in `device_id` order, after `after` (exclusive): columns `id`
/// and `twin` (JSON text). Asks for `limit` rows (written into the SQL: it is ours, not the
/// client's text).
pub fn rows_statement(query: &Query, after: Option<&str>, limit: u64) -> Statement {
    let mut c = Compiler::default();
    let filter = query.filter.as_ref().map_or_else(|| "1".to_owned(), |f| c.truthy(f));
    let after_sql = match after {
        Some(id) => format!(" AND device_id > {}", c.param(Value::from(id))),
        None => String::new(),
    };
    let collection = collection_sql(query);
    let sql = format!(
        "SELECT device_id AS id, json({DOC}) AS twin FROM device \
         WHERE identity IS NOT NULL AND {collection}{after_sql} AND {filter} ORDER BY device_id LIMIT {limit}"
    );
    c.finish(sql)
}

/// The twins of `ids` that exist (columns `id` and `twin`, in `device_id` order): what a rollout
/// reads to judge its wave, one statement per shard instead of a twin read per device. The ids
/// are one bound JSON array, so any number of them fits SQLite's (and Cloudflare's) 100 bound
/// parameters.
pub fn twins_statement(ids: &[String]) -> Statement {
    let mut c = Compiler::default();
    let list = c.param(Value::from(serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())));
    let sql = format!(
        "SELECT device_id AS id, json({DOC}) AS twin FROM device \
         WHERE identity IS NOT NULL AND device_id IN (SELECT value FROM json_each({list})) ORDER BY device_id"
    );
    c.finish(sql)
}

/// The value at `path` of those twins of `ids` that define it (columns `id` and `twin`, the
/// value as JSON text): what the overview's alert breakdown reads, rather than whole twins.
/// The ids are one bound JSON array, as in [`twins_statement`].
pub fn values_statement(ids: &[String], path: &Path) -> Statement {
    let mut c = Compiler::default();
    let list = c.param(Value::from(serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned())));
    let p = c.path_param(path);
    let sql = format!(
        "SELECT device_id AS id, {DOC} -> {p} AS twin FROM device \
         WHERE identity IS NOT NULL AND device_id IN (SELECT value FROM json_each({list})) \
         AND json_type({DOC}, {p}) IS NOT NULL ORDER BY device_id"
    );
    c.finish(sql)
}

/// Every matching device id, in order (column `id`): the devices a job selects. Ids only, so
/// a job over a large fleet does not pull its twins through the index.
pub fn ids_statement(query: &Query) -> Statement {
    let mut c = Compiler::default();
    let filter = query.filter.as_ref().map_or_else(|| "1".to_owned(), |f| c.truthy(f));
    let collection = collection_sql(query);
    let sql = format!(
        "SELECT device_id AS id FROM device WHERE identity IS NOT NULL AND {collection} AND {filter} ORDER BY device_id"
    );
    c.finish(sql)
}

/// The partial aggregates of one shard: per group (the GROUP BY key, or one group for the
/// whole collection) columns `k_class`, `k_value`, `n` and, per select item `i`, `s{i}`
/// (sum), `c{i}` (how many numbers), `lo{i}`, `hi{i}`. [`super::aggregate`] merges them.
pub fn aggregate_statement(query: &Query) -> Statement {
    let mut c = Compiler::default();
    let filter = query.filter.as_ref().map_or_else(|| "1".to_owned(), |f| c.truthy(f));
    // The inner query computes each row's key and numbers once; `LIMIT -1` keeps SQLite from
    // flattening it into the outer GROUP BY, which would evaluate the JSON lookups again for
    // the sorter and for the output (measured: twice as slow at 100,000 twins).
    let mut inner = Vec::new();
    let mut outer = vec!["k_class".to_owned(), "k_value".to_owned(), "COUNT(*) AS n".to_owned()];
    match &query.group_by {
        Some(path) => {
            let p = c.path_param(path);
            inner.push(format!("{} AS k_class", canonical_class(&p)));
            inner.push(format!("json_extract({DOC}, {p}) AS k_value"));
        }
        None => inner.push("NULL AS k_class, NULL AS k_value".to_owned()),
    }
    if let Select::Items(items) = &query.select {
        for (i, item) in items.iter().enumerate() {
            if let ItemKind::Aggregate(agg, Some(arg)) = &item.kind {
                if *agg != Aggregate::Count {
                    inner.push(format!("{} AS x{i}", c.number(arg)));
                    outer.push(format!(
                        "TOTAL(x{i}) AS s{i}, COUNT(x{i}) AS c{i}, MIN(x{i}) AS lo{i}, MAX(x{i}) AS hi{i}"
                    ));
                }
            }
        }
    }
    let group = if query.group_by.is_some() { " GROUP BY k_class, k_value" } else { "" };
    let sql = format!(
        "SELECT {} FROM (SELECT {} FROM device WHERE identity IS NOT NULL AND {} AND {filter} LIMIT -1){group}",
        outer.join(", "),
        inner.join(", "),
        collection_sql(query)
    );
    c.finish(sql)
}

/// The rows of the query's collection. Devices and modules share the index table, each under
/// its identity key ([`crate::identity`]): a module's key holds a `/`, a device's never does.
pub fn collection_sql(query: &Query) -> &'static str {
    match query.from {
        Collection::Modules => DEVICES_MODULES,
        // `devices.jobs` is answered from the jobs object, never from this table.
        Collection::Devices | Collection::Jobs => DEVICES_ONLY,
    }
}

/// The index rows that are devices (not modules): for listings and statistics too.
pub const DEVICES_ONLY: &str = "instr(device_id, '/') = 0";
/// The index rows that are modules.
pub const DEVICES_MODULES: &str = "instr(device_id, '/') > 0";

/// The `WHERE` condition alone, for tests and benchmarks that run it over their own table.
pub fn filter_sql(filter: &Expr) -> Statement {
    let mut c = Compiler::default();
    let sql = c.truthy(filter);
    c.finish(sql)
}

/// Statically known classes of values. `Array` and `Object` arise only from constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Bool,
    Num,
    Str,
    Array,
    Object,
}

impl Class {
    /// The `json_type` results of this class.
    fn json_types(self) -> &'static str {
        match self {
            Self::Bool => "('true', 'false')",
            Self::Num => "('integer', 'real')",
            Self::Str => "('text')",
            Self::Array => "('array')",
            Self::Object => "('object')",
        }
    }

    fn is_primitive(self) -> bool {
        matches!(self, Self::Bool | Self::Num | Self::Str)
    }
}

/// A compiled expression.
enum Compiled {
    Undefined,
    Null,
    /// A value of a known class: SQL yielding it (Booleans as 1/0), or NULL when undefined.
    Typed(Class, String),
    /// A property of the document: its class is known only per row. Holds the path's `?N`.
    Path(String),
}

#[derive(Default)]
struct Compiler {
    params: Vec<Value>,
    paths: HashMap<String, String>,
}

impl Compiler {
    /// The statement with only the parameters its SQL uses, renumbered in order of first use.
    /// Compiling binds every constant it meets, but some are dropped on the way (a comparison
    /// with `undefined` is NULL whatever the other side is), and SQLite refuses unused ones.
    /// A statement that would still bind more than [`MAX_PARAMS`] (say, hundreds of
    /// `deviceId = '...' OR ...`) binds one instead: a JSON array of them all, each use
    /// `json_extract(?1, '$[i]')`, a constant SQLite computes once per statement.
    fn finish(self, sql: String) -> Statement {
        let statement = self.renumber(sql);
        if statement.params.len() <= MAX_PARAMS {
            return statement;
        }
        let mut out = String::with_capacity(statement.sql.len() * 2);
        let mut rest = statement.sql.as_str();
        while let Some(at) = rest.find('?') {
            out.push_str(&rest[..at]);
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(1);
            out.push_str(&format!("json_extract(?1, '$[{}]')", n.saturating_sub(1)));
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
        Statement { sql: out, params: vec![Value::from(Value::Array(statement.params).to_string())] }
    }

    fn renumber(self, sql: String) -> Statement {
        let mut out = String::with_capacity(sql.len());
        let mut params = Vec::new();
        let mut renumbered: HashMap<usize, usize> = HashMap::new();
        let mut rest = sql.as_str();
        while let Some(at) = rest.find('?') {
            out.push_str(&rest[..at]);
            let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
            let old: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
            let new = *renumbered.entry(old).or_insert_with(|| {
                params.push(self.params.get(old.wrapping_sub(1)).cloned().unwrap_or(Value::Null));
                params.len()
            });
            out.push_str(&format!("?{new}"));
            rest = &rest[at + 1 + digits..];
        }
        out.push_str(rest);
        Statement { sql: out, params }
    }

    fn param(&mut self, v: Value) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    /// The `?N` of a JSON path; each distinct path is bound once.
    fn path_param(&mut self, path: &Path) -> String {
        // Every label quoted: twin keys may hold characters the bare syntax does not allow.
        // The parser has refused labels with '"'.
        let json_path: String = std::iter::once("$".to_owned())
            .chain(path.iter().map(|s| format!("\"{s}\"")))
            .collect::<Vec<_>>()
            .join(".");
        if let Some(p) = self.paths.get(&json_path) {
            return p.clone();
        }
        let p = self.param(Value::from(json_path.clone()));
        self.paths.insert(json_path, p.clone());
        p
    }

    fn compile(&mut self, expr: &Expr) -> Compiled {
        match expr {
            Expr::Literal(l) => self.literal(l),
            Expr::Path(p) => Compiled::Path(self.path_param(p)),
            Expr::Not(e) => Compiled::Typed(Class::Bool, format!("(NOT {})", self.boolean(e))),
            Expr::Neg(e) => Compiled::Typed(Class::Num, format!("(- {})", self.number(e))),
            Expr::And(terms) => Compiled::Typed(Class::Bool, self.junction(terms, "AND")),
            Expr::Or(terms) => Compiled::Typed(Class::Bool, self.junction(terms, "OR")),
            Expr::Compare(op, a, b) => Compiled::Typed(Class::Bool, self.compare(*op, a, b)),
            Expr::Arith(op, a, b) => {
                let (x, y) = (self.number(a), self.number(b));
                let sql = match op {
                    ArithOp::Add => format!("({x} + {y})"),
                    ArithOp::Sub => format!("({x} - {y})"),
                    ArithOp::Mul => format!("({x} * {y})"),
                    // SQLite divides integers as integers and gives NULL for a zero divisor.
                    ArithOp::Div => format!("(CAST({x} AS REAL) / {y})"),
                    ArithOp::Rem => format!("(CAST({x} AS INTEGER) % CAST({y} AS INTEGER))"),
                };
                Compiled::Typed(Class::Num, sql)
            }
            Expr::In { expr, list, negated } => {
                let sql = self.membership(expr, list);
                Compiled::Typed(Class::Bool, if *negated { format!("(NOT {sql})") } else { sql })
            }
            Expr::Call(f, args) => Compiled::Typed(Class::Bool, self.call(*f, args)),
        }
    }

    fn literal(&mut self, l: &Literal) -> Compiled {
        match l {
            Literal::Undefined => Compiled::Undefined,
            Literal::Null => Compiled::Null,
            Literal::Bool(b) => Compiled::Typed(Class::Bool, if *b { "1" } else { "0" }.to_owned()),
            Literal::Number(n) => Compiled::Typed(Class::Num, self.param(Value::from(*n))),
            Literal::Str(s) => Compiled::Typed(Class::Str, self.param(Value::from(s.as_str()))),
            // Never compared; any non-NULL SQL stands for "defined".
            Literal::Array(_) => Compiled::Typed(Class::Array, "1".to_owned()),
        }
    }

    /// SQL yielding 1, 0 or NULL (undefined) for an expression used as a condition.
    fn boolean(&mut self, expr: &Expr) -> String {
        match self.compile(expr) {
            Compiled::Typed(Class::Bool, sql) => sql,
            Compiled::Path(p) => format!("(CASE json_type({DOC}, {p}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"),
            _ => "NULL".to_owned(),
        }
    }

    /// SQL for a condition where only "true" matters: a `WHERE`, and the terms of `AND`/`OR`
    /// directly under it. There undefined and false may be confused (both drop the row), so a
    /// comparison can test the value first and the type second, and SQLite skips the second
    /// JSON lookup for most rows. Under `NOT` the distinction matters again and [`Self::boolean`]
    /// takes over.
    fn truthy(&mut self, expr: &Expr) -> String {
        match expr {
            Expr::And(terms) | Expr::Or(terms) => {
                let op = if matches!(expr, Expr::And(_)) { "AND" } else { "OR" };
                let compiled: Vec<String> = terms.iter().map(|t| self.truthy(t)).collect();
                balanced(&compiled, op)
            }
            Expr::Compare(op, a, b) => {
                let (a, b) = (self.compile(a), self.compile(b));
                match (a, b) {
                    (Compiled::Path(p), Compiled::Typed(class, v)) if class.is_primitive() => {
                        truthy_path_versus(*op, &p, class, &v)
                    }
                    (Compiled::Typed(class, v), Compiled::Path(p)) if class.is_primitive() => {
                        truthy_path_versus(op.mirrored(), &p, class, &v)
                    }
                    (Compiled::Path(p), Compiled::Path(q)) => {
                        let (cp, cq) = (canonical_class(&p), canonical_class(&q));
                        let values = format!(
                            "(json_extract({DOC}, {p}) {} json_extract({DOC}, {q}) AND {cp} = {cq} \
                             AND {cp} IN ('real', 'true', 'text'))",
                            op.sql()
                        );
                        if op.holds_for_equal() {
                            format!("({values} OR (json_type({DOC}, {p}) = 'null' AND json_type({DOC}, {q}) = 'null'))")
                        } else {
                            values
                        }
                    }
                    (a, b) => self.compare_compiled(*op, a, b),
                }
            }
            _ => self.boolean(expr),
        }
    }

    /// SQL yielding a number, or NULL when the expression is not one.
    fn number(&mut self, expr: &Expr) -> String {
        self.value_of(expr, Class::Num)
    }

    /// SQL yielding a string, or NULL when the expression is not one.
    fn string(&mut self, expr: &Expr) -> String {
        self.value_of(expr, Class::Str)
    }

    /// SQL yielding the expression's value when it is of `class`, NULL otherwise.
    fn value_of(&mut self, expr: &Expr, class: Class) -> String {
        match self.compile(expr) {
            Compiled::Typed(c, sql) if c == class => sql,
            Compiled::Path(p) => {
                format!("(CASE WHEN json_type({DOC}, {p}) IN {} THEN json_extract({DOC}, {p}) END)", class.json_types())
            }
            _ => "NULL".to_owned(),
        }
    }

    /// `AND`/`OR` over many terms, nested as a balanced tree: SQLite limits expression depth
    /// to 1,000, which a flat chain of a few hundred terms would otherwise exceed.
    fn junction(&mut self, terms: &[Expr], op: &str) -> String {
        let compiled: Vec<String> = terms.iter().map(|t| self.boolean(t)).collect();
        balanced(&compiled, op)
    }

    fn compare(&mut self, op: CmpOp, a: &Expr, b: &Expr) -> String {
        let (a, b) = (self.compile(a), self.compile(b));
        self.compare_compiled(op, a, b)
    }

    fn compare_compiled(&mut self, op: CmpOp, a: Compiled, b: Compiled) -> String {
        let holds = if op.holds_for_equal() { "1" } else { "0" };
        match (a, b) {
            (Compiled::Undefined, _) | (_, Compiled::Undefined) => "NULL".to_owned(),
            (Compiled::Null, Compiled::Null) => holds.to_owned(),
            (Compiled::Null, Compiled::Typed(..)) | (Compiled::Typed(..), Compiled::Null) => "NULL".to_owned(),
            (Compiled::Typed(x, va), Compiled::Typed(y, vb)) => {
                if x == y && x.is_primitive() {
                    format!("({va} {} {vb})", op.sql())
                } else {
                    "NULL".to_owned()
                }
            }
            (Compiled::Path(p), other) => path_versus(op, &p, other),
            (other, Compiled::Path(p)) => path_versus(op.mirrored(), &p, other),
        }
    }

    fn membership(&mut self, expr: &Expr, list: &[Literal]) -> String {
        let has = |pred: fn(&Literal) -> bool| if list.iter().any(pred) { "1" } else { "0" };
        let (has_null, has_true, has_false) =
            (has(|l| *l == Literal::Null), has(|l| *l == Literal::Bool(true)), has(|l| *l == Literal::Bool(false)));
        let nums: Vec<f64> =
            list.iter().filter_map(|l| if let Literal::Number(n) = l { Some(*n) } else { None }).collect();
        let strs: Vec<&str> =
            list.iter().filter_map(|l| if let Literal::Str(s) = l { Some(s.as_str()) } else { None }).collect();
        let compiled = self.compile(expr);
        let (nums, strs) = if nums.len() + strs.len() > MAX_LISTED_CONSTANTS {
            // A long list is one parameter each for its numbers and its strings: a JSON array
            // that SQLite reads once (`json_each` of a constant is evaluated once per
            // statement), so an `IN` of hundreds of ids fits the 100-parameter limit.
            let nums = self.param(Value::from(Value::from(nums).to_string()));
            let strs = self.param(Value::from(Value::from(strs).to_string()));
            (format!("SELECT value FROM json_each({nums})"), format!("SELECT value FROM json_each({strs})"))
        } else {
            let nums: Vec<String> = nums.into_iter().map(|n| self.param(Value::from(n))).collect();
            let strs: Vec<String> = strs.into_iter().map(|s| self.param(Value::from(s))).collect();
            (nums.join(", "), strs.join(", "))
        };
        match compiled {
            Compiled::Undefined => "NULL".to_owned(),
            Compiled::Null => has_null.to_owned(),
            Compiled::Typed(Class::Bool, v) => {
                format!("(CASE {v} WHEN 1 THEN {has_true} WHEN 0 THEN {has_false} END)")
            }
            Compiled::Typed(Class::Num, v) => format!("(CASE WHEN {v} IS NOT NULL THEN {v} IN ({nums}) END)"),
            Compiled::Typed(Class::Str, v) => format!("(CASE WHEN {v} IS NOT NULL THEN {v} IN ({strs}) END)"),
            Compiled::Typed(..) => "NULL".to_owned(),
            Compiled::Path(p) => format!(
                "(CASE json_type({DOC}, {p}) WHEN 'null' THEN {has_null} WHEN 'true' THEN {has_true} \
                 WHEN 'false' THEN {has_false} WHEN 'integer' THEN json_extract({DOC}, {p}) IN ({nums}) \
                 WHEN 'real' THEN json_extract({DOC}, {p}) IN ({nums}) \
                 WHEN 'text' THEN json_extract({DOC}, {p}) IN ({strs}) END)"
            ),
        }
    }

    fn call(&mut self, f: Function, args: &[Expr]) -> String {
        // The index keeps each twin's drift in columns (`DriftCounts`), written beside the twin.
        match f {
            Function::IsDrifting => return "(coalesce(drifting, 0) > 0)".to_owned(),
            Function::HasRefused => return "(coalesce(refused, 0) > 0)".to_owned(),
            _ => {}
        }
        if let Function::StartsWith | Function::EndsWith = f {
            let (s, t) = match args {
                [a, b] => (self.string(a), self.string(b)),
                _ => return "NULL".to_owned(),
            };
            // length() and substr() count characters, so this is a prefix test on whole
            // characters, as Rust's str::starts_with is on valid UTF-8.
            return if f == Function::StartsWith {
                format!("(substr({s}, 1, length({t})) = {t})")
            } else {
                format!(
                    "(CASE WHEN {s} IS NULL OR {t} IS NULL THEN NULL WHEN length({t}) = 0 THEN 1 \
                     ELSE substr({s}, -length({t})) = {t} END)"
                )
            };
        }
        let Some(arg) = args.first() else { return "NULL".to_owned() };
        let arg = self.compile(arg);
        let (wanted_types, wanted_class, null_counts): (&str, Option<Class>, bool) = match f {
            Function::IsDefined => {
                ("('null', 'true', 'false', 'integer', 'real', 'text', 'array', 'object')", None, true)
            }
            Function::IsNull => ("('null')", None, true),
            Function::IsBool => (Class::Bool.json_types(), Some(Class::Bool), false),
            Function::IsNumber => (Class::Num.json_types(), Some(Class::Num), false),
            Function::IsString => (Class::Str.json_types(), Some(Class::Str), false),
            Function::IsObject => (Class::Object.json_types(), Some(Class::Object), false),
            Function::IsArray => (Class::Array.json_types(), Some(Class::Array), false),
            Function::IsPrimitive => ("('null', 'true', 'false', 'integer', 'real', 'text')", None, true),
            Function::StartsWith | Function::EndsWith | Function::IsDrifting | Function::HasRefused => {
                return "NULL".to_owned()
            }
        };
        match arg {
            Compiled::Undefined => "0".to_owned(),
            Compiled::Null => if null_counts { "1" } else { "0" }.to_owned(),
            Compiled::Typed(class, v) => {
                let fits = match f {
                    Function::IsDefined => true,
                    Function::IsNull => false,
                    Function::IsPrimitive => class.is_primitive(),
                    _ => wanted_class == Some(class),
                };
                if fits {
                    format!("({v} IS NOT NULL)")
                } else {
                    "0".to_owned()
                }
            }
            Compiled::Path(p) => format!("coalesce(json_type({DOC}, {p}) IN {wanted_types}, 0)"),
        }
    }
}

/// `path op constant` where only "true" matters: value first, type second.
fn truthy_path_versus(op: CmpOp, p: &str, class: Class, v: &str) -> String {
    format!("(json_extract({DOC}, {p}) {} {v} AND json_type({DOC}, {p}) IN {})", op.sql(), class.json_types())
}

/// A path compared with anything but another path or undefined.
fn path_versus(op: CmpOp, p: &str, other: Compiled) -> String {
    let holds = if op.holds_for_equal() { "1" } else { "0" };
    match other {
        Compiled::Null => format!("(CASE WHEN json_type({DOC}, {p}) = 'null' THEN {holds} END)"),
        Compiled::Typed(class, v) if class.is_primitive() => format!(
            "(CASE WHEN json_type({DOC}, {p}) IN {} THEN json_extract({DOC}, {p}) {} {v} END)",
            class.json_types(),
            op.sql()
        ),
        Compiled::Path(q) => {
            let (cp, cq) = (canonical_class(p), canonical_class(&q));
            format!(
                "(CASE WHEN {cp} = {cq} THEN (CASE {cp} WHEN 'null' THEN {holds} WHEN 'array' THEN NULL \
                 WHEN 'object' THEN NULL ELSE json_extract({DOC}, {p}) {} json_extract({DOC}, {q}) END) END)",
                op.sql()
            )
        }
        _ => "NULL".to_owned(),
    }
}

/// The class of a path's value as text: `json_type` with the two number types and the two
/// Boolean types each folded into one ('real', 'true'), so classes compare with `=`.
fn canonical_class(p: &str) -> String {
    format!("replace(replace(json_type({DOC}, {p}), 'integer', 'real'), 'false', 'true')")
}

fn balanced(terms: &[String], op: &str) -> String {
    match terms {
        [] => if op == "AND" { "1" } else { "0" }.to_owned(),
        [one] => one.clone(),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            format!("({} {op} {})", balanced(left, op), balanced(right, op))
        }
    }
}
