//! Maps a key path (`forms.contact.fields.email.type`) to the line and column
//! where it is written, so every problem can point at the file.

use toml::de::{DeTable, DeValue};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for LineCol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    LineCol {
        line,
        col: before[line_start..].chars().count() + 1,
    }
}

/// A parsed document that can locate key paths.
pub struct Locator<'a> {
    text: &'a str,
    root: Option<DeTable<'a>>,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        let root = DeTable::parse(text).ok().map(|t| t.into_inner());
        Self { text, root }
    }

    /// The position of the deepest part of `path` that exists in the file.
    /// Path segments are separated by `.`; array elements are written `[N]`
    /// (`routes[2].when`).
    pub fn locate(&self, path: &str) -> Option<LineCol> {
        let root = self.root.as_ref()?;
        let mut best: Option<usize> = None;
        let mut current: Current<'_, 'a> = Current::Table(root);
        for seg in split_path(path) {
            match (seg, current) {
                (Seg::Key(k), Current::Table(t)) => {
                    let Some((key, value)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k)
                    else {
                        break;
                    };
                    best = Some(key.span().start);
                    current = match value.get_ref() {
                        DeValue::Table(inner) => Current::Table(inner),
                        DeValue::Array(items) => Current::Array(&items[..]),
                        _ => Current::Leaf,
                    };
                }
                (Seg::Index(i), Current::Array(items)) => {
                    let Some(item) = items.get(i) else { break };
                    best = Some(item.span().start);
                    current = match item.get_ref() {
                        DeValue::Table(inner) => Current::Table(inner),
                        DeValue::Array(items) => Current::Array(&items[..]),
                        _ => Current::Leaf,
                    };
                }
                _ => break,
            }
        }
        best.map(|o| line_col(self.text, o))
    }
}

#[derive(Clone, Copy)]
enum Current<'t, 'a> {
    Table(&'t DeTable<'a>),
    Array(&'t [toml::Spanned<DeValue<'a>>]),
    Leaf,
}

enum Seg<'p> {
    Key(&'p str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(b) = rest.find('[') {
            if b > 0 {
                out.push(Seg::Key(&rest[..b]));
            }
            rest = &rest[b..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(i) = stripped[..end].parse() {
                    out.push(Seg::Index(i));
                }
                rest = &stripped[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_array_items() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[forms.contact.fields.email]\ntype = \"email\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nwhen = \"x\"\n";
        let loc = Locator::new(text);
        assert_eq!(
            loc.locate("server.listen"),
            Some(LineCol { line: 2, col: 1 })
        );
        assert_eq!(
            loc.locate("forms.contact.fields.email.type"),
            Some(LineCol { line: 5, col: 1 })
        );
        assert_eq!(
            loc.locate("routes[1].when"),
            Some(LineCol { line: 12, col: 1 })
        );
        // A missing leaf falls back to its deepest existing parent.
        assert_eq!(
            loc.locate("forms.contact.fields.email.nope")
                .map(|l| l.line),
            Some(4)
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé\nx", 7), LineCol { line: 2, col: 4 });
    }
}
