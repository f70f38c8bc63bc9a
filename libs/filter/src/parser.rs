//! Recursive-descent parser: text to [`Expr`], checking each call against the fields and
//! literals it names as soon as its closing parenthesis is read.

use serde_json::Value;
use sextant_core::{RunId, Timestamp};

use crate::ast::{CmpOp, Doc, Expr, FeedbackField, Field, Literal, TextField};
use crate::lexer::{shorten, Lexer, Tok, Token};
use crate::ParseError;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 64 * 1024;
/// Deepest nesting of calls and lists accepted.
pub const MAX_DEPTH: usize = 64;

const FUNCTIONS: &str = "eq, neq, gt, gte, lt, lte, has, search, in, and, or, not, exists";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Cmp(CmpOp),
    Has,
    Search,
    In,
    And,
    Or,
    Not,
    Exists,
}

impl Func {
    /// Function names are matched case-insensitively.
    fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "eq" => Self::Cmp(CmpOp::Eq),
            "neq" => Self::Cmp(CmpOp::Neq),
            "gt" => Self::Cmp(CmpOp::Gt),
            "gte" => Self::Cmp(CmpOp::Gte),
            "lt" => Self::Cmp(CmpOp::Lt),
            "lte" => Self::Cmp(CmpOp::Lte),
            "has" => Self::Has,
            "search" => Self::Search,
            "in" => Self::In,
            "and" => Self::And,
            "or" => Self::Or,
            "not" => Self::Not,
            "exists" => Self::Exists,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Cmp(op) => op.name(),
            Self::Has => "has",
            Self::Search => "search",
            Self::In => "in",
            Self::And => "and",
            Self::Or => "or",
            Self::Not => "not",
            Self::Exists => "exists",
        }
    }

    /// Accepted argument counts, and how to describe them.
    fn arity(self) -> (usize, usize, &'static str) {
        match self {
            Self::Cmp(_) => (2, 2, "2 arguments (a field and a value)"),
            Self::Has => (2, 2, "2 arguments (a field and a value)"),
            Self::Exists => (2, 2, "2 arguments (a field and a key)"),
            Self::In => (2, 2, "2 arguments (a field and a list)"),
            Self::Search => (1, 2, "1 or 2 arguments ([field,] \"text\")"),
            Self::Not => (1, 1, "1 argument"),
            Self::And | Self::Or => (1, usize::MAX, "at least 1 argument"),
        }
    }
}

/// A literal as written, before it is converted to a field's type.
#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Lit {
    fn describe(&self) -> String {
        match self {
            Self::Null => "null".into(),
            Self::Bool(b) => b.to_string(),
            Self::Num(n) => format!("the number {n}"),
            Self::Str(s) => format!("the string {}", shorten(s)),
        }
    }
}

/// A checked call argument.
#[derive(Debug)]
enum Arg<'s> {
    Ident(&'s str),
    Lit(Lit),
    Call(Expr),
    List(Vec<(Arg<'s>, usize)>),
}

impl Arg<'_> {
    fn describe(&self) -> String {
        match self {
            Self::Ident(name) => format!("the field name `{name}`"),
            Self::Lit(lit) => lit.describe(),
            Self::Call(_) => "a function call".into(),
            Self::List(_) => "a list".into(),
        }
    }
}

/// Parses a complete filter.
pub(crate) fn parse_expr(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_FILTER_LEN {
        return Err(ParseError::new(MAX_FILTER_LEN, format!("filter is {} bytes long; the limit is {MAX_FILTER_LEN}", src.len())));
    }
    let mut p = Parser { lexer: Lexer::new(src), peeked: None };
    let first = p.next()?;
    let expr = match first.tok {
        Tok::Eof => return Err(ParseError::new(first.pos, "empty filter")),
        Tok::Ident(name) => p.call(name, first.pos, 1)?,
        other => return Err(ParseError::new(first.pos, format!("expected a function call such as eq(name, \"x\"), found {other}"))),
    };
    let end = p.next()?;
    if end.tok != Tok::Eof {
        return Err(ParseError::new(end.pos, format!("unexpected {} after the end of the filter", end.tok)));
    }
    Ok(expr)
}

struct Parser<'s> {
    lexer: Lexer<'s>,
    peeked: Option<Token<'s>>,
}

impl<'s> Parser<'s> {
    fn next(&mut self) -> Result<Token<'s>, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<&Tok<'s>, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        Ok(&self.peeked.as_ref().expect("just filled").tok)
    }

    /// `name(args…)`, the name already read.
    fn call(&mut self, name: &'s str, pos: usize, depth: usize) -> Result<Expr, ParseError> {
        if depth > MAX_DEPTH {
            return Err(ParseError::new(pos, format!("filter is nested deeper than {MAX_DEPTH} levels")));
        }
        let func = Func::from_name(name).ok_or_else(|| {
            let msg = if Field::from_name(name).is_some() {
                format!("expected a function call, found the field name `{name}` (functions: {FUNCTIONS})")
            } else {
                format!("unknown function `{}` (expected one of {FUNCTIONS})", shorten_ident(name))
            };
            ParseError::new(pos, msg)
        })?;
        let open = self.next()?;
        if open.tok != Tok::LParen {
            return Err(ParseError::new(open.pos, format!("expected '(' after `{}`, found {}", func.name(), open.tok)));
        }
        let (args, close) = self.args(Tok::RParen, depth)?;
        check_call(func, args, close)
    }

    /// Comma-separated arguments up to `close`, which is consumed; returns its position too.
    fn args(&mut self, close: Tok<'static>, depth: usize) -> Result<(Vec<(Arg<'s>, usize)>, usize), ParseError> {
        let mut args = Vec::new();
        if *self.peek()? == close {
            let t = self.next()?;
            return Ok((args, t.pos));
        }
        loop {
            args.push(self.arg(depth)?);
            let t = self.next()?;
            match t.tok {
                Tok::Comma => {}
                ref tok if *tok == close => return Ok((args, t.pos)),
                other => {
                    let msg = match other {
                        Tok::Eof => format!("missing {close}"),
                        other => format!("expected ',' or {close}, found {other}"),
                    };
                    return Err(ParseError::new(t.pos, msg));
                }
            }
        }
    }

    fn arg(&mut self, depth: usize) -> Result<(Arg<'s>, usize), ParseError> {
        let t = self.next()?;
        let arg = match t.tok {
            Tok::Ident(name) if *self.peek()? == Tok::LParen => Arg::Call(self.call(name, t.pos, depth + 1)?),
            Tok::Ident(word) => match word.to_ascii_lowercase().as_str() {
                "null" | "none" => Arg::Lit(Lit::Null),
                "true" => Arg::Lit(Lit::Bool(true)),
                "false" => Arg::Lit(Lit::Bool(false)),
                _ => Arg::Ident(word),
            },
            Tok::Str(s) => Arg::Lit(Lit::Str(s)),
            Tok::Num(n) => Arg::Lit(Lit::Num(n)),
            Tok::LBracket => {
                if depth + 1 > MAX_DEPTH {
                    return Err(ParseError::new(t.pos, format!("filter is nested deeper than {MAX_DEPTH} levels")));
                }
                Arg::List(self.args(Tok::RBracket, depth + 1)?.0)
            }
            Tok::Eof => return Err(ParseError::new(t.pos, "unexpected end of the filter: missing ')'")),
            other => return Err(ParseError::new(t.pos, format!("expected an argument, found {other}"))),
        };
        Ok((arg, t.pos))
    }
}

fn shorten_ident(name: &str) -> &str {
    name.get(..40).unwrap_or(name)
}

fn check_call(func: Func, args: Vec<(Arg<'_>, usize)>, close: usize) -> Result<Expr, ParseError> {
    let (min, max, expected) = func.arity();
    if args.len() < min {
        return Err(ParseError::new(close, format!("{} expects {expected}, found {}", func.name(), args.len())));
    }
    if args.len() > max {
        return Err(ParseError::new(args[max].1, format!("{} expects {expected}, found {}", func.name(), args.len())));
    }
    let mut args = args.into_iter();
    let mut next = || args.next().expect("arity checked");
    match func {
        Func::And | Func::Or => {
            let exprs = std::iter::from_fn(|| args.next()).map(|(arg, at)| expect_expr(func, arg, at)).collect::<Result<Vec<_>, _>>()?;
            Ok(if func == Func::And { Expr::And(exprs) } else { Expr::Or(exprs) })
        }
        Func::Not => {
            let (arg, at) = next();
            Ok(Expr::Not(Box::new(expect_expr(func, arg, at)?)))
        }
        Func::Cmp(op) => {
            let (field, field_at) = expect_field(func, next())?;
            let (lit, at) = expect_lit(func, next())?;
            check_cmp(op, field, field_at, lit, at)
        }
        Func::In => {
            let (field, field_at) = expect_field(func, next())?;
            if !in_allowed(field) {
                return Err(unsupported(func, field, field_at));
            }
            let (list, list_at) = next();
            let Arg::List(items) = list else {
                return Err(ParseError::new(list_at, format!("in expects a list such as [\"a\", \"b\"], found {}", list.describe())));
            };
            let values = items
                .into_iter()
                .map(|item| {
                    let (lit, at) = expect_lit(func, item)?;
                    coerce(CmpOp::Eq, field, lit, at)
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Expr::In { field, values })
        }
        Func::Has => {
            let (field, field_at) = expect_field(func, next())?;
            let (text, at) = expect_str(func, next())?;
            match field {
                Field::Tags => Ok(Expr::HasTag(text)),
                Field::Doc(doc) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(entries)) => Ok(Expr::HasEntries { doc, entries }),
                    Ok(_) => Err(ParseError::new(at, format!("has({doc}, …) expects a JSON object such as '{{\"key\": \"value\"}}'"))),
                    Err(e) => Err(ParseError::new(at, format!("has({doc}, …) expects a JSON object: {e}"))),
                },
                _ => Err(unsupported(func, field, field_at)),
            }
        }
        Func::Exists => {
            let (field, field_at) = expect_field(func, next())?;
            let Field::Doc(doc) = field else {
                return Err(unsupported(func, field, field_at));
            };
            let (key, _) = expect_str(func, next())?;
            Ok(Expr::Exists { doc, key })
        }
        Func::Search => {
            let first = next();
            if let Arg::Lit(Lit::Str(text)) = first.0 {
                if let Some(extra) = args.next() {
                    return Err(ParseError::new(extra.1, "search takes the field first: search(field, \"text\")"));
                }
                return Ok(Expr::Search { field: None, text });
            }
            let (field, field_at) = expect_field(func, first)?;
            if !matches!(field, Field::Text(_) | Field::Tags | Field::Doc(_)) {
                return Err(unsupported(func, field, field_at));
            }
            let Some(second) = args.next() else {
                return Err(ParseError::new(close, "search expects the text to look for: search(field, \"text\")"));
            };
            let (text, _) = expect_str(func, second)?;
            Ok(Expr::Search { field: Some(field), text })
        }
    }
}

fn expect_expr(func: Func, arg: Arg<'_>, at: usize) -> Result<Expr, ParseError> {
    match arg {
        Arg::Call(e) => Ok(e),
        other => Err(ParseError::new(
            at,
            format!("{} expects filter expressions such as eq(name, \"x\"), found {}", func.name(), other.describe()),
        )),
    }
}

fn expect_field(func: Func, (arg, at): (Arg<'_>, usize)) -> Result<(Field, usize), ParseError> {
    match arg {
        Arg::Ident(name) => Field::from_name(name)
            .map(|f| (f, at))
            .ok_or_else(|| ParseError::new(at, format!("unknown field `{}` (expected one of {})", shorten_ident(name), field_list()))),
        Arg::Lit(Lit::Str(s)) if Field::from_name(&s).is_some() => {
            Err(ParseError::new(at, format!("{} expects a bare field name: write {s}, not {}", func.name(), shorten(&s))))
        }
        other => Err(ParseError::new(at, format!("{} expects a field name first, found {}", func.name(), other.describe()))),
    }
}

fn field_list() -> String {
    Field::names().collect::<Vec<_>>().join(", ")
}

fn expect_lit(func: Func, (arg, at): (Arg<'_>, usize)) -> Result<(Lit, usize), ParseError> {
    match arg {
        Arg::Lit(lit) => Ok((lit, at)),
        Arg::Ident(name) => Err(ParseError::new(
            at,
            format!("{} expects a value here, found the bare word `{}` (quote strings: \"{0}\")", func.name(), shorten_ident(name)),
        )),
        other => Err(ParseError::new(at, format!("{} expects a value here, found {}", func.name(), other.describe()))),
    }
}

fn expect_str(func: Func, arg: (Arg<'_>, usize)) -> Result<(String, usize), ParseError> {
    match expect_lit(func, arg)? {
        (Lit::Str(s), at) => Ok((s, at)),
        (lit, at) => Err(ParseError::new(at, format!("{} expects a string here, found {}", func.name(), lit.describe()))),
    }
}

/// Which functions a field supports, for error messages.
fn usage(field: Field) -> &'static str {
    match field {
        Field::Tags => "use has(tags, \"t\"), in(tags, [..]) or search(tags, \"text\")",
        Field::Doc(Doc::Metadata) => {
            "use has(metadata, '{\"key\": \"value\"}'), exists(metadata, \"key\"), search(metadata, \"text\") or metadata_key / metadata_value"
        }
        Field::Doc(_) => "use has, exists or search, or the *_key / *_value fields",
        f if ordered(f) => "it supports eq, neq, gt, gte, lt, lte and in",
        Field::Text(_) => "it supports eq, neq, in and search",
        _ => "it supports eq, neq and in",
    }
}

fn unsupported(func: Func, field: Field, at: usize) -> ParseError {
    ParseError::new(at, format!("{} cannot be applied to {field}: {}", func.name(), usage(field)))
}

/// Fields that `gt`, `gte`, `lt` and `lte` apply to.
fn ordered(field: Field) -> bool {
    matches!(field, Field::Time(_) | Field::Number(_) | Field::Feedback(FeedbackField::Score | FeedbackField::Value) | Field::Value(_))
}

/// Fields that `eq`, `neq` and `in` apply to.
fn equatable(field: Field) -> bool {
    !matches!(field, Field::Tags | Field::Doc(_))
}

fn in_allowed(field: Field) -> bool {
    field == Field::Tags || (equatable(field) && field != Field::Text(TextField::Error))
}

fn check_cmp(op: CmpOp, field: Field, field_at: usize, lit: Lit, at: usize) -> Result<Expr, ParseError> {
    let allowed = if op.is_ordering() { ordered(field) } else { equatable(field) };
    if !allowed {
        return Err(unsupported(Func::Cmp(op), field, field_at));
    }
    // `eq(error, true)` is "has an error": store it in its canonical null form.
    if let (Field::Text(TextField::Error), Lit::Bool(b)) = (field, &lit) {
        let has_error = *b == (op == CmpOp::Eq);
        let op = if has_error { CmpOp::Neq } else { CmpOp::Eq };
        return Ok(Expr::Cmp { op, field, value: Literal::Null });
    }
    let value = coerce(op, field, lit, at)?;
    Ok(Expr::Cmp { op, field, value })
}

/// Converts a literal to the type of `field`, or says why it does not fit.
fn coerce(op: CmpOp, field: Field, lit: Lit, at: usize) -> Result<Literal, ParseError> {
    let wrong = |expected: &str, lit: &Lit| ParseError::new(at, format!("{field} is compared with {expected}, found {}", lit.describe()));
    if let Lit::Null = lit {
        return match field {
            _ if op.is_ordering() => Err(ParseError::new(at, "null can only be compared with eq, neq or in")),
            Field::IsRoot => Err(wrong("true or false", &lit)),
            Field::Tags | Field::Doc(_) | Field::Key(_) | Field::Feedback(FeedbackField::Key) => Err(wrong("a string", &lit)),
            _ => Ok(Literal::Null),
        };
    }
    Ok(match (field, lit) {
        (Field::Text(TextField::Status), Lit::Str(s)) => {
            if !matches!(s.as_str(), "success" | "error" | "pending") {
                return Err(ParseError::new(
                    at,
                    format!("unknown status {} (expected \"success\", \"error\" or \"pending\")", shorten(&s)),
                ));
            }
            Literal::String(s)
        }
        (Field::Text(_) | Field::Key(_) | Field::Feedback(FeedbackField::Key | FeedbackField::Source), Lit::Str(s)) => Literal::String(s),
        (Field::Text(_) | Field::Key(_) | Field::Feedback(FeedbackField::Key | FeedbackField::Source), lit) => {
            return Err(wrong("a string", &lit))
        }
        (Field::Id(_), Lit::Str(s)) => match s.trim().parse::<RunId>() {
            Ok(id) => Literal::Id(id),
            Err(_) => return Err(ParseError::new(at, format!("{field} expects a UUID, found {}", shorten(&s)))),
        },
        (Field::Id(_), lit) => return Err(wrong("a UUID string", &lit)),
        (Field::Time(_), Lit::Str(s)) => match Timestamp::parse(&s) {
            Ok(t) => Literal::Time(t),
            Err(e) => return Err(ParseError::new(at, e.to_string())),
        },
        (Field::Time(_), lit) => return Err(wrong("an ISO 8601 time string", &lit)),
        (Field::Number(_), Lit::Num(n)) => Literal::Number(n),
        (Field::Number(f), Lit::Str(s)) if f.is_duration() => match parse_duration(&s) {
            Some(secs) => Literal::Number(secs),
            None => {
                return Err(ParseError::new(
                    at,
                    format!("invalid duration {} (expected e.g. \"200ms\", \"1.5s\", \"2m\", \"1h\" or seconds)", shorten(&s)),
                ))
            }
        },
        (Field::Number(f), lit) if f.is_duration() => return Err(wrong("a number of seconds or a duration string", &lit)),
        (Field::Number(_), lit) => return Err(wrong("a number", &lit)),
        (Field::IsRoot, Lit::Bool(b)) => Literal::Bool(b),
        (Field::IsRoot, lit) => return Err(wrong("true or false", &lit)),
        (Field::Feedback(FeedbackField::Score), Lit::Num(n)) => Literal::Number(n),
        (Field::Feedback(FeedbackField::Score), Lit::Bool(b)) => Literal::Number(if b { 1.0 } else { 0.0 }),
        (Field::Feedback(FeedbackField::Score), lit) => return Err(wrong("a number", &lit)),
        (Field::Feedback(FeedbackField::Value) | Field::Value(_), lit) => match lit {
            Lit::Num(n) => Literal::Number(n),
            Lit::Bool(b) => Literal::Bool(b),
            Lit::Str(s) => Literal::String(s),
            Lit::Null => Literal::Null,
        },
        (Field::Tags, Lit::Str(s)) => Literal::String(s),
        (Field::Tags | Field::Doc(_), lit) => return Err(wrong("a string", &lit)),
    })
}

/// `"200ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"1d"` or a bare number of seconds, to seconds.
pub(crate) fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let num = num.trim_end();
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let secs = n * scale;
    secs.is_finite().then_some(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{IdField, NumberField, TimeField};

    fn p(src: &str) -> Expr {
        parse_expr(src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn err(src: &str) -> ParseError {
        parse_expr(src).expect_err(src)
    }

    #[test]
    fn parses_every_function() {
        assert_eq!(
            p(r#"eq(name, "x")"#),
            Expr::Cmp { op: CmpOp::Eq, field: Field::Text(TextField::Name), value: Literal::String("x".into()) }
        );
        for (name, op) in [("neq", CmpOp::Neq), ("gt", CmpOp::Gt), ("gte", CmpOp::Gte), ("lt", CmpOp::Lt), ("lte", CmpOp::Lte)] {
            assert_eq!(
                p(&format!("{name}(total_tokens, 10)")),
                Expr::Cmp { op, field: Field::Number(NumberField::TotalTokens), value: Literal::Number(10.0) }
            );
        }
        assert_eq!(p("has(tags, 'a')"), Expr::HasTag("a".into()));
        let Expr::HasEntries { doc: Doc::Metadata, entries } = p(r#"has(metadata, '{"foo":"bar","n":1}')"#) else { panic!() };
        assert_eq!(entries["foo"], "bar");
        assert_eq!(p(r#"exists(metadata, "k")"#), Expr::Exists { doc: Doc::Metadata, key: "k".into() });
        assert_eq!(p(r#"search("Foo")"#), Expr::Search { field: None, text: "Foo".into() });
        assert_eq!(p(r#"search(inputs, "Foo")"#), Expr::Search { field: Some(Field::Doc(Doc::Inputs)), text: "Foo".into() });
        assert_eq!(
            p(r#"in(run_type, ["llm", 'chain'])"#),
            Expr::In {
                field: Field::Text(TextField::RunType),
                values: vec![Literal::String("llm".into()), Literal::String("chain".into())]
            }
        );
        assert_eq!(p("and(has(tags,'a'))"), Expr::And(vec![Expr::HasTag("a".into())]));
        assert_eq!(
            p("or(has(tags,'a'), not(has(tags,'b')))"),
            Expr::Or(vec![Expr::HasTag("a".into()), Expr::Not(Box::new(Expr::HasTag("b".into())))])
        );
        assert_eq!(p("AND(Has(tags,'a'))"), p("and(has(tags,'a'))"));
    }

    #[test]
    fn literals_take_the_field_type() {
        let lit = |src: &str| match p(src) {
            Expr::Cmp { value, .. } => value,
            other => panic!("{other:?}"),
        };
        assert_eq!(lit("gt(latency, \"5s\")"), Literal::Number(5.0));
        assert_eq!(lit("gt(latency, '1.5s')"), Literal::Number(1.5));
        assert_eq!(lit("gt(latency, '200ms')"), Literal::Number(0.2));
        assert_eq!(lit("gt(latency, '2m')"), Literal::Number(120.0));
        assert_eq!(lit("gt(first_token_time, '1h')"), Literal::Number(3600.0));
        assert_eq!(lit("gt(latency, 2.5)"), Literal::Number(2.5));
        assert_eq!(lit("gt(latency, '3')"), Literal::Number(3.0));
        assert_eq!(lit("gt(total_cost, -1.5e-3)"), Literal::Number(-0.0015));
        assert_eq!(
            lit("gte(start_time, '2026-11-25T01:25:57.391088+00:00')"),
            Literal::Time(Timestamp::parse("2026-11-25T01:25:57.391088").unwrap())
        );
        assert_eq!(
            lit("eq(trace_id, '01a21080-7250-78f6-8000-000000000001')"),
            Literal::Id("01a21080-7250-78f6-8000-000000000001".parse().unwrap())
        );
        assert_eq!(lit("eq(is_root, TRUE)"), Literal::Bool(true));
        assert_eq!(lit("eq(feedback_score, true)"), Literal::Number(1.0));
        assert_eq!(lit("eq(feedback_score, False)"), Literal::Number(0.0));
        assert_eq!(lit("eq(metadata_value, 3)"), Literal::Number(3.0));
        assert_eq!(lit("eq(metadata_value, null)"), Literal::Null);
        assert_eq!(lit("eq(parent_run_id, null)"), Literal::Null);
        assert_eq!(lit("eq(end_time, NULL)"), Literal::Null);
    }

    #[test]
    fn error_bool_is_normalised_to_null() {
        let neq_null = Expr::Cmp { op: CmpOp::Neq, field: Field::Text(TextField::Error), value: Literal::Null };
        let eq_null = Expr::Cmp { op: CmpOp::Eq, field: Field::Text(TextField::Error), value: Literal::Null };
        assert_eq!(p("eq(error, true)"), neq_null);
        assert_eq!(p("neq(error, false)"), neq_null);
        assert_eq!(p("neq(error, null)"), neq_null);
        assert_eq!(p("eq(error, false)"), eq_null);
        assert_eq!(p("neq(error, true)"), eq_null);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(5.0));
        assert_eq!(parse_duration(" 1.5S "), Some(1.5));
        assert_eq!(parse_duration("200ms"), Some(0.2));
        assert_eq!(parse_duration("2m"), Some(120.0));
        assert_eq!(parse_duration("1h"), Some(3600.0));
        assert_eq!(parse_duration("1d"), Some(86_400.0));
        assert_eq!(parse_duration("10"), Some(10.0));
        for bad in ["", "s", "5x", "5 s s", "1e999s", "--1s", "inf", "NaNs", "1.2.3s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    /// Each bad filter, the position of the error, and a fragment of the message.
    #[test]
    fn error_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty filter"),
            ("   ", 3, "empty filter"),
            ("foo(name, 'x')", 0, "unknown function `foo`"),
            ("and(eq(nmae, 'x'))", 7, "unknown field `nmae`"),
            ("eq(name)", 7, "eq expects 2 arguments"),
            ("eq(name, 'a', 'b')", 14, "eq expects 2 arguments"),
            ("not(has(tags,'a'), has(tags,'b'))", 19, "not expects 1 argument"),
            ("and()", 4, "and expects at least 1 argument"),
            ("gt(tags, 1)", 3, "gt cannot be applied to tags"),
            ("eq(name, 'x'", 12, "missing ')'"),
            ("eq(name, 'x", 9, "unterminated string"),
            ("eq(name, 'x') eq(name, 'y')", 14, "after the end of the filter"),
            ("eq(name, 'x'))", 13, "after the end of the filter"),
            ("eq(latency, 'fast')", 12, "invalid duration"),
            ("gt(start_time, 'yesterday')", 15, "invalid time"),
            ("eq(trace_id, 'abc')", 13, "expects a UUID"),
            ("eq(name, x)", 9, "bare word `x`"),
            ("eq(total_tokens, 'many')", 17, "compared with a number"),
            ("eq(status, 'done')", 11, "unknown status"),
            ("gt(name, null)", 3, "gt cannot be applied to name"),
            ("gt(latency, null)", 12, "null can only be compared"),
            ("in(name, 'x')", 9, "expects a list"),
            ("in(name, [eq(name, 'x')])", 10, "expects a value"),
            ("has(metadata, 'not json')", 14, "expects a JSON object"),
            ("has(name, 'x')", 4, "has cannot be applied to name"),
            ("exists(tags, 'x')", 7, "exists cannot be applied to tags"),
            ("and(name)", 4, "and expects filter expressions"),
            ("'x'", 0, "expected a function call"),
            ("name", 0, "found the field name `name`"),
            ("eq name", 3, "expected '(' after `eq`"),
            ("eq(,)", 3, "expected an argument"),
            ("eq('name', 'x')", 3, "bare field name"),
            ("search(name)", 11, "search expects the text"),
            ("eq(error, 1)", 10, "compared with a string"),
            ("eq(metadata_key, null)", 17, "compared with a string"),
            ("eq(name, 1e400)", 9, "out of range"),
            ("eq(name, 'x')  \u{7f}", 15, "unexpected character"),
        ];
        for (src, pos, msg) in cases {
            let e = err(src);
            assert_eq!(e.position, *pos, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
            assert!(e.to_string().starts_with(&format!("invalid filter at position {pos}: ")));
        }
    }

    #[test]
    fn limits() {
        let deep = |n: usize| format!("{}has(tags,'a'){}", "not(".repeat(n - 1), ")".repeat(n - 1));
        assert!(parse_expr(&deep(MAX_DEPTH)).is_ok());
        let e = err(&deep(MAX_DEPTH + 1));
        assert_eq!(e.position, 4 * MAX_DEPTH);
        assert!(e.message.contains("nested deeper than 64"));
        let e = err(&format!("in(name, {}]", "[".repeat(100)));
        assert!(e.message.contains("nested deeper"), "{e}");

        let long = format!("eq(name, '{}')", "x".repeat(MAX_FILTER_LEN));
        let e = err(&long);
        assert_eq!(e.position, MAX_FILTER_LEN);
        assert!(e.message.contains("limit is 65536"));
        let fits = format!("eq(name, '{}')", "x".repeat(MAX_FILTER_LEN - 12));
        assert_eq!(fits.len(), MAX_FILTER_LEN);
        assert!(parse_expr(&fits).is_ok());
    }

    #[test]
    fn fields_of_every_kind_parse() {
        let ok = [
            "eq(id, '01a21080-7250-78f6-8000-000000000001')",
            "in(id, ['01a21080-7250-78f6-8000-000000000001', '01a21080-7250-78f6-8000-000000000002'])",
            "eq(session_id, '01a21080-7250-78f6-8000-000000000001')",
            "eq(reference_example_id, '01a21080-7250-78f6-8000-000000000001')",
            "neq(parent_run_id, null)",
            "lt(end_time, '2026-01-01')",
            "eq(execution_order, 1)",
            "gt(prompt_tokens, 1)",
            "gt(completion_tokens, 1)",
            "gt(prompt_cost, 0.1)",
            "gt(completion_cost, 0.1)",
            "in(tags, ['a', 'b'])",
            "search(tags, 'a')",
            "search(error, 'boom')",
            "eq(feedback_source, 'api')",
            "gt(feedback_value, 'b')",
            "eq(input_key, 'q')",
            "eq(output_value, 2)",
            "exists(outputs, 'y')",
            "has(inputs, '{\"q\": 1}')",
            "in(status, ['success', 'pending'])",
        ];
        for src in ok {
            p(src);
        }
        assert_eq!(
            p("eq(start_time, '2026-01-01')"),
            Expr::Cmp {
                op: CmpOp::Eq,
                field: Field::Time(TimeField::StartTime),
                value: Literal::Time(Timestamp::parse("2026-01-01").unwrap())
            }
        );
        assert!(matches!(p("in(trace_id, [])"), Expr::In { field: Field::Id(IdField::TraceId), values } if values.is_empty()));
    }
}
