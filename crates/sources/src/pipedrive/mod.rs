//! Pipedrive webhooks (v2 bodies `{meta, data, previous}`; v1 bodies
//! `{meta, current, previous}` are read too): person changes become
//! `contact.updated` with field-level changes, deal stage changes become
//! `deal.stage_changed`.
//!
//! Pipedrive does not sign webhooks; it sends the HTTP Basic credentials set
//! on the webhook (`http_auth_user` / `http_auth_password`), checked here in
//! constant time.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ACTIVITY_LOGGED;
use crate::auth::BasicAuth;
use crate::config::{Env, parse_settings, secret_from_env};
use crate::event::{EventDraft, parse_time};
use crate::json::{as_text, expect_object, json_body, text};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError,
    SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "pipedrive",
    title: "Pipedrive (webhooks v2: persons, deals, leads)",
    auth: "HTTP Basic credentials configured on the webhook",
    setup: "In Pipedrive go to Settings > Tools and apps > Webhooks > Create new webhook (or POST /v1/webhooks with \
            version \"2.0\"), event e.g. *.person and change.deal, Endpoint URL https://<leadrelay>/v1/hooks/<source>, \
            and set HTTP Auth username and password. Put the username in http_auth_user and the password in the \
            env var named by http_auth_password_env. Use an admin user so every object is visible.",
    largest_request: "one object with its previous values (webhooks v2)",
    max_body_bytes: 256 * KIB,
    docs: &[
        (
            "Pipedrive: Guide for Webhooks v2",
            "https://pipedrive.readme.io/docs/guide-for-webhooks-v2",
        ),
        (
            "Pipedrive: Webhooks v2 migration guide",
            "https://pipedrive.readme.io/docs/webhooks-v2-migration-guide",
        ),
    ],
};

/// Fields whose change alone is noise (every change touches them).
const IGNORED_CHANGES: [&str; 2] = ["update_time", "last_activity_date"];

/// `[sources.NAME]` settings for `kind = "pipedrive"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The HTTP Basic username set on the webhook (not a secret).
    http_auth_user: String,
    /// Env var holding the HTTP Basic password set on the webhook.
    http_auth_password_env: String,
}

#[derive(Debug)]
struct Pipedrive {
    auth: BasicAuth,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    if s.http_auth_user.trim().is_empty() || s.http_auth_user.contains(':') {
        errors.push(crate::config::config_error(
            "http_auth_user",
            "must be a non-empty name without ':'",
        ));
    }
    let password = secret_from_env(
        env,
        "http_auth_password_env",
        &s.http_auth_password_env,
        &mut errors,
    );
    crate::config::finish(
        password.map(|password| Pipedrive {
            auth: BasicAuth {
                user: s.http_auth_user,
                password,
            },
        }),
        errors,
    )
}

impl SourceKind for Pipedrive {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        self.auth.check(req)
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_body(req)? else {
            return Ok(HookParse::Ping);
        };
        expect_object(&body, "a Pipedrive webhook body")?;
        let meta = body.get("meta").filter(|m| m.is_object()).ok_or_else(|| {
            HookError::Malformed("no \"meta\" object: is this a Pipedrive webhook body?".into())
        })?;
        Ok(HookParse::Events(vec![map_event(&body, meta)]))
    }
}

/// v1 action names → v2.
fn action_of(meta: &Value) -> String {
    match text(meta, "action").as_deref() {
        Some("added") => "create".into(),
        Some("updated") => "change".into(),
        Some("deleted") => "delete".into(),
        Some(other) => other.to_string(),
        None => "unknown".into(),
    }
}

fn map_event(body: &Value, meta: &Value) -> InboundEvent {
    let v2 = text(meta, "version").is_some_and(|v| v.starts_with('2'));
    let entity = text(meta, "entity")
        .or_else(|| text(meta, "object"))
        .unwrap_or_else(|| "unknown".into());
    let action = action_of(meta);
    let empty = Value::Object(Map::new());
    let data = body
        .get("data")
        .or_else(|| body.get("current"))
        .filter(|d| d.is_object())
        .unwrap_or(&empty);
    let previous = body.get("previous").filter(|p| p.is_object());
    let changes = previous.map(|p| diff(data, p)).unwrap_or_default();
    let changed = |field: &str| changes.iter().any(|(f, _, _)| f == field);

    let event_type = match (entity.as_str(), action.as_str()) {
        ("person", "create") | ("lead", "create") => Some(EventType::LeadCreated),
        ("person", "change") => Some(EventType::ContactUpdated),
        ("deal", "change") if changed("stage_id") || changed("status") => {
            Some(EventType::DealStageChanged)
        }
        // A call, meeting, email or task logged by sales: the lead response
        // time KPI's first sales activity.
        ("activity", "create") => Some(EventType::Custom(ACTIVITY_LOGGED.into())),
        _ => None,
    };
    let vendor_event = format!("{action}.{entity}");
    let mut d = EventDraft::mapped("pipedrive", &vendor_event, event_type);

    let entity_id = text(meta, "entity_id")
        .or_else(|| text(data, "id"))
        .unwrap_or_default();
    let timestamp = text(meta, "timestamp_micro")
        .or_else(|| text(meta, "timestamp"))
        .unwrap_or_default();
    // v2 gives each event a UUID in meta.id; v1's meta.id is the object's id.
    match text(meta, "id").filter(|_| v2) {
        Some(id) => d.external_id(id),
        None => d.digest_id(&[&vendor_event, &entity_id, &timestamp]),
    }
    d.occurred_at(meta.get("timestamp").and_then(parse_time));
    d.vendor_ref(&entity, &entity_id);
    for (key, object) in [
        ("person_id", "person"),
        ("org_id", "organization"),
        ("organization_id", "organization"),
    ] {
        if let Some(id) = data.get(key).and_then(ref_id) {
            d.vendor_ref(object, &id);
        }
    }
    // API v2 activities name their people as participants.
    for p in data
        .get("participants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = p.get("person_id").and_then(ref_id) {
            d.vendor_ref("person", &id);
        }
    }
    for key in [
        "change_source",
        "user_id",
        "company_id",
        "host",
        "is_bulk_edit",
        "webhook_id",
    ] {
        if let Some(v) = meta.get(key) {
            d.data(key, v.clone());
        }
    }
    d.data("entity", entity.clone());
    d.data("action", action.clone());

    match entity.as_str() {
        "person" => person(&mut d, data),
        "deal" => {
            for key in [
                "title",
                "stage_id",
                "pipeline_id",
                "status",
                "value",
                "currency",
                "owner_id",
                "lost_reason",
            ] {
                d.data_from(data, key);
            }
            if let Some(prev) = previous
                .and_then(|p| p.get("stage_id"))
                .filter(|v| !v.is_null())
            {
                d.data("previous_stage_id", prev.clone());
            }
        }
        _ => {
            for key in ["title", "name", "status", "source_name"] {
                d.data_from(data, key);
            }
        }
    }
    for (field, value, previous) in changes {
        d.change(&field, value, Some(previous));
    }
    d.finish()
}

/// An id that v1 sometimes nests as `{"value": 3, "name": …}`.
fn ref_id(v: &Value) -> Option<String> {
    as_text(v).or_else(|| v.get("value").and_then(as_text))
}

/// `(field, current, previous)` for every field whose previous value is
/// given and differs; custom fields are named `custom_fields.<key>`.
fn diff(current: &Value, previous: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    let Some(prev) = previous.as_object() else {
        return out;
    };
    for (key, before) in prev {
        if IGNORED_CHANGES.contains(&key.as_str()) {
            continue;
        }
        let now = current.get(key).cloned().unwrap_or(Value::Null);
        if key == "custom_fields"
            && let (Some(before), Some(now)) = (before.as_object(), now.as_object())
        {
            for (cf, b) in before {
                let n = now.get(cf).cloned().unwrap_or(Value::Null);
                if &n != b {
                    out.push((format!("custom_fields.{cf}"), n, b.clone()));
                }
            }
            continue;
        }
        if &now != before {
            out.push((key.clone(), now, before.clone()));
        }
    }
    out
}

/// The primary entry of a v2 `emails`/`phones` list (v1: `email`/`phone`).
fn primary(data: &Value, keys: [&str; 2]) -> Option<String> {
    let list = keys
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_array))?;
    list.iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| list.first())
        .and_then(|e| text(e, "value"))
}

fn person(d: &mut EventDraft, data: &Value) {
    if let Some(email) = primary(data, ["emails", "email"]) {
        d.email(&email);
    }
    if let Some(phone) = primary(data, ["phones", "phone"]) {
        d.phone(&phone, None);
    }
    match (text(data, "first_name"), text(data, "last_name")) {
        (None, None) => d.contact_field("full_name", &text(data, "name").unwrap_or_default()),
        (first, last) => {
            d.contact_field("first_name", first.as_deref().unwrap_or(""));
            d.contact_field("last_name", last.as_deref().unwrap_or(""));
        }
    }
    d.contact_field("title", &text(data, "job_title").unwrap_or_default());
    d.contact_field("company", &text(data, "org_name").unwrap_or_default());
    if let Some(custom) = data
        .get("custom_fields")
        .filter(|c| c.as_object().is_some_and(|m| !m.is_empty()))
    {
        d.data("custom_fields", custom.clone());
    }
}
