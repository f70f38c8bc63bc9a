//! A reader of the shapes of our own CQL: which table a statement touches, which column each
//! named marker binds, what it selects and restricts, and the schema's columns and keys.
//!
//! It understands exactly the subset of CQL in `cql/*.cql` and `statements.rs`, no more: it
//! exists so tests can check statements against the schema without a database.

use scylla::frame::response::result::NativeType;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Marker(String),
    Punct(String),
}

fn strip_comments(cql: &str) -> String {
    cql.lines().map(|l| l.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn tokenize(cql: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = cql.chars().peekable();
    while let Some(c) = it.next() {
        let word = |first: Option<char>, it: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let mut w: String = first.into_iter().collect();
            while let Some(&n) = it.peek() {
                if n.is_ascii_alphanumeric() || n == '_' || n == '{' || n == '}' {
                    w.push(n);
                    it.next();
                } else {
                    break;
                }
            }
            w
        };
        match c {
            c if c.is_whitespace() => {}
            ':' => out.push(Tok::Marker(word(None, &mut it))),
            '<' | '>' if it.peek() == Some(&'=') => {
                it.next();
                out.push(Tok::Punct(format!("{c}=")));
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '{' => out.push(Tok::Word(word(Some(c), &mut it))),
            c => out.push(Tok::Punct(c.to_string())),
        }
    }
    out
}

fn is_word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

fn is_op(t: &Tok) -> bool {
    matches!(t, Tok::Punct(p) if matches!(p.as_str(), "=" | "<" | ">" | "<=" | ">="))
}

fn is_punct(t: Option<&Tok>, p: &str) -> bool {
    matches!(t, Some(Tok::Punct(x)) if x == p)
}

/// The words of the parenthesised list that ends just before `close` (exclusive).
fn list_before(toks: &[Tok], close: usize) -> Vec<String> {
    let mut j = close;
    while j > 0 && !is_punct(toks.get(j), "(") {
        j -= 1;
    }
    toks[j..close]
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// A named marker and the column it binds (`[ttl]` and `[timestamp]` for `USING` values).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub name: String,
    pub column: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub verb: String,
    pub table: String,
    pub markers: Vec<Marker>,
    /// Columns a SELECT returns, in order.
    pub selected: Vec<String>,
    /// Columns restricted by `=` in the WHERE clause (not the IF clause).
    pub restricted: Vec<String>,
}

impl Statement {
    pub fn parse(cql: &str) -> Result<Self, String> {
        let toks = tokenize(&strip_comments(cql));
        let verb = match toks.first() {
            Some(Tok::Word(w)) => w.to_uppercase(),
            _ => return Err("no verb".into()),
        };
        let after = |kw: &str| -> Result<(usize, String), String> {
            let i = toks.iter().position(|t| is_word(Some(t), kw)).ok_or_else(|| format!("no {kw}"))?;
            match toks.get(i + 1) {
                Some(Tok::Word(w)) => Ok((i + 1, w.clone())),
                _ => Err(format!("nothing after {kw}")),
            }
        };
        let (table_at, table) = match verb.as_str() {
            "SELECT" | "DELETE" => after("FROM")?,
            "INSERT" => after("INTO")?,
            "UPDATE" => after("UPDATE")?,
            v => return Err(format!("unsupported verb {v}")),
        };
        let selected = if verb == "SELECT" {
            toks[1..table_at - 1]
                .iter()
                .filter_map(|t| match t {
                    Tok::Word(w) => Some(w.clone()),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut markers = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            let Tok::Marker(name) = t else { continue };
            let prev = &toks[i - 1];
            let column = if is_word(Some(prev), "TTL") {
                "[ttl]".to_string()
            } else if is_word(Some(prev), "TIMESTAMP") {
                "[timestamp]".to_string()
            } else if is_op(prev) {
                match &toks[i - 2] {
                    Tok::Word(c) => c.clone(),
                    other => return Err(format!(":{name} follows {other:?}")),
                }
            } else if is_punct(Some(prev), "(") || is_punct(Some(prev), ",") {
                // The k-th element of a tuple of markers: find its opening parenthesis.
                let mut j = i;
                let mut k = 0;
                while !is_punct(toks.get(j), "(") {
                    if is_punct(toks.get(j), ",") {
                        k += 1;
                    }
                    j -= 1;
                }
                // `VALUES (...)` of an INSERT, or `(a, b) <op> (...)` of a relation.
                let columns = if is_word(toks.get(j - 1), "VALUES") || (j >= 2 && is_op(&toks[j - 1])) {
                    list_before(&toks, j - 2)
                } else {
                    return Err(format!(":{name} is in a tuple this reader does not know"));
                };
                columns.get(k).cloned().ok_or_else(|| format!(":{name} has no column"))?
            } else {
                return Err(format!(":{name} follows {prev:?}"));
            };
            markers.push(Marker { name: name.clone(), column });
        }
        let mut restricted = Vec::new();
        if let Some(w) = toks.iter().position(|t| is_word(Some(t), "WHERE")) {
            for i in w + 1..toks.len() {
                if is_word(toks.get(i), "IF") {
                    break;
                }
                if let (Tok::Word(c), Some(Tok::Punct(p))) = (&toks[i], toks.get(i + 1)) {
                    if p == "=" {
                        restricted.push(c.clone());
                    }
                }
            }
        }
        Ok(Self { verb, table, markers, selected, restricted })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String)>,
    pub partition_key: Vec<String>,
    pub clustering: Vec<String>,
}

impl Table {
    pub fn column_type(&self, column: &str) -> Option<&str> {
        self.columns.iter().find(|(c, _)| c == column).map(|(_, t)| t.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub tables: Vec<Table>,
}

impl Schema {
    /// The `CREATE TABLE` statements of a schema file (keyspace prefixes dropped).
    pub fn parse(cql: &str) -> Self {
        let mut tables = Vec::new();
        for stmt in strip_comments(cql).split(';') {
            let toks = tokenize(stmt);
            if !(is_word(toks.first(), "CREATE") && is_word(toks.get(1), "TABLE")) {
                continue;
            }
            let Some(open) = toks.iter().position(|t| is_punct(Some(t), "(")) else { continue };
            let name = match &toks[open - 1] {
                Tok::Word(w) => w.clone(),
                _ => continue,
            };
            let mut table = Table { name, columns: Vec::new(), partition_key: Vec::new(), clustering: Vec::new() };
            // Items at depth 1, split on commas.
            let mut depth = 0;
            let mut item: Vec<Tok> = Vec::new();
            let mut items = Vec::new();
            for t in &toks[open..] {
                match t {
                    Tok::Punct(p) if p == "(" => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    Tok::Punct(p) if p == ")" => {
                        depth -= 1;
                        if depth == 0 {
                            items.push(std::mem::take(&mut item));
                            break;
                        }
                    }
                    Tok::Punct(p) if p == "," && depth == 1 => {
                        items.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(t.clone());
            }
            for item in items {
                let words: Vec<String> = item
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(w) => Some(w.clone()),
                        _ => None,
                    })
                    .collect();
                if is_word(item.first(), "PRIMARY") {
                    // PRIMARY KEY ((a, b), c, d) or PRIMARY KEY (a, c)
                    let keys = &words[2..];
                    let composite = is_punct(item.get(3), "(");
                    let n_partition = if composite {
                        item[4..].iter().take_while(|t| !is_punct(Some(t), ")")).filter(|t| matches!(t, Tok::Word(_))).count()
                    } else {
                        1
                    };
                    table.partition_key = keys[..n_partition].to_vec();
                    table.clustering = keys[n_partition..].to_vec();
                } else if words.len() >= 2 {
                    if words.iter().any(|w| w.eq_ignore_ascii_case("PRIMARY")) {
                        table.partition_key = vec![words[0].clone()];
                    }
                    table.columns.push((words[0].clone(), words[1].to_lowercase()));
                }
            }
            tables.push(table);
        }
        Self { tables }
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

fn native_type(cql_type: &str) -> Result<NativeType, String> {
    Ok(match cql_type {
        "uuid" => NativeType::Uuid,
        "bigint" => NativeType::BigInt,
        "int" => NativeType::Int,
        "blob" => NativeType::Blob,
        "text" => NativeType::Text,
        "timestamp" => NativeType::Timestamp,
        "boolean" => NativeType::Boolean,
        other => return Err(format!("type {other} is not one the adapter uses")),
    })
}

/// Each marker's name and the type the server would report for it.
pub fn bind_specs(schema: &Schema, cql: &str) -> Result<Vec<(String, NativeType)>, String> {
    let s = Statement::parse(cql)?;
    let table = schema.table(&s.table).ok_or_else(|| format!("no table {}", s.table))?;
    s.markers
        .iter()
        .map(|m| {
            let ty = match m.column.as_str() {
                "[ttl]" => NativeType::Int,
                "[timestamp]" => NativeType::BigInt,
                c => native_type(table.column_type(c).ok_or_else(|| format!("{c} is not a column of {}", s.table))?)?,
            };
            Ok((m.name.clone(), ty))
        })
        .collect()
}

/// The columns a SELECT returns, with their types.
pub fn result_specs(schema: &Schema, cql: &str) -> Result<Vec<(String, NativeType)>, String> {
    let s = Statement::parse(cql)?;
    let table = schema.table(&s.table).ok_or_else(|| format!("no table {}", s.table))?;
    s.selected
        .iter()
        .map(|c| Ok((c.clone(), native_type(table.column_type(c).ok_or_else(|| format!("{c} is not a column of {}", s.table))?)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markers_in_every_position() {
        let s = Statement::parse("UPDATE t USING TTL :ttl SET a = :a WHERE k = :k AND (c, d) >= (:lo_c, :lo_d) IF version = :expected")
            .unwrap();
        let cols: Vec<_> = s.markers.iter().map(|m| (m.name.as_str(), m.column.as_str())).collect();
        assert_eq!(cols, [("ttl", "[ttl]"), ("a", "a"), ("k", "k"), ("lo_c", "c"), ("lo_d", "d"), ("expected", "version")]);
        assert_eq!(s.restricted, ["k"]);
        let s = Statement::parse("INSERT INTO t (a, b) VALUES (:x, :y) USING TTL :t AND TIMESTAMP :w").unwrap();
        let cols: Vec<_> = s.markers.iter().map(|m| m.column.as_str()).collect();
        assert_eq!(cols, ["a", "b", "[ttl]", "[timestamp]"]);
        assert_eq!(Statement::parse("SELECT a, b FROM t WHERE k = :k").unwrap().selected, ["a", "b"]);
    }

    #[test]
    fn reads_keys_of_the_schema() {
        let s = Schema::parse(
            "CREATE TABLE IF NOT EXISTS x (a uuid, b bigint, c blob, PRIMARY KEY ((a, b), c)) WITH CLUSTERING ORDER BY (c DESC);\n\
             CREATE TABLE IF NOT EXISTS {keyspace}.y (n text, PRIMARY KEY ((n)));\n\
             CREATE TABLE z (n text PRIMARY KEY, v int);",
        );
        let x = s.table("x").unwrap();
        assert_eq!((x.partition_key.as_slice(), x.clustering.as_slice()), (&["a".to_string(), "b".into()][..], &["c".to_string()][..]));
        assert_eq!(s.table("y").unwrap().partition_key, ["n"]);
        assert_eq!(s.table("z").unwrap().partition_key, ["n"]);
        assert_eq!(s.table("z").unwrap().column_type("v"), Some("int"));
    }
}
