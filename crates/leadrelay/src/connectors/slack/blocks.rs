//! The Block Kit summary of an event, within Slack's limits: a header
//! (plain text ≤ 150 characters), up to 10 section fields (≤ 2000 each),
//! section text ≤ 3000, context ≤ 10 elements, and a button (text ≤ 75,
//! URL ≤ 3000) linking to the lead in the dashboard.

use serde_json::{Value, json};

use super::escape;
use crate::connectors::DeliveryJob;
use crate::connectors::notify::{self, MessageKind};

/// Cuts `s` to at most `max` characters, ending with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn items(ctx: &Value, key: &str) -> Vec<(String, String)> {
    ctx.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    Some((
                        f.get("label")?.as_str()?.to_string(),
                        f.get("value")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({"type": "mrkdwn", "text": truncate(text, max)})
}

/// A field `*Label*\nvalue` (values escaped; emails and URLs stay clickable).
fn field(label: &str, value: &str) -> Value {
    mrkdwn(&format!("*{}*\n{}", escape(label), escape(value)), 2000)
}

/// The actions block: the link to the lead in the dashboard and, when
/// asked, the rating buttons (value `<contact id>:<rating>`).
fn buttons(ctx: &Value, rate: Option<uuid::Uuid>) -> Option<Value> {
    let mut elements = Vec::new();
    if let Some(url) = ctx
        .get("dashboard_url")
        .and_then(Value::as_str)
        .filter(|u| u.len() <= 3000)
    {
        elements.push(json!({
            "type": "button",
            "text": {"type": "plain_text", "text": "Open in leadrelay"},
            "url": url,
            "action_id": "open_lead",
        }));
    }
    if let Some(contact) = rate {
        for (rating, text, style) in crate::feedback::slack::BUTTONS {
            let mut b = json!({
                "type": "button",
                "text": {"type": "plain_text", "text": text},
                "action_id": format!("{}{rating}", crate::feedback::slack::ACTION_PREFIX),
                "value": format!("{contact}:{rating}"),
            });
            if let Some(style) = style {
                b["style"] = json!(style);
            }
            elements.push(b);
        }
    }
    (!elements.is_empty()).then(|| json!({"type": "actions", "elements": elements}))
}

/// The blocks for one job. `text` is the rendered (escaped) message text.
/// With `rating_buttons`, messages about a person carry the rating buttons.
pub fn message(job: &DeliveryJob, ctx: &Value, text: &str, rating_buttons: bool) -> Vec<Value> {
    let mut blocks = Vec::new();
    match notify::message_kind(job) {
        MessageKind::Alert => {
            blocks.push(json!({"type": "section", "text": mrkdwn(text, 3000)}));
            let destination = ctx
                .pointer("/alert/destination")
                .and_then(Value::as_str)
                .unwrap_or("");
            let alert = ctx
                .pointer("/alert/alert")
                .and_then(Value::as_str)
                .unwrap_or("");
            blocks.push(json!({"type": "context", "elements": [
                mrkdwn(&format!("destination *{}* · {}", escape(destination), escape(alert)), 3000)
            ]}));
            // Issue alerts link to the page.
            if let Some(url) = ctx
                .pointer("/alert/url")
                .and_then(Value::as_str)
                .filter(|u| u.len() <= 3000)
            {
                blocks.push(json!({"type": "actions", "elements": [{
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open the issue"},
                    "url": url,
                    "action_id": "open_issue",
                }]}));
            }
            return blocks;
        }
        MessageKind::DeadLetter => {
            let destination = ctx
                .pointer("/dead_letter/destination")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let reason = ctx
                .pointer("/dead_letter/reason")
                .and_then(Value::as_str)
                .unwrap_or("");
            blocks.push(json!({"type": "header", "text": {"type": "plain_text",
                "text": truncate(&format!("Delivery to {destination} failed"), 150)}}));
            blocks.push(json!({"type": "section",
                "text": mrkdwn(&format!("*Reason*\n{}", escape(reason)), 3000)}));
        }
        MessageKind::Event => {
            let who = ctx
                .pointer("/contact/full_name")
                .or_else(|| ctx.pointer("/contact/email"))
                .or_else(|| ctx.pointer("/contact/phone"))
                .and_then(Value::as_str)
                .unwrap_or("unknown person");
            let title = format!("New {}: {who}", job.event.event_type.as_str());
            blocks.push(json!({"type": "header",
                "text": {"type": "plain_text", "text": truncate(&title, 150)}}));
        }
    }
    let contact: Vec<Value> = items(ctx, "contact_fields")
        .iter()
        .take(10)
        .map(|(l, v)| field(l, v))
        .collect();
    if !contact.is_empty() {
        blocks.push(json!({"type": "section", "fields": contact}));
    }
    let details: Vec<String> = items(ctx, "fields")
        .iter()
        .map(|(l, v)| format!("*{}*\n{}", escape(l), escape(v)))
        .collect();
    if !details.is_empty() {
        blocks.push(json!({"type": "section", "text": mrkdwn(&details.join("\n\n"), 3000)}));
    }
    let mut context: Vec<String> = Vec::new();
    let origin = format!(
        "{} {}",
        job.event.origin.kind.as_str(),
        job.event.origin.name
    );
    context.push(escape(&origin));
    for (l, v) in items(ctx, "attribution_fields").iter().take(8) {
        context.push(format!("{}: {}", escape(l), escape(v)));
    }
    blocks.push(json!({"type": "context",
        "elements": [mrkdwn(&context.join(" · "), 3000)]}));
    let rate = job
        .event
        .contact_id
        .filter(|_| rating_buttons && notify::message_kind(job) == MessageKind::Event);
    if let Some(b) = buttons(ctx, rate) {
        blocks.push(b);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_blocks_stay_within_limits() {
        let mut job = notify::sample_lead_job();
        job.event.contact.company = Some("A".repeat(5000));
        let ctx = notify::context(&job, "https://leads.test");
        let blocks = message(&job, &ctx, "New lead", false);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "New lead.created: Jane Doe");
        let fields = blocks[1]["fields"].as_array().unwrap();
        assert!(
            fields
                .iter()
                .all(|f| f["text"].as_str().unwrap().chars().count() <= 2000)
        );
        let last = blocks.last().unwrap();
        assert_eq!(last["type"], "actions");
        assert_eq!(
            last["elements"][0]["url"],
            format!("https://leads.test/ui/leads/{}", job.event.id)
        );
        assert_eq!(truncate("abcdef", 4), "abc…");
        // Rating buttons: one per rating, the contact and rating in the value.
        let contact = uuid::Uuid::now_v7();
        job.event.contact_id = Some(contact);
        let blocks = message(&job, &ctx, "New lead", true);
        let actions = &blocks.last().unwrap()["elements"];
        assert_eq!(actions.as_array().unwrap().len(), 4);
        assert_eq!(actions[1]["action_id"], "leadrelay_rate_5");
        assert_eq!(actions[1]["value"], format!("{contact}:5"));
        assert_eq!(actions[3]["style"], "danger");
    }

    #[test]
    fn alert_blocks_have_no_link() {
        let job = notify::sample_alert_job();
        let ctx = notify::context(&job, "https://leads.test");
        let blocks = message(&job, &ctx, "Alert: x", true);
        assert!(blocks.iter().all(|b| b["type"] != "actions"));
    }
}
