//! Splits filter text into tokens, on demand, with their byte positions.

use std::fmt;

use crate::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok<'s> {
    /// A bare word: a function name, a field name, or `null` / `true` / `false`.
    Ident(&'s str),
    /// A quoted string, escapes resolved.
    Str(String),
    /// A finite number.
    Num(f64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token<'s> {
    pub tok: Tok<'s>,
    /// Byte offset of the token's first character.
    pub pos: usize,
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ident(s) => write!(f, "`{s}`"),
            Self::Str(_) => f.write_str("a string"),
            Self::Num(_) => f.write_str("a number"),
            Self::LParen => f.write_str("'('"),
            Self::RParen => f.write_str("')'"),
            Self::LBracket => f.write_str("'['"),
            Self::RBracket => f.write_str("']'"),
            Self::Comma => f.write_str("','"),
            Self::Eof => f.write_str("the end of the filter"),
        }
    }
}

pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Self {
        Self { src, pos: 0 }
    }

    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub fn next_token(&mut self) -> Result<Token<'s>, ParseError> {
        let trimmed = self.rest().trim_start_matches([' ', '\t', '\n', '\r']);
        self.pos = self.src.len() - trimmed.len();
        let pos = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let single = |tok| Token { tok, pos };
        let tok = match c {
            '(' => single(Tok::LParen),
            ')' => single(Tok::RParen),
            '[' => single(Tok::LBracket),
            ']' => single(Tok::RBracket),
            ',' => single(Tok::Comma),
            '"' | '\'' => return self.string(c),
            '-' | '.' | '0'..='9' => return self.number(),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let len = self.rest().find(|c: char| !is_ident_char(c)).unwrap_or(self.rest().len());
                let word = &self.rest()[..len];
                self.pos += len;
                return Ok(Token { tok: Tok::Ident(word), pos });
            }
            c => return Err(ParseError::new(pos, format!("unexpected character {c:?}"))),
        };
        self.pos += c.len_utf8();
        Ok(tok)
    }

    /// `-?(digits[.digits] | .digits)([eE][+-]?digits)?`, not followed by a word character.
    fn number(&mut self) -> Result<Token<'s>, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                *i += 1;
            }
            *i - from
        };
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let mut mantissa = digits(&mut i);
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            mantissa += digits(&mut i);
        }
        let mut valid = mantissa > 0;
        if valid && matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            valid = digits(&mut i) > 0;
        }
        // Swallow a glued word (`5s`, `1e`) so the message shows the whole thing.
        let tail = self.src[i..].find(|c: char| !is_ident_char(c) && c != '.').unwrap_or(self.src.len() - i);
        if tail > 0 {
            valid = false;
            i += tail;
        }
        let text = &self.src[start..i];
        if !valid {
            let hint = if text.ends_with(|c: char| c.is_ascii_alphabetic()) && text.starts_with(|c: char| c.is_ascii_digit()) {
                " (durations must be quoted, e.g. \"5s\")"
            } else {
                ""
            };
            return Err(ParseError::new(start, format!("invalid number {}{hint}", shorten(text))));
        }
        let n: f64 = text.parse().map_err(|_| ParseError::new(start, format!("invalid number {}", shorten(text))))?;
        if !n.is_finite() {
            return Err(ParseError::new(start, format!("number {} is out of range", shorten(text))));
        }
        self.pos = i;
        Ok(Token { tok: Tok::Num(n), pos: start })
    }

    /// A string quoted with `quote`; escapes: `\" \' \\ \/ \n \r \t \b \f \0 \uXXXX`.
    fn string(&mut self, quote: char) -> Result<Token<'s>, ParseError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices().map(|(i, c)| (start + 1 + i, c));
        loop {
            let Some((i, c)) = chars.next() else {
                return Err(ParseError::new(start, "unterminated string"));
            };
            match c {
                c if c == quote => {
                    self.pos = i + 1;
                    return Ok(Token { tok: Tok::Str(out), pos: start });
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        return Err(ParseError::new(start, "unterminated string"));
                    };
                    match e {
                        '"' | '\'' | '\\' | '/' => out.push(e),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        '0' => out.push('\0'),
                        'u' => {
                            let hi = hex4(&self.src[i + 2..]).ok_or_else(|| bad_unicode(i))?;
                            chars.nth(3);
                            let c = if (0xD800..0xDC00).contains(&hi) {
                                // A surrogate pair: `\uD83D\uDE00`.
                                let lo = self.src[i + 6..]
                                    .strip_prefix("\\u")
                                    .and_then(hex4)
                                    .filter(|lo| (0xDC00..0xE000).contains(lo))
                                    .ok_or_else(|| bad_unicode(i))?;
                                chars.nth(5);
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            } else {
                                char::from_u32(hi)
                            };
                            out.push(c.ok_or_else(|| bad_unicode(i))?);
                        }
                        e => {
                            return Err(ParseError::new(i, format!("unknown escape sequence \\{e} in string")));
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn hex4(s: &str) -> Option<u32> {
    let h = s.get(..4)?;
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(h, 16).ok()
}

fn bad_unicode(pos: usize) -> ParseError {
    ParseError::new(pos, "invalid \\u escape: expected 4 hex digits naming a character")
}

/// Quotes `text` for a message, cut to a readable length.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}…", &text[..i]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex(src: &str) -> Result<Vec<Tok<'_>>, ParseError> {
        let mut lx = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token()?;
            if t.tok == Tok::Eof {
                return Ok(out);
            }
            out.push(t.tok);
        }
    }

    #[test]
    fn tokens() {
        assert_eq!(
            lex(r#" eq( name ,'a\'b', "c\"d" ) [1, -2.5, 1e3, .5, -1E-2] "#).unwrap(),
            vec![
                Tok::Ident("eq"),
                Tok::LParen,
                Tok::Ident("name"),
                Tok::Comma,
                Tok::Str("a'b".into()),
                Tok::Comma,
                Tok::Str("c\"d".into()),
                Tok::RParen,
                Tok::LBracket,
                Tok::Num(1.0),
                Tok::Comma,
                Tok::Num(-2.5),
                Tok::Comma,
                Tok::Num(1000.0),
                Tok::Comma,
                Tok::Num(0.5),
                Tok::Comma,
                Tok::Num(-0.01),
                Tok::RBracket,
            ]
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(lex(r#""\n\t\\\/\u00e9\ud83d\ude00""#).unwrap(), vec![Tok::Str("\n\t\\/é😀".into())]);
        assert_eq!(lex("'é\"'").unwrap(), vec![Tok::Str("é\"".into())]);
        assert_eq!(lex(r#""\ud83d""#).unwrap_err().position, 1);
        assert_eq!(lex(r#""\udc00""#).unwrap_err().position, 1);
        assert_eq!(lex(r#""\u12""#).unwrap_err().position, 1);
        assert_eq!(lex(r#"  "a\q""#).unwrap_err().position, 4);
    }

    #[test]
    fn bad_tokens() {
        let e = lex("eq(x, 5s)").unwrap_err();
        assert_eq!(e.position, 6);
        assert!(e.message.contains("durations must be quoted"), "{e}");
        assert_eq!(lex("  'abc").unwrap_err().position, 2);
        assert_eq!(lex("\"abc\\").unwrap_err().position, 0);
        assert_eq!(lex("1e999").unwrap_err().message, "number \"1e999\" is out of range");
        assert_eq!(lex("a €").unwrap_err().position, 2);
        assert_eq!(lex("-").unwrap_err().position, 0);
        assert_eq!(lex("1.2.3").unwrap_err().position, 0);
        assert_eq!(lex("1e").unwrap_err().position, 0);
    }
}
