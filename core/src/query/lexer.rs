//! Tokens of the IoT Hub query language, each with the place it starts (line and column, both
//! 1-based and counted in characters) so errors can point at it.

use super::error::{Position, QueryError};

/// One token.
#[derive(Clone, Debug, PartialEq)]
pub enum Token {
    /// A bare name: a keyword, a function or a property. Keywords are matched case-insensitively
    /// by the parser, so the lexer keeps the original spelling.
    Word(String),
    /// A `[[name]]` escaped property name (IoT Hub's way to write reserved words such as `group`).
    Escaped(String),
    /// A number literal (decimal or `0x` hex).
    Number(f64),
    /// A string literal, escapes resolved.
    Str(String),
    /// Punctuation and operators.
    Sym(Sym),
}

/// Punctuation and operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sym {
    Star,
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Plus,
    Minus,
    Slash,
    Percent,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Sym {
    /// How the symbol is written, for error messages.
    pub fn text(self) -> &'static str {
        match self {
            Self::Star => "*",
            Self::Comma => ",",
            Self::Dot => ".",
            Self::LParen => "(",
            Self::RParen => ")",
            Self::LBracket => "[",
            Self::RBracket => "]",
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Slash => "/",
            Self::Percent => "%",
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

impl Token {
    /// The token as a person would quote it in an error message.
    pub fn describe(&self) -> String {
        match self {
            Self::Word(w) => format!("'{w}'"),
            Self::Escaped(w) => format!("'[[{w}]]'"),
            Self::Number(n) => format!("the number {n}"),
            Self::Str(_) => "a string".to_owned(),
            Self::Sym(s) => format!("'{}'", s.text()),
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned {
    pub token: Token,
    pub at: Position,
}

/// Splits `text` into tokens. The result ends where the text ends; the parser reports
/// "end of query" at [`end_position`].
pub fn tokenize(text: &str) -> Result<Vec<Spanned>, QueryError> {
    let mut lexer = Lexer { chars: text.chars().collect(), i: 0, line: 1, col: 1 };
    let mut out = Vec::new();
    while let Some(tok) = lexer.next_token()? {
        out.push(tok);
    }
    Ok(out)
}

/// The position just past the last character of `text`.
pub fn end_position(text: &str) -> Position {
    let mut at = Position { line: 1, col: 1 };
    for c in text.chars() {
        if c == '\n' {
            at.line += 1;
            at.col = 1;
        } else {
            at.col += 1;
        }
    }
    at
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn here(&self) -> Position {
        Position { line: self.line, col: self.col }
    }

    fn next_token(&mut self) -> Result<Option<Spanned>, QueryError> {
        while self.peek(0).is_some_and(char::is_whitespace) {
            self.bump();
        }
        let at = self.here();
        let Some(c) = self.peek(0) else { return Ok(None) };
        let token = match c {
            '\'' | '"' => Token::Str(self.string(c, at)?),
            '0'..='9' => Token::Number(self.number(at)?),
            '.' if self.peek(1).is_some_and(|d| d.is_ascii_digit()) => Token::Number(self.number(at)?),
            '[' if self.peek(1) == Some('[') => Token::Escaped(self.escaped(at)?),
            c if is_word_start(c) => {
                let mut word = String::new();
                while let Some(c) = self.peek(0).filter(|&c| is_word_char(c)) {
                    word.push(c);
                    self.bump();
                }
                Token::Word(word)
            }
            _ => Token::Sym(self.symbol(at)?),
        };
        Ok(Some(Spanned { token, at }))
    }

    fn symbol(&mut self, at: Position) -> Result<Sym, QueryError> {
        let c = self.bump().unwrap_or_default();
        let next = self.peek(0);
        let two = |lexer: &mut Self, sym| {
            lexer.bump();
            sym
        };
        Ok(match (c, next) {
            ('!', Some('=')) => two(self, Sym::Ne),
            ('<', Some('>')) => two(self, Sym::Ne),
            ('<', Some('=')) => two(self, Sym::Le),
            ('>', Some('=')) => two(self, Sym::Ge),
            ('*', _) => Sym::Star,
            (',', _) => Sym::Comma,
            ('.', _) => Sym::Dot,
            ('(', _) => Sym::LParen,
            (')', _) => Sym::RParen,
            ('[', _) => Sym::LBracket,
            (']', _) => Sym::RBracket,
            ('+', _) => Sym::Plus,
            ('-', _) => Sym::Minus,
            ('/', _) => Sym::Slash,
            ('%', _) => Sym::Percent,
            ('=', _) => Sym::Eq,
            ('<', _) => Sym::Lt,
            ('>', _) => Sym::Gt,
            _ => return Err(QueryError::new(at, format!("unexpected character '{}'", c.escape_debug()))),
        })
    }

    fn string(&mut self, quote: char, at: Position) -> Result<String, QueryError> {
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(QueryError::new(at, "unterminated string: it has no closing quote"));
            };
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let esc_at = self.here();
                    let escaped = match self.bump() {
                        Some('\'') => '\'',
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(esc_at)?,
                        Some(other) => {
                            return Err(QueryError::new(esc_at, format!("unknown escape '\\{}' in a string", other)))
                        }
                        None => return Err(QueryError::new(at, "unterminated string: it has no closing quote")),
                    };
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
    }

    /// `\uXXXX`, including a surrogate pair written as two escapes.
    fn unicode_escape(&mut self, at: Position) -> Result<char, QueryError> {
        let high = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if self.peek(0) != Some('\\') || self.peek(1) != Some('u') {
                return Err(QueryError::new(at, "a \\u escape of a high surrogate must be followed by a low one"));
            }
            self.bump();
            self.bump();
            let low = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(QueryError::new(at, "a \\u escape of a high surrogate must be followed by a low one"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| QueryError::new(at, "the \\u escape is not a Unicode scalar value"))
    }

    fn hex4(&mut self, at: Position) -> Result<u32, QueryError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.bump().and_then(|c| c.to_digit(16));
            let Some(d) = digit else {
                return Err(QueryError::new(at, "expected four hex digits after \\u"));
            };
            code = code * 16 + d;
        }
        Ok(code)
    }

    fn number(&mut self, at: Position) -> Result<f64, QueryError> {
        if self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let mut digits = String::new();
            while let Some(c) = self.peek(0).filter(char::is_ascii_hexdigit) {
                digits.push(c);
                self.bump();
            }
            if digits.is_empty() {
                return Err(QueryError::new(at, "expected hex digits after '0x'"));
            }
            let value = u64::from_str_radix(&digits, 16)
                .map_err(|_| QueryError::new(at, "the hex number is too large (at most 16 digits)"))?;
            return self.end_of_number(at, value as f64);
        }
        let mut text = String::new();
        while let Some(c) = self.peek(0).filter(|c| c.is_ascii_digit() || *c == '.') {
            text.push(c);
            self.bump();
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            let sign = matches!(self.peek(1), Some('+' | '-'));
            let digit_at = if sign { 2 } else { 1 };
            if self.peek(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                for _ in 0..=digit_at - 1 {
                    text.push(self.bump().unwrap_or_default());
                }
                while let Some(c) = self.peek(0).filter(char::is_ascii_digit) {
                    text.push(c);
                    self.bump();
                }
            }
        }
        let value: f64 = text.parse().map_err(|_| QueryError::new(at, format!("'{text}' is not a number")))?;
        self.end_of_number(at, value)
    }

    fn end_of_number(&self, at: Position, value: f64) -> Result<f64, QueryError> {
        if self.peek(0).is_some_and(is_word_char) {
            return Err(QueryError::new(at, "a number must not run into a name; add a space or an operator"));
        }
        if !value.is_finite() {
            return Err(QueryError::new(at, "the number is too large"));
        }
        Ok(value)
    }

    fn escaped(&mut self, at: Position) -> Result<String, QueryError> {
        self.bump();
        self.bump();
        let mut name = String::new();
        loop {
            match self.bump() {
                Some(']') if self.peek(0) == Some(']') => {
                    self.bump();
                    break;
                }
                Some(c) => name.push(c),
                None => return Err(QueryError::new(at, "unterminated '[[' name: it has no closing ']]'")),
            }
        }
        if name.is_empty() {
            return Err(QueryError::new(at, "'[[]]' names nothing"));
        }
        Ok(name)
    }
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}
