//! A vendor's `sequence.completed` webhook and the memberships: lemlist
//! reports that a person finished a campaign (`campaignComplete`). A person
//! queued behind another campaign (`already_enrolled = "queue"`, rechecked
//! only hourly) is enrolled as soon as that campaign ends; when the campaign
//! that ends is the destination's own, the membership becomes `completed`.
//! A person waiting in the queue who books a meeting (the exit) is not
//! enrolled later: the exit cancels the waiting enrollment.

use leadrelay::store::{DeliveryState, MEMBERSHIP_ACTIVE, MEMBERSHIP_COMPLETED, MEMBERSHIP_QUEUED};
use leadrelay_fakes::lemlist::{FakeLemlist, LemlistConfig};
use serde_json::json;

use crate::notify_support::{WAIT, config, post, settled};
use crate::support::{TestApp, eventually};

const TOKEN: &str = "lemlist-hook-token-ended";

async fn campaign_complete(app: &TestApp, id: &str, email: &str, campaign: &str) {
    let body = json!({
        "_id": id, "type": "campaignComplete", "leadEmail": email,
        "leadId": format!("lea_{id}"), "campaignId": campaign,
        "campaignName": "Nurture", "createdAt": "2026-03-04T17:29:11.618Z",
    });
    let resp = app
        .client
        .post(app.url(&format!("/v1/hooks/lemlist?token={TOKEN}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

async fn state(app: &TestApp, email: &str) -> Option<(String, String)> {
    let ms = app
        .store
        .memberships(&format!("email:{email}"))
        .await
        .unwrap();
    ms.into_iter()
        .find(|m| m.destination == "onboarding")
        .map(|m| (m.state, m.last_change))
}

#[tokio::test]
async fn a_finished_sequence_releases_the_queue_and_completes_the_membership() {
    let lemlist = FakeLemlist::start(LemlistConfig::default()).await.unwrap();
    let rest = format!(
        r#"
[sources.lemlist]
kind = "lemlist"
token_env = "LEMLIST_HOOK_TOKEN"

[destinations.onboarding]
connector = "lemlist"
campaign_id = "{campaign}"
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
[destinations.onboarding.enrollment]
already_enrolled = "queue"
queue_recheck = "1h"

[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["onboarding"]

[[routes]]
name = "sequence_ended"
events = ["sequence.completed"]
destinations = ["onboarding"]

[forms.meeting]
event_type = "meeting.booked"
[forms.meeting.fields.email]
type = "email"
required = true

[[routes]]
name = "exit_sequences"
forms = ["meeting"]
destinations = ["onboarding"]
"#,
        campaign = LemlistConfig::DEFAULT_CAMPAIGN,
        base = lemlist.base_url(),
    );
    let app = TestApp::builder(&config(&[], &rest))
        .env("LEMLIST_API_KEY", LemlistConfig::DEFAULT_API_KEY)
        .env("LEMLIST_HOOK_TOKEN", TOKEN)
        .start()
        .await;

    // Dana is in the Nurture campaign already: queued, for an hour.
    let dana = "dana@example.com";
    lemlist.seed_lead(LemlistConfig::OTHER_CAMPAIGN, dana);
    let lead = post(&app, "contact", &json!({"email": dana, "consent": "yes"})).await;
    let queued = eventually("Dana waits in the overflow queue", WAIT, || async {
        let d = app
            .store
            .deliveries_for_event(lead)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.destination == "onboarding")?;
        (d.state == DeliveryState::Scheduled).then_some(d)
    })
    .await;
    let wait = queued.next_attempt_at.unwrap() - chrono::Utc::now();
    assert!(wait > chrono::Duration::minutes(50), "{wait:?}");
    assert_eq!(
        state(&app, dana).await.unwrap().0,
        MEMBERSHIP_QUEUED,
        "queued membership"
    );

    // Nurture ends for her in lemlist, which says so by webhook: she is
    // enrolled now, not in an hour.
    lemlist.remove_lead(LemlistConfig::OTHER_CAMPAIGN, dana);
    campaign_complete(&app, "act_1", dana, LemlistConfig::OTHER_CAMPAIGN).await;
    let d = settled(&app, lead, "onboarding").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let in_campaign: Vec<String> = lemlist
        .campaign_leads(LemlistConfig::DEFAULT_CAMPAIGN)
        .into_iter()
        .map(|l| l.email)
        .collect();
    assert_eq!(in_campaign, [dana]);
    assert_eq!(state(&app, dana).await.unwrap().0, MEMBERSHIP_ACTIVE);

    // Later she finishes the onboarding campaign itself: completed, without
    // a request to lemlist.
    let requests = lemlist.requests().count();
    campaign_complete(&app, "act_2", dana, LemlistConfig::DEFAULT_CAMPAIGN).await;
    let (s, change) = eventually("the membership completes", WAIT, || async {
        state(&app, dana)
            .await
            .filter(|(s, _)| s == MEMBERSHIP_COMPLETED)
    })
    .await;
    assert_eq!(s, MEMBERSHIP_COMPLETED);
    assert!(change.contains("lemlist ended the sequence"), "{change}");
    // Both webhooks were decided without a request to lemlist.
    let ended = eventually("both webhooks' deliveries end", WAIT, || async {
        let ds: Vec<_> = app
            .deliveries("onboarding")
            .await
            .into_iter()
            .filter(|d| d.event_id != lead)
            .collect();
        ds.iter().all(|d| !d.state.is_active()).then_some(ds)
    })
    .await;
    assert_eq!(ended.len(), 2);
    for d in &ended {
        assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    }
    assert_eq!(lemlist.requests().count(), requests);

    // Eli waits behind Nurture too, then books a meeting: the exit goes out
    // at once (not behind the waiting enrollment) and cancels it.
    let eli = "eli@example.com";
    lemlist.seed_lead(LemlistConfig::OTHER_CAMPAIGN, eli);
    let lead = post(&app, "contact", &json!({"email": eli, "consent": "yes"})).await;
    eventually("Eli waits in the overflow queue", WAIT, || async {
        (state(&app, eli).await?.0 == MEMBERSHIP_QUEUED).then_some(())
    })
    .await;
    let meeting = post(&app, "meeting", &json!({"email": eli})).await;
    let exit = settled(&app, meeting, "onboarding").await;
    assert_eq!(exit.state, DeliveryState::Delivered, "{:?}", exit.reason);
    let d = settled(&app, lead, "onboarding").await;
    assert_eq!(d.state, DeliveryState::Discarded);
    assert!(
        d.reason
            .as_deref()
            .unwrap_or_default()
            .contains("exit_sequences: meeting.booked"),
        "{:?}",
        d.reason
    );
    assert_eq!(state(&app, eli).await.unwrap().0, "exited");
    // lemlist took her out of Nurture, and never into onboarding.
    assert!(lemlist.leads().iter().all(|l| l.email != eli));
}
