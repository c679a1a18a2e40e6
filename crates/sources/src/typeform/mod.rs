//! Typeform webhooks: one `form_response` per submission.
//!
//! Signature: `Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, raw body)>`
//! with the secret set on the webhook. Typeform sends no timestamp header, so
//! there is no replay window; the response token makes replays idempotent.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{Encoding, hmac_sha256, mac_matches, required_header};
use crate::config::{Env, Secret, config_error, parse_settings, secret_from_env};
use crate::event::{EventDraft, parse_time};
use crate::json::{as_text, expect_object, json_body, text};
use crate::{
    HookError, HookParse, InboundEvent, InboundRequest, KindInfo, MIB, SourceConfigError,
    SourceKind,
};
use leadrelay_model::{CONTACT_FIELDS, EventType};

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "typeform",
    title: "Typeform (form responses)",
    auth: "Typeform-Signature sha256=… (base64 HMAC-SHA256 of the body with the webhook secret)",
    setup: "In Typeform open the form > Connect > Webhooks > Add a webhook, paste \
            https://<leadrelay>/v1/hooks/<source>, then Edit the webhook, set a Secret and put the same value in \
            the env var named by secret_env. Give the questions that ask for names or the company the field \
            reference first_name, last_name, company … (or map references with the `fields` setting); email and \
            phone questions are recognised by type.",
    largest_request: "one response: the form definition (every field) and every answer",
    max_body_bytes: MIB,
    docs: &[
        (
            "Typeform: Webhooks",
            "https://www.typeform.com/developers/webhooks/",
        ),
        (
            "Typeform: Secure your webhooks",
            "https://www.typeform.com/developers/webhooks/secure-your-webhooks/",
        ),
        (
            "Typeform: Create or update webhook",
            "https://typeform.com/developers/webhooks/reference/create-or-update-webhook",
        ),
    ],
};

/// `[sources.NAME]` settings for `kind = "typeform"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Env var holding the webhook's secret.
    secret_env: String,
    /// Question reference (or hidden field name) → contact field
    /// (`first_name`, `company`, `email` …), for forms whose references are
    /// not the contact field names themselves.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// Region for phone answers without a country code (ISO 3166 alpha-2).
    #[serde(default)]
    default_region: Option<String>,
}

#[derive(Debug)]
struct Typeform {
    secret: Secret,
    fields: BTreeMap<String, String>,
    default_region: Option<String>,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    let secret = secret_from_env(env, "secret_env", &s.secret_env, &mut errors);
    for (reference, field) in &s.fields {
        if !CONTACT_FIELDS.contains(&field.as_str()) {
            errors.push(config_error(
                &format!("fields.{reference}"),
                format!(
                    "{field:?} is not a contact field; use one of {}",
                    CONTACT_FIELDS.join(", ")
                ),
            ));
        }
    }
    crate::config::finish(
        secret.map(|secret| Typeform {
            secret,
            fields: s.fields,
            default_region: s.default_region,
        }),
        errors,
    )
}

impl SourceKind for Typeform {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        let header = required_header(req, "typeform-signature")?;
        let signature = header.trim().strip_prefix("sha256=").ok_or_else(|| {
            HookError::Unauthorized("Typeform-Signature does not start with sha256=".into())
        })?;
        let expected = hmac_sha256(self.secret.as_bytes(), &[req.body]);
        if mac_matches(expected, signature, Encoding::Base64) {
            Ok(())
        } else {
            Err(HookError::Unauthorized(
                "Typeform-Signature does not match".into(),
            ))
        }
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let Some(body) = json_body(req)? else {
            return Ok(HookParse::Ping);
        };
        expect_object(&body, "a Typeform webhook body")?;
        let name = text(&body, "event_type").unwrap_or_else(|| "form_response".into());
        let response = match body.get("form_response") {
            Some(r @ Value::Object(_)) => r,
            _ if name == "form_response" => {
                return Err(HookError::Malformed(
                    "form_response: no \"form_response\" object".into(),
                ));
            }
            _ => &Value::Null,
        };
        Ok(HookParse::Events(vec![
            self.map_event(&name, &body, response),
        ]))
    }
}

impl Typeform {
    fn map_event(&self, name: &str, body: &Value, response: &Value) -> InboundEvent {
        let mapped = (name == "form_response").then_some(EventType::FormSubmitted);
        let mut d = EventDraft::mapped("typeform", name, mapped);
        let form_id = text(response, "form_id").unwrap_or_default();
        let token = text(response, "token").unwrap_or_default();
        match text(body, "event_id") {
            Some(id) => d.external_id(id),
            None => d.digest_id(&[name, &form_id, &token]),
        }
        d.occurred_at(response.get("submitted_at").and_then(parse_time));
        d.vendor_ref("form", &form_id);
        d.vendor_ref("response", &token);
        d.data("form_id", form_id.clone());
        d.data("response_token", token);
        if let Some(title) = text(response, "/definition/title") {
            d.data("form_title", title);
        }
        for key in ["landed_at", "submitted_at"] {
            d.data_from(response, key);
        }
        if let Some(score) = response.pointer("/calculated/score") {
            d.data("score", score.clone());
        }

        let mut answers = Map::new();
        for answer in response
            .get("answers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = text(answer, "type").unwrap_or_default();
            let reference = text(answer, "/field/ref")
                .or_else(|| text(answer, "/field/id"))
                .unwrap_or_default();
            let value = answer_value(answer, &kind);
            match kind.as_str() {
                "email" => d.email(&as_text(&value).unwrap_or_default()),
                "phone_number" => d.phone(
                    &as_text(&value).unwrap_or_default(),
                    self.default_region.as_deref(),
                ),
                _ => {}
            }
            if let Some(field) = self.contact_field_for(&reference)
                && let Some(v) = as_text(&value)
            {
                self.set_contact(&mut d, field, &v);
            }
            if !reference.is_empty() {
                answers.insert(reference, value);
            }
        }
        d.data("answers", Value::Object(answers));

        if let Some(hidden) = response.get("hidden").and_then(Value::as_object) {
            for (key, value) in hidden {
                if let (Some(field), Some(v)) = (self.contact_field_for(key), as_text(value)) {
                    self.set_contact(&mut d, field, &v);
                }
            }
            d.data("hidden", Value::Object(hidden.clone()));
        }
        d.finish()
    }

    /// The contact field a question reference fills: the `fields` setting
    /// first, then references named like contact fields.
    fn contact_field_for<'a>(&'a self, reference: &'a str) -> Option<&'a str> {
        self.fields
            .get(reference)
            .map(String::as_str)
            .or_else(|| CONTACT_FIELDS.contains(&reference).then_some(reference))
    }

    fn set_contact(&self, d: &mut EventDraft, field: &str, value: &str) {
        match field {
            "phone" => d.phone(value, self.default_region.as_deref()),
            _ => d.contact_field(field, value),
        }
    }
}

/// The answer's value, by its type (`text`, `email`, `choice` …).
fn answer_value(answer: &Value, kind: &str) -> Value {
    match kind {
        "choice" => answer
            .pointer("/choice/label")
            .or_else(|| answer.pointer("/choice/other"))
            .cloned()
            .unwrap_or(Value::Null),
        "choices" => {
            let mut labels: Vec<Value> = answer
                .pointer("/choices/labels")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(other) = answer.pointer("/choices/other") {
                labels.push(other.clone());
            }
            Value::Array(labels)
        }
        _ => answer.get(kind).cloned().unwrap_or(Value::Null),
    }
}
