//! The `sms` connector against the fake Twilio: team texts and texts to the
//! lead only with SMS consent, 429 retried, an invalid number dead-lettered
//! and copied to the failed sheet.

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::google::FakeGoogle;
use leadrelay_fakes::twilio::{FakeTwilio, TwilioConfig};
use serde_json::json;

use crate::notify_support::{
    GOOGLE_KEY_ENV, PUBLIC_URL, assert_copied_to_failed_sheet, config, failed_sheet, google_config,
    post, settled,
};
use crate::support::TestApp;

const TEAM_NUMBER: &str = "+14155550100";

fn destinations(twilio: &FakeTwilio) -> String {
    format!(
        r#"
[destinations.sms_team]
connector = "sms"
account_sid_env = "TWILIO_ACCOUNT_SID"
auth_token_env = "TWILIO_AUTH_TOKEN"
from = "{from}"
to = ["{TEAM_NUMBER}"]
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]

[destinations.sms_lead]
connector = "sms"
account_sid_env = "TWILIO_ACCOUNT_SID"
auth_token_env = "TWILIO_AUTH_TOKEN"
from = "{from}"
to = "lead"
base_url = "{base}"
allow_private_networks = true
# The person's SMS consent is what allows texting them.
purposes = ["sms"]
"#,
        from = TwilioConfig::DEFAULT_FROM,
        base = twilio.base_url()
    )
}

async fn app(twilio: &FakeTwilio, google: &FakeGoogle, routes: &str) -> TestApp {
    let rest = format!("{}{}{routes}", destinations(twilio), failed_sheet(google));
    TestApp::builder(&config(&["failed_sheet"], &rest))
        .env("TWILIO_ACCOUNT_SID", TwilioConfig::DEFAULT_ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", TwilioConfig::DEFAULT_AUTH_TOKEN)
        .env(GOOGLE_KEY_ENV, &google.service_account_json())
        .start()
        .await
}

#[tokio::test]
async fn team_texts_and_texts_to_the_lead_only_with_sms_consent() {
    let twilio = FakeTwilio::start(TwilioConfig::default()).await.unwrap();
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let app = app(
        &twilio,
        &google,
        "\n[[routes]]\nname = \"all\"\ndestinations = [\"sms_team\", \"sms_lead\"]\n",
    )
    .await;

    let with = post(
        &app,
        "contact",
        &json!({"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima",
            "phone": "(415) 555-0123", "consent": "yes", "sms_consent": "yes"}),
    )
    .await;
    let without = post(
        &app,
        "contact",
        &json!({"email": "bo@example.com", "first_name": "Bo",
            "phone": "+1 415 555 0199", "consent": "yes"}),
    )
    .await;
    for id in [with, without] {
        let d = settled(&app, id, "sms_team").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    let to_lead = settled(&app, with, "sms_lead").await;
    assert_eq!(
        to_lead.state,
        DeliveryState::Delivered,
        "{:?}",
        to_lead.reason
    );
    let skipped = settled(&app, without, "sms_lead").await;
    assert_eq!(skipped.state, DeliveryState::Skipped);
    assert!(
        skipped.reason.as_deref().unwrap().contains("sms"),
        "{:?}",
        skipped.reason
    );

    let team = twilio.messages_to(TEAM_NUMBER);
    assert_eq!(team.len(), 2);
    let ana = team.iter().find(|m| m.body.contains("Ana Lima")).unwrap();
    assert_eq!(ana.from.as_deref(), Some(TwilioConfig::DEFAULT_FROM));
    assert_eq!(
        ana.body,
        format!(
            "New lead.created: Ana Lima +14155550123 ana@example.com {PUBLIC_URL}/ui/leads/{with}"
        )
    );
    let lead = twilio.messages_to("+14155550123");
    assert_eq!(lead.len(), 1, "the lead with SMS consent");
    assert!(
        lead[0].body.starts_with("Hi Ana, thank you"),
        "{}",
        lead[0].body
    );
    assert!(lead[0].body.ends_with("Reply STOP to opt out."));
    assert!(
        twilio.messages_to("+14155550199").is_empty(),
        "nothing to the lead without SMS consent"
    );
    let log = serde_json::to_string(&app.store.attempts(to_lead.id).await.unwrap()).unwrap();
    assert!(!log.contains(TwilioConfig::DEFAULT_AUTH_TOKEN));
}

#[tokio::test]
async fn too_many_requests_is_retried_and_an_invalid_number_dead_lettered() {
    let twilio = FakeTwilio::start(TwilioConfig::default()).await.unwrap();
    let google = FakeGoogle::start(google_config()).await.unwrap();
    let app = app(
        &twilio,
        &google,
        "\n[[routes]]\nname = \"all\"\ndestinations = [\"sms_lead\"]\n",
    )
    .await;

    twilio.faults().push(
        Fault::Status {
            status: 429,
            body: r#"{"code":20429,"message":"Too Many Requests","more_info":"https://www.twilio.com/docs/errors/20429","status":429}"#.into(),
            headers: vec![],
        },
        1,
    );
    let id = post(
        &app,
        "contact",
        &json!({"email": "cy@example.com", "first_name": "Cy", "phone": "+14155550177",
            "consent": "yes", "sms_consent": "yes"}),
    )
    .await;
    let d = settled(&app, id, "sms_lead").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].outcome, "throttled");
    assert_eq!(twilio.messages_to("+14155550177").len(), 1);

    // Twilio refuses the number (21211): permanent.
    twilio.faults().push(
        Fault::Status {
            status: 400,
            body: r#"{"code":21211,"message":"Invalid 'To' Phone Number: +14155550188","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#.into(),
            headers: vec![],
        },
        1,
    );
    let id = post(
        &app,
        "contact",
        &json!({"email": "dee@example.com", "first_name": "Dee", "phone": "+14155550188",
            "consent": "yes", "sms_consent": "yes"}),
    )
    .await;
    let dead = settled(&app, id, "sms_lead").await;
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(dead.last_status, Some(400));
    let reason = dead.reason.clone().unwrap();
    assert!(reason.contains("Twilio 21211"), "{reason}");
    assert!(
        !reason.contains("+14155550188"),
        "phone numbers are redacted: {reason}"
    );
    assert_copied_to_failed_sheet(&google, &dead, "dee@example.com").await;
}
