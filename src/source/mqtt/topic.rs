//! Topic patterns with named captures, and the templates that turn captures into machine and
//! signal names.
//!
//! A pattern is an MQTT topic filter in which a level may be written `{name}`: it matches one
//! level like `+` and keeps its text. `plant/{machine}/status` subscribes to `plant/+/status`
//! and turns `plant/cnc03/status` into `machine = "cnc03"`. Captures are whole levels only,
//! which is what MQTT wildcards can express; a level like `cnc{n}` would subscribe to more than
//! it matches and is refused.

use std::fmt;

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `{name}`
    Capture(String),
    /// `+`
    Any,
    /// `#`, the last level only.
    Rest,
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    levels: Vec<Level>,
    filter: String,
}

/// What a topic matched: capture names and their text.
pub type Captures<'t> = Vec<(&'t str, &'t str)>;

impl Pattern {
    /// Parses `text`; the error says what is wrong in words for `shopfloor check`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("the pattern is empty".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err("`#` may only be the last level of a pattern".into()),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("capture `{p}`: names are letters, digits and `_`"));
                    }
                    if names.contains(&name) {
                        return Err(format!("capture `{{{name}}}` appears twice"));
                    }
                    names.push(name);
                    Level::Capture(name.to_string())
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "level `{p}`: wildcards and captures must fill a whole level (`+`, `#`, `{{name}}`)"
                    ));
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        let filter = levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Any => "+",
                Level::Rest => "#",
            })
            .collect::<Vec<_>>()
            .join("/");
        Ok(Pattern { levels, filter })
    }

    /// The MQTT subscription filter (captures become `+`).
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The names of the captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The captures if `topic` matches, after MQTT's rules: `+` is exactly one level (possibly
    /// empty), `#` is any number of levels including none, and a wildcard in the first level
    /// never matches a topic starting with `$` (broker-internal topics).
    pub fn matches<'p, 't>(&'p self, topic: &'t str) -> Option<Captures<'t>>
    where
        'p: 't,
    {
        let mut captures = Vec::new();
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            if i == 0 && topic.starts_with('$') && !matches!(level, Level::Literal(_)) {
                return None;
            }
            match level {
                Level::Rest => return Some(captures),
                Level::Literal(text) => {
                    if parts.next()? != text {
                        return None;
                    }
                }
                Level::Any => {
                    parts.next()?;
                }
                Level::Capture(name) => captures.push((name.as_str(), parts.next()?)),
            }
        }
        parts.next().is_none().then_some(captures)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.filter)
    }
}

/// A name built from captures: `"{machine}"`, `"cnc{n}"`, or plain `"cnc01"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Capture(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}`: `{{` without `}}`"));
            };
            let name = &rest[open + 1..open + close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{text}`: `{{{name}}}` is not a capture name (letters, digits, `_`)"
                ));
            }
            parts.push(Part::Capture(name.to_string()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the name is empty".into());
        }
        Ok(Template { parts })
    }

    /// The text when the template uses no capture.
    pub fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The capture names the template uses.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Capture(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// Fills in the captures; `None` when one is missing or empty (a Sparkplug node message
    /// has no `{device}`).
    pub fn render(&self, captures: &[(&str, &str)]) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Capture(name) => {
                    let value = captures.iter().find(|(n, _)| n == name)?.1;
                    if value.is_empty() {
                        return None;
                    }
                    out.push_str(value);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn captures_become_plus_in_the_subscription_and_keep_their_text() {
        let pattern = p("plant/{line}/{machine}/status");
        assert_eq!(pattern.filter(), "plant/+/+/status");
        assert_eq!(
            pattern.matches("plant/l1/cnc03/status"),
            Some(vec![("line", "l1"), ("machine", "cnc03")])
        );
        assert_eq!(pattern.matches("plant/l1/cnc03/data"), None);
        assert_eq!(pattern.matches("plant/l1/cnc03/status/x"), None);
        assert_eq!(pattern.matches("plant/l1/status"), None);
    }

    #[test]
    fn mqtt_wildcards_follow_the_specification() {
        // `+` is exactly one level, and that level may be empty.
        assert_eq!(p("a/+/c").matches("a//c"), Some(vec![]));
        assert_eq!(p("a/+/c").matches("a/b/b/c"), None);
        // `#` also matches its parent level.
        assert_eq!(p("a/#").matches("a"), Some(vec![]));
        assert_eq!(p("a/#").matches("a/b/c"), Some(vec![]));
        assert_eq!(p("{m}/#").matches("cnc1/x/y"), Some(vec![("m", "cnc1")]));
        assert_eq!(p("#").matches("anything/at/all"), Some(vec![]));
        // Wildcards in the first level never match `$SYS` topics.
        assert_eq!(p("#").matches("$SYS/broker/uptime"), None);
        assert_eq!(p("+/broker/uptime").matches("$SYS/broker/uptime"), None);
        assert!(p("$SYS/#").matches("$SYS/broker/uptime").is_some());
    }

    #[test]
    fn malformed_patterns_are_refused_with_a_reason() {
        assert!(Pattern::parse("a/#/b").unwrap_err().contains("last level"));
        assert!(
            Pattern::parse("a/cnc{n}")
                .unwrap_err()
                .contains("whole level")
        );
        assert!(Pattern::parse("a/b+").unwrap_err().contains("whole level"));
        assert!(Pattern::parse("{m}/{m}").unwrap_err().contains("twice"));
        assert!(Pattern::parse("{a-b}").unwrap_err().contains("letters"));
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn templates_fill_in_captures() {
        let t = Template::parse("cnc{n}_{side}").unwrap();
        assert_eq!(t.fixed(), None);
        assert_eq!(t.capture_names().collect::<Vec<_>>(), vec!["n", "side"]);
        assert_eq!(
            t.render(&[("side", "left"), ("n", "07")]).as_deref(),
            Some("cnc07_left")
        );
        assert_eq!(t.render(&[("n", "07")]), None);
        assert_eq!(t.render(&[("n", "07"), ("side", "")]), None);
        assert_eq!(Template::parse("cnc01").unwrap().fixed(), Some("cnc01"));
        assert!(Template::parse("cnc{").is_err());
        assert!(Template::parse("cnc}").is_err());
        assert!(Template::parse("{}").is_err());
    }
}
