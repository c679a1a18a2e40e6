//! Across sequence tools: the `exit_sequences` action (a booked meeting, a
//! reply, or a `sequence.exit` event routed to the tools' destinations)
//! takes the person out of every active sequence of every tool, idempotently,
//! with one logged delivery per tool.

use leadrelay::store::DeliveryState;
use leadrelay_fakes::lemlist::{FakeLemlist, LemlistConfig};
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use serde_json::json;

use crate::notify_support::{config, post, settled};
use crate::support::TestApp;

#[tokio::test]
async fn a_booked_meeting_exits_every_sequence_in_every_tool() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let smartlead = FakeSmartlead::start(SmartleadConfig {
        per_minute: 600,
        ..Default::default()
    })
    .await
    .unwrap();
    let rest = format!(
        r#"
[forms.meeting]
event_type = "meeting.booked"
[forms.meeting.fields.email]
type = "email"
required = true

[destinations.lemlist]
connector = "lemlist"
campaign_id = "{lemlist_campaign}"
base_url = "{lemlist}"
allow_private_networks = true
purposes = ["crm"]

[destinations.smartlead]
connector = "smartlead"
campaign_id = {smartlead_campaign}
base_url = "{smartlead}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "8/1s"

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["lemlist", "smartlead"]

[[routes]]
name = "exit_sequences"
events = ["meeting.booked"]
destinations = ["lemlist", "smartlead"]
"#,
        lemlist_campaign = LemlistConfig::DEFAULT_CAMPAIGN,
        lemlist = lemlist.base_url(),
        smartlead_campaign = SmartleadConfig::DEFAULT_CAMPAIGN,
        smartlead = smartlead.base_url(),
    );
    let app = TestApp::builder(&config(&[], &rest))
        .env("LEMLIST_API_KEY", LemlistConfig::DEFAULT_API_KEY)
        .env("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)
        .start()
        .await;

    for who in ["ana@example.com", "keep@example.com"] {
        let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
        for dest in ["lemlist", "smartlead"] {
            let d = settled(&app, id, dest).await;
            assert_eq!(d.state, DeliveryState::Delivered, "{dest}: {:?}", d.reason);
        }
    }
    // Ana is also in another campaign of each tool (added in the apps).
    lemlist.seed_lead(LemlistConfig::OTHER_CAMPAIGN, "ana@example.com");
    // (Smartlead keeps one lead per person: seeding adds a second record
    // only for a new address, so Ana's other campaign there is skipped.)

    // Twice: the second exit finds nothing to do and is done as well.
    for _ in 0..2 {
        let resp = app
            .post_json("/v1/forms/meeting", &json!({"email": "ana@example.com"}))
            .await;
        assert_eq!(resp.status(), 202);
        let id: uuid::Uuid = resp.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for dest in ["lemlist", "smartlead"] {
            let d = settled(&app, id, dest).await;
            assert_eq!(d.state, DeliveryState::Delivered, "{dest}: {:?}", d.reason);
            assert!(!app.store.attempts(d.id).await.unwrap().is_empty());
        }
    }
    let lemlist_left: Vec<String> = lemlist.leads().into_iter().map(|l| l.email).collect();
    assert_eq!(lemlist_left, ["keep@example.com"]);
    assert_eq!(
        smartlead.campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN),
        ["keep@example.com"]
    );
    // An exit never enrolls: nobody was added by the meeting events.
    assert_eq!(smartlead.leads().len(), 2);
}
