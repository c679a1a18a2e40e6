//! `email`: email over SMTP — a notification to your team, or a
//! confirmation to the person who filled in a form.
//!
//! Settings:
//! - `host` (required), `port` (default 465 for `tls = "implicit"`, 587 for
//!   `"starttls"`, 25 for `"none"`), `tls`: `implicit` (SMTPS), `starttls`
//!   (default; the upgrade is required) or `none` (plain, for a local relay).
//! - `username_env`, `password_env`: SMTP AUTH credentials, from env vars.
//! - `from` (required): `"Acme Sales <sales@acme.com>"`.
//! - `to`: a list of team addresses (notifications), or `"lead"`: the
//!   event's contact (confirmations; sent only for forms listed under
//!   `forms` and only when the event has an email address).
//! - `reply_to`: an address; team notifications default to the lead's
//!   address, so a reply goes straight to the person.
//! - `subject`, `text`, `html`: minijinja templates (see
//!   [`super::notify`] for the values they see); the defaults depend on `to`.
//! - `forms.FORM`: per-form `subject` / `text` / `html` overrides and
//!   `enabled`.
//!
//! SMTP replies are classified by their class: 4xx retry, 5xx are permanent
//! (535/534/530: credentials rejected). Every message carries a
//! `Message-ID` made from the delivery id (stable across retries) and
//! `Auto-Submitted: auto-generated` (RFC 3834), so auto-responders stay
//! quiet.

mod templates;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::notify::{self, FormOverride, MessageKind, Templates, TemplatesBuilder};
use super::{
    AttemptReport, BuildContext, CheckReport, Connector, ConnectorKind, Defaults, DeliveryJob,
    ErrorClass, JobResult, Outcome, header_text,
};
use crate::config::{Problem, Rate, parse_settings};
use crate::redact;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum TlsMode {
    Implicit,
    #[default]
    Starttls,
    None,
}

/// `to = "lead"` or `to = ["a@x.com", …]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum To {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Settings {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: TlsMode,
    #[serde(default)]
    username_env: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    from: String,
    to: To,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    forms: BTreeMap<String, FormOverride>,
}

pub fn kind() -> ConnectorKind {
    ConnectorKind {
        name: "email",
        summary: "email over SMTP: team notifications and lead confirmations, from templates",
        defaults: Defaults {
            // Most providers cap messages per second per account (SES starts
            // at 1/s, Gmail and Microsoft 365 throttle bursts); 5/s is safe.
            rate_limit: Some(Rate {
                count: 5,
                period: Duration::from_secs(1),
            }),
            concurrency: 2,
            batch_size: 1,
            max_batch_size: 1,
        },
        personal_data: true,
        build,
    }
}

const PARTS: &[&str] = &["subject", "text", "html"];

/// Who a message goes to.
enum Recipients {
    /// The event's contact, for forms enabled under `forms`.
    Lead,
    Team(Vec<Mailbox>),
}

struct EmailConnector {
    /// Built on first use: the connection pool spawns a task, which needs
    /// the runtime (a configuration check may build connectors outside it).
    builder: AsyncSmtpTransportBuilder,
    transport: OnceLock<AsyncSmtpTransport<Tokio1Executor>>,
    display_url: String,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    recipients: Recipients,
    templates: Templates,
    forms: BTreeMap<String, FormOverride>,
    public_url: String,
}

fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    s.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("{s:?} is not an email address: {e}"))
}

fn build(ctx: &BuildContext<'_>) -> Result<Arc<dyn Connector>, Vec<Problem>> {
    Ok(Arc::new(email_connector(ctx)?))
}

fn email_connector(ctx: &BuildContext<'_>) -> Result<EmailConnector, Vec<Problem>> {
    let s: Settings = parse_settings(ctx.settings)?;
    let mut problems = Vec::new();

    let from = parse_mailbox(&s.from)
        .map_err(|m| problems.push(Problem::error("from", m)))
        .ok();
    let reply_to = match &s.reply_to {
        Some(r) => parse_mailbox(r)
            .map_err(|m| problems.push(Problem::error("reply_to", m)))
            .ok(),
        None => None,
    };
    let recipients = match &s.to {
        To::One(x) if x == "lead" => Recipients::Lead,
        To::One(x) => match parse_mailbox(x) {
            Ok(m) => Recipients::Team(vec![m]),
            Err(m) => {
                problems.push(Problem::error("to", format!("{m} (or write \"lead\")")));
                Recipients::Team(vec![])
            }
        },
        To::List(list) => {
            let mut out = Vec::new();
            for (i, x) in list.iter().enumerate() {
                match parse_mailbox(x) {
                    Ok(m) => out.push(m),
                    Err(m) => problems.push(Problem::error(format!("to[{i}]"), m)),
                }
            }
            if list.is_empty() {
                problems.push(Problem::error("to", "name at least one address"));
            }
            Recipients::Team(out)
        }
    };
    if matches!(recipients, Recipients::Lead) && !s.forms.values().any(|f| f.enabled != Some(false))
    {
        problems.push(Problem::error(
            "forms",
            "a confirmation to the lead is sent only for the forms listed here: add e.g. [destinations.NAME.forms.contact]",
        ));
    }

    let mut tb = TemplatesBuilder::new();
    let lead = matches!(recipients, Recipients::Lead);
    let defaults = if lead {
        templates::CONFIRMATION
    } else {
        templates::NOTIFICATION
    };
    for (part, default) in PARTS.iter().zip(defaults) {
        let configured = match *part {
            "subject" => s.subject.as_deref(),
            "text" => s.text.as_deref(),
            _ => s.html.as_deref(),
        };
        tb.add(part, None, configured.unwrap_or(default), part);
    }
    notify::add_form_overrides(&mut tb, &s.forms, PARTS);
    let templates = tb
        .finish(ctx.public_url)
        .map_err(|ps| problems.extend(ps))
        .ok();

    let credentials = match (&s.username_env, &s.password_env) {
        (Some(u), Some(p)) => {
            match (ctx.secret("username_env", u), ctx.secret("password_env", p)) {
                (Ok(u), Ok(p)) => Some(Credentials::new(u, p)),
                (a, b) => {
                    problems.extend(a.err());
                    problems.extend(b.err());
                    None
                }
            }
        }
        (None, None) => None,
        _ => {
            problems.push(Problem::error(
                "username_env",
                "set both username_env and password_env, or neither",
            ));
            None
        }
    };
    let host = s.host.trim().to_string();
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        problems.push(Problem::error("host", "must be a host name or address"));
    }
    let port = s.port.unwrap_or(match s.tls {
        TlsMode::Implicit => 465,
        TlsMode::Starttls => 587,
        TlsMode::None => 25,
    });
    let builder = match s.tls {
        TlsMode::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&host),
        TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host),
        TlsMode::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host.clone(),
        )),
    };
    crate::init_crypto();
    let transport = match builder {
        Ok(b) => {
            let mut b = b.port(port).timeout(Some(ctx.timeout));
            if let Some(c) = credentials {
                b = b.credentials(c);
            }
            Some(b)
        }
        Err(e) => {
            problems.push(Problem::error("tls", format!("cannot set up TLS: {e}")));
            None
        }
    };

    let (Some(transport), Some(from), Some(templates), true) =
        (transport, from, templates, problems.is_empty())
    else {
        return Err(problems);
    };
    let scheme = match s.tls {
        TlsMode::Implicit => "smtps",
        _ => "smtp",
    };
    Ok(EmailConnector {
        builder: transport,
        transport: OnceLock::new(),
        display_url: format!("{scheme}://{host}:{port}"),
        from,
        reply_to,
        recipients,
        templates,
        forms: s.forms,
        public_url: ctx.public_url.to_string(),
    })
}

/// `Auto-Submitted: auto-generated` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

impl EmailConnector {
    fn transport(&self) -> &AsyncSmtpTransport<Tokio1Executor> {
        self.transport.get_or_init(|| self.builder.clone().build())
    }

    fn form_enabled(&self, form: Option<&str>) -> Option<bool> {
        form.and_then(|f| self.forms.get(f)).and_then(|o| o.enabled)
    }

    fn lead_mailbox(job: &DeliveryJob) -> Option<Mailbox> {
        let email = job.event.contact.email.as_ref()?;
        let address = email.as_str().parse().ok()?;
        // A name with a line break would otherwise make lettre panic while
        // writing the header (or start a header of its own).
        let name = job
            .event
            .contact
            .full_name()
            .map(|n| header_text(&n))
            .filter(|n| !n.is_empty());
        Some(Mailbox::new(name, address))
    }

    /// The message for one job, or why it cannot be made.
    /// The template context of one message.
    fn context(&self, job: &DeliveryJob) -> serde_json::Value {
        let mut ctx = notify::context(job, &self.public_url);
        if let Some(obj) = ctx.as_object_mut() {
            obj.insert(
                "from_name".into(),
                serde_json::json!(self.from.name.clone().unwrap_or_default()),
            );
        }
        ctx
    }

    /// The plain-text body.
    fn text(&self, job: &DeliveryJob) -> Result<String, String> {
        self.templates
            .render("text", notify::form_of(job), &self.context(job))
    }

    fn message(&self, job: &DeliveryJob) -> Result<Message, String> {
        let form = notify::form_of(job);
        let ctx = self.context(job);
        let subject = header_text(&self.templates.render("subject", form, &ctx)?);
        let text = self.templates.render("text", form, &ctx)?;
        let html = self.templates.render("html", form, &ctx)?;
        let domain = self.from.email.domain().to_string();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<{}@{domain}>", job.delivery.id)))
            .date_now()
            .header(AutoSubmitted);
        match &self.recipients {
            Recipients::Lead => {
                let to = Self::lead_mailbox(job)
                    .ok_or_else(|| "the event has no valid email address".to_string())?;
                b = b.to(to);
                if let Some(r) = &self.reply_to {
                    b = b.reply_to(r.clone());
                }
            }
            Recipients::Team(list) => {
                for m in list {
                    b = b.to(m.clone());
                }
                let lead = (notify::message_kind(job) != MessageKind::Alert)
                    .then(|| Self::lead_mailbox(job))
                    .flatten();
                if let Some(r) = self.reply_to.clone().or(lead) {
                    b = b.reply_to(r);
                }
            }
        }
        b.multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| format!("cannot build the message: {e}"))
    }

    async fn send_one(&self, job: &DeliveryJob) -> JobResult {
        let message = match self.message(job) {
            Ok(m) => m,
            Err(m) => {
                return JobResult {
                    outcome: Outcome::permanent(ErrorClass::Mapping, m),
                    report: Default::default(),
                };
            }
        };
        let raw = message.formatted();
        let mut report = AttemptReport {
            started_at: Some(Utc::now()),
            method: Some("SMTP".into()),
            url: Some(self.display_url.clone()),
            request_bytes: Some(raw.len() as u64),
            request_sha256: Some(hex::encode(Sha256::digest(&raw))),
            ..Default::default()
        };
        let clock = Instant::now();
        let result = self.transport().send_raw(message.envelope(), &raw).await;
        let outcome = match result {
            Ok(resp) => {
                report.status = resp.code().to_string().parse().ok();
                let text: Vec<&str> = resp.message().collect();
                report.response_excerpt = Some(redact::excerpt(&text.join(" "), 200));
                Outcome::delivered()
            }
            Err(e) => {
                let (status, outcome) = classify(&e);
                report.status = status;
                report.response_excerpt = Some(redact::excerpt(&e.to_string(), 300));
                match (&outcome, &self.recipients) {
                    // One refused address must not stop the whole team's
                    // notification (RFC 5321 §3.3: the message goes to the
                    // recipients that were accepted).
                    (Outcome::Permanent { .. }, Recipients::Team(list)) if list.len() > 1 => self
                        .send_per_recipient(message.envelope(), &raw, list, &mut report)
                        .await
                        .unwrap_or(outcome),
                    _ => outcome,
                }
            }
        };
        report.duration = clock.elapsed();
        JobResult { outcome, report }
    }

    /// After a permanent refusal of a message to several team addresses:
    /// sends it to each address on its own. `Some(outcome)` when at least
    /// one address accepted it: delivered, with the refused addresses and
    /// their replies in the attempt's response; or retried when a refusal
    /// was temporary (the same Message-ID lets receivers drop the copy).
    /// `None` when every address refused it (the refusal stands).
    async fn send_per_recipient(
        &self,
        envelope: &lettre::address::Envelope,
        raw: &[u8],
        list: &[Mailbox],
        report: &mut AttemptReport,
    ) -> Option<Outcome> {
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut temporary = None;
        for m in list {
            let one = match lettre::address::Envelope::new(
                envelope.from().cloned(),
                vec![m.email.clone()],
            ) {
                Ok(e) => e,
                Err(e) => {
                    refused.push(format!("{}: {e}", m.email));
                    continue;
                }
            };
            match self.transport().send_raw(&one, raw).await {
                Ok(resp) => accepted.push((m.email.to_string(), resp.code().to_string())),
                Err(e) => {
                    let (_, outcome) = classify(&e);
                    if !matches!(outcome, Outcome::Permanent { .. }) {
                        temporary.get_or_insert(outcome);
                    }
                    refused.push(format!("{}: {}", m.email, header_text(&e.to_string())));
                }
            }
        }
        if accepted.is_empty() {
            return None;
        }
        let summary = format!(
            "sent to {} of {} recipients ({}); refused: {}",
            accepted.len(),
            list.len(),
            accepted
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            refused.join("; ")
        );
        report.status = accepted.first().and_then(|(_, code)| code.parse().ok());
        // Team addresses come from the configuration, not from a lead:
        // shown as they are, so an admin sees which one to fix.
        report.response_excerpt = Some(truncate(&summary, 500));
        Some(match temporary {
            Some(Outcome::Retry {
                class,
                message,
                retry_after,
            }) => Outcome::Retry {
                class,
                message: format!("{summary}; retrying for the temporary refusal: {message}"),
                retry_after,
            },
            Some(other) => other,
            None => Outcome::delivered(),
        })
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// SMTP errors: 4xx replies retry, 5xx are permanent (535, 534, 530:
/// credentials rejected); no reply (connect, TLS, timeout) retries.
fn classify(e: &lettre::transport::smtp::Error) -> (Option<u16>, Outcome) {
    let status: Option<u16> = e.status().and_then(|c| c.to_string().parse().ok());
    let message = redact::excerpt(&e.to_string(), 300);
    let outcome = if e.is_transient() {
        Outcome::retry(ErrorClass::Vendor, format!("SMTP {message}"))
    } else if e.is_permanent() {
        match status {
            Some(530 | 534 | 535) => Outcome::CredentialsRejected {
                message: format!("SMTP {message}"),
            },
            _ => Outcome::permanent(ErrorClass::Vendor, format!("SMTP {message}")),
        }
    } else if e.is_timeout() {
        Outcome::retry(ErrorClass::Timeout, format!("SMTP timeout: {message}"))
    } else if e.is_client() {
        Outcome::permanent(ErrorClass::Mapping, format!("SMTP client error: {message}"))
    } else {
        Outcome::retry(ErrorClass::Connect, format!("SMTP connection: {message}"))
    };
    (status, outcome)
}

#[async_trait]
impl Connector for EmailConnector {
    async fn deliver(&self, jobs: &[DeliveryJob]) -> Vec<JobResult> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.send_one(job).await);
        }
        out
    }

    fn skip_reason(&self, job: &DeliveryJob) -> Option<String> {
        let form = notify::form_of(job);
        match self.recipients {
            Recipients::Lead => {
                if notify::message_kind(job) != MessageKind::Event {
                    return Some("confirmations go to people, not alerts or copies".into());
                }
                let Some(f) = form else {
                    return Some("confirmations are sent for form submissions only".into());
                };
                match self.forms.get(f) {
                    None => return Some(format!("confirmations are not enabled for form {f}")),
                    Some(o) if o.enabled == Some(false) => {
                        return Some(format!("confirmations are switched off for form {f}"));
                    }
                    Some(_) => {}
                }
                if Self::lead_mailbox(job).is_none() {
                    return Some("the lead has no valid email address".into());
                }
                None
            }
            Recipients::Team(_) => (self.form_enabled(form) == Some(false))
                .then(|| format!("switched off for form {}", form.unwrap_or(""))),
        }
    }

    fn preview(&self, job: &DeliveryJob) -> Option<Result<serde_json::Value, String>> {
        Some(self.message(job).map(|m| {
            let headers = m.headers();
            let get = |name: &str| headers.get_raw(name).map(str::to_string);
            serde_json::json!({
                "to": get("To"),
                "reply_to": get("Reply-To"),
                "subject": get("Subject"),
                "text": self.text(job).ok(),
            })
        }))
    }

    async fn check(&self) -> CheckReport {
        match self.transport().test_connection().await {
            Ok(true) => CheckReport::ok(format!(
                "{} accepted the connection (and the credentials, if any)",
                self.display_url
            )),
            Ok(false) => CheckReport::failed(format!("{} did not answer NOOP", self.display_url)),
            Err(e) => CheckReport::failed(format!(
                "{}: {}",
                self.display_url,
                redact::excerpt(&e.to_string(), 300)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> toml::Table {
        toml::from_str(&format!(
            "host = \"127.0.0.1\"\ntls = \"none\"\nport = 2525\nfrom = \"Acme <sales@acme.test>\"\n{extra}"
        ))
        .unwrap()
    }

    fn build_with(extra: &str) -> Result<Arc<dyn Connector>, Vec<Problem>> {
        let table = settings(extra);
        let env = |_: &str| None;
        build(&BuildContext {
            destination: "mail",
            settings: &table,
            env: &env,
            timeout: Duration::from_secs(2),
            public_url: "http://leads.test",
        })
    }

    #[test]
    fn settings_are_checked() {
        assert!(build_with("to = [\"team@acme.test\"]").is_ok());
        let errs = build_with("to = [\"not an address\"]").err().unwrap();
        assert_eq!(errs[0].path, "to[0]");
        let errs = build_with("to = \"lead\"").err().unwrap();
        assert_eq!(errs[0].path, "forms");
        assert!(build_with("to = \"lead\"\n[forms.contact]\n").is_ok());
        let errs = build_with("to = [\"t@acme.test\"]\nsubject = \"{{ oops\"")
            .err()
            .unwrap();
        assert_eq!(errs[0].path, "subject");
        let errs = build_with("to = [\"t@acme.test\"]\n[forms.demo]\nhtml = \"{% if %}\"")
            .err()
            .unwrap();
        assert_eq!(errs[0].path, "forms.demo.html");
        let errs = build_with("to = [\"t@acme.test\"]\nusername_env = \"U\"")
            .err()
            .unwrap();
        assert_eq!(errs[0].path, "username_env");
    }

    #[test]
    fn default_templates_render_every_kind() {
        for to in ["to = [\"t@acme.test\"]", "to = \"lead\"\n[forms.contact]\n"] {
            let table = settings(to);
            let s: Settings = parse_settings(&table).unwrap();
            let mut tb = TemplatesBuilder::new();
            let lead = matches!(&s.to, To::One(x) if x == "lead");
            let defaults = if lead {
                templates::CONFIRMATION
            } else {
                templates::NOTIFICATION
            };
            for (part, d) in PARTS.iter().zip(defaults) {
                tb.add(part, None, d, part);
            }
            let t = tb.finish("http://leads.test").unwrap();
            let job = notify::sample_lead_job();
            let ctx = notify::context(&job, "http://leads.test");
            let subject = t.render("subject", Some("contact"), &ctx).unwrap();
            let text = t.render("text", Some("contact"), &ctx).unwrap();
            let html = t.render("html", Some("contact"), &ctx).unwrap();
            if lead {
                assert!(subject.contains("Jane"), "{subject}");
                assert!(text.starts_with("Hi Jane,"), "{text}");
                assert!(text.contains("Hello, we need 20 seats."), "{text}");
            } else {
                assert!(
                    subject.contains("Jane Doe") && subject.contains("Acme"),
                    "{subject}"
                );
                assert!(text.contains("Email: jane@example.com"), "{text}");
                assert!(text.contains("UTM source: google"), "{text}");
                assert!(text.contains(&ctx["dashboard_url"].as_str().unwrap().to_string()));
                assert!(html.contains("<td>jane@example.com</td>"), "{html}");
                let alert = notify::context(&notify::sample_alert_job(), "http://x");
                let s = t.render("subject", None, &alert).unwrap();
                assert!(s.contains("crm: 50% of 10 attempts failed"), "{s}");
                let dead = notify::context(&notify::sample_dead_letter_job(), "http://x");
                let s = t.render("subject", None, &dead).unwrap();
                assert!(s.contains("Delivery to crm failed"), "{s}");
            }
        }
    }

    #[test]
    fn line_breaks_and_control_characters_never_reach_a_header() {
        for to in [
            "to = [\"team@acme.test\"]",
            "to = \"lead\"\n[forms.contact]\n",
        ] {
            let table = settings(to);
            let env = |_: &str| None;
            let email = email_connector(&BuildContext {
                destination: "mail",
                settings: &table,
                env: &env,
                timeout: Duration::from_secs(2),
                public_url: "http://leads.test",
            })
            .unwrap();
            let mut job = notify::sample_lead_job();
            job.event.contact.first_name = Some("Jane\r\nBcc: evil@attacker.test\r\n".into());
            job.event.contact.last_name = Some("D\u{0}o\u{1b}e\u{2028}\nX-Evil: 1".into());
            job.event.contact.company = Some("Acme\rInc\n".into());
            let m = email.message(&job).expect("a message");
            let raw = String::from_utf8(m.formatted()).unwrap();
            let head = &raw[..raw.find("\r\n\r\n").unwrap()];
            for line in head.split("\r\n") {
                assert!(
                    !line.starts_with("Bcc") && !line.starts_with("X-Evil"),
                    "{line} in\n{head}"
                );
                assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\0'));
            }
        }
        assert_eq!(header_text(" a\r\n\tb\u{0}\u{85}c\u{2029} "), "a b c");
    }

    #[test]
    fn preview_shows_the_message_without_sending() {
        let c = build_with("to = [\"team@acme.test\"]").unwrap();
        let p = c.preview(&notify::sample_lead_job()).unwrap().unwrap();
        assert_eq!(p["to"], "team@acme.test");
        assert!(p["subject"].as_str().unwrap().contains("Jane Doe"), "{p}");
        assert!(
            p["text"]
                .as_str()
                .unwrap()
                .contains("Email: jane@example.com"),
            "{p}"
        );
        // To the lead: an event without an email cannot be previewed.
        let c = build_with("to = \"lead\"\n[forms.contact]\n").unwrap();
        let mut job = notify::sample_lead_job();
        job.event.contact.email = None;
        job.contact = None;
        let err = c.preview(&job).unwrap().unwrap_err();
        assert!(err.contains("no valid email"), "{err}");
    }
}
