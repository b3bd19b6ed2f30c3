//! The parsed query. Paths are already resolved against the collection: the `devices.` prefix
//! is gone and root fields carry their canonical spelling, so the evaluator and the SQL
//! compiler never deal with spelling.

/// A whole query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// `TOP n`: at most this many rows in all pages together.
    pub top: Option<u64>,
    pub select: Select,
    pub from: Collection,
    /// `WHERE`; `None` keeps every row.
    pub filter: Option<Expr>,
    /// `GROUP BY` path.
    pub group_by: Option<Path>,
}

/// The collections a query can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    /// `FROM devices`: device twins.
    Devices,
    /// `FROM devices.modules`: module twins.
    Modules,
    /// `FROM devices.jobs`: per-device job records.
    Jobs,
}

/// What each row shows.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// `SELECT *`: the whole document.
    Star,
    /// A list of projections and aggregates.
    Items(Vec<Item>),
}

/// One entry of the select list.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub kind: ItemKind,
    /// The key of this item in each result row.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ItemKind {
    /// A property of the document.
    Path(Path),
    /// `COUNT()`, or `SUM|AVG|MIN|MAX(expr)`.
    Aggregate(Aggregate, Option<Expr>),
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// A property path: segments from the document root.
pub type Path = Vec<String>;

/// A constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(String),
    /// An array constant: a list of constants.
    Array(Vec<Literal>),
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped: `a < b` is `b > a`.
    pub fn mirrored(self) -> Self {
        match self {
            Self::Lt => Self::Gt,
            Self::Le => Self::Ge,
            Self::Gt => Self::Lt,
            Self::Ge => Self::Le,
            other => other,
        }
    }

    /// The result of comparing two equal values (two nulls, for instance).
    pub fn holds_for_equal(self) -> bool {
        matches!(self, Self::Eq | Self::Le | Self::Ge)
    }

    pub fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    IsDefined,
    IsNull,
    IsBool,
    IsNumber,
    IsString,
    IsObject,
    IsArray,
    IsPrimitive,
    StartsWith,
    EndsWith,
    /// twinhub's: the twin has a desired property its device has not caught up with
    /// (`core::twin::drift`). Not IoT Hub's: an upstream hub refuses it.
    IsDrifting,
    /// twinhub's: the device refused a desired property (a Plug and Play acknowledgement with
    /// `ac` >= 400).
    HasRefused,
}

impl Function {
    pub const ALL: [Function; 12] = [
        Self::IsDefined,
        Self::IsNull,
        Self::IsBool,
        Self::IsNumber,
        Self::IsString,
        Self::IsObject,
        Self::IsArray,
        Self::IsPrimitive,
        Self::StartsWith,
        Self::EndsWith,
        Self::IsDrifting,
        Self::HasRefused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::IsDefined => "IS_DEFINED",
            Self::IsNull => "IS_NULL",
            Self::IsBool => "IS_BOOL",
            Self::IsNumber => "IS_NUMBER",
            Self::IsString => "IS_STRING",
            Self::IsObject => "IS_OBJECT",
            Self::IsArray => "IS_ARRAY",
            Self::IsPrimitive => "IS_PRIMITIVE",
            Self::StartsWith => "STARTSWITH",
            Self::EndsWith => "ENDSWITH",
            Self::IsDrifting => "IS_DRIFTING",
            Self::HasRefused => "HAS_REFUSED",
        }
    }

    pub fn arity(self) -> usize {
        match self {
            Self::StartsWith | Self::EndsWith => 2,
            Self::IsDrifting | Self::HasRefused => 0,
            _ => 1,
        }
    }
}

/// An expression of a `WHERE` clause or an aggregate's argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Literal),
    Path(Path),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    /// Conjunction of two or more terms (kept flat so long chains stay shallow).
    And(Vec<Expr>),
    /// Disjunction of two or more terms.
    Or(Vec<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `expr IN [..]` or, with `negated`, `expr NIN [..]`.
    In {
        expr: Box<Expr>,
        list: Vec<Literal>,
        negated: bool,
    },
    Call(Function, Vec<Expr>),
}
