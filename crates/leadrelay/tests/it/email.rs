//! The `email` connector against a real SMTP server (aiosmtpd): team
//! notifications and lead confirmations end to end from a form POST,
//! recipients, headers, both bodies and UTF-8 names; SMTP 4xx retried, 5xx
//! dead-lettered and copied to the failed sheet; alerts rendered as email.

use leadrelay::store::DeliveryState;
use leadrelay_fakes::google::FakeGoogle;
use serde_json::json;

use crate::notify_support::{
    GOOGLE_KEY_ENV, PUBLIC_URL, SmtpServer, assert_copied_to_failed_sheet, config, failed_sheet,
    google_config, post, settled,
};
use crate::support::TestApp;

fn email_destinations(port: u16) -> String {
    format!(
        r#"
[destinations.team_email]
connector = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Acme Leads <leads@acme.test>"
to = ["sales@acme.test", "Ops Team <ops@acme.test>"]
purposes = ["crm"]

[destinations.confirm]
connector = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Acme <hello@acme.test>"
to = "lead"
reply_to = "sales@acme.test"
purposes = ["crm"]
[destinations.confirm.forms.contact]
subject = "Danke, {{{{ contact.first_name }}}}!"

[[routes]]
name = "all"
destinations = ["team_email", "confirm"]
"#
    )
}

/// A name with line breaks (the form accepts any text) used to make lettre
/// panic while writing the header, leaving the delivery in flight for ever
/// and the person's later emails behind it. Now the name is folded onto one
/// line and both messages go out; nothing the person typed adds a header.
#[tokio::test]
async fn line_breaks_in_a_name_are_folded_not_injected() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&config(&[], &email_destinations(smtp.port))).await;
    let id = post(
        &app,
        "contact",
        &json!({
            "email": "sam@example.com", "first_name": "Sam\r\nBcc: evil@attacker.test",
            "last_name": "Stone\nX-Evil: 1", "company": "Acme", "consent": "yes",
        }),
    )
    .await;
    for dest in ["team_email", "confirm"] {
        let d = settled(&app, id, dest).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{dest}: {:?}", d.reason);
    }
    let messages = smtp.wait_for(2).await;
    for m in &messages {
        let rcpt = m["rcpt_tos"].to_string();
        assert!(!rcpt.contains("attacker"), "{rcpt}");
        let h = m["headers"].as_object().unwrap();
        assert!(!h.contains_key("bcc") && !h.contains_key("x-evil"), "{h:?}");
        for v in h.values() {
            let v = v.as_str().unwrap_or_default();
            assert!(!v.contains('\r') && !v.contains('\n'), "{v:?}");
        }
    }
    let to_team = messages
        .iter()
        .find(|m| m["rcpt_tos"][0] == "sales@acme.test")
        .expect("the team notification");
    // One Reply-To: the folded name (quoted: it holds `:` and `@`), then
    // the person's address.
    let reply_to = to_team["headers"]["reply-to"].as_str().unwrap();
    assert!(
        reply_to.starts_with("\"Sam Bcc: evil@attacker.test Stone")
            && reply_to.ends_with("\" <sam@example.com>"),
        "{reply_to}"
    );
}

#[tokio::test]
async fn team_notification_and_lead_confirmation_with_utf8_names() {
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn(&config(&[], &email_destinations(smtp.port))).await;
    let id = post(
        &app,
        "contact",
        &json!({
            "email": "jose@example.com", "first_name": "José", "last_name": "Müller",
            "company": "Ünïcode GmbH", "message": "Hallo,\n\"quotes\" & <tags>",
            "consent": "yes", "utm_source": "newsletter",
        }),
    )
    .await;
    let team = settled(&app, id, "team_email").await;
    let confirm = settled(&app, id, "confirm").await;
    assert_eq!(team.state, DeliveryState::Delivered, "{:?}", team.reason);
    assert_eq!(
        confirm.state,
        DeliveryState::Delivered,
        "{:?}",
        confirm.reason
    );

    let messages = smtp.wait_for(2).await;
    let to_team = messages
        .iter()
        .find(|m| m["rcpt_tos"][0] == "sales@acme.test")
        .expect("the team notification");
    assert_eq!(
        to_team["rcpt_tos"],
        json!(["sales@acme.test", "ops@acme.test"])
    );
    assert_eq!(to_team["mail_from"], "leads@acme.test");
    let h = &to_team["headers"];
    assert_eq!(h["from"], "Acme Leads <leads@acme.test>");
    assert_eq!(h["to"], "sales@acme.test, Ops Team <ops@acme.test>");
    assert_eq!(
        h["reply-to"], "José Müller <jose@example.com>",
        "a reply goes to the lead"
    );
    assert_eq!(
        h["subject"],
        "New lead.created (contact form): José Müller, Ünïcode GmbH"
    );
    assert_eq!(h["message-id"], format!("<{}@acme.test>", team.id));
    assert_eq!(h["auto-submitted"], "auto-generated");
    assert_eq!(to_team["content_type"], "multipart/alternative");
    let text = to_team["text"].as_str().unwrap().replace("\r\n", "\n");
    assert!(text.contains("Full name: José Müller"), "{text}");
    assert!(text.contains("Email: jose@example.com"), "{text}");
    assert!(
        text.contains("Message: Hallo,\n\"quotes\" & <tags>"),
        "{text}"
    );
    assert!(text.contains("UTM source: newsletter"), "{text}");
    assert!(
        text.contains(&format!("{PUBLIC_URL}/ui/leads/{id}")),
        "{text}"
    );
    let html = to_team["html"].as_str().unwrap();
    assert!(html.contains("<td>José Müller</td>"), "{html}");
    assert!(
        html.contains("&quot;quotes&quot; &amp; &lt;tags&gt;"),
        "values are HTML-escaped: {html}"
    );
    assert!(html.contains(&format!("href=\"{PUBLIC_URL}/ui/leads/{id}\"")));

    let to_lead = messages
        .iter()
        .find(|m| m["rcpt_tos"][0] == "jose@example.com")
        .expect("the confirmation");
    assert_eq!(to_lead["rcpt_tos"], json!(["jose@example.com"]));
    let h = &to_lead["headers"];
    assert_eq!(h["to"], "José Müller <jose@example.com>");
    assert_eq!(h["from"], "Acme <hello@acme.test>");
    assert_eq!(h["reply-to"], "sales@acme.test");
    assert_eq!(h["subject"], "Danke, José!", "the per-form subject");
    let text = to_lead["text"].as_str().unwrap();
    assert!(text.starts_with("Hi José,"), "{text}");
    assert!(
        text.contains("Acme"),
        "signed with the sender's name: {text}"
    );
    assert!(
        to_lead["html"]
            .as_str()
            .unwrap()
            .contains("<p>Hi José,</p>")
    );

    // The attempt log: SMTP, the server, its 250 reply.
    let attempts = app.store.attempts(team.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].method.as_deref(), Some("SMTP"));
    assert_eq!(
        attempts[0].url.as_deref(),
        Some(format!("smtp://127.0.0.1:{}", smtp.port).as_str())
    );
    assert_eq!(attempts[0].status, Some(250));

    // A form that does not enable confirmations: skipped with the reason.
    let other = post(
        &app,
        "demo",
        &json!({"email": "kim@example.com", "first_name": "Kim", "consent": "yes"}),
    )
    .await;
    let skipped = settled(&app, other, "confirm").await;
    assert_eq!(skipped.state, DeliveryState::Skipped);
    assert!(
        skipped
            .reason
            .as_deref()
            .unwrap()
            .contains("not enabled for form demo"),
        "{:?}",
        skipped.reason
    );
    assert_eq!(
        settled(&app, other, "team_email").await.state,
        DeliveryState::Delivered
    );
    assert_eq!(smtp.wait_for(3).await.len(), 3, "no confirmation for demo");
}

#[tokio::test]
async fn smtp_4xx_is_retried_and_5xx_dead_lettered_with_a_copy_in_the_failed_sheet() {
    let smtp = SmtpServer::start().await;
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let rest = format!(
        "{}\n{}\n[alerts]\nnotify = [\"team_email\"]\ndead_letters = 1\nmin_attempts = 1000\ncheck_interval = \"200ms\"\n",
        email_destinations(smtp.port),
        failed_sheet(&google)
    );
    let app = TestApp::builder(&config(&["failed_sheet"], &rest))
        .env(GOOGLE_KEY_ENV, &google.service_account_json())
        .start()
        .await;

    // 451: greylisted — retried, then delivered.
    smtp.fail_next("451 4.7.1 Greylisted, try again later", 1);
    let id = post(
        &app,
        "demo",
        &json!({"email": "grey@example.com", "consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "team_email").await;
    assert_eq!(d.state, DeliveryState::Delivered);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "retry");
    assert_eq!(attempts[0].status, Some(451));

    // 550: permanent — dead-lettered, copied to the failed sheet, alerted.
    // (Refused for the team as a whole, then for each address alone.)
    smtp.fail_next("550 5.1.1 Mailbox unavailable", 3);
    let id = post(
        &app,
        "demo",
        &json!({"email": "bounce@example.com", "consent": "yes"}),
    )
    .await;
    let dead = settled(&app, id, "team_email").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.last_status, Some(550));
    assert!(
        dead.reason.as_deref().unwrap().contains("550"),
        "{:?}",
        dead.reason
    );
    assert_eq!(
        app.store.attempts(dead.id).await.unwrap().len(),
        1,
        "5xx is not retried"
    );
    assert_copied_to_failed_sheet(&google, &dead, "bounce@example.com").await;

    // The dead letter raises an alert, which arrives as an email too.
    let alert =
        crate::support::eventually("the alert email", crate::notify_support::WAIT, || async {
            smtp.messages().into_iter().find(|m| {
                m["headers"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("[leadrelay] Alert: team_email"))
            })
        })
        .await;
    assert!(
        alert["text"].as_str().unwrap().contains("dead-lettered"),
        "{alert}"
    );
    assert!(
        alert["headers"].get("reply-to").is_none(),
        "alerts carry no personal data"
    );
}

#[tokio::test]
async fn one_refused_team_address_does_not_stop_the_others() {
    let smtp = SmtpServer::start().await;
    smtp.refuse("ops@acme.test");
    let app = TestApp::spawn(&config(&[], &email_destinations(smtp.port))).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "ana@example.com", "first_name": "Ana", "consent": "yes"}),
    )
    .await;
    let team = settled(&app, id, "team_email").await;
    assert_eq!(team.state, DeliveryState::Delivered, "{:?}", team.reason);
    let messages = smtp.wait_for(2).await;
    let to_team: Vec<_> = messages
        .iter()
        .filter(|m| m["headers"]["message-id"] == format!("<{}@acme.test>", team.id))
        .collect();
    assert_eq!(to_team.len(), 1, "{messages:?}");
    assert_eq!(to_team[0]["rcpt_tos"], json!(["sales@acme.test"]));
    // The refusal is visible in the attempt.
    let attempts = app.store.attempts(team.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "delivered");
    let excerpt = attempts[0].response_excerpt.clone().unwrap_or_default();
    assert!(
        excerpt.contains("sent to 1 of 2 recipients")
            && excerpt.contains("refused: ops@acme.test")
            && excerpt.contains("550"),
        "{excerpt}"
    );

    // Every address refused: the refusal stands (dead-lettered, not retried).
    smtp.refuse("sales@acme.test");
    let id = post(
        &app,
        "contact",
        &json!({"email": "ben@example.com", "consent": "yes"}),
    )
    .await;
    let dead = settled(&app, id, "team_email").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.last_status, Some(550));
}

#[tokio::test]
async fn issue_alert_email_links_to_the_issue_page() {
    let smtp = SmtpServer::start().await;
    let receiver = crate::support::Receiver::start().await;
    receiver.fail_next(400, "rejected: lifecycle stage", 1);
    let rest = crate::notify_support::issue_alert_config(
        &receiver,
        "ops_email",
        &format!(
            r#"
[destinations.ops_email]
connector = "email"
host = "127.0.0.1"
port = {}
tls = "none"
from = "leadrelay <alerts@acme.test>"
to = ["ops@acme.test"]
legal_basis = "legitimate_interest"
"#,
            smtp.port
        ),
    );
    let app = TestApp::spawn(&config(&[], &rest)).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "lee@example.com", "consent": "yes"}),
    )
    .await;
    assert_eq!(settled(&app, id, "hook").await.state, DeliveryState::Dead);
    let mail = crate::support::eventually(
        "the issue alert email",
        crate::notify_support::WAIT,
        || async {
            smtp.messages().into_iter().find(|m| {
                m["headers"]["subject"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("[leadrelay] Alert: hook: new issue"))
            })
        },
    )
    .await;
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("Open it: {PUBLIC_URL}/ui/issues/")),
        "{text}"
    );
    // The HTML part escapes `/` in the attribute (`&#x2f;`), which mail
    // clients decode like a browser.
    let html = mail["html"].as_str().unwrap().replace("&#x2f;", "/");
    assert!(
        html.contains(&format!("<a href=\"{PUBLIC_URL}/ui/issues/")),
        "{html}"
    );
    assert!(!text.contains("lee@example.com"), "no personal data");
}
