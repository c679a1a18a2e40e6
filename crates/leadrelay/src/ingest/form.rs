//! Form validation: every declared field checked at once, values
//! normalised (emails lower-cased, phones to E.164, numbers and booleans
//! typed), consent recorded per purpose with its text version.

use chrono::{DateTime, Utc};
use leadrelay_model::{
    CLICK_ID_FIELDS, CONTACT_FIELDS, ConsentPurpose, ConsentRecord, ContactData, EmailAddress,
    PhoneE164, UTM_FIELDS,
};
use serde_json::{Map, Value, json};

use super::body::{FieldValue, Submission};
use crate::config::{FieldConfig, FieldType, FormConfig};
use crate::error::FieldError;

/// Longest text accepted when a field sets no `max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 1000;

/// Names that carry attribution or page context rather than answers.
pub const CONTEXT_FIELDS: [&str; 4] = ["referrer", "referer", "landing_page", "page_url"];

/// What a valid submission yields.
#[derive(Debug, Clone, Default)]
pub struct ValidForm {
    pub contact: ContactData,
    pub data: Map<String, Value>,
    pub consent: Vec<ConsentRecord>,
}

/// Whether the honeypot field was filled.
pub fn honeypot_hit(form: &FormConfig, s: &Submission) -> bool {
    form.honeypot
        .as_ref()
        .and_then(|h| s.get(h))
        .and_then(FieldValue::as_text)
        .is_some_and(|v| !v.trim().is_empty())
}

/// Validates `s` against `form`, reporting every failing field.
pub fn validate(
    form: &FormConfig,
    s: &Submission,
    now: DateTime<Utc>,
) -> Result<ValidForm, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = ValidForm::default();

    for (name, field) in &form.fields {
        let raw = s.get(name);
        let text = match raw {
            None | Some(FieldValue::Null) => None,
            Some(FieldValue::Nested) => {
                errors.push(FieldError::new(
                    name,
                    "invalid_type",
                    "expected a single value, not an object or nested list",
                ));
                continue;
            }
            Some(FieldValue::File { .. }) => {
                errors.push(FieldError::new(
                    name,
                    "file_not_accepted",
                    "file uploads are not accepted",
                ));
                continue;
            }
            Some(v) => v.as_text(),
        };
        let text = text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        let Some(text) = text else {
            // An unchecked checkbox is simply false.
            if field.field_type == FieldType::Boolean && !field.required {
                out.data.insert(name.clone(), Value::Bool(false));
            } else if field.required {
                errors.push(FieldError::new(
                    name,
                    "required",
                    format!("{} is required", label(name, field)),
                ));
            }
            continue;
        };
        match normalise(name, field, &text, form.default_region.as_deref()) {
            Ok(value) => {
                fill_contact(&mut out.contact, name, field, &value);
                out.data.insert(name.clone(), value);
            }
            Err(e) => errors.push(e),
        }
    }

    for (purpose, c) in &form.consent {
        let granted = s
            .get(&c.field)
            .and_then(FieldValue::as_text)
            .is_some_and(|v| truthy(&v) == Some(true));
        if c.required && !granted {
            errors.push(FieldError::new(
                &c.field,
                "consent_required",
                format!("consent for {purpose} is required"),
            ));
        }
        if let Ok(p) = ConsentPurpose::parse(purpose) {
            out.consent.push(ConsentRecord {
                purpose: p,
                granted,
                text_version: Some(c.version.clone()),
                recorded_at: now,
            });
        }
    }

    if form.reject_unknown_fields {
        for (k, _) in &s.fields {
            if !is_known(form, k) {
                errors.push(FieldError::new(
                    k,
                    "unknown_field",
                    format!("{k} is not a field of this form"),
                ));
            }
        }
    }

    if errors.is_empty() {
        out.contact.derive_domain();
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_known(form: &FormConfig, k: &str) -> bool {
    form.fields.contains_key(k)
        || form.honeypot.as_deref() == Some(k)
        || form.idempotency_field.as_deref() == Some(k)
        || form.consent.values().any(|c| c.field == k)
        || UTM_FIELDS.contains(&k)
        || CLICK_ID_FIELDS.contains(&k)
        || CONTEXT_FIELDS.contains(&k)
}

fn label(name: &str, f: &FieldConfig) -> String {
    f.label.clone().unwrap_or_else(|| name.to_string())
}

/// The contact field a form field fills, if any.
fn contact_target<'a>(name: &'a str, f: &'a FieldConfig) -> Option<&'a str> {
    match &f.contact {
        Some(t) => Some(t.as_str()),
        None if CONTACT_FIELDS.contains(&name) => Some(name),
        None => None,
    }
}

fn fill_contact(contact: &mut ContactData, name: &str, f: &FieldConfig, value: &Value) {
    let Some(target) = contact_target(name, f) else {
        return;
    };
    let Some(text) = value.as_str() else { return };
    match (target, f.field_type) {
        ("email", FieldType::Email) => contact.email = EmailAddress::parse(text).ok(),
        // `normalise` already parsed the number: `text` is its E.164 form,
        // so the full numbering-plan parse is not run a second time.
        ("phone", FieldType::Phone) => contact.phone = PhoneE164::from_e164(text).ok(),
        ("email" | "phone", _) => {}
        (t, _) => {
            contact.set_text(t, text.to_string());
        }
    }
}

pub fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" | "y" | "checked" => Some(true),
        "0" | "false" | "off" | "no" | "n" | "" => Some(false),
        _ => None,
    }
}

fn normalise(
    name: &str,
    f: &FieldConfig,
    text: &str,
    form_region: Option<&str>,
) -> Result<Value, FieldError> {
    let max = f.max_length.unwrap_or(DEFAULT_MAX_LENGTH);
    match f.field_type {
        FieldType::Email => EmailAddress::parse(text)
            .map(|e| json!(e.as_str()))
            .map_err(|e| {
                FieldError::new(name, "invalid_email", format!("{}: {e}", label(name, f)))
            }),
        FieldType::Phone => {
            let region = f.default_region.as_deref().or(form_region);
            PhoneE164::parse(text, region)
                .map(|p| json!(p.as_str()))
                .map_err(|e| {
                    FieldError::new(name, "invalid_phone", format!("{}: {e}", label(name, f)))
                })
        }
        FieldType::Text | FieldType::Hidden => {
            if text.chars().count() > max {
                return Err(FieldError::new(
                    name,
                    "too_long",
                    format!("{} is longer than {max} characters", label(name, f)),
                ));
            }
            if text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
            {
                return Err(FieldError::new(
                    name,
                    "invalid_characters",
                    format!("{} contains control characters", label(name, f)),
                ));
            }
            Ok(json!(text))
        }
        FieldType::Picklist => {
            if f.options.iter().any(|o| o == text) {
                Ok(json!(text))
            } else {
                Err(FieldError::new(
                    name,
                    "invalid_option",
                    format!(
                        "{} must be one of: {}",
                        label(name, f),
                        f.options.join(", ")
                    ),
                ))
            }
        }
        FieldType::Url => match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && text.len() <= 2048 =>
            {
                Ok(json!(u.as_str()))
            }
            _ => Err(FieldError::new(
                name,
                "invalid_url",
                format!("{} must be an http(s) URL", label(name, f)),
            )),
        },
        FieldType::Number => {
            let n: f64 = text
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| {
                    FieldError::new(
                        name,
                        "invalid_number",
                        format!("{} must be a number", label(name, f)),
                    )
                })?;
            if f.min.is_some_and(|lo| n < lo) || f.max.is_some_and(|hi| n > hi) {
                let range = format!(
                    "{}..{}",
                    f.min.map(|v| v.to_string()).unwrap_or_default(),
                    f.max.map(|v| v.to_string()).unwrap_or_default()
                );
                return Err(FieldError::new(
                    name,
                    "out_of_range",
                    format!("{} must be within {range}", label(name, f)),
                ));
            }
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Ok(json!(n as i64))
            } else {
                Ok(json!(n))
            }
        }
        FieldType::Boolean => truthy(text).map(Value::Bool).ok_or_else(|| {
            FieldError::new(
                name,
                "invalid_boolean",
                format!("{} must be true or false", label(name, f)),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn form() -> FormConfig {
        let text = r#"
[forms.f]
honeypot = "hp"
[forms.f.fields.email]
type = "email"
required = true
[forms.f.fields.phone]
type = "phone"
default_region = "DE"
[forms.f.fields.first_name]
type = "text"
max_length = 5
[forms.f.fields.plan]
type = "picklist"
options = ["free", "pro"]
[forms.f.fields.seats]
type = "number"
min = 1
max = 100
[forms.f.fields.newsletter]
type = "boolean"
[forms.f.fields.site]
type = "url"
[forms.f.consent.marketing_email]
field = "optin"
version = "2024-05"
"#;
        load_str(text, "t", &|_| None)
            .unwrap()
            .config
            .forms
            .remove("f")
            .unwrap()
    }

    fn sub(pairs: &[(&str, &str)]) -> Submission {
        Submission {
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), FieldValue::Text(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn valid_submission_is_normalised() {
        let s = sub(&[
            ("email", " Jane@Acme.IO "),
            ("phone", "030 901820"),
            ("first_name", "Jane"),
            ("plan", "pro"),
            ("seats", "12"),
            ("newsletter", "on"),
            ("site", "https://acme.io"),
            ("optin", "1"),
        ]);
        let v = validate(&form(), &s, Utc::now()).unwrap();
        assert_eq!(v.contact.email.unwrap().as_str(), "jane@acme.io");
        assert_eq!(v.contact.phone.unwrap().as_str(), "+4930901820");
        assert_eq!(v.contact.first_name.as_deref(), Some("Jane"));
        assert_eq!(v.data["seats"], json!(12));
        assert_eq!(v.data["newsletter"], json!(true));
        assert_eq!(v.consent.len(), 1);
        assert!(v.consent[0].granted);
        assert_eq!(v.consent[0].text_version.as_deref(), Some("2024-05"));
    }

    #[test]
    fn every_failing_field_is_reported() {
        let s = sub(&[
            ("phone", "12"),
            ("first_name", "Jonathan"),
            ("plan", "gold"),
            ("seats", "0"),
            ("newsletter", "maybe"),
            ("site", "ftp://x"),
        ]);
        let errs = validate(&form(), &s, Utc::now()).unwrap_err();
        let codes: Vec<(&str, &str)> = errs
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        for want in [
            ("email", "required"),
            ("phone", "invalid_phone"),
            ("first_name", "too_long"),
            ("plan", "invalid_option"),
            ("seats", "out_of_range"),
            ("newsletter", "invalid_boolean"),
            ("site", "invalid_url"),
        ] {
            assert!(codes.contains(&want), "{want:?} missing from {codes:?}");
        }
    }

    #[test]
    fn consent_absent_is_recorded_as_not_granted() {
        let v = validate(&form(), &sub(&[("email", "a@b.io")]), Utc::now()).unwrap();
        assert!(!v.consent[0].granted);
        assert_eq!(v.data["newsletter"], json!(false));
    }

    #[test]
    fn honeypot() {
        assert!(honeypot_hit(&form(), &sub(&[("hp", "http://spam")])));
        assert!(!honeypot_hit(&form(), &sub(&[("hp", "  ")])));
    }
}
