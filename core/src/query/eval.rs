//! The in-memory evaluator: runs a query's condition and projections against one JSON
//! document. It defines the semantics (spec §6.4); the SQL compiler must agree with it, and a
//! differential property test holds the two together.
//!
//! Values carry `undefined` (a missing property) next to JSON's types. Comparisons are defined
//! only between two primitives of one type; anything else is `undefined`, and a `WHERE` keeps a
//! row only when its condition is Boolean `true`. `AND`, `OR` and `NOT` follow three-valued
//! logic, with every non-Boolean operand treated as `undefined`.

use super::ast::{ArithOp, CmpOp, Expr, Function, Item, ItemKind, Literal, Path};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

/// A value during evaluation. Arrays and objects are never compared, so their contents are
/// not carried.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Val<'_> {
    fn is_primitive(&self) -> bool {
        matches!(self, Self::Null | Self::Bool(_) | Self::Num(_) | Self::Str(_))
    }
}

/// Whether `filter` keeps `doc`: only Boolean `true` does.
pub fn matches(filter: Option<&Expr>, doc: &Value) -> bool {
    filter.is_none_or(|f| eval(f, doc) == Val::Bool(true))
}

/// The value at `path` in `doc`, or `None` when it is undefined.
pub fn lookup<'a>(doc: &'a Value, path: &Path) -> Option<&'a Value> {
    path.iter().try_fold(doc, |node, key| node.as_object()?.get(key))
}

/// The row for a projection: one key per item, omitted when the item is undefined.
pub fn project(items: &[Item], doc: &Value) -> Value {
    let mut row = Map::new();
    for item in items {
        if let ItemKind::Path(path) = &item.kind {
            if let Some(v) = lookup(doc, path) {
                row.insert(item.name.clone(), v.clone());
            }
        }
    }
    Value::Object(row)
}

/// Evaluates an expression against a document.
pub fn eval<'a>(expr: &'a Expr, doc: &'a Value) -> Val<'a> {
    match expr {
        Expr::Literal(l) => literal(l),
        Expr::Path(p) => lookup(doc, p).map_or(Val::Undefined, json_val),
        Expr::Not(e) => match eval(e, doc) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Undefined,
        },
        Expr::Neg(e) => match eval(e, doc) {
            Val::Num(n) => Val::Num(-n),
            _ => Val::Undefined,
        },
        Expr::And(terms) => kleene(terms, doc, false),
        Expr::Or(terms) => kleene(terms, doc, true),
        Expr::Compare(op, a, b) => compare(*op, &eval(a, doc), &eval(b, doc)),
        Expr::Arith(op, a, b) => match (eval(a, doc), eval(b, doc)) {
            (Val::Num(x), Val::Num(y)) => arith(*op, x, y).map_or(Val::Undefined, Val::Num),
            _ => Val::Undefined,
        },
        Expr::In { expr, list, negated } => {
            let v = eval(expr, doc);
            if !v.is_primitive() {
                return Val::Undefined;
            }
            let found = list.iter().any(|item| compare(CmpOp::Eq, &v, &literal(item)) == Val::Bool(true));
            Val::Bool(found != *negated)
        }
        Expr::Call(f, args) => call(*f, args, doc),
    }
}

/// `AND` (`short` = false) or `OR` (`short` = true): a term equal to `short` decides; all terms
/// Boolean decides the other way; anything else is undefined.
fn kleene(terms: &[Expr], doc: &Value, short: bool) -> Val<'static> {
    let mut all_bool = true;
    for term in terms {
        match eval(term, doc) {
            Val::Bool(b) if b == short => return Val::Bool(short),
            Val::Bool(_) => {}
            _ => all_bool = false,
        }
    }
    if all_bool {
        Val::Bool(!short)
    } else {
        Val::Undefined
    }
}

/// Compares two values: defined only for two primitives of the same type.
pub fn compare(op: CmpOp, a: &Val<'_>, b: &Val<'_>) -> Val<'static> {
    let ordering = match (a, b) {
        (Val::Null, Val::Null) => Some(Ordering::Equal),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    };
    let Some(ordering) = ordering else { return Val::Undefined };
    Val::Bool(match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    })
}

/// Arithmetic on numbers. Division by zero is undefined. `%` is SQL's remainder: both operands
/// truncated to integers first (saturating, as SQLite's CAST does), the sign of the dividend.
pub fn arith(op: ArithOp, x: f64, y: f64) -> Option<f64> {
    match op {
        ArithOp::Add => Some(x + y),
        ArithOp::Sub => Some(x - y),
        ArithOp::Mul => Some(x * y),
        ArithOp::Div => (y != 0.0).then(|| x / y),
        ArithOp::Rem => {
            // `as` saturates and maps NaN to 0, like SQLite's CAST(... AS INTEGER).
            let (a, b) = (x as i64, y as i64);
            match b {
                0 => None,
                -1 => Some(0.0),
                _ => Some((a % b) as f64),
            }
        }
    }
    .filter(|r| r.is_finite())
}

fn call<'a>(f: Function, args: &'a [Expr], doc: &'a Value) -> Val<'a> {
    let arg = |i: usize| args.get(i).map_or(Val::Undefined, |e| eval(e, doc));
    let test = |pred: fn(&Val<'_>) -> bool| Val::Bool(pred(&arg(0)));
    match f {
        Function::IsDefined => test(|v| *v != Val::Undefined),
        Function::IsNull => test(|v| *v == Val::Null),
        Function::IsBool => test(|v| matches!(v, Val::Bool(_))),
        Function::IsNumber => test(|v| matches!(v, Val::Num(_))),
        Function::IsString => test(|v| matches!(v, Val::Str(_))),
        Function::IsObject => test(|v| *v == Val::Object),
        Function::IsArray => test(|v| *v == Val::Array),
        Function::IsPrimitive => test(|v| v.is_primitive()),
        Function::StartsWith | Function::EndsWith => match (arg(0), arg(1)) {
            (Val::Str(s), Val::Str(affix)) => Val::Bool(if f == Function::StartsWith {
                s.starts_with(affix.as_ref())
            } else {
                s.ends_with(affix.as_ref())
            }),
            _ => Val::Undefined,
        },
        Function::IsDrifting => Val::Bool(crate::twin::drift::drift_counts(doc).drifting > 0),
        Function::HasRefused => Val::Bool(crate::twin::drift::drift_counts(doc).refused > 0),
    }
}

pub fn literal(l: &Literal) -> Val<'_> {
    match l {
        Literal::Undefined => Val::Undefined,
        Literal::Null => Val::Null,
        Literal::Bool(b) => Val::Bool(*b),
        Literal::Number(n) => Val::Num(*n),
        Literal::Str(s) => Val::Str(Cow::Borrowed(s)),
        Literal::Array(_) => Val::Array,
    }
}

pub fn json_val(v: &Value) -> Val<'_> {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => n.as_f64().map_or(Val::Undefined, Val::Num),
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Array(_) => Val::Array,
        Value::Object(_) => Val::Object,
    }
}
