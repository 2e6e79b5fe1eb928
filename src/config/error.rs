//! Configuration errors, each pointing at the file, line and key at fault.
//!
//! A [`ConfigError`] displays like a compiler message, so an operator can
//! jump straight to the offending line:
//!
//! ```text
//! conf/webcluster.toml:42:5: group "web" node "web2" key `address`: "10.0.0.x:80" is not a valid address
//! ```
//!
//! Errors from the TOML parser and from serde (syntax errors, unknown keys,
//! wrong types, missing keys) are converted into the same shape by
//! [`ConfigError::from_toml`], which also works out which group, node or
//! route the error is in.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a configuration file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// The details of a [`ConfigError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file at fault.
    pub path: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    /// Where in the configuration, e.g. `group "web" node "web2"` or
    /// `[server]`; empty at the top level.
    pub context: String,
    /// The key at fault, when there is one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ":")?;
        if !self.context.is_empty() {
            write!(f, " {}", self.context)?;
        }
        if let Some(key) = &self.key {
            write!(f, " key `{key}`")?;
        }
        if !self.context.is_empty() || self.key.is_some() {
            write!(f, ":")?;
        }
        write!(f, " {}", self.message)
    }
}

impl ConfigError {
    /// An error at `span` (byte offsets into `text`) of the file `path`.
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        context: impl Into<String>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid(Box::new(Invalid {
            path: path.to_path_buf(),
            position: span.map(|s| line_col(text, s.start)),
            context: context.into(),
            key: key.map(str::to_owned),
            message: message.into(),
        }))
    }

    /// Convert a TOML syntax or serde error into a located error.
    pub(crate) fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        let span = err.span();
        let raw = err.message();
        let key_path = key_path(err);
        let spanned_text = span
            .clone()
            .and_then(|s| text.get(s))
            .map(|s| s.trim_matches(|c| c == '"' || c == '\''));

        let (key, message) = if let Some(field) = backticked_after(raw, "unknown field ") {
            let expected = raw
                .split_once(", expected ")
                .map(|(_, rest)| format!(", expected {rest}"))
                .unwrap_or_default();
            let mut message = format!("unknown key{expected}");
            if TOP_LEVEL_KEYS.contains(&field) && !key_path.is_empty() {
                message.push_str(&format!(
                    " (`{field}` is a top-level key: write it before the first [table])"
                ));
            }
            (Some(field.to_owned()), message)
        } else if let Some(field) = backticked_after(raw, "missing field ") {
            (Some(field.to_owned()), "is required but missing".to_owned())
        } else if let Some(last) = key_path.last() {
            (Some(last.clone()), friendly(raw))
        } else if let Some(word) = spanned_text.filter(|w| is_bare_key(w)) {
            (Some(word.to_owned()), friendly(raw))
        } else {
            // A syntax error inside a value: name the key of its line.
            let key = span.as_ref().and_then(|s| key_on_line(text, s.start));
            (key.map(str::to_owned), friendly(raw))
        };

        let context = match &span {
            Some(s) => context_at(text, s.start),
            None => String::new(),
        };
        ConfigError::at(path, text, span, context, key.as_deref(), message)
    }

    /// The details, unless the file could not be read.
    pub fn invalid(&self) -> Option<&Invalid> {
        match self {
            ConfigError::Invalid(inner) => Some(inner),
            ConfigError::Read { .. } => None,
        }
    }

    /// The 1-based line at fault, if known.
    pub fn line(&self) -> Option<usize> {
        self.invalid()?.position.map(|(line, _)| line)
    }

    /// The key at fault, if known.
    pub fn key(&self) -> Option<&str> {
        self.invalid()?.key.as_deref()
    }
}

/// Keys allowed only at the top of the file, before any `[table]`.
const TOP_LEVEL_KEYS: &[&str] = &["protected_paths", "default_group"];

/// 1-based (line, column) of byte `offset` in `text`; the column counts
/// characters, not bytes.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key path toml attaches to a serde error (`group.node.weight`).
///
/// `toml::de::Error` only shows it in `Display`, and only when it has no
/// input attached, so render a copy without the input and read it back.
fn key_path(err: &toml::de::Error) -> Vec<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let shown = bare.to_string();
    shown
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .map(|path| path.split('.').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The text between backticks right after `prefix` at the start of `message`.
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(word, _)| word)
}

/// The key of a `key = value` line holding byte `offset`.
fn key_on_line(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text.get(..offset)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    is_bare_key(key).then_some(key)
}

fn is_bare_key(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Replace serde's Rust vocabulary with TOML's.
fn friendly(message: &str) -> String {
    let mut out = message.to_owned();
    for (from, to) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
    ] {
        out = out.replace(from, to);
    }
    if let Some(idx) = out.find("expected struct ") {
        out.truncate(idx);
        out.push_str("expected a table");
    }
    out
}

/// Describe where `offset` lies: `[server]`, `group "web"`,
/// `group "web" node "web2"`, `route #2`, or "" at the top level.
///
/// This reads the table headers line by line, which is enough for a
/// message: it runs only on files that already failed to deserialize.
pub(crate) fn context_at(text: &str, offset: usize) -> String {
    let mut group: Option<(usize, Option<String>)> = None; // (index, name)
    let mut node: Option<(usize, Option<String>)> = None;
    let mut groups = 0;
    let mut nodes = 0;
    let mut routes = 0;
    let mut current: Option<String> = None; // the header we are under
    let mut pos = 0;

    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if let Some(header) = table_header(line) {
            if start > offset {
                break;
            }
            match header.as_str() {
                "[[group]]" => {
                    groups += 1;
                    nodes = 0;
                    group = Some((groups, None));
                    node = None;
                }
                "[[group.node]]" => {
                    nodes += 1;
                    node = Some((nodes, None));
                }
                "[[route]]" => routes += 1,
                _ => {}
            }
            current = Some(header);
            continue;
        }
        // Pick up the `name` of the table we are in, even below `offset`.
        if let Some(name) = name_value(line) {
            match current.as_deref() {
                Some("[[group]]") => {
                    if let Some((_, n @ None)) = &mut group {
                        *n = Some(name);
                    }
                }
                Some("[[group.node]]") => {
                    if let Some((_, n @ None)) = &mut node {
                        *n = Some(name);
                    }
                }
                _ => {}
            }
        }
    }

    let describe = |what: &str, item: &Option<(usize, Option<String>)>| match item {
        Some((_, Some(name))) => format!("{what} {name:?}"),
        Some((index, None)) => format!("{what} #{index}"),
        None => what.to_owned(),
    };
    match current.as_deref() {
        None => String::new(),
        Some("[[group]]") => describe("group", &group),
        Some("[[group.node]]") => {
            format!("{} {}", describe("group", &group), describe("node", &node))
        }
        Some("[[route]]") => format!("route #{routes}"),
        Some(other) => other.to_owned(),
    }
}

/// `[name]` / `[[name]]` if `line` is a table header (spaces removed).
fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    let line = match line.find('#') {
        Some(i) if !line[..i].contains('"') => line[..i].trim_end(),
        _ => line,
    };
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let (open, close, inner) = match inner.strip_prefix('[') {
        Some(inner) => ("[[", "]]", inner.strip_suffix(']')?),
        None => ("[", "]", inner),
    };
    let name: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
    valid.then(|| format!("{open}{name}{close}"))
}

/// The string value of a `name = "..."` line.
fn name_value(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("name")?.trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &rest[1..];
    value.find(quote).map(|end| value[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_is_one_based_and_counts_chars() {
        let text = "a = 1\nbé = 2\nc = 3";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 chars.
        assert_eq!(line_col(text, 12), (2, 6));
        assert_eq!(line_col(text, 14), (3, 1));
        assert_eq!(line_col(text, 999), (3, 6));
    }

    #[test]
    fn display_has_file_line_column_context_and_key() {
        let err = ConfigError::at(
            Path::new("conf/webcluster.toml"),
            "x\ny\n    address = \"10.0.0.x:80\"",
            Some(8..15),
            "group \"web\" node \"web2\"",
            Some("address"),
            "\"10.0.0.x:80\" is not a valid address",
        );
        assert_eq!(
            err.to_string(),
            "conf/webcluster.toml:3:5: group \"web\" node \"web2\" key `address`: \
             \"10.0.0.x:80\" is not a valid address"
        );
        assert_eq!(err.line(), Some(3));
        assert_eq!(err.key(), Some("address"));
    }

    #[test]
    fn display_without_position_or_context() {
        let err = ConfigError::at(Path::new("f.toml"), "", None, "", None, "no groups");
        assert_eq!(err.to_string(), "f.toml: no groups");
        assert_eq!(err.line(), None);
    }

    #[test]
    fn read_error_display() {
        let err = ConfigError::Read {
            path: PathBuf::from("/nope.toml"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        };
        assert_eq!(err.to_string(), "/nope.toml: cannot read: not found");
    }

    #[test]
    fn context_names_group_and_node() {
        let text = "default_group = \"a\"\n\
                    [server]\nthreads = 1\n\
                    [[group]]\nname = \"web\"\n\
                    [[group.node]]\nname = \"n1\"\n\
                    [[group.node]]\nweight = 2\nname = \"n2\"\n\
                    [[group]]\nbalance = \"x\"\n\
                    [[route]]\ngroup = \"a\"\n\
                    [[route]]\ngroup = \"b\"\n";
        let at = |needle: &str| context_at(text, text.find(needle).unwrap_or(0));
        assert_eq!(at("default_group"), "");
        assert_eq!(at("threads"), "[server]");
        assert_eq!(at("name = \"web\""), "group \"web\"");
        assert_eq!(at("name = \"n1\""), "group \"web\" node \"n1\"");
        assert_eq!(at("weight = 2"), "group \"web\" node \"n2\"");
        assert_eq!(at("balance"), "group #2");
        assert_eq!(at("group = \"b\""), "route #2");
    }

    #[test]
    fn header_detection() {
        assert_eq!(table_header("[server]\n").as_deref(), Some("[server]"));
        assert_eq!(
            table_header("  [[ group.node ]]  # a node\n").as_deref(),
            Some("[[group.node]]")
        );
        assert_eq!(table_header("[1, 2],\n"), None);
        assert_eq!(table_header("listen = [\"a\"]\n"), None);
    }

    #[test]
    fn name_value_reads_quoted_strings() {
        assert_eq!(name_value("  name = \"web\" # x").as_deref(), Some("web"));
        assert_eq!(name_value("name='w'").as_deref(), Some("w"));
        assert_eq!(name_value("names = \"w\""), None);
        assert_eq!(name_value("name = 5"), None);
    }

    #[test]
    fn key_of_the_line() {
        let text = "[server]\n  grace_period = \"10s\nx";
        assert_eq!(key_on_line(text, 30), Some("grace_period"));
        assert_eq!(key_on_line(text, 3), None);
        assert_eq!(key_on_line(text, 999), None);
    }

    #[test]
    fn friendly_messages() {
        assert_eq!(
            friendly("invalid type: string \"x\", expected u32"),
            "invalid type: string \"x\", expected a non-negative integer"
        );
        assert_eq!(
            friendly("invalid type: integer `5`, expected struct ServerFile"),
            "invalid type: integer `5`, expected a table"
        );
    }
}
