//! Reading evaluator configs: typed accessors over a JSON object whose errors name the field,
//! and a final check that rejects fields nobody read (typos such as `case_sensitve`).

use std::fmt;

use serde_json::{Map, Value};

/// An evaluator config that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The evaluator's key, once known.
    pub key: Option<String>,
    /// The offending field (`keywords[2]`, `[3].pattern`); empty when the whole config is wrong.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: None, field: field.into(), message: message.into() }
    }

    pub(crate) fn whole(message: impl Into<String>) -> Self {
        Self { key: None, field: String::new(), message: message.into() }
    }

    pub(crate) fn with_key(mut self, key: &str) -> Self {
        self.key.get_or_insert_with(|| key.to_owned());
        self
    }

    /// The same error for entry `i` of a list of configs.
    pub(crate) fn in_list(mut self, i: usize) -> Self {
        self.field = if self.field.is_empty() { format!("[{i}]") } else { format!("[{i}].{}", self.field) };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "evaluator {k:?}: ")?,
            None => f.write_str("evaluator config: ")?,
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A JSON type's name, for "expected X, got Y" messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The fields of one config object. Every accessor records the field as known, so
/// [`Fields::finish`] can reject the rest.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    pub fn new(config: &'a Value) -> Result<Self, ConfigError> {
        match config {
            Value::Object(map) => Ok(Self { map, known: Vec::new() }),
            other => Err(ConfigError::whole(format!("expected an object, got {}", type_name(other)))),
        }
    }

    /// The field's value; JSON null counts as absent.
    pub fn opt(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn req(&mut self, name: &'static str) -> Result<&'a Value, ConfigError> {
        self.opt(name).ok_or_else(|| ConfigError::field(name, "required"))
    }

    pub fn req_str(&mut self, name: &'static str) -> Result<&'a str, ConfigError> {
        let v = self.req(name)?;
        v.as_str().ok_or_else(|| expected(name, "a string", v))
    }

    pub fn opt_str(&mut self, name: &'static str) -> Result<Option<&'a str>, ConfigError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| expected(name, "a string", v)),
        }
    }

    pub fn opt_bool(&mut self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.opt(name) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| expected(name, "true or false", v)),
        }
    }

    pub fn opt_f64(&mut self, name: &'static str) -> Result<Option<f64>, ConfigError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| expected(name, "a number", v)),
        }
    }

    pub fn opt_u64(&mut self, name: &'static str) -> Result<Option<u64>, ConfigError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| expected(name, "a non-negative integer", v)),
        }
    }

    /// One of `choices`, or `default` when absent.
    pub fn opt_choice(&mut self, name: &'static str, choices: &[&'static str], default: &'static str) -> Result<&'static str, ConfigError> {
        let Some(s) = self.opt_str(name)? else { return Ok(default) };
        choices
            .iter()
            .copied()
            .find(|c| *c == s)
            .ok_or_else(|| ConfigError::field(name, format!("expected one of {}, got {s:?}", choices.join(", "))))
    }

    /// A non-empty list of non-empty strings.
    pub fn req_str_list(&mut self, name: &'static str) -> Result<Vec<String>, ConfigError> {
        let v = self.req(name)?;
        let list = v.as_array().ok_or_else(|| expected(name, "a list of strings", v))?;
        if list.is_empty() {
            return Err(ConfigError::field(name, "must not be empty"));
        }
        list.iter()
            .enumerate()
            .map(|(i, s)| match s.as_str() {
                Some("") => Err(ConfigError::field(format!("{name}[{i}]"), "must not be empty")),
                Some(s) => Ok(s.to_owned()),
                None => Err(expected(&format!("{name}[{i}]"), "a string", s)),
            })
            .collect()
    }

    /// Rejects the fields no accessor asked for.
    pub fn finish(self) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !self.known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => {
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                Err(ConfigError::field(k.clone(), format!("unknown field for this evaluator type; known fields: {}", known.join(", "))))
            }
        }
    }
}

pub(crate) fn expected(field: &str, what: &str, got: &Value) -> ConfigError {
    ConfigError::field(field, format!("expected {what}, got {}", type_name(got)))
}
