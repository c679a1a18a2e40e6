//! Reading vendor bodies: content-type checks, JSON (and form) decoding with
//! precise errors, and lookups that tolerate the loose typing vendors use
//! (ids as numbers or strings, empty strings for "no value").

use serde_json::{Map, Value};

use crate::event::EventDraft;
use crate::{HookError, HookParse, InboundEvent, InboundRequest};

/// Bodies larger than this are refused even if the HTTP layer let them in.
pub(crate) const MAX_BODY: usize = crate::MAX_BODY_BYTES;

/// The media type of the request, lower-cased, without parameters.
pub(crate) fn media_type(req: &InboundRequest<'_>) -> Option<String> {
    req.header("content-type")
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|ct| !ct.is_empty())
}

/// Accepts a missing content type or one of `allowed` (`*/*+json` counts as JSON).
pub(crate) fn check_media_type(
    req: &InboundRequest<'_>,
    allowed: &[&str],
) -> Result<(), HookError> {
    let Some(ct) = media_type(req) else {
        return Ok(());
    };
    let json_suffix = ct.ends_with("+json") && allowed.contains(&"application/json");
    if allowed.contains(&ct.as_str()) || json_suffix {
        Ok(())
    } else {
        Err(HookError::UnsupportedMediaType(format!(
            "{ct}; this source accepts {}",
            allowed.join(" or ")
        )))
    }
}

/// Whether the body holds nothing but whitespace (what several vendors send
/// when a webhook is saved or tested).
pub(crate) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Parses a JSON body, or says where it is broken.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, HookError> {
    if body.len() > MAX_BODY {
        return Err(HookError::Malformed(format!(
            "body of {} bytes exceeds {MAX_BODY}",
            body.len()
        )));
    }
    use leadrelay_model::{MAX_JSON_DEPTH, text_depth, too_deep};
    // Nothing nested deeper than leadrelay stores and reads back.
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        if text_depth(body) > MAX_JSON_DEPTH {
            HookError::TooDeep {
                path: "body".into(),
            }
        } else {
            HookError::Malformed(format!("invalid JSON: {e}"))
        }
    })?;
    match too_deep(&value, MAX_JSON_DEPTH) {
        Some(path) => Err(HookError::TooDeep {
            path: if path.is_empty() { "body".into() } else { path },
        }),
        None => Ok(value),
    }
}

/// A JSON body after the content-type check; `None` for a blank body.
pub(crate) fn json_body(req: &InboundRequest<'_>) -> Result<Option<Value>, HookError> {
    check_media_type(req, &["application/json", "text/plain"])?;
    if is_blank(req.body) {
        return Ok(None);
    }
    parse_json(req.body).map(Some)
}

/// A JSON or `application/x-www-form-urlencoded` body as a JSON value
/// (form fields become string members); `None` for a blank body.
pub(crate) fn json_or_form_body(req: &InboundRequest<'_>) -> Result<Option<Value>, HookError> {
    check_media_type(
        req,
        &[
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
        ],
    )?;
    if is_blank(req.body) {
        return Ok(None);
    }
    if media_type(req).as_deref() == Some("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(req.body)
            .map_err(|e| HookError::Malformed(format!("invalid form body: {e}")))?;
        let map: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return Ok(Some(Value::Object(map)));
    }
    parse_json(req.body).map(Some)
}

/// Requires a JSON object.
pub(crate) fn expect_object<'v>(
    v: &'v Value,
    what: &str,
) -> Result<&'v Map<String, Value>, HookError> {
    v.as_object().ok_or_else(|| {
        HookError::Malformed(format!("{what} must be a JSON object, got {}", kind_of(v)))
    })
}

/// How a JSON value is named in error messages: "a string", "null" …
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value at a JSON pointer (or a plain key) as text: strings trimmed,
/// numbers and booleans written out; empty strings and nulls are `None`.
pub(crate) fn text(v: &Value, path: &str) -> Option<String> {
    let found = if path.starts_with('/') {
        v.pointer(path)
    } else {
        v.get(path)
    };
    as_text(found?)
}

pub(crate) fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first of several paths that holds text.
pub(crate) fn first_text(v: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| text(v, p))
}

/// Field names vendors commonly use for each contact field, for payloads
/// whose shape is only loosely documented (and for Zapier/Make pushes).
const CONTACT_KEYS: [(&str, &[&str]); 10] = [
    (
        "email",
        &[
            "email",
            "email_address",
            "emailAddress",
            "lead_email",
            "leadEmail",
            "to_email",
            "recipient_email",
            "prospect_email",
            "contact_email",
            "customer_email",
            "buyer_email",
        ],
    ),
    (
        "first_name",
        &[
            "first_name",
            "firstName",
            "first",
            "leadFirstName",
            "buyer_first_name",
            "customer_first_name",
        ],
    ),
    (
        "last_name",
        &[
            "last_name",
            "lastName",
            "last",
            "leadLastName",
            "buyer_last_name",
            "customer_last_name",
        ],
    ),
    (
        "full_name",
        &[
            "full_name",
            "fullName",
            "name",
            "to_name",
            "lead_name",
            "customer_name",
            "buyer_name",
        ],
    ),
    (
        "company",
        &[
            "company",
            "company_name",
            "companyName",
            "leadCompanyName",
            "organization_name",
            "account_name",
        ],
    ),
    ("title", &["title", "job_title", "jobTitle", "position"]),
    (
        "phone",
        &[
            "phone",
            "phone_number",
            "phoneNumber",
            "leadPhone",
            "mobile_phone",
            "buyer_phone",
            "customer_phone",
        ],
    ),
    (
        "website",
        &[
            "website",
            "company_url",
            "companyUrl",
            "company_website",
            "url",
        ],
    ),
    ("city", &["city"]),
    ("country", &["country"]),
];

/// Fills the contact from the usual field names of `obj` (first match per field).
pub(crate) fn fill_contact(draft: &mut EventDraft, obj: &Value) {
    if !obj.is_object() {
        return;
    }
    for (field, keys) in CONTACT_KEYS {
        if let Some(value) = first_text(obj, keys) {
            draft.contact_field(field, &value);
        }
    }
}

/// The vendor's event name from the usual keys, else from the `event` query
/// parameter of the URL (set per subscription where the vendor does not
/// name the event in the body).
pub(crate) fn event_name(req: &InboundRequest<'_>, body: &Value, keys: &[&str]) -> Option<String> {
    first_text(body, keys).or_else(|| req.query_param("event").filter(|e| !e.trim().is_empty()))
}

/// Maps a vendor batch, refusing one larger than `max` (a sign of a
/// misconfigured sender, not of a vendor's real traffic).
pub(crate) fn batch<T>(
    items: &[T],
    max: usize,
    mut map: impl FnMut(usize, &T) -> Result<InboundEvent, HookError>,
) -> Result<Vec<InboundEvent>, HookError> {
    if items.len() > max {
        return Err(HookError::Malformed(format!(
            "{} events in one request; at most {max}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| map(i, item))
        .collect()
}

/// Events, or a ping when there are none (an empty batch is what vendors
/// send to test a URL).
pub(crate) fn parsed(events: Vec<InboundEvent>) -> HookParse {
    if events.is_empty() {
        HookParse::Ping
    } else {
        HookParse::Events(events)
    }
}

/// The first of several JSON pointers that holds an object.
pub(crate) fn first_object<'v>(v: &'v Value, pointers: &[&str]) -> Option<&'v Value> {
    pointers
        .iter()
        .filter_map(|p| v.pointer(p))
        .find(|found| found.is_object())
}

/// `portalId` → `portal_id`, `OrganizationId` → `organization_id`.
pub(crate) fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for (i, c) in key.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TestRequest;
    use serde_json::json;

    #[test]
    fn media_types() {
        let r = TestRequest::post("https://x.test/h", "{}")
            .content_type("application/json; charset=utf-8");
        assert!(check_media_type(&r.req(), &["application/json"]).is_ok());
        let r =
            TestRequest::post("https://x.test/h", "{}").content_type("application/vnd.api+json");
        assert!(check_media_type(&r.req(), &["application/json"]).is_ok());
        let r = TestRequest::post("https://x.test/h", "{}")
            .content_type("multipart/form-data; boundary=x");
        assert_eq!(
            check_media_type(&r.req(), &["application/json"])
                .unwrap_err()
                .status(),
            415
        );
        let r = TestRequest::post("https://x.test/h", "{}").without_header("content-type");
        assert!(check_media_type(&r.req(), &["application/json"]).is_ok());
    }

    #[test]
    fn malformed_json_says_where() {
        let HookError::Malformed(msg) = parse_json(b"{\"a\": }").unwrap_err() else {
            panic!()
        };
        assert!(msg.contains("line 1 column 7"), "{msg}");
    }

    #[test]
    fn json_nested_deeper_than_the_limit_is_refused_with_its_path() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let fits = format!(r#"{{"a":{}}}"#, nest(leadrelay_model::MAX_JSON_DEPTH - 1));
        assert!(parse_json(fits.as_bytes()).is_ok());
        let deep = format!(r#"{{"a":{}}}"#, nest(leadrelay_model::MAX_JSON_DEPTH));
        let err = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(err.status(), 422);
        let HookError::TooDeep { path } = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            path,
            format!("a{}", "[0]".repeat(leadrelay_model::MAX_JSON_DEPTH - 1))
        );
        // Deeper than the parser reads: still 422, at the body.
        let parser_deep = nest(200);
        let err = parse_json(parser_deep.as_bytes()).unwrap_err();
        assert!(
            matches!(err, HookError::TooDeep { ref path } if path == "body"),
            "{err:?}"
        );
    }

    #[test]
    fn form_bodies_become_objects() {
        let r = TestRequest::post("https://x.test/h", "event=sale&buyer_email=a%40b.co")
            .content_type("application/x-www-form-urlencoded");
        let v = json_or_form_body(&r.req()).unwrap().unwrap();
        assert_eq!(v, json!({"event": "sale", "buyer_email": "a@b.co"}));
    }

    #[test]
    fn loose_text_lookups() {
        let v = json!({"id": 42, "name": " Jane ", "empty": "", "nested": {"x": true}});
        assert_eq!(text(&v, "id").as_deref(), Some("42"));
        assert_eq!(text(&v, "name").as_deref(), Some("Jane"));
        assert_eq!(text(&v, "empty"), None);
        assert_eq!(text(&v, "/nested/x").as_deref(), Some("true"));
        assert_eq!(first_text(&v, &["missing", "id"]).as_deref(), Some("42"));
    }
}
