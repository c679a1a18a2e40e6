//! How deeply JSON may nest where leadrelay stores it.
//!
//! serde_json refuses to read a document nested deeper than 128 levels. A
//! value that arrives 120 levels deep parses, but once it is stored inside an
//! event or a contact record (a few levels of wrapping) it could no longer be
//! read back. Every ingest path therefore refuses bodies nested deeper than
//! [`MAX_JSON_DEPTH`], well below the parser's limit, so that anything stored
//! can always be read again.

use serde_json::Value;

/// The most levels of objects and arrays a JSON body may nest: the body
/// itself is level 1, so `{"contact": {"plan": {"tier": 1}}}` is 3 levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// The path of the first object or array nested deeper than `max` levels
/// (`value` itself is level 1), e.g. `contact.plan[0].a`; `None` when the
/// whole value fits. The path is relative to `value`: empty when `value`
/// itself is too deep (only with `max == 0`).
pub fn too_deep(value: &Value, max: usize) -> Option<String> {
    let mut path = String::new();
    deeper_than(value, 1, max, &mut path).then_some(path)
}

fn deeper_than(value: &Value, level: usize, max: usize, path: &mut String) -> bool {
    let container = matches!(value, Value::Object(_) | Value::Array(_));
    if !container {
        return false;
    }
    if level > max {
        return true;
    }
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if deeper_than(v, level + 1, max, path) {
                    return true;
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                if deeper_than(v, level + 1, max, path) {
                    return true;
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
    false
}

/// The deepest nesting of objects and arrays in JSON text, read without
/// parsing (so it also measures documents too deep for the parser). Brackets
/// inside strings do not count; the text need not be valid JSON.
pub fn text_depth(text: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A message for a body nested too deeply at `path` (relative to the body).
pub fn too_deep_message(max: usize) -> String {
    format!("objects and arrays nest deeper than {max} levels (the body itself is level 1)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn counts_the_body_as_level_one() {
        assert_eq!(too_deep(&json!({"x": 1}), 1), None);
        assert_eq!(too_deep(&json!({"x": {}}), 1), Some("x".into()));
        assert_eq!(too_deep(&json!({"x": [1]}), 2), None);
        assert_eq!(too_deep(&json!("text"), 0), None);
        assert_eq!(too_deep(&nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH), None);
        let path = too_deep(&nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH).unwrap();
        assert_eq!(path, vec!["a"; MAX_JSON_DEPTH].join("."));
    }

    #[test]
    fn names_the_first_path_too_deep() {
        let v = json!({"contact": {"ok": [1, 2], "deep": [{"x": 1}, {"y": [[[]]]}]}});
        assert_eq!(too_deep(&v, 5), Some("contact.deep[1].y[0]".into()));
        assert_eq!(too_deep(&v, 6), Some("contact.deep[1].y[0][0]".into()));
        assert_eq!(too_deep(&v, 7), None);
    }

    #[test]
    fn measures_text_without_parsing() {
        assert_eq!(text_depth(b"1"), 0);
        assert_eq!(text_depth(br#"{"a":[{"b":"[[[{{"}]}"#), 3);
        assert_eq!(text_depth(br#"{"a":"\"[["}"#), 1);
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(text_depth(deep.as_bytes()), 500);
        let v = nested(40);
        assert_eq!(text_depth(v.to_string().as_bytes()), 40);
    }
}
