//! The `apollo` connector against the fake Apollo, under the shared
//! enrollment model: 500 leads for 100 people make exactly 100 contacts and
//! 100 sequence memberships; a lost answer to a create makes no second
//! contact (Apollo itself would make one); the already-enrolled policies;
//! the suppression list; the add limit's overflow; 429s; the exit.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::apollo::{ApolloConfig, FakeApollo};
use leadrelay_fakes::common::Fault;

use crate::enroll_support::{
    app as enroll_app, assert_all, assert_overflow_drains, assert_suppressed, book_meeting,
    five_hundred_leads, lead, statuses,
};
use crate::notify_support::settled;
use crate::support::TestApp;

const SEQ: &str = ApolloConfig::DEFAULT_SEQUENCE;
const OTHER: &str = ApolloConfig::OTHER_SEQUENCE;

fn fast_fake() -> ApolloConfig {
    ApolloConfig {
        per_minute: 100_000,
        per_hour: 100_000,
        per_day: 100_000,
        ..Default::default()
    }
}

async fn app_with(apollo: &FakeApollo, key: &str, extra: &str) -> TestApp {
    let destination = format!(
        r#"connector = "apollo"
sequence_id = "{SEQ}"
email_account_id = "{account}"
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
rate_limit = "200/1s"
{extra}"#,
        account = ApolloConfig::DEFAULT_EMAIL_ACCOUNT,
        base = apollo.base_url()
    );
    enroll_app(&destination, &[("APOLLO_API_KEY", key)]).await
}

async fn app(apollo: &FakeApollo, extra: &str) -> TestApp {
    app_with(apollo, ApolloConfig::DEFAULT_API_KEY, extra).await
}

#[tokio::test]
async fn five_hundred_leads_for_a_hundred_people_make_a_hundred_contacts() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    apollo.seed(OTHER, "busy@example.com");
    let app = app(&apollo, "").await;
    let events = five_hundred_leads(&app).await;
    assert_all(&app, &events, DeliveryState::Delivered).await;
    let mut emails = apollo.sequence_emails(SEQ);
    emails.sort();
    emails.dedup();
    assert_eq!(emails.len(), 100);
    assert_eq!(apollo.memberships(SEQ), 100, "one membership per person");
    assert_eq!(
        apollo.contacts().len(),
        101,
        "one contact per person, plus the seeded one"
    );
    let c = apollo
        .contacts()
        .into_iter()
        .find(|c| c.email == "p7@example.com")
        .unwrap();
    assert_eq!(c.fields["first_name"], "P7");
    assert_eq!(c.fields["organization_name"], "Acme");

    // Active in another sequence (policy skip) and unsubscribed in Apollo:
    // not added.
    for who in ["busy@example.com", ApolloConfig::UNSUBSCRIBED] {
        let id = lead(&app, who).await;
        let d = settled(&app, id, "outbound").await;
        assert_eq!(d.state, DeliveryState::Skipped, "{who}: {:?}", d.reason);
    }
    assert_eq!(apollo.memberships(SEQ), 100);
}

/// The answer to the create is lost (leadrelay times out after Apollo made
/// the contact): the retry finds the contact instead of making a second
/// one, which Apollo would do without `run_dedupe`.
#[tokio::test]
async fn a_lost_create_answer_makes_no_second_contact() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    let app = app(&apollo, "timeout = \"1s\"").await;
    // The search answers at once; the create is made but answered late.
    apollo.faults().push(Fault::Delay(Duration::ZERO), 1);
    apollo
        .faults()
        .push(Fault::DelayAnswer(Duration::from_secs(3)), 1);
    let id = lead(&app, "lost@example.com").await;
    let d = settled(&app, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    let attempts = app.store.attempts(d.id).await.unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(
        attempts[0].error_class.as_deref(),
        Some("timeout"),
        "{attempts:?}"
    );
    assert_eq!(apollo.contacts().len(), 1, "no duplicate contact");
    assert_eq!(apollo.sequence_emails(SEQ), ["lost@example.com"]);
}

#[tokio::test]
async fn an_unsubscribed_person_is_never_enrolled_and_the_overflow_drains() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    let app = app(
        &apollo,
        "[destinations.outbound.enrollment]\nadd_limit = \"3/2s\"",
    )
    .await;
    assert_suppressed(&app, "sue@example.com").await;
    assert_overflow_drains(&app).await;
    assert!(
        apollo
            .contacts()
            .iter()
            .all(|c| c.email != "sue@example.com")
    );
    assert_eq!(apollo.sequence_emails(SEQ).len(), 7);
}

#[tokio::test]
async fn move_stops_the_other_sequence_and_queue_waits_for_it() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    apollo.seed(OTHER, "mover@example.com");
    apollo.seed(OTHER, "waiter@example.com");
    let mover = app(
        &apollo,
        "[destinations.outbound.enrollment]\nalready_enrolled = \"move\"",
    )
    .await;
    let id = lead(&mover, "mover@example.com").await;
    let d = settled(&mover, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(apollo.sequence_emails(OTHER), ["waiter@example.com"]);
    assert_eq!(apollo.sequence_emails(SEQ), ["mover@example.com"]);

    let queue = app(
        &apollo,
        "[destinations.outbound.enrollment]\nalready_enrolled = \"queue\"\nqueue_recheck = \"1s\"",
    )
    .await;
    let id = lead(&queue, "waiter@example.com").await;
    crate::support::eventually(
        "the delivery waits in the overflow queue",
        Duration::from_secs(20),
        || async {
            let d = queue
                .store
                .deliveries_for_event(id)
                .await
                .ok()?
                .into_iter()
                .find(|d| d.destination == "outbound")?;
            (d.state == DeliveryState::Scheduled
                && d.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("overflow: ") && e.contains("another sequence")))
            .then_some(())
        },
    )
    .await;
    apollo.finish(OTHER, "waiter@example.com");
    let d = settled(&queue, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Delivered, "{:?}", d.reason);
    assert_eq!(apollo.contacts().len(), 2, "nobody created twice");
}

#[tokio::test]
async fn a_429_is_honoured_and_a_plain_key_is_dead_lettered() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    let app = app(&apollo, "").await;
    apollo.faults().push(
        Fault::Status {
            status: 429,
            body: r#"{"message": "The maximum number of api calls allowed for api/v1/contacts/search is 50 times per minute."}"#.into(),
            headers: vec![
                ("retry-after".into(), "1".into()),
                ("x-minute-requests-left".into(), "0".into()),
                ("x-rate-limit-minute".into(), "50".into()),
            ],
        },
        1,
    );
    let id = lead(&app, "bo@example.com").await;
    let s = statuses(&app, id).await;
    assert_eq!(s.first(), Some(&Some(429)), "{s:?}");
    assert_eq!(s.last(), Some(&Some(200)), "{s:?}");
    assert_eq!(apollo.sequence_emails(SEQ), ["bo@example.com"]);

    let plain = app_with(&apollo, ApolloConfig::PLAIN_API_KEY, "").await;
    let id = lead(&plain, "pat@example.com").await;
    let d = settled(&plain, id, "outbound").await;
    assert_eq!(d.state, DeliveryState::Dead);
    let reason = d.reason.unwrap_or_default();
    assert!(reason.contains("master API key"), "{reason}");
}

#[tokio::test]
async fn a_booked_meeting_takes_them_out_of_every_sequence_once() {
    let apollo = FakeApollo::start(fast_fake()).await.unwrap();
    let app = app(&apollo, "").await;
    for who in ["ana@example.com", "keep@example.com"] {
        let id = lead(&app, who).await;
        assert_eq!(
            settled(&app, id, "outbound").await.state,
            DeliveryState::Delivered
        );
    }
    apollo.seed(OTHER, "ana@example.com");
    // Twice: the second exit finds nothing to do and is done as well.
    book_meeting(&app, "ana@example.com").await;
    book_meeting(&app, "ana@example.com").await;
    assert_eq!(apollo.sequence_emails(SEQ), ["keep@example.com"]);
    assert!(apollo.sequence_emails(OTHER).is_empty());
    // An exit never creates anybody.
    assert_eq!(apollo.contacts().len(), 3);
}
