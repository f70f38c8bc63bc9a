//! A multipart/form-data splitter (RFC 7578, RFC 2046 §5.1) for a body already in memory.
//!
//! `/runs/multipart` bodies are read whole (they may be compressed as a whole), and the SDK
//! sends several parts per run, hundreds per request. A streaming parser pays for streaming on
//! every part (re-building its boundary searcher, copying headers into a map); here one
//! searcher finds every delimiter, headers are parsed in place by `httparse`, and each part's
//! data is a zero-copy slice of the body. Measured on `bench/ingest.sh`: multer took about a
//! seventh of the server's CPU at 20k runs/s.

use bytes::Bytes;
use memchr::memmem::Finder;

/// One part: the fields of its headers the ingest path reads, and its data.
#[derive(Debug)]
pub struct Part {
    /// `name` of `Content-Disposition: form-data`, if given.
    pub name: Option<String>,
    /// The media type of `Content-Type` without parameters, lower-cased.
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_length: Option<String>,
    pub data: Bytes,
}

/// Why a body is not well-formed multipart; shown to the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most this many header lines per part (the SDK sends three).
const MAX_PART_HEADERS: usize = 32;

/// The parts of `body`, in order, as an iterator that stops at the first error.
pub struct Parts<'b> {
    body: &'b Bytes,
    /// `\r\n--<boundary>`: every delimiter but a first one at the very start of the body.
    delimiter: Finder<'static>,
    /// Where the text after the current delimiter's boundary starts; `None` once done.
    pos: Option<usize>,
}

impl<'b> Parts<'b> {
    pub fn new(body: &'b Bytes, boundary: &str) -> Result<Self, Malformed> {
        if boundary.is_empty() || boundary.len() > 200 {
            return Err(Malformed("the boundary must be 1 to 200 characters".into()));
        }
        let dash_boundary = format!("--{boundary}");
        let delimiter = Finder::new(format!("\r\n{dash_boundary}").as_bytes()).into_owned();
        // The first delimiter may open the body, or follow a preamble.
        let first = if body.starts_with(dash_boundary.as_bytes()) {
            dash_boundary.len()
        } else {
            match delimiter.find(body) {
                Some(i) => i + delimiter.needle().len(),
                None => return Err(Malformed("no boundary delimiter found".into())),
            }
        };
        Ok(Self { body, delimiter, pos: Some(first) })
    }

    fn part_at(&mut self, mut at: usize) -> Result<Option<Part>, Malformed> {
        let body = &self.body[..];
        if body[at..].starts_with(b"--") {
            return Ok(None); // the close delimiter; what follows is epilogue
        }
        // Transport padding, then the line break that ends the delimiter line.
        while matches!(body.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err(Malformed("a boundary delimiter is not followed by a line break".into()));
        }
        at += 2;
        let mut headers = [httparse::EMPTY_HEADER; MAX_PART_HEADERS];
        let (header_len, headers) = match httparse::parse_headers(&body[at..], &mut headers) {
            Ok(httparse::Status::Complete((len, headers))) => (len, headers),
            Ok(httparse::Status::Partial) => return Err(Malformed("a part's headers are incomplete".into())),
            Err(e) => return Err(Malformed(format!("a part's headers are malformed: {e}"))),
        };
        let start = at + header_len;
        let Some(end) = self.delimiter.find(&body[start..]).map(|i| start + i) else {
            return Err(Malformed("the body ends inside a part (no closing boundary)".into()));
        };
        let mut part =
            Part { name: None, content_type: None, content_encoding: None, content_length: None, data: self.body.slice(start..end) };
        for h in headers.iter() {
            let value = std::str::from_utf8(h.value).map_err(|_| Malformed(format!("header {} is not UTF-8", h.name)))?.trim();
            if h.name.eq_ignore_ascii_case("content-disposition") {
                part.name = disposition_name(value);
            } else if h.name.eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
            } else if h.name.eq_ignore_ascii_case("content-encoding") {
                part.content_encoding = Some(value.to_string());
            } else if h.name.eq_ignore_ascii_case("content-length") {
                part.content_length = Some(value.to_string());
            }
        }
        self.pos = Some(end + self.delimiter.needle().len());
        Ok(Some(part))
    }
}

impl Iterator for Parts<'_> {
    type Item = Result<Part, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.pos.take()?;
        match self.part_at(at) {
            Ok(Some(part)) => Some(Ok(part)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

/// The `name` parameter of a `form-data` disposition (quoted or not; `filename` is not it).
fn disposition_name(value: &str) -> Option<String> {
    let mut params = value.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("form-data") {
        return None;
    }
    // Split on ';' is wrong inside a quoted value that holds one: read the rest by hand.
    let rest = &value[value.find(';')? + 1..];
    let mut chars = rest.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| *c == ' ' || *c == '\t' || *c == ';').is_some() {}
        let (key_start, _) = *chars.peek()?;
        let mut key_end = key_start;
        while let Some((i, c)) = chars.next_if(|(_, c)| *c != '=' && *c != ';') {
            key_end = i + c.len_utf8();
        }
        let key = rest[key_start..key_end].trim();
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            continue; // a parameter without a value
        }
        let mut val = String::new();
        if chars.next_if(|(_, c)| *c == '"').is_some() {
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => val.extend(chars.next().map(|(_, c)| c)),
                    c => val.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != ';') {
                val.push(c);
            }
            val = val.trim().to_string();
        }
        if key.eq_ignore_ascii_case("name") {
            return Some(val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &str) -> Result<Vec<Part>, Malformed> {
        let body = Bytes::from(body.to_string());
        Parts::new(&body, "XyZ")?.collect()
    }

    #[test]
    fn splits_parts_with_preamble_padding_and_epilogue() {
        let body = "preamble\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"post.1\"\r\nContent-Type: Application/JSON; charset=utf-8\r\n\r\n{\"a\":\"--XyZ\"}\r\n--XyZ\r\ncontent-disposition: form-data; filename=\"f;x.png\"; name=att\r\n\r\n\r\n--XyZ--\r\nepilogue";
        let p = parts(body).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name.as_deref(), Some("post.1"));
        assert_eq!(p[0].content_type.as_deref(), Some("application/json"));
        assert_eq!(&p[0].data[..], b"{\"a\":\"--XyZ\"}", "a boundary not at a line start is data");
        assert_eq!(p[1].name.as_deref(), Some("att"), "filename (with a ';' inside quotes) is not the name");
        assert_eq!(&p[1].data[..], b"", "an empty part");
    }

    #[test]
    fn a_body_at_the_first_delimiter_and_escaped_names() {
        let p = parts("--XyZ\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\nContent-Length: 2\r\n\r\nhi\r\n--XyZ--").unwrap();
        assert_eq!(p[0].name.as_deref(), Some("a\"b"));
        assert_eq!(p[0].content_length.as_deref(), Some("2"));
        assert_eq!(&p[0].data[..], b"hi");
        assert!(parts("--XyZ--\r\n").unwrap().is_empty());
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for bad in [
            "garbage",
            "--XyZ",
            "--XyZ\r\n",
            "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nno closing boundary",
            "--XyZ\r\nContent-Disposition form-data\r\n\r\nx\r\n--XyZ--",
            "--XyZjunk\r\n\r\nx\r\n--XyZ--",
            "--XyZ\r\nContent-Disposition: form-data; name=a\r\n",
        ] {
            assert!(parts(bad).is_err(), "{bad:?}");
        }
        let many = format!("--XyZ\r\n{}\r\nx\r\n--XyZ--", "X-A: b\r\n".repeat(MAX_PART_HEADERS + 1));
        assert!(parts(&many).unwrap_err().0.contains("malformed"));
        assert!(Parts::new(&Bytes::new(), "").is_err());
    }
}
