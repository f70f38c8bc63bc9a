//! Judge prompt templates: `{inputs}`, `{outputs}`, `{reference}` and paths under them
//! (`{inputs.question}`, `{outputs.sources.0}`), compiled once and filled per run. Other braces
//! are left alone, so prompts can show JSON examples such as `{"score": 0.8}` without escaping.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::text;

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{(inputs|outputs|reference)((?:\.[^{}\s.]+)*)\}").unwrap());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    Inputs,
    Outputs,
    Reference,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Value { root: Root, path: Option<String>, raw: String },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles a template; it must show the judge the outputs (`{outputs}` or a path under it).
    pub fn parse(prompt: &str) -> Result<Self, String> {
        if prompt.trim().is_empty() {
            return Err("must not be empty".into());
        }
        let mut parts = Vec::new();
        let mut last = 0;
        for c in PLACEHOLDER.captures_iter(prompt) {
            let m = c.get(0).unwrap();
            if m.start() > last {
                parts.push(Part::Text(prompt[last..m.start()].to_owned()));
            }
            let root = match &c[1] {
                "inputs" => Root::Inputs,
                "outputs" => Root::Outputs,
                _ => Root::Reference,
            };
            let path = c.get(2).map(|p| p.as_str().trim_start_matches('.')).filter(|p| !p.is_empty()).map(str::to_owned);
            parts.push(Part::Value { root, path, raw: m.as_str().to_owned() });
            last = m.end();
        }
        if last < prompt.len() {
            parts.push(Part::Text(prompt[last..].to_owned()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Value { root: Root::Outputs, .. })) {
            return Err("must show the judge the run's outputs: use {outputs} or a path under it such as {outputs.answer}".into());
        }
        Ok(Self { parts })
    }

    /// Whether the template shows the judge the reference.
    pub fn uses_reference(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Value { root: Root::Reference, .. }))
    }

    /// The prompt for one run. Strings are inserted as they are, other values as compact JSON;
    /// a missing path or reference is an error rather than an empty gap the judge would score.
    pub fn render(&self, inputs: &Value, outputs: &Value, reference: Option<&Value>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Value { root, path, raw } => {
                    let base = match root {
                        Root::Inputs => inputs,
                        Root::Outputs => outputs,
                        Root::Reference => match reference {
                            None | Some(Value::Null) => {
                                return Err(format!("the prompt uses {raw} but the example has no reference output"))
                            }
                            Some(r) => r,
                        },
                    };
                    let v = match path {
                        None => base,
                        Some(p) => text::lookup(base, p).ok_or_else(|| format!("the prompt uses {raw} but there is no such field"))?,
                    };
                    out.push_str(&text::as_text(v));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fills_placeholders_and_paths_and_leaves_other_braces() {
        let t =
            Template::parse("Q: {inputs.question}\nA: {outputs}\nRef: {reference}\nAnswer as {\"score\": 0.8}; {unknown} stays").unwrap();
        assert!(t.uses_reference());
        assert!(!Template::parse("{outputs}").unwrap().uses_reference());
        let s = t.render(&json!({"question": "why?"}), &json!({"answer": "because", "n": 1}), Some(&json!("ref"))).unwrap();
        assert_eq!(s, "Q: why?\nA: {\"answer\":\"because\",\"n\":1}\nRef: ref\nAnswer as {\"score\": 0.8}; {unknown} stays");
    }

    #[test]
    fn substituted_text_is_not_expanded_again() {
        let t = Template::parse("{outputs} / {inputs}").unwrap();
        assert_eq!(t.render(&json!("{outputs}"), &json!("{inputs}"), None).unwrap(), "{inputs} / {outputs}");
    }

    #[test]
    fn missing_reference_or_path_is_an_error() {
        let t = Template::parse("{outputs.answer} vs {reference}").unwrap();
        assert!(t.render(&json!({}), &json!({"answer": "a"}), None).unwrap_err().contains("no reference output"));
        assert!(t.render(&json!({}), &json!({}), Some(&json!("r"))).unwrap_err().contains("{outputs.answer}"));
    }

    #[test]
    fn a_prompt_must_show_the_outputs() {
        assert!(Template::parse("Is {inputs} nice?").unwrap_err().contains("{outputs}"));
        assert!(Template::parse("  ").is_err());
    }
}
