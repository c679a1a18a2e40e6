//! Turning TOML text into a [`Config`], reporting every problem in one
//! run: a syntax error (a duplicate table names both lines), then every
//! unknown key and every value of the wrong type — each with the key, the
//! form expected and an example — instead of stopping at the first.
//!
//! serde stops at the first bad value, so the document is deserialized
//! again without each bad entry until it goes through; the entries taken
//! out are reported against their place in the original file.

use std::collections::{BTreeMap, BTreeSet};

use serde_path_to_error::Segment;

use super::Config;
use super::load::{Problem, format_path};
use super::location::{Locator, line_col};

/// More bad entries than this in one file are not worth listing.
const MAX_TYPE_ERRORS: usize = 50;

/// Parses `text`; `None` when it cannot become a configuration. Unknown keys
/// are reported as errors, an empty file as a warning.
pub fn parse(text: &str, locator: &Locator<'_>) -> (Option<Config>, Vec<Problem>) {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return (None, vec![syntax_problem(text, &e)]),
    };
    let mut problems = Vec::new();
    if table.is_empty() {
        problems.push(Problem::warning(
            "",
            "the file has no settings: leadrelay runs with no forms, destinations or routes \
             (write a starter file with `leadrelay init`)",
        ));
    }
    let mut doc = toml::Value::Table(table);
    // Original positions of array items taken out, by array path.
    let mut removed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut type_errors = 0;
    let mut taken_out = BTreeSet::new();
    loop {
        let mut unknown = BTreeSet::new();
        let result: Result<Config, _> = serde_path_to_error::deserialize(
            serde_ignored::Deserializer::new(doc.clone(), &mut |path| {
                unknown.insert(format_path(&path));
            }),
        );
        let error = match result {
            Ok(config) => {
                problems.extend(unknown.into_iter().map(|path| {
                    let mut p = Problem::error(path.clone(), "unknown key");
                    p.location = locator.locate(&path);
                    p
                }));
                // A configuration that lost entries is never used (nor
                // validated: what was taken out would show up as more errors).
                return ((type_errors == 0).then_some(config), problems);
            }
            Err(e) => e,
        };
        let mut segments: Vec<Segment> = error.path().iter().cloned().collect();
        let raw = error.inner().message().to_string();
        // Inside a table with free-form settings (a destination, a source)
        // serde loses the key: find it.
        if let Some(key) = culprit(&doc, &segments, &raw) {
            segments.push(Segment::Map { key });
        }
        let original = original_path(&segments, &removed);
        // A required key taken out for its wrong type is now missing: that
        // was reported already.
        let echo = raw
            .strip_prefix("missing field `")
            .and_then(|r| r.strip_suffix('`'))
            .is_some_and(|f| taken_out.contains(&format!("{original}.{f}")));
        if !echo {
            let message = explain(&original, &raw);
            let mut p = Problem::error(original.clone(), message);
            p.location = locator.locate(&original);
            problems.push(p);
        }
        taken_out.insert(original);
        type_errors += 1;
        if type_errors >= MAX_TYPE_ERRORS || !take_out(&mut doc, &segments, &mut removed) {
            // Nothing more can be learnt; unknown keys seen so far still count.
            problems.extend(unknown.into_iter().map(|path| {
                let mut p = Problem::error(path.clone(), "unknown key");
                p.location = locator.locate(&path);
                p
            }));
            return (None, problems);
        }
    }
}

/// The error as (path, message), for comparing two runs.
fn deserialize_error(doc: &toml::Value) -> Option<(String, String)> {
    let result: Result<Config, _> = serde_path_to_error::deserialize(doc.clone());
    result
        .err()
        .map(|e| (e.path().to_string(), e.inner().message().to_string()))
}

/// When serde reports `raw` at a table rather than at one of its keys (it
/// does inside tables with flattened settings), the key whose removal makes
/// that error go away — not counting a key whose removal only trades it for
/// a missing required key.
fn culprit(doc: &toml::Value, segments: &[Segment], raw: &str) -> Option<String> {
    if raw.starts_with("missing field") {
        return None;
    }
    let mut table = doc;
    for seg in segments {
        table = match (seg, table) {
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get(*index)?,
            (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
                t.get(key.as_str())?
            }
            _ => return None,
        };
    }
    let toml::Value::Table(t) = table else {
        return None;
    };
    let before = deserialize_error(doc)?;
    for key in t.keys() {
        let mut trial = doc.clone();
        let mut inner = &mut trial;
        for seg in segments {
            inner = match (seg, inner) {
                (Segment::Seq { index }, toml::Value::Array(items)) => items.get_mut(*index)?,
                (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
                    t.get_mut(key.as_str())?
                }
                _ => return None,
            };
        }
        if let toml::Value::Table(t) = inner {
            t.remove(key);
        }
        match deserialize_error(&trial) {
            None => return Some(key.clone()),
            Some(after) if after == before => {}
            Some((path, message)) if path == before.0 && message.starts_with("missing field") => {}
            Some(_) => return Some(key.clone()),
        }
    }
    None
}

/// A TOML syntax error, with both places a table or key is defined when it
/// is defined twice.
fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let raw = e.message().trim().to_string();
    let at = e.span().map(|s| s.start);
    let mut p = Problem::error("", raw.clone());
    p.location = at.map(|o| line_col(text, o));
    if raw.contains("duplicate")
        && let Some(offset) = at
    {
        let line = line_col(text, offset).line;
        if let Some((what, first)) = first_definition(text, line) {
            p.message = format!(
                "{what} is defined twice, on line {first} and on line {line}: merge the two \
                 into one (a TOML table or key may appear only once)"
            );
        }
    }
    p
}

/// For a duplicate reported on `line` (1-based), the table header or key
/// written there and the line where it was first written.
fn first_definition(text: &str, line: usize) -> Option<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // The error points at the header or key, or somewhere on its line.
    let here = lines.get(line.checked_sub(1)?)?.trim();
    if let Some(header) = table_header(here) {
        let first = lines[..line - 1]
            .iter()
            .position(|l| table_header(l.trim()).as_deref() == Some(header.as_str()))?;
        return Some((format!("table [{header}]"), first + 1));
    }
    let key = key_of(here)?;
    // The same key earlier in the same table (up to the previous header).
    let mut n = line - 1;
    while n > 0 {
        n -= 1;
        let l = lines[n].trim();
        if l.starts_with('[') {
            break;
        }
        if key_of(l).as_deref() == Some(key.as_str()) {
            return Some((format!("key `{key}`"), n + 1));
        }
    }
    None
}

/// `[a.b]` → `a.b` (spaces and quotes normalised); array tables are not
/// duplicates.
fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?;
    if inner.starts_with('[') {
        return None;
    }
    let end = inner.find(']')?;
    Some(
        inner[..end]
            .split('.')
            .map(|k| k.trim().trim_matches('"').trim_matches('\''))
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn key_of(line: &str) -> Option<String> {
    if line.starts_with('#') || line.starts_with('[') {
        return None;
    }
    let (k, _) = line.split_once('=')?;
    Some(k.trim().trim_matches('"').trim_matches('\'').to_string())
}

/// The path of the error in the original file: array indices shifted back
/// over the items already taken out.
fn original_path(segments: &[Segment], removed: &BTreeMap<String, Vec<usize>>) -> String {
    let mut out = String::new();
    for seg in segments {
        match seg {
            Segment::Seq { index } => {
                let mut i = *index;
                if let Some(gone) = removed.get(&out) {
                    // `gone` is sorted: each removed position at or before
                    // the running index pushes it one further.
                    for g in gone {
                        if *g <= i {
                            i += 1;
                        }
                    }
                }
                out.push_str(&format!("[{i}]"));
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    out
}

/// Removes the entry at `segments` from `doc` (a missing key is reported at
/// its table, so the whole table goes). False when nothing can be removed.
fn take_out(
    doc: &mut toml::Value,
    segments: &[Segment],
    removed: &mut BTreeMap<String, Vec<usize>>,
) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    if segments.iter().any(|s| matches!(s, Segment::Unknown)) {
        return false;
    }
    let mut current = doc;
    for seg in parents {
        let next = match (seg, current) {
            (Segment::Seq { index }, toml::Value::Array(items)) => items.get_mut(*index),
            (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
                t.get_mut(key.as_str())
            }
            _ => None,
        };
        let Some(next) = next else { return false };
        current = next;
    }
    match (last, current) {
        (Segment::Seq { index }, toml::Value::Array(items)) if *index < items.len() => {
            let array_path = original_path(parents, removed);
            let original = match original_path(segments, removed)
                .rsplit_once('[')
                .and_then(|(_, i)| i.trim_end_matches(']').parse().ok())
            {
                Some(i) => i,
                None => return false,
            };
            items.remove(*index);
            let gone = removed.entry(array_path).or_default();
            gone.push(original);
            gone.sort_unstable();
            true
        }
        (Segment::Map { key } | Segment::Enum { variant: key }, toml::Value::Table(t)) => {
            t.remove(key.as_str()).is_some()
        }
        _ => false,
    }
}

/// Rewrites serde's message so it says what to write: the form expected
/// and an example.
pub fn explain(path: &str, raw: &str) -> String {
    if let Some(field) = raw
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return missing_field(path, field);
    }
    if let Some((found, expected)) = raw
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        let hint = example_for(expected);
        return format!("expected {expected}, found {found}{hint}");
    }
    if raw.starts_with("invalid socket address syntax") {
        return format!("{raw}: write \"IP:PORT\", e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"");
    }
    if raw.starts_with("invalid IP address syntax") {
        return format!("{raw}: write an address such as \"10.0.0.1\" or \"::1\"");
    }
    raw.to_string()
}

fn example_for(expected: &str) -> String {
    if expected.contains("e.g.") {
        return String::new();
    }
    let e = expected.to_ascii_lowercase();
    let example = if e.contains("bool") {
        "true or false"
    } else if e.starts_with('u') || e.starts_with('i') && e[1..].chars().all(|c| c.is_ascii_digit())
    {
        "a whole number, e.g. 5"
    } else if e.starts_with('f') && e[1..].chars().all(|c| c.is_ascii_digit()) {
        "a number, e.g. 0.2"
    } else if e.contains("sequence") {
        "a list in brackets, e.g. [\"a\", \"b\"]"
    } else if e.contains("string") || e.contains("str") {
        "a quoted string, e.g. \"text\""
    } else if e.contains("map") || e.contains("struct") {
        "a table: [section] with keys below it, or { key = \"value\" }"
    } else if e.contains("socket address") {
        "\"IP:PORT\", e.g. \"127.0.0.1:8080\""
    } else if e.contains("ip address") {
        "an address such as \"10.0.0.1\""
    } else {
        return String::new();
    };
    format!(": write {example}")
}

/// A required key that is missing, with what to add.
fn missing_field(path: &str, field: &str) -> String {
    let generic = |example: &str| format!("the required key `{field}` is missing: add {example}");
    let in_route = path.starts_with("routes[") && !path.contains('.');
    match field {
        "name" if in_route => {
            "every [[routes]] entry needs a name (used in logs, `check` and `simulate`): add \
             name = \"everything\""
                .to_string()
        }
        "destinations" if in_route => {
            generic("destinations = [\"backup\"] (the destinations that receive its events)")
        }
        "connector" => generic("connector = \"webhook\" (see `leadrelay check` for the list)"),
        "kind" => generic("kind = \"generic\" (`leadrelay sources kinds` lists them)"),
        "type" => {
            generic("type = \"text\" (email, phone, text, picklist, url, number, boolean, hidden)")
        }
        "field" => generic("field = \"consent\" (the checkbox posted for this purpose)"),
        "version" => generic("version = \"v1\" (the version of the consent text)"),
        "email" if path.starts_with("owners") => generic("email = \"ada@example.com\""),
        other => generic(&format!("{other} = …")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let locator = Locator::new(text);
        let (_, ps) = parse(text, &locator);
        ps.iter().map(|p| p.render("t.toml")).collect()
    }

    #[test]
    fn every_type_error_is_reported_at_its_line() {
        let text = "[server]\nmax_body_bytes = true\nper_ip_limit = 5\n\n[storage]\npool_size = \"many\"\n";
        let ps = problems(text);
        assert_eq!(ps.len(), 3, "{ps:?}");
        assert!(
            ps[0].starts_with("t.toml:2:1: error: server.max_body_bytes: "),
            "{ps:?}"
        );
        assert!(
            ps[1].starts_with("t.toml:3:1: error: server.per_ip_limit: "),
            "{ps:?}"
        );
        assert!(ps[2].starts_with("t.toml:6:1: error: storage.pool_size: expected usize, found string \"many\": write a whole number"), "{ps:?}");
    }

    #[test]
    fn array_items_keep_their_original_index() {
        let text = "[[routes]]\ndestinations = [\"a\"]\n\n[[routes]]\nname = \"ok\"\ndestinations = [\"a\"]\n\n[[routes]]\nname = 7\ndestinations = [\"a\"]\n";
        let ps = problems(text);
        assert_eq!(ps.len(), 2, "{ps:?}");
        assert!(
            ps[0].contains("routes[0]: every [[routes]] entry needs a name"),
            "{ps:?}"
        );
        assert!(
            ps[1].starts_with("t.toml:9:1: error: routes[2].name: expected a string"),
            "{ps:?}"
        );
    }

    #[test]
    fn a_duplicate_table_names_both_lines() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[destinations.hubspot]\nconnector = \"hubspot\"\n\n[ destinations.\"hubspot\" ]\nconnector = \"hubspot\"\n";
        let ps = problems(text);
        assert_eq!(ps.len(), 1, "{ps:?}");
        assert!(
            ps[0]
                .contains("table [destinations.hubspot] is defined twice, on line 4 and on line 7"),
            "{ps:?}"
        );
        let ps = problems(
            "[server]\nlisten = \"127.0.0.1:1\"\nper_ip_limit = \"off\"\nlisten = \"127.0.0.1:2\"\n",
        );
        assert!(
            ps[0].contains("key `listen` is defined twice, on line 2 and on line 4"),
            "{ps:?}"
        );
    }

    #[test]
    fn an_empty_file_is_a_warning() {
        let (config, ps) = parse("# nothing yet\n", &Locator::new("# nothing yet\n"));
        assert!(config.is_some());
        assert_eq!(ps.len(), 1);
        assert!(!ps[0].is_error());
        assert!(ps[0].message.contains("leadrelay init"), "{ps:?}");
    }
}
