//! Block Kit checks shared by `chat.postMessage` and incoming webhooks: the limits in the
//! Block Kit reference, reported the way Slack reports them (`"<problem> [json-pointer:/blocks/0/text]"`).

use std::collections::HashSet;

use serde_json::Value;

/// Most blocks a message may carry.
pub const MAX_BLOCKS: usize = 50;
const MAX_SECTION_TEXT: usize = 3000;
const MAX_SECTION_FIELDS: usize = 10;
const MAX_FIELD_TEXT: usize = 2000;
const MAX_HEADER_TEXT: usize = 150;
const MAX_BLOCK_ID: usize = 255;
const MAX_CONTEXT_ELEMENTS: usize = 10;
const MAX_ACTIONS_ELEMENTS: usize = 25;
const MAX_MARKDOWN_TEXT: usize = 12_000;
const MAX_ALT_TEXT: usize = 2000;
const MAX_BUTTON_TEXT: usize = 75;
const MAX_ACTION_ID: usize = 255;
const MAX_BUTTON_VALUE: usize = 2000;
const MAX_BUTTON_URL: usize = 3000;

const KNOWN_BLOCK_TYPES: &[&str] = &[
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
];

/// Why a `blocks` value was refused.
#[derive(Debug, PartialEq)]
pub enum BlocksError {
    /// Not an array of blocks at all: `invalid_blocks_format`.
    Format,
    /// An array whose blocks break the rules: `invalid_blocks` with Slack's messages.
    Invalid(Vec<String>),
}

/// Checks a `blocks` array.
pub fn validate(blocks: &Value) -> Result<(), BlocksError> {
    let Some(items) = blocks.as_array() else {
        return Err(BlocksError::Format);
    };
    let mut errors = Vec::new();
    if items.len() > MAX_BLOCKS {
        errors.push(format!(
            "no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
        ));
    }
    let mut ids = HashSet::new();
    for (i, block) in items.iter().enumerate() {
        let at = format!("/blocks/{i}");
        check_block(block, &at, &mut ids, &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(BlocksError::Invalid(errors))
    }
}

fn err(errors: &mut Vec<String>, problem: impl AsRef<str>, at: &str) {
    errors.push(format!("{} [json-pointer:{at}]", problem.as_ref()));
}

fn check_block(block: &Value, at: &str, ids: &mut HashSet<String>, errors: &mut Vec<String>) {
    let Some(obj) = block.as_object() else {
        return err(errors, "must provide an object", at);
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return err(errors, "missing required field: type", at);
    };
    if !KNOWN_BLOCK_TYPES.contains(&kind) {
        return err(
            errors,
            format!("unsupported type: {kind}"),
            &format!("{at}/type"),
        );
    }
    if let Some(id) = obj.get("block_id") {
        match id.as_str() {
            Some(s) if s.chars().count() > MAX_BLOCK_ID => err(
                errors,
                format!("must be less than {} characters", MAX_BLOCK_ID + 1),
                &format!("{at}/block_id"),
            ),
            Some("") => err(
                errors,
                "must be more than 0 characters",
                &format!("{at}/block_id"),
            ),
            Some(s) => {
                if !ids.insert(s.to_string()) {
                    err(errors, "duplicate block_id", &format!("{at}/block_id"));
                }
            }
            None => err(errors, "must be a string", &format!("{at}/block_id")),
        }
    }
    match kind {
        "section" => {
            let text = obj.get("text");
            let fields = obj.get("fields");
            if text.is_none() && fields.is_none() {
                err(errors, "must provide either text or fields", at);
            }
            if let Some(text) = text {
                check_text_object(text, &format!("{at}/text"), MAX_SECTION_TEXT, false, errors);
            }
            if let Some(fields) = fields {
                match fields.as_array() {
                    Some(list) => {
                        if list.is_empty() {
                            err(
                                errors,
                                "must provide at least 1 items",
                                &format!("{at}/fields"),
                            );
                        }
                        if list.len() > MAX_SECTION_FIELDS {
                            err(
                                errors,
                                format!("no more than {MAX_SECTION_FIELDS} items allowed"),
                                &format!("{at}/fields"),
                            );
                        }
                        for (j, f) in list.iter().enumerate() {
                            check_text_object(
                                f,
                                &format!("{at}/fields/{j}"),
                                MAX_FIELD_TEXT,
                                false,
                                errors,
                            );
                        }
                    }
                    None => err(errors, "must provide an array", &format!("{at}/fields")),
                }
            }
        }
        "header" => match obj.get("text") {
            Some(text) => {
                check_text_object(text, &format!("{at}/text"), MAX_HEADER_TEXT, true, errors)
            }
            None => err(errors, "missing required field: text", at),
        },
        "context" => match obj.get("elements").and_then(Value::as_array) {
            Some(list) if list.is_empty() => err(
                errors,
                "must provide at least 1 items",
                &format!("{at}/elements"),
            ),
            Some(list) => {
                if list.len() > MAX_CONTEXT_ELEMENTS {
                    err(
                        errors,
                        format!("no more than {MAX_CONTEXT_ELEMENTS} items allowed"),
                        &format!("{at}/elements"),
                    );
                }
                for (j, e) in list.iter().enumerate() {
                    let eat = format!("{at}/elements/{j}");
                    match e.get("type").and_then(Value::as_str) {
                        Some("image") => check_image(e, &eat, errors),
                        Some("plain_text") | Some("mrkdwn") => {
                            check_text_object(e, &eat, MAX_SECTION_TEXT, false, errors)
                        }
                        Some(other) => err(
                            errors,
                            format!("unsupported type: {other}"),
                            &format!("{eat}/type"),
                        ),
                        None => err(errors, "missing required field: type", &eat),
                    }
                }
            }
            None => err(errors, "missing required field: elements", at),
        },
        "actions" => match obj.get("elements").and_then(Value::as_array) {
            Some(list) if list.is_empty() => err(
                errors,
                "must provide at least 1 items",
                &format!("{at}/elements"),
            ),
            Some(list) if list.len() > MAX_ACTIONS_ELEMENTS => err(
                errors,
                format!("no more than {MAX_ACTIONS_ELEMENTS} items allowed"),
                &format!("{at}/elements"),
            ),
            Some(list) => {
                let mut action_ids = HashSet::new();
                for (i, e) in list.iter().enumerate() {
                    check_action_element(e, &format!("{at}/elements/{i}"), &mut action_ids, errors);
                }
            }
            None => err(errors, "missing required field: elements", at),
        },
        "image" => check_image(block, at, errors),
        "markdown" => match obj.get("text").and_then(Value::as_str) {
            Some(t) if t.chars().count() > MAX_MARKDOWN_TEXT => err(
                errors,
                format!("must be less than {} characters", MAX_MARKDOWN_TEXT + 1),
                &format!("{at}/text"),
            ),
            Some(_) => {}
            None => err(errors, "missing required field: text", at),
        },
        "rich_text" if !obj.get("elements").is_some_and(Value::is_array) => {
            err(errors, "missing required field: elements", at);
        }
        _ => {}
    }
}

/// A button in an actions block: `plain_text` text ≤ 75 characters,
/// `action_id` ≤ 255 and unique in the block, `value` ≤ 2000, `url` ≤ 3000,
/// `style` `primary` or `danger`. Other interactive elements are not checked.
fn check_action_element(
    e: &Value,
    at: &str,
    action_ids: &mut HashSet<String>,
    errors: &mut Vec<String>,
) {
    if e.get("type").and_then(Value::as_str) != Some("button") {
        if e.get("type").is_none() {
            err(errors, "missing required field: type", at);
        }
        return;
    }
    match e.get("text") {
        Some(t) if t.get("type").and_then(Value::as_str) != Some("plain_text") => err(
            errors,
            "must be a plain_text text object",
            &format!("{at}/text"),
        ),
        Some(t) => match t.get("text").and_then(Value::as_str) {
            Some(s) if s.chars().count() > MAX_BUTTON_TEXT => err(
                errors,
                format!("must be less than {} characters", MAX_BUTTON_TEXT + 1),
                &format!("{at}/text/text"),
            ),
            Some("") => err(
                errors,
                "must be more than 0 characters",
                &format!("{at}/text/text"),
            ),
            Some(_) => {}
            None => err(
                errors,
                "missing required field: text",
                &format!("{at}/text"),
            ),
        },
        None => err(errors, "missing required field: text", at),
    }
    for (field, max) in [
        ("action_id", MAX_ACTION_ID),
        ("value", MAX_BUTTON_VALUE),
        ("url", MAX_BUTTON_URL),
    ] {
        if let Some(v) = e.get(field).and_then(Value::as_str)
            && v.chars().count() > max
        {
            err(
                errors,
                format!("must be less than {} characters", max + 1),
                &format!("{at}/{field}"),
            );
        }
    }
    if let Some(id) = e.get("action_id").and_then(Value::as_str)
        && !action_ids.insert(id.to_string())
    {
        err(
            errors,
            format!("non-unique action_id: {id}"),
            &format!("{at}/action_id"),
        );
    }
    if let Some(style) = e.get("style").and_then(Value::as_str)
        && style != "primary"
        && style != "danger"
    {
        err(
            errors,
            "must be one of primary, danger",
            &format!("{at}/style"),
        );
    }
}

fn check_image(image: &Value, at: &str, errors: &mut Vec<String>) {
    if image.get("image_url").and_then(Value::as_str).is_none() && image.get("slack_file").is_none()
    {
        err(errors, "missing required field: image_url", at);
    }
    match image.get("alt_text").and_then(Value::as_str) {
        Some(t) if t.chars().count() > MAX_ALT_TEXT => err(
            errors,
            format!("must be less than {} characters", MAX_ALT_TEXT + 1),
            &format!("{at}/alt_text"),
        ),
        Some(_) => {}
        None => err(errors, "missing required field: alt_text", at),
    }
}

fn check_text_object(
    text: &Value,
    at: &str,
    max: usize,
    plain_only: bool,
    errors: &mut Vec<String>,
) {
    let Some(obj) = text.as_object() else {
        return err(errors, "must provide an object", at);
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("plain_text") => {}
        Some("mrkdwn") if !plain_only => {}
        Some(other) => {
            let allowed = if plain_only {
                "[plain_text]"
            } else {
                "[plain_text, mrkdwn]"
            };
            return err(
                errors,
                format!("must be one of {allowed}, got {other}"),
                &format!("{at}/type"),
            );
        }
        None => return err(errors, "missing required field: type", at),
    }
    match obj.get("text").and_then(Value::as_str) {
        Some("") => err(
            errors,
            "must be more than 0 characters",
            &format!("{at}/text"),
        ),
        Some(t) if t.chars().count() > max => err(
            errors,
            format!("must be less than {} characters", max + 1),
            &format!("{at}/text"),
        ),
        Some(_) => {}
        None => err(errors, "missing required field: text", at),
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_common_blocks() {
        let blocks = json!([
            {"type": "header", "text": {"type": "plain_text", "text": "New lead"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Ada*"}, "fields": [{"type": "mrkdwn", "text": "x"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "via form"}]}
        ]);
        assert_eq!(validate(&blocks), Ok(()));
    }

    #[test]
    fn reports_slack_style_pointers() {
        let long = "x".repeat(3001);
        let blocks = json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": long}},
            {"type": "header", "text": {"type": "mrkdwn", "text": "h"}},
            {"type": "bogus"},
            {"text": "no type"}
        ]);
        let Err(BlocksError::Invalid(errors)) = validate(&blocks) else {
            panic!("expected invalid")
        };
        assert_eq!(
            errors[0],
            "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
        );
        assert!(errors[1].ends_with("[json-pointer:/blocks/1/text/type]"));
        assert_eq!(
            errors[2],
            "unsupported type: bogus [json-pointer:/blocks/2/type]"
        );
        assert_eq!(
            errors[3],
            "missing required field: type [json-pointer:/blocks/3]"
        );
        assert_eq!(
            validate(&json!({"type": "section"})),
            Err(BlocksError::Format)
        );
    }

    #[test]
    fn limits_block_count_and_header_length() {
        let many: Vec<Value> = (0..51).map(|_| json!({"type": "divider"})).collect();
        assert!(matches!(
            validate(&Value::Array(many)),
            Err(BlocksError::Invalid(_))
        ));
        let header =
            json!([{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(151)}}]);
        assert!(matches!(validate(&header), Err(BlocksError::Invalid(_))));
        let ok_header =
            json!([{"type": "header", "text": {"type": "plain_text", "text": "h".repeat(150)}}]);
        assert_eq!(validate(&ok_header), Ok(()));
    }
}
