//! `sms`: text messages through Twilio's Messages API — to your team's
//! numbers, or to the lead (only with SMS consent).
//!
//! Settings:
//! - `account_sid_env` (default `TWILIO_ACCOUNT_SID`), `auth_token_env`
//!   (default `TWILIO_AUTH_TOKEN`): HTTP Basic credentials (an API key SID
//!   and secret work too).
//! - `from` (an E.164 Twilio number or an alphanumeric sender id) or
//!   `messaging_service_sid` (`MG…`).
//! - `to`: a list of E.164 numbers (team alerts), or `"lead"`: the
//!   contact's phone — sent only when the person granted the
//!   `consent_purpose` (default `sms`), checked at send time on top of the
//!   destination's `purposes`.
//! - `body`: a minijinja template (≤ 1600 characters are sent);
//!   `forms.FORM.body` and `forms.FORM.enabled` per form.
//! - `base_url` (default `https://api.twilio.com`), `allow_private_networks`.
//!
//! Classification: 201 delivered (the message SID is kept); 401 (20003)
//! credentials rejected; 429 (20429, too many concurrent requests) pauses
//! the destination briefly; other 4xx (21211 invalid `To`, 21610
//! unsubscribed recipient, 21606 bad `From` …) are permanent; 5xx retry.
//! A delivery to several team numbers sends them in order; if one fails,
//! a retry sends to all again (at-least-once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leadrelay_model::{ConsentPurpose, PhoneE164};
use serde::Deserialize;
use serde_json::Value;

use super::http::{self as shared, HttpResponse};
use super::notify::{self, FormOverride, MessageKind, Templates, TemplatesBuilder};
use super::{
    BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob, ErrorClass,
    JobResult, Outcome,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::redact;
use crate::store::RemoteId;

/// Longest body Twilio accepts.
const MAX_BODY_CHARS: usize = 1600;

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum To {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Settings {
    #[serde(default = "default_sid_env")]
    account_sid_env: String,
    #[serde(default = "default_token_env")]
    auth_token_env: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    messaging_service_sid: Option<String>,
    to: To,
    #[serde(default)]
    consent_purpose: Option<ConsentPurpose>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    forms: BTreeMap<String, FormOverride>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    allow_private_networks: bool,
}

fn default_sid_env() -> String {
    "TWILIO_ACCOUNT_SID".into()
}
fn default_token_env() -> String {
    "TWILIO_AUTH_TOKEN".into()
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "sms",
        summary: "SMS through Twilio's Messages API, to team numbers or (with SMS consent) the lead",
        defaults: Defaults {
            // A US long code sends about one segment per second; Twilio
            // queues beyond that, and caps concurrent API requests per account.
            rate_limit: Some(Rate {
                count: 1,
                period: Duration::from_secs(1),
            }),
            concurrency: 1,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

const DEFAULT_TEAM_BODY: &str = "\
{% if alert %}leadrelay {{ 'resolved' if alert.status == 'resolved' else 'alert' }}: {{ alert.message }}\
{% if alert.url %} {{ alert.url }}{% endif %}\
{% elif dead_letter %}leadrelay: delivery to {{ dead_letter.destination }} failed: {{ dead_letter.reason }}\
{% else %}New {{ event.type }}: {{ contact.full_name or contact.email or 'unknown person' }}\
{% if contact.company %} ({{ contact.company }}){% endif %}\
{% if contact.phone %} {{ contact.phone }}{% endif %}\
{% if contact.email and contact.full_name %} {{ contact.email }}{% endif %} {{ dashboard_url }}{% endif %}";

const DEFAULT_LEAD_BODY: &str = "\
Hi {{ contact.first_name or 'there' }}, thank you for getting in touch. We will be in contact soon. Reply STOP to opt out.";

enum Recipients {
    Lead { purpose: ConsentPurpose },
    Team(Vec<PhoneE164>),
}

enum Sender {
    From(String),
    Service(String),
}

struct SmsConnector {
    client: reqwest::Client,
    messages_url: String,
    account_url: String,
    account_sid: String,
    auth_token: String,
    sender: Sender,
    recipients: Recipients,
    templates: Templates,
    forms: BTreeMap<String, FormOverride>,
    public_url: String,
    allow_private: bool,
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();
    let account_sid = ctx
        .secret("account_sid_env", &s.account_sid_env)
        .map_err(|p| problems.push(p))
        .ok();
    let auth_token = ctx
        .secret("auth_token_env", &s.auth_token_env)
        .map_err(|p| problems.push(p))
        .ok();
    let sender = match (&s.from, &s.messaging_service_sid) {
        (Some(f), None) => {
            let f = f.trim();
            let alnum = !f.is_empty()
                && f.len() <= 11
                && f.chars().any(|c| c.is_ascii_alphabetic())
                && f.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
            if !(alnum || PhoneE164::from_e164(f).is_ok()) {
                problems.push(Problem::error(
                    "from",
                    "must be an E.164 number (+15017122661) or an alphanumeric sender id",
                ));
            }
            Some(Sender::From(f.to_string()))
        }
        (None, Some(m)) if m.starts_with("MG") => Some(Sender::Service(m.clone())),
        (None, Some(_)) => {
            problems.push(Problem::error(
                "messaging_service_sid",
                "a Messaging Service SID starts with MG",
            ));
            None
        }
        _ => {
            problems.push(Problem::error(
                "from",
                "set `from` or `messaging_service_sid` (not both)",
            ));
            None
        }
    };
    let recipients = match &s.to {
        To::One(x) if x == "lead" => Recipients::Lead {
            purpose: s.consent_purpose.clone().unwrap_or_else(sms_purpose),
        },
        To::One(x) => match PhoneE164::from_e164(x.trim()) {
            Ok(p) => Recipients::Team(vec![p]),
            Err(e) => {
                problems.push(Problem::error("to", format!("{e} (or write \"lead\")")));
                Recipients::Team(vec![])
            }
        },
        To::List(list) => {
            if list.is_empty() {
                problems.push(Problem::error("to", "name at least one number"));
            }
            let mut out = Vec::new();
            for (i, x) in list.iter().enumerate() {
                match PhoneE164::from_e164(x.trim()) {
                    Ok(p) => out.push(p),
                    Err(e) => problems.push(Problem::error(format!("to[{i}]"), e.to_string())),
                }
            }
            Recipients::Team(out)
        }
    };
    if s.consent_purpose.is_some() && matches!(recipients, Recipients::Team(_)) {
        problems.push(Problem::error(
            "consent_purpose",
            "only for to = \"lead\" (team numbers are not the person's)",
        ));
    }
    let mut tb = TemplatesBuilder::new();
    let default_body = match recipients {
        Recipients::Lead { .. } => DEFAULT_LEAD_BODY,
        Recipients::Team(_) => DEFAULT_TEAM_BODY,
    };
    tb.add(
        "body",
        None,
        s.body.as_deref().unwrap_or(default_body),
        "body",
    );
    notify::add_form_overrides(&mut tb, &s.forms, &["body"]);
    let templates = tb
        .finish(ctx.public_url)
        .map_err(|ps| problems.extend(ps))
        .ok();
    let base = s
        .base_url
        .clone()
        .unwrap_or_else(|| "https://api.twilio.com".into())
        .trim_end_matches('/')
        .to_string();
    if reqwest::Url::parse(&base).is_err() {
        problems.push(Problem::error("base_url", "not a valid URL"));
    }
    let client = shared::client(ctx.timeout, s.allow_private_networks)
        .map_err(|m| problems.push(Problem::error("", m)))
        .ok();
    let (Some(account_sid), Some(auth_token), Some(sender), Some(templates), Some(client), true) = (
        account_sid,
        auth_token,
        sender,
        templates,
        client,
        problems.is_empty(),
    ) else {
        return Err(problems);
    };
    // The account SID is not a secret, but the path shows whose account it is.
    let account_sid = account_sid.trim().to_string();
    Ok(Arc::new(SmsConnector {
        client,
        messages_url: format!("{base}/2010-04-01/Accounts/{account_sid}/Messages.json"),
        account_url: format!("{base}/2010-04-01/Accounts/{account_sid}.json"),
        account_sid,
        auth_token,
        sender,
        recipients,
        templates,
        forms: s.forms,
        public_url: ctx.public_url.to_string(),
        allow_private: s.allow_private_networks,
    }))
}

/// The default consent purpose for texting a lead.
fn sms_purpose() -> ConsentPurpose {
    ConsentPurpose::parse("sms").expect("`sms` is a valid purpose name")
}

/// Cuts to Twilio's body limit.
fn cut(body: &str) -> String {
    if body.chars().count() <= MAX_BODY_CHARS {
        return body.to_string();
    }
    let mut out: String = body.chars().take(MAX_BODY_CHARS - 1).collect();
    out.push('…');
    out
}

/// Twilio's answer to a Messages request.
fn classify(resp: &HttpResponse) -> Outcome {
    if (200..300).contains(&resp.status) {
        return Outcome::delivered();
    }
    let parsed: Option<Value> = serde_json::from_str(&resp.body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(Value::as_u64);
    let text = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(|m| redact::excerpt(m, 200))
        .unwrap_or_else(|| redact::excerpt(&resp.body, 200));
    let message = match code {
        Some(c) => format!("Twilio {c} (HTTP {}): {text}", resp.status),
        None => format!("Twilio HTTP {}: {text}", resp.status),
    };
    match resp.status {
        401 => Outcome::CredentialsRejected { message },
        429 => Outcome::Throttled {
            message,
            // Twilio sends no Retry-After; its limit is on concurrent requests.
            retry_after: shared::parse_retry_after(&resp.headers).or(Some(Duration::from_secs(1))),
        },
        400..=499 => Outcome::permanent(ErrorClass::Vendor, message),
        _ => match shared::classify(resp) {
            Outcome::Retry {
                class, retry_after, ..
            } => Outcome::Retry {
                class,
                message,
                retry_after,
            },
            other => other,
        },
    }
}

impl SmsConnector {
    fn numbers(&self, job: &DeliveryJob) -> Result<Vec<String>, String> {
        match &self.recipients {
            Recipients::Team(list) => Ok(list.iter().map(|p| p.as_str().to_string()).collect()),
            Recipients::Lead { .. } => job
                .event
                .contact
                .phone
                .as_ref()
                .map(|p| vec![p.as_str().to_string()])
                .ok_or_else(|| "the lead has no phone number".to_string()),
        }
    }

    /// The message body and the numbers it goes to.
    fn prepare(&self, job: &DeliveryJob) -> Result<(String, Vec<String>), String> {
        let form = notify::form_of(job);
        let ctx = notify::context(job, &self.public_url);
        self.templates
            .render("body", form, &ctx)
            .map(|b| cut(b.trim()))
            .and_then(|b| {
                if b.is_empty() {
                    Err("the body template rendered nothing".into())
                } else {
                    Ok(b)
                }
            })
            .and_then(|b| self.numbers(job).map(|n| (b, n)))
    }

    async fn send_one(&self, job: &DeliveryJob) -> JobResult {
        let prepared = self.prepare(job);
        let (body, numbers) = match prepared {
            Ok(x) => x,
            Err(m) => {
                return JobResult {
                    outcome: Outcome::permanent(ErrorClass::Mapping, m),
                    report: Default::default(),
                };
            }
        };
        let mut last = JobResult {
            outcome: Outcome::delivered(),
            report: Default::default(),
        };
        let mut sids = Vec::new();
        for to in numbers {
            let mut form: Vec<(&str, &str)> = vec![("To", to.as_str()), ("Body", body.as_str())];
            match &self.sender {
                Sender::From(f) => form.push(("From", f)),
                Sender::Service(m) => form.push(("MessagingServiceSid", m)),
            }
            let request = match self
                .client
                .post(&self.messages_url)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .form(&form)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    return JobResult {
                        outcome: Outcome::permanent(
                            ErrorClass::Mapping,
                            format!("cannot build the request: {e}"),
                        ),
                        report: Default::default(),
                    };
                }
            };
            let (result, report) = shared::send(
                &self.client,
                request,
                &self.messages_url,
                self.allow_private,
            )
            .await;
            let outcome = match &result {
                Ok(resp) => {
                    let o = classify(resp);
                    if matches!(o, Outcome::Delivered { .. })
                        && let Some(sid) = serde_json::from_str::<Value>(&resp.body)
                            .ok()
                            .and_then(|v| v.get("sid").and_then(Value::as_str).map(String::from))
                    {
                        sids.push(sid);
                    }
                    o
                }
                Err(e) => e.outcome(),
            };
            let failed = !matches!(outcome, Outcome::Delivered { .. });
            last = JobResult { outcome, report };
            if failed {
                return last;
            }
        }
        if matches!(self.recipients, Recipients::Lead { .. }) {
            last.outcome = Outcome::Delivered {
                remote_ids: sids
                    .into_iter()
                    .map(|id| RemoteId {
                        object: "sms_message".into(),
                        key: job.delivery.contact_key.clone(),
                        id,
                    })
                    .collect(),
            };
        }
        last
    }
}

#[async_trait]
impl Connector for SmsConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.send_one(job).await);
        }
        out
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        if let Some(form) = notify::form_of(job)
            && self.forms.get(form).and_then(|f| f.enabled) == Some(false)
        {
            return Some(format!("switched off for form {form}"));
        }
        let Recipients::Lead { purpose } = &self.recipients else {
            return None;
        };
        if notify::message_kind(job) != MessageKind::Event {
            return Some("messages to the lead are for events about them only".into());
        }
        if job.event.contact.phone.is_none() {
            return Some("the lead has no phone number".into());
        }
        // The person's latest answer wins: the golden record, else the event.
        let granted = match job
            .contact
            .as_ref()
            .and_then(|c| c.consent.get(purpose.as_str()))
        {
            Some(rec) => rec.granted,
            None => job.event.consent_for(purpose).is_some_and(|c| c.granted),
        };
        (!granted).then(|| format!("consent: no {purpose} consent to text the lead"))
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<Value, String>> {
        Some(
            self.prepare(job)
                .map(|(body, to)| serde_json::json!({"to": to, "body": body})),
        )
    }

    async fn check(&self) -> CheckReport {
        let req = match self
            .client
            .get(&self.account_url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .build()
        {
            Ok(r) => r,
            Err(e) => return CheckReport::failed(format!("cannot build a request: {e}")),
        };
        let (result, _) =
            shared::send(&self.client, req, &self.account_url, self.allow_private).await;
        match result {
            Ok(r) if r.status == 200 => CheckReport::ok("Twilio accepted the credentials"),
            Ok(r) => CheckReport::failed(format!("{:?}", classify(&r))),
            Err(e) => CheckReport::failed(format!("{e:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    #[test]
    fn twilio_answers() {
        assert!(matches!(
            classify(&resp(201, r#"{"sid":"SM1"}"#)),
            Outcome::Delivered { .. }
        ));
        match classify(&resp(
            400,
            r#"{"code":21211,"message":"The 'To' number +1555 is not a valid phone number.","status":400}"#,
        )) {
            Outcome::Permanent { message, .. } => assert!(message.contains("21211"), "{message}"),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            classify(&resp(401, r#"{"code":20003}"#)),
            Outcome::CredentialsRejected { .. }
        ));
        assert!(matches!(
            classify(&resp(429, r#"{"code":20429}"#)),
            Outcome::Throttled {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(classify(&resp(503, "")), Outcome::Retry { .. }));
        assert_eq!(cut(&"x".repeat(2000)).chars().count(), 1600);
    }

    #[test]
    fn preview_shows_the_text_and_numbers_without_sending() {
        let table: toml::Table =
            toml::from_str("from = \"+14155550100\"\nto = [\"+14155552671\"]\n").unwrap();
        let env = |k: &str| Some(format!("{k}-value"));
        let c = build(&BuildContext {
            destination: "text",
            settings: &table,
            env: &env,
            timeout: std::time::Duration::from_secs(2),
            public_url: "http://leads.test",
        })
        .unwrap();
        let p = c.preview(&notify::sample_lead_job()).unwrap().unwrap();
        assert_eq!(p["to"], serde_json::json!(["+14155552671"]));
        assert!(p["body"].as_str().unwrap().contains("Jane"), "{p}");
    }
}
