//! Salesforce outbound messages (workflow / flow "Outbound Message"
//! actions): a SOAP `notifications` envelope with up to 100 `Notification`s,
//! each carrying an `sObject` with the fields chosen on the message.
//!
//! Salesforce does not sign outbound messages. The request is accepted when
//! its `OrganizationId` is the configured org (compared on the 15-character
//! case-sensitive id) and, if `token_env` is set, when it carries the shared
//! token in the URL (`?token=`) or the `X-Leadrelay-Token` header. The answer
//! must be the SOAP `<Ack>true</Ack>`, or Salesforce retries for 24 hours.
//! The `SessionId` Salesforce may include is a live credential: it is never
//! stored.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{SharedToken, ct_eq};
use crate::config::{Env, config_error, parse_settings};
use crate::event::{EventDraft, parse_time};
use crate::json::{check_media_type, snake_case};
use crate::xml::{self, Element};
use crate::{
    HookError, HookParse, HookResponse, InboundEvent, InboundRequest, KindInfo, MIB,
    SourceConfigError, SourceKind,
};
use leadrelay_model::EventType;

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "salesforce_outbound_message",
    title: "Salesforce (outbound messages from flows and workflow rules)",
    auth: "OrganizationId must match organization_id; optional shared token in the URL",
    setup: "In Salesforce Setup > Outbound Messages > New, pick the object (Contact, Lead, Opportunity …), set the \
            Endpoint URL to https://<leadrelay>/v1/hooks/<source>?token=<token> and select the fields to send \
            (include Email/StageName). Trigger it from a record-triggered flow or workflow rule. Put your 15- or \
            18-character org id (Setup > Company Information) in organization_id and the token in the env var \
            named by token_env. Do not tick \"Send Session ID\". Yesware users: enable Yesware's Salesforce sync, \
            then send its activity on with this source.",
    largest_request: "a SOAP message with up to 100 notifications, each with the fields the outbound message sends",
    max_body_bytes: 2 * MIB,
    docs: &[(
        "Salesforce: Understanding Notifications (outbound messaging)",
        "https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging_notifications.htm",
    )],
};

/// Salesforce sends at most 100 notifications per message.
const MAX_NOTIFICATIONS: usize = 1000;

const ACK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Body>
    <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
      <Ack>true</Ack>
    </notificationsResponse>
  </soapenv:Body>
</soapenv:Envelope>
"#;

/// `[sources.NAME]` settings for `kind = "salesforce_outbound_message"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The org id (`00D…`), 15 or 18 characters.
    organization_id: String,
    /// Env var holding a shared token the endpoint URL must carry (recommended).
    #[serde(default)]
    token_env: Option<String>,
    /// The Opportunity field whose presence makes a `deal.stage_changed` (default `StageName`).
    #[serde(default = "default_stage_field")]
    stage_field: String,
}

fn default_stage_field() -> String {
    "StageName".into()
}

#[derive(Debug)]
struct OutboundMessages {
    /// The case-sensitive 15-character form.
    org15: String,
    token: Option<SharedToken>,
    stage_field: String,
}

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    let s: Settings = parse_settings(settings)?;
    let mut errors = Vec::new();
    if let Err(message) = check_org_id(s.organization_id.trim()) {
        errors.push(config_error("organization_id", message));
    }
    let token = s
        .token_env
        .as_deref()
        .and_then(|var| SharedToken::from_env(env, "token_env", var, &mut errors));
    if !errors.is_empty() {
        return Err(errors);
    }
    let org15 = s.organization_id.trim().chars().take(15).collect();
    Ok(Box::new(OutboundMessages {
        org15,
        token,
        stage_field: s.stage_field,
    }))
}

/// The suffix Salesforce appends to a 15-character id to make it
/// case-insensitive: one character per five, encoding which are upper case.
pub(crate) fn checksum_suffix(id15: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk.iter().enumerate().fold(0usize, |acc, (i, b)| {
                acc | (usize::from(b.is_ascii_uppercase()) << i)
            });
            char::from(ALPHABET[bits])
        })
        .collect()
}

fn check_org_id(id: &str) -> Result<(), String> {
    if !(id.len() == 15 || id.len() == 18) || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("must be the 15- or 18-character org id (00D…)".into());
    }
    if !id.starts_with("00D") {
        return Err("an org id starts with 00D".into());
    }
    if id.len() == 18 && !id[15..].eq_ignore_ascii_case(&checksum_suffix(&id[..15])) {
        return Err(format!(
            "the last three characters should be {}; check for a typo",
            checksum_suffix(&id[..15])
        ));
    }
    Ok(())
}

/// The `notifications` element of the SOAP body.
fn notifications(req: &InboundRequest<'_>) -> Result<Element, HookError> {
    check_media_type(
        req,
        &["text/xml", "application/xml", "application/soap+xml"],
    )?;
    let root = xml::parse(req.body).map_err(HookError::Malformed)?;
    if root.name != "Envelope" {
        return Err(HookError::Malformed(format!(
            "expected a SOAP Envelope, got <{}>",
            root.name
        )));
    }
    root.child("Body")
        .and_then(|b| b.child("notifications"))
        .cloned()
        .ok_or_else(|| HookError::Malformed("no Body/notifications in the SOAP envelope".into()))
}

impl SourceKind for OutboundMessages {
    fn kind(&self) -> &'static str {
        INFO.name
    }

    fn authenticate(&self, req: &InboundRequest<'_>) -> Result<(), HookError> {
        if let Some(token) = &self.token {
            token.check(req)?;
        }
        let n = notifications(req)?;
        let org = n
            .child_text("OrganizationId")
            .ok_or_else(|| HookError::Unauthorized("no OrganizationId".into()))?;
        let org15: String = org.chars().take(15).collect();
        if ct_eq(org15.as_bytes(), self.org15.as_bytes()) {
            Ok(())
        } else {
            Err(HookError::Unauthorized(
                "OrganizationId is not the configured org".into(),
            ))
        }
    }

    fn parse(&self, req: &InboundRequest<'_>) -> Result<HookParse, HookError> {
        let n = notifications(req)?;
        let list: Vec<&Element> = n.children_named("Notification").collect();
        let events = crate::json::batch(&list, MAX_NOTIFICATIONS, |i, notification| {
            self.map_notification(&n, notification, i)
        })?;
        Ok(crate::json::parsed(events))
    }

    fn acknowledge(&self, _parsed: &HookParse) -> HookResponse {
        HookResponse {
            status: 200,
            content_type: "text/xml",
            body: ACK.to_string(),
        }
    }
}

/// Contact and Lead fields that fill the contact.
const CONTACT_FIELDS: [(&str, &str); 11] = [
    ("FirstName", "first_name"),
    ("LastName", "last_name"),
    ("Name", "full_name"),
    ("Title", "title"),
    ("Company", "company"),
    ("Website", "website"),
    ("City", "city"),
    ("MailingCity", "city"),
    ("State", "region"),
    ("MailingState", "region"),
    ("Country", "country"),
];

impl OutboundMessages {
    fn map_notification(
        &self,
        n: &Element,
        notification: &Element,
        i: usize,
    ) -> Result<InboundEvent, HookError> {
        let sobject = notification
            .child("sObject")
            .ok_or_else(|| HookError::Malformed(format!("Notification {i} has no sObject")))?;
        let object = sobject
            .attr("type")
            .map(|t| t.rsplit(':').next().unwrap_or(t))
            .unwrap_or("sObject");
        let fields: Vec<(&str, &str)> = sobject
            .children
            .iter()
            .filter(|f| !f.is_nil() && f.children.is_empty())
            .map(|f| (f.name.as_str(), f.text.as_str()))
            .collect();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .filter(|v| !v.is_empty())
        };

        let event_type = match object {
            "Contact" | "Lead" => Some(EventType::ContactUpdated),
            // A call, email or meeting logged by sales (the lead response
            // time KPI's first sales activity).
            "Task" | "Event" => Some(EventType::Custom(crate::ACTIVITY_LOGGED.into())),
            "Opportunity" if field(&self.stage_field).is_some() => {
                Some(EventType::DealStageChanged)
            }
            _ => None,
        };
        let vendor_event = format!("outbound_message.{object}");
        let mut d = EventDraft::mapped("salesforce", &vendor_event, event_type);
        if let Some(id) = notification.child_text("Id") {
            d.external_id(id);
        }
        let modified = field("LastModifiedDate").or_else(|| field("SystemModstamp"));
        d.occurred_at(modified.and_then(|t| parse_time(&Value::String(t.to_string()))));
        d.vendor_ref(&object.to_ascii_lowercase(), field("Id").unwrap_or(""));
        for (key, object) in [
            ("AccountId", "account"),
            ("ContactId", "contact"),
            ("ConvertedContactId", "contact"),
            ("OwnerId", "user"),
        ] {
            d.vendor_ref(object, field(key).unwrap_or(""));
        }
        // A Task's or Event's person: a Lead (key prefix 00Q) or a Contact.
        if let Some(who) = field("WhoId") {
            let object = if who.starts_with("00Q") {
                "lead"
            } else {
                "contact"
            };
            d.vendor_ref(object, who);
        }
        for key in ["OrganizationId", "ActionId"] {
            if let Some(v) = n.child_text(key) {
                d.data(&snake_case(key), v.to_string());
            }
        }
        d.data("object", object.to_string());

        if matches!(object, "Contact" | "Lead") {
            d.email(field("Email").unwrap_or(""));
            for key in ["Phone", "MobilePhone"] {
                d.phone(field(key).unwrap_or(""), None);
            }
            for (sf, ours) in CONTACT_FIELDS {
                d.contact_field(ours, field(sf).unwrap_or(""));
            }
        }
        if let Some(stage) = field(&self.stage_field).filter(|_| object == "Opportunity") {
            d.data("stage", stage.to_string());
        }
        let mut all = Map::new();
        for (name, value) in &fields {
            all.insert((*name).to_string(), Value::String((*value).to_string()));
            if *name != "Id" {
                d.change(name, Value::String((*value).to_string()), None);
            }
        }
        d.data("fields", Value::Object(all));
        Ok(d.finish())
    }
}
