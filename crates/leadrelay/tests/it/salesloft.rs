//! The `salesloft` connector against the fake Salesloft, under the shared
//! enrollment model: 500 leads for 100 people make exactly 100 people and
//! 100 cadence memberships; an expired access token is refreshed and the
//! rotated refresh token kept in the store; a revoked grant dead-letters
//! with the reason; a lost create answer makes no second person; the
//! policies, the suppression list, the overflow, 429s and the exit.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::salesloft::{FakeSalesloft, SalesloftConfig};

use crate::enroll_support::{
    assert_all, assert_overflow_drains, assert_suppressed, book_meeting, builder as enroll_builder,
    five_hundred_leads, lead, statuses,
};
use crate::notify_support::settled;
use crate::support::{Builder, TestApp};

const CADENCE: u64 = SalesloftConfig::DEFAULT_CADENCE;
const OTHER: u64 = SalesloftConfig::OTHER_CADENCE;

async fn app(salesloft: &FakeSalesloft, extra: &str) -> TestApp {
    builder(salesloft, extra).start().await
}

fn builder(salesloft: &FakeSalesloft, extra: &str) -> Builder {
    let destination = format!(
        r#"connector = "salesloft"
cadence_id = {CADENCE}
base_url = "{base}"
token_url = "{token}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "200/1s"
{extra}"#,
        base = salesloft.base_url(),
        token = salesloft.token_url(),
    );
    enroll_builder(
        &destination,
        &[
            ("SALESLOFT_CLIENT_ID", SalesloftConfig::DEFAULT_CLIENT_ID),
            (
                "SALESLOFT_CLIENT_SECRET",
                SalesloftConfig::DEFAULT_CLIENT_SECRET,
            ),
            (
                "SALESLOFT_REFRESH_TOKEN",
                SalesloftConfig::DEFAULT_REFRESH_TOKEN,
            ),
        ],
    )
}

fn fast_fake() -> SalesloftConfig {
    SalesloftConfig {
        cost_per_minute: 100_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn five_hundred_leads_for_a_hundred_people_make_a_hundred_memberships() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    salesloft.seed(OTHER, "busy@example.com");
    let app = app(&salesloft, "").await;
    let events = five_hundred_leads(&app).await;
    assert_all(&app, &events, DeliveryState::Delivered).await;
    assert_eq!(
        salesloft.people().len(),
        101,
        "one person each, plus the seeded one"
    );
    let on: Vec<_> = salesloft
        .memberships()
        .into_iter()
        .filter(|m| m.cadence_id == CADENCE)
        .collect();
    assert_eq!(on.len(), 100, "one membership each");
    let p = salesloft
        .people()
        .into_iter()
        .find(|p| p.email == "p7@example.com")
        .unwrap();
    assert_eq!(p.fields["first_name"], "P7");
    assert_eq!(p.fields["person_company_name"], "Acme");
    assert_eq!(salesloft.refreshes(), 1, "one access token for everything");

    for who in ["busy@example.com", SalesloftConfig::DO_NOT_CONTACT] {
        let id = lead(&app, who).await;
        let d = settled(&app, id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Skipped, "{who}: {:?}", d.reason);
    }
    assert_eq!(salesloft.cadence_emails(CADENCE).len(), 100);
}

/// The access token expires: one refresh, and the rotated refresh token is
/// what the store keeps (a restart would use it). Then the user revokes
/// the app: the delivery dead-letters with the reason.
#[tokio::test]
async fn tokens_are_refreshed_kept_and_a_revoked_grant_dead_letters() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    let app = app(&salesloft, "").await;
    let id = lead(&app, "first@example.com").await;
    assert_eq!(
        settled(&app, id, "outbound").await.state,
        DeliveryState::Delivered
    );
    salesloft.expire_tokens();
    let id = lead(&app, "second@example.com").await;
    assert_eq!(
        settled(&app, id, "outbound").await.state,
        DeliveryState::Delivered
    );
    assert_eq!(salesloft.refreshes(), 2);
    let stored = app
        .store
        .kv_get("oauth:salesloft:outbound")
        .await
        .unwrap()
        .expect("the rotated refresh token is stored");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored["refresh_token"].as_str(),
        salesloft.current_refresh_token().as_deref()
    );
    assert_ne!(
        stored["refresh_token"].as_str(),
        Some(SalesloftConfig::DEFAULT_REFRESH_TOKEN)
    );

    // A restart: the env var's token is used up; the stored one works.
    let stopped = app.stop().await;
    let app = builder(&salesloft, "").resume(stopped).start().await;
    salesloft.expire_tokens();
    let id = lead(&app, "third@example.com").await;
    assert_eq!(
        settled(&app, id, "outbound").await.state,
        DeliveryState::Delivered
    );
    assert_eq!(salesloft.refreshes(), 3);

    salesloft.revoke();
    let id = lead(&app, "fourth@example.com").await;
    let d = settled(&app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Dead);
    let reason = d.reason.unwrap_or_default();
    assert!(reason.contains("refused the refresh token"), "{reason}");
    assert!(reason.contains("invalid_grant"), "{reason}");
    assert!(
        !salesloft
            .cadence_emails(CADENCE)
            .contains(&"fourth@example.com".to_string())
    );
}

/// The create is made but its answer lost: the retry's create gets 422
/// "has already been taken", which is read as found.
#[tokio::test]
async fn a_lost_create_answer_makes_no_second_person() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    let app = app(&salesloft, "timeout = \"1s\"").await;
    // Token and people search answer at once; the create answers late.
    salesloft.faults().push(Fault::Delay(Duration::ZERO), 2);
    salesloft
        .faults()
        .push(Fault::DelayAnswer(Duration::from_secs(3)), 1);
    let id = lead(&app, "lost@example.com").await;
    let d = settled(&app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(salesloft.people().len(), 1, "no duplicate person");
    assert_eq!(salesloft.cadence_emails(CADENCE), ["lost@example.com"]);
}

#[tokio::test]
async fn an_unsubscribed_person_is_never_enrolled_and_the_overflow_drains() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    let app = app(
        &salesloft,
        "[destinations.outbound.enrollment]\nadd_limit = \"3/2s\"",
    )
    .await;
    assert_suppressed(&app, "sue@example.com").await;
    assert_overflow_drains(&app).await;
    assert!(
        salesloft
            .people()
            .iter()
            .all(|p| p.email != "sue@example.com")
    );
    assert_eq!(salesloft.cadence_emails(CADENCE).len(), 7);
}

#[tokio::test]
async fn move_deletes_the_other_membership_and_a_429_is_honoured() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    salesloft.seed(OTHER, "mover@example.com");
    let app = app(
        &salesloft,
        "[destinations.outbound.enrollment]\nalready_enrolled = \"move\"",
    )
    .await;
    let id = lead(&app, "mover@example.com").await;
    let d = settled(&app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert!(salesloft.cadence_emails(OTHER).is_empty());
    assert_eq!(salesloft.cadence_emails(CADENCE), ["mover@example.com"]);

    salesloft.faults().push(
        Fault::Status {
            status: 429,
            body: r#"{"error": "Rate limit exceeded: 600 cost per minute"}"#.into(),
            headers: vec![
                ("retry-after".into(), "1".into()),
                ("x-ratelimit-remaining-minute".into(), "0".into()),
            ],
        },
        1,
    );
    let id = lead(&app, "bo@example.com").await;
    let s = statuses(&app, id).await;
    assert_eq!(s.first(), Some(&Some(429)), "{s:?}");
    assert_eq!(salesloft.cadence_emails(CADENCE).len(), 2);
}

#[tokio::test]
async fn a_booked_meeting_takes_them_off_every_cadence_once() {
    let salesloft = FakeSalesloft::start(fast_fake()).await.unwrap();
    let app = app(&salesloft, "").await;
    for who in ["ana@example.com", "keep@example.com"] {
        let id = lead(&app, who).await;
        assert_eq!(
            settled(&app, id, "outbound").await.state,
            DeliveryState::Delivered
        );
    }
    book_meeting(&app, "ana@example.com").await;
    book_meeting(&app, "ana@example.com").await;
    assert_eq!(salesloft.cadence_emails(CADENCE), ["keep@example.com"]);
    assert_eq!(salesloft.people().len(), 2, "an exit never creates anybody");
}
