//! Recursive-descent parser for the IoT Hub query language (spec §6.1 and §6.2).
//!
//! Nesting is bounded twice: by recursion depth (parentheses, `NOT`, unary minus, function
//! arguments) and by the height of the tree that left-associative chains such as `1+1+1...`
//! build. Both stop far below what would overflow a stack or SQLite's expression depth, so a
//! hostile query gets a 400, not a crashed isolate.

use super::ast::{Aggregate, ArithOp, CmpOp, Collection, Expr, Function, Item, ItemKind, Literal, Path, Query, Select};
use super::error::{Position, QueryError};
use super::lexer::{end_position, tokenize, Spanned, Sym, Token};

/// The longest query text IoT Hub accepts, in characters.
pub const MAX_QUERY_CHARS: usize = 8192;
/// The largest `TOP n`: IoT Hub's limit on devices and modules in one hub.
pub const MAX_TOP: u64 = 1_000_000;
/// How deeply parentheses, `NOT` and unary minus may nest.
pub const MAX_NESTING: u32 = 64;
/// How tall an expression tree may grow (operator chains count one level per operator).
pub const MAX_HEIGHT: u32 = 128;

const KEYWORDS: &[&str] = &["SELECT", "TOP", "AS", "FROM", "WHERE", "GROUP", "BY", "AND", "OR", "NOT", "IN", "NIN"];

const DEVICE_ROOT: &[&str] = &[
    "deviceId",
    "moduleId",
    "etag",
    "deviceEtag",
    "status",
    "statusReason",
    "statusUpdateTime",
    "connectionState",
    "lastActivityTime",
    "cloudToDeviceMessageCount",
    "authenticationType",
    "x509Thumbprint",
    "modelId",
    "version",
    "tags",
    "properties",
    "capabilities",
    "deviceScope",
    "parentScopes",
];

const JOB_ROOT: &[&str] = &[
    "deviceId",
    "moduleId",
    "jobId",
    "jobType",
    "status",
    "startTimeUtc",
    "endTimeUtc",
    "createdTimeUtc",
    "lastUpdatedDateTimeUtc",
    "outcome",
    "error",
];

/// Constants and distinct property paths a query may hold. The compiler keeps any number
/// within SQLite's 100 bound parameters (it folds them into one JSON array past that), so this
/// bounds the work one query text can ask for, well above what the 8,192 characters hold in
/// practice (a long `deviceId IN [...]` of a job's devices fits).
pub const MAX_BOUND_VALUES: usize = 1_000;

/// Parses a query.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    if let Some((index, _)) = text.char_indices().nth(MAX_QUERY_CHARS) {
        let at = end_position(&text[..index]);
        return Err(QueryError::new(
            at,
            format!("the query is longer than {MAX_QUERY_CHARS} characters; this character is past the limit"),
        ));
    }
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: end_position(text),
        depth: 0,
        collection: Collection::Devices,
        bound: 0,
        paths: std::collections::HashSet::new(),
    };
    parser.query()
}

struct Parser {
    tokens: Vec<Spanned>,
    pos: usize,
    end: Position,
    depth: u32,
    collection: Collection,
    /// Constants and distinct paths so far (see [`MAX_BOUND_VALUES`]).
    bound: usize,
    paths: std::collections::HashSet<Path>,
}

/// An expression and the height of its tree.
struct Node {
    expr: Expr,
    height: u32,
}

impl Node {
    fn leaf(expr: Expr) -> Self {
        Self { expr, height: 1 }
    }
}

impl Parser {
    // ---- token access ------------------------------------------------------------------------

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|t| &t.token)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.pos + ahead).map(|t| &t.token)
    }

    fn here(&self) -> Position {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "end of query".to_owned(), Token::describe)
    }

    fn advance(&mut self) -> Option<Spanned> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// The previous token, for "after '='" in messages.
    fn after(&self) -> String {
        match self.pos.checked_sub(1).and_then(|i| self.tokens.get(i)) {
            Some(t) => format!(" after {}", t.token.describe()),
            None => String::new(),
        }
    }

    fn expected(&self, what: &str) -> QueryError {
        QueryError::new(self.here(), format!("expected {what}{}, found {}", self.after(), self.found()))
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let yes = self.is_keyword(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.expected(kw))
        }
    }

    fn eat_sym(&mut self, sym: Sym) -> bool {
        let yes = self.peek() == Some(&Token::Sym(sym));
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_sym(&mut self, sym: Sym) -> Result<(), QueryError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.expected(&format!("'{}'", sym.text())))
        }
    }

    // ---- clauses -----------------------------------------------------------------------------

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_keyword("SELECT")?;
        let top = if self.eat_keyword("TOP") { Some(self.top()?) } else { None };
        let select_at = self.here();
        let select = self.select_list()?;
        self.expect_keyword("FROM")?;
        let from = self.collection()?;
        self.collection = from;
        let select = match select {
            RawSelect::Star => Select::Star,
            RawSelect::Items(items) => Select::Items(self.resolve_items(items)?),
        };
        let filter = if self.eat_keyword("WHERE") { Some(self.expression()?.expr) } else { None };
        let group_at = self.here();
        let group_by = if self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            Some(self.path("a property to group by")?.0)
        } else {
            None
        };
        if self.peek().is_some() {
            let what = if filter.is_none() && group_by.is_none() {
                "WHERE, GROUP BY or the end of the query"
            } else {
                "the end of the query"
            };
            return Err(self.expected(what));
        }
        let query = Query { top, select, from, filter, group_by };
        check_shape(&query, select_at, group_at)?;
        Ok(query)
    }

    fn top(&mut self) -> Result<u64, QueryError> {
        let at = self.here();
        let negative = self.eat_sym(Sym::Minus);
        match self.advance().map(|t| t.token) {
            Some(Token::Number(n)) if !negative && n.fract() == 0.0 && (1.0..=MAX_TOP as f64).contains(&n) => {
                Ok(n as u64)
            }
            Some(Token::Number(n)) => {
                let n = if negative { -n } else { n };
                Err(QueryError::new(at, format!("TOP must be a whole number from 1 to {MAX_TOP}, not {n}")))
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.expected("a number after TOP"))
            }
        }
    }

    fn select_list(&mut self) -> Result<RawSelect, QueryError> {
        if self.eat_sym(Sym::Star) {
            return Ok(RawSelect::Star);
        }
        let mut items = Vec::new();
        loop {
            items.push(self.select_item()?);
            if !self.eat_sym(Sym::Comma) {
                break;
            }
        }
        Ok(RawSelect::Items(items))
    }

    fn select_item(&mut self) -> Result<RawItem, QueryError> {
        let aggregate = match (self.peek(), self.peek_at(1)) {
            (Some(Token::Word(w)), Some(Token::Sym(Sym::LParen))) => aggregate_named(w),
            _ => None,
        };
        let kind = if let Some(agg) = aggregate {
            self.pos += 2;
            let arg = if agg == Aggregate::Count {
                self.eat_sym(Sym::Star);
                None
            } else {
                Some(self.expression()?.expr)
            };
            self.expect_sym(Sym::RParen)?;
            RawKind::Aggregate(agg, arg)
        } else {
            RawKind::Path(self.raw_path("a property, an aggregate or '*'")?)
        };
        let alias = if self.eat_keyword("AS") {
            match self.advance().map(|t| t.token) {
                Some(Token::Word(w) | Token::Escaped(w)) => Some(w),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.expected("a name after AS"));
                }
            }
        } else {
            None
        };
        Ok(RawItem { kind, alias })
    }

    fn collection(&mut self) -> Result<Collection, QueryError> {
        if !self.eat_keyword("devices") {
            return Err(self.expected("'devices', 'devices.modules' or 'devices.jobs'"));
        }
        if !self.eat_sym(Sym::Dot) {
            return Ok(Collection::Devices);
        }
        if self.eat_keyword("modules") {
            Ok(Collection::Modules)
        } else if self.eat_keyword("jobs") {
            Ok(Collection::Jobs)
        } else {
            Err(self.expected("'modules' or 'jobs'"))
        }
    }

    fn resolve_items(&mut self, items: Vec<RawItem>) -> Result<Vec<Item>, QueryError> {
        let mut unnamed = 0;
        items
            .into_iter()
            .map(|item| {
                let kind = match item.kind {
                    RawKind::Path(p) => ItemKind::Path(self.bound_path(p)?),
                    RawKind::Aggregate(a, arg) => ItemKind::Aggregate(a, arg),
                };
                let name = match (item.alias, &kind) {
                    (Some(alias), _) => alias,
                    (None, ItemKind::Path(p)) => p.last().cloned().unwrap_or_default(),
                    (None, ItemKind::Aggregate(..)) => {
                        unnamed += 1;
                        format!("${unnamed}")
                    }
                };
                Ok(Item { kind, name })
            })
            .collect()
    }

    // ---- paths -------------------------------------------------------------------------------

    /// A path as written, with its position; resolution waits until FROM is known.
    fn raw_path(&mut self, what: &str) -> Result<(Path, Position), QueryError> {
        let at = self.here();
        let mut segments = Vec::new();
        match self.peek() {
            Some(Token::Word(w)) if !is_keyword(w) => {
                segments.push(w.clone());
                self.pos += 1;
            }
            Some(Token::Escaped(w)) => {
                segments.push(w.clone());
                self.pos += 1;
            }
            _ => return Err(self.expected(what)),
        }
        while self.peek() == Some(&Token::Sym(Sym::Dot)) {
            self.pos += 1;
            match self.advance().map(|t| (t.token, t.at)) {
                // After a dot any word is a property name, keywords included (`tags.group`).
                Some((Token::Word(w) | Token::Escaped(w), seg_at)) => {
                    check_segment(&w, seg_at)?;
                    segments.push(w);
                }
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(self.expected("a property name after '.'"));
                }
            }
        }
        if let Some(first) = segments.first() {
            check_segment(first, at)?;
        }
        Ok((segments, at))
    }

    fn path(&mut self, what: &str) -> Result<(Path, Position), QueryError> {
        let (raw, at) = self.raw_path(what)?;
        Ok((self.bound_path((raw, at))?, at))
    }

    /// [`Self::resolve`], counting the path towards [`MAX_BOUND_VALUES`] the first time it
    /// appears.
    fn bound_path(&mut self, raw: (Path, Position)) -> Result<Path, QueryError> {
        let at = raw.1;
        let path = self.resolve(raw);
        if !self.paths.contains(&path) {
            self.bind(at)?;
            self.paths.insert(path.clone());
        }
        Ok(path)
    }

    /// Counts one more bound value, refusing the one past the limit.
    fn bind(&mut self, at: Position) -> Result<(), QueryError> {
        self.bound += 1;
        if self.bound > MAX_BOUND_VALUES {
            return Err(QueryError::new(
                at,
                format!(
                    "a query may hold at most {MAX_BOUND_VALUES} constants and distinct property paths; this one is past the limit"
                ),
            ));
        }
        Ok(())
    }

    /// Drops the collection prefix (`devices.`, `devices.jobs.`) and gives root fields their
    /// canonical spelling: IoT Hub matches root fields case-insensitively, nested names exactly.
    fn resolve(&self, (mut path, _): (Path, Position)) -> Path {
        let prefix: &[&str] = match self.collection {
            Collection::Devices => &["devices"],
            Collection::Modules => &["devices", "modules"],
            Collection::Jobs => &["devices", "jobs"],
        };
        let has_prefix = path.len() > prefix.len() && path.iter().zip(prefix).all(|(s, p)| s.eq_ignore_ascii_case(p));
        if has_prefix {
            path.drain(..prefix.len());
        }
        let roots = if self.collection == Collection::Jobs { JOB_ROOT } else { DEVICE_ROOT };
        if let Some(first) = path.first_mut() {
            if let Some(canonical) = roots.iter().find(|r| r.eq_ignore_ascii_case(first)) {
                *first = (*canonical).to_owned();
            }
        }
        path
    }

    // ---- expressions -------------------------------------------------------------------------

    fn enter(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(QueryError::new(
                self.here(),
                format!("the expression nests more than {MAX_NESTING} levels deep"),
            ));
        }
        Ok(())
    }

    fn expression(&mut self) -> Result<Node, QueryError> {
        self.enter()?;
        let node = self.or();
        self.depth -= 1;
        node
    }

    fn or(&mut self) -> Result<Node, QueryError> {
        let first = self.and()?;
        self.chain("OR", first, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Node, QueryError> {
        let first = self.not()?;
        self.chain("AND", first, Self::not, Expr::And)
    }

    /// A flat `AND`/`OR` chain: its height is one more than its tallest term.
    fn chain(
        &mut self,
        kw: &str,
        first: Node,
        next: fn(&mut Self) -> Result<Node, QueryError>,
        make: fn(Vec<Expr>) -> Expr,
    ) -> Result<Node, QueryError> {
        if !self.is_keyword(kw) {
            return Ok(first);
        }
        let mut height = first.height;
        let mut terms = vec![first.expr];
        while self.eat_keyword(kw) {
            let term = next(self)?;
            height = height.max(term.height);
            terms.push(term.expr);
        }
        self.node(make(terms), height + 1)
    }

    fn node(&self, expr: Expr, height: u32) -> Result<Node, QueryError> {
        if height > MAX_HEIGHT {
            return Err(QueryError::new(
                self.here(),
                format!("the expression is more than {MAX_HEIGHT} operators deep; use IN or split the query"),
            ));
        }
        Ok(Node { expr, height })
    }

    fn not(&mut self) -> Result<Node, QueryError> {
        if self.eat_keyword("NOT") {
            self.enter()?;
            let inner = self.not();
            self.depth -= 1;
            let inner = inner?;
            return self.node(Expr::Not(Box::new(inner.expr)), inner.height + 1);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Node, QueryError> {
        let left = self.additive()?;
        let op = match self.peek() {
            Some(Token::Sym(Sym::Eq)) => Some(CmpOp::Eq),
            Some(Token::Sym(Sym::Ne)) => Some(CmpOp::Ne),
            Some(Token::Sym(Sym::Lt)) => Some(CmpOp::Lt),
            Some(Token::Sym(Sym::Le)) => Some(CmpOp::Le),
            Some(Token::Sym(Sym::Gt)) => Some(CmpOp::Gt),
            Some(Token::Sym(Sym::Ge)) => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.pos += 1;
            let right = self.additive()?;
            let height = left.height.max(right.height) + 1;
            return self.node(Expr::Compare(op, Box::new(left.expr), Box::new(right.expr)), height);
        }
        let negated = if self.eat_keyword("IN") {
            false
        } else if self.eat_keyword("NIN") {
            true
        } else {
            return Ok(left);
        };
        let keyword = if negated { "NIN" } else { "IN" };
        if self.peek() != Some(&Token::Sym(Sym::LBracket)) {
            return Err(self.expected(&format!("an array of constants such as ['a', 'b'] after {keyword}")));
        }
        let list = match self.literal()? {
            Literal::Array(items) => items,
            _ => return Err(self.expected("an array of constants")),
        };
        let height = left.height + 1;
        self.node(Expr::In { expr: Box::new(left.expr), list, negated }, height)
    }

    fn additive(&mut self) -> Result<Node, QueryError> {
        self.arithmetic(Self::multiplicative, |t| match t {
            Token::Sym(Sym::Plus) => Some(ArithOp::Add),
            Token::Sym(Sym::Minus) => Some(ArithOp::Sub),
            _ => None,
        })
    }

    fn multiplicative(&mut self) -> Result<Node, QueryError> {
        self.arithmetic(Self::unary, |t| match t {
            Token::Sym(Sym::Star) => Some(ArithOp::Mul),
            Token::Sym(Sym::Slash) => Some(ArithOp::Div),
            Token::Sym(Sym::Percent) => Some(ArithOp::Rem),
            _ => None,
        })
    }

    /// A left-associative chain of `operand`s joined by the operators `op_of` recognizes; each
    /// operator adds a level to the tree's height.
    fn arithmetic(
        &mut self,
        operand: fn(&mut Self) -> Result<Node, QueryError>,
        op_of: fn(&Token) -> Option<ArithOp>,
    ) -> Result<Node, QueryError> {
        let mut left = operand(self)?;
        while let Some(op) = self.peek().and_then(op_of) {
            self.pos += 1;
            let right = operand(self)?;
            let height = left.height.max(right.height) + 1;
            left = self.node(Expr::Arith(op, Box::new(left.expr), Box::new(right.expr)), height)?;
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, QueryError> {
        if self.eat_sym(Sym::Minus) {
            self.enter()?;
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            // Fold `-5` into a constant so lists and comparisons see a plain number.
            if let Expr::Literal(Literal::Number(n)) = inner.expr {
                return Ok(Node::leaf(Expr::Literal(Literal::Number(-n))));
            }
            return self.node(Expr::Neg(Box::new(inner.expr)), inner.height + 1);
        }
        if self.eat_sym(Sym::Plus) {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, QueryError> {
        match self.peek() {
            Some(Token::Sym(Sym::LParen)) => {
                self.pos += 1;
                let inner = self.expression()?;
                self.expect_sym(Sym::RParen)?;
                Ok(inner)
            }
            Some(Token::Number(_) | Token::Str(_) | Token::Sym(Sym::LBracket)) => {
                Ok(Node::leaf(Expr::Literal(self.literal()?)))
            }
            Some(Token::Word(w)) => {
                let word = w.clone();
                if self.peek_at(1) == Some(&Token::Sym(Sym::LParen)) {
                    return self.call(&word);
                }
                match word.to_ascii_lowercase().as_str() {
                    "true" | "false" | "null" | "undefined" => Ok(Node::leaf(Expr::Literal(self.literal()?))),
                    _ => {
                        let raw = self.raw_path("a value")?;
                        Ok(Node::leaf(Expr::Path(self.bound_path(raw)?)))
                    }
                }
            }
            Some(Token::Escaped(_)) => {
                let raw = self.raw_path("a value")?;
                Ok(Node::leaf(Expr::Path(self.bound_path(raw)?)))
            }
            _ => Err(self.expected("a value")),
        }
    }

    fn call(&mut self, name: &str) -> Result<Node, QueryError> {
        let at = self.here();
        if aggregate_named(name).is_some() {
            return Err(QueryError::new(
                at,
                format!("the aggregate {} belongs in the SELECT list, not in a condition", name.to_ascii_uppercase()),
            ));
        }
        let Some(function) = function_named(name) else {
            let known: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            return Err(QueryError::new(
                at,
                format!("unknown function '{name}'; the functions are {}", known.join(", ")),
            ));
        };
        self.pos += 2;
        let mut args = Vec::new();
        let mut height = 1;
        if !self.eat_sym(Sym::RParen) {
            loop {
                let arg = self.expression()?;
                height = height.max(arg.height + 1);
                args.push(arg.expr);
                if self.eat_sym(Sym::RParen) {
                    break;
                }
                self.expect_sym(Sym::Comma)?;
            }
        }
        if args.len() != function.arity() {
            let plural = if function.arity() == 1 { "" } else { "s" };
            return Err(QueryError::new(
                at,
                format!("{} takes {} argument{plural}, not {}", function.name(), function.arity(), args.len()),
            ));
        }
        self.node(Expr::Call(function, args), height)
    }

    /// A constant: number, string, true/false/null/undefined, or an array of constants.
    fn literal(&mut self) -> Result<Literal, QueryError> {
        let negative = self.eat_sym(Sym::Minus);
        let Some(token) = self.advance() else { return Err(self.expected("a constant")) };
        if matches!(token.token, Token::Number(_) | Token::Str(_)) {
            self.bind(token.at)?;
        }
        let literal = match token.token {
            Token::Number(n) => Literal::Number(if negative { -n } else { n }),
            _ if negative => {
                self.pos -= 1;
                return Err(self.expected("a number after '-'"));
            }
            Token::Str(s) => Literal::Str(s),
            Token::Word(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Token::Word(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Token::Word(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Token::Word(w) if w.eq_ignore_ascii_case("undefined") => Literal::Undefined,
            Token::Sym(Sym::LBracket) => {
                let mut items = Vec::new();
                if !self.eat_sym(Sym::RBracket) {
                    loop {
                        if self.peek() == Some(&Token::Sym(Sym::LBracket)) {
                            return Err(QueryError::new(
                                self.here(),
                                "arrays inside array constants are not supported",
                            ));
                        }
                        items.push(self.literal()?);
                        if self.eat_sym(Sym::RBracket) {
                            break;
                        }
                        self.expect_sym(Sym::Comma)?;
                    }
                }
                Literal::Array(items)
            }
            _ => {
                self.pos -= 1;
                return Err(self.expected("a constant"));
            }
        };
        Ok(literal)
    }
}

enum RawSelect {
    Star,
    Items(Vec<RawItem>),
}

struct RawItem {
    kind: RawKind,
    alias: Option<String>,
}

enum RawKind {
    Path((Path, Position)),
    Aggregate(Aggregate, Option<Expr>),
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn aggregate_named(name: &str) -> Option<Aggregate> {
    Some(match name.to_ascii_uppercase().as_str() {
        "COUNT" => Aggregate::Count,
        "SUM" => Aggregate::Sum,
        "AVG" => Aggregate::Avg,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        _ => return None,
    })
}

fn function_named(name: &str) -> Option<Function> {
    let upper = name.to_ascii_uppercase();
    // Routing's spellings (STARTS_WITH, ENDS_WITH) are accepted too: one less surprise.
    let upper = match upper.as_str() {
        "STARTS_WITH" => "STARTSWITH",
        "ENDS_WITH" => "ENDSWITH",
        other => other,
    };
    Function::ALL.into_iter().find(|f| f.name() == upper)
}

/// Property names become SQLite JSON path labels, which cannot hold a double quote.
fn check_segment(segment: &str, at: Position) -> Result<(), QueryError> {
    if segment.contains('"') || segment.chars().any(char::is_control) {
        return Err(QueryError::new(at, "property names with '\"' or control characters cannot be queried"));
    }
    Ok(())
}

/// The rules that span clauses: GROUP BY against the select list, and what `devices.jobs` allows.
fn check_shape(query: &Query, select_at: Position, group_at: Position) -> Result<(), QueryError> {
    let items = match &query.select {
        Select::Star => &[][..],
        Select::Items(items) => items.as_slice(),
    };
    let has_aggregate = items.iter().any(|i| matches!(i.kind, ItemKind::Aggregate(..)));
    if query.from == Collection::Jobs && (has_aggregate || query.group_by.is_some()) {
        return Err(QueryError::new(select_at, "queries on devices.jobs cannot aggregate or GROUP BY"));
    }
    match &query.group_by {
        Some(group) => {
            if query.from == Collection::Jobs {
                return Err(QueryError::new(group_at, "GROUP BY works on devices and devices.modules only"));
            }
            if query.select == Select::Star {
                return Err(QueryError::new(
                    select_at,
                    "SELECT * cannot be grouped; select the GROUP BY property and aggregates",
                ));
            }
            if let Some(stray) = items.iter().find(|i| matches!(&i.kind, ItemKind::Path(p) if p != group)) {
                return Err(QueryError::new(
                    select_at,
                    format!("'{}' is neither the GROUP BY property nor an aggregate", stray.name),
                ));
            }
        }
        None if has_aggregate => {
            if let Some(stray) = items.iter().find(|i| matches!(i.kind, ItemKind::Path(_))) {
                return Err(QueryError::new(
                    select_at,
                    format!(
                        "'{}' is selected next to an aggregate without GROUP BY; add GROUP BY {} or aggregate it",
                        stray.name, stray.name
                    ),
                ));
            }
        }
        None => {}
    }
    Ok(())
}
