use chrono::Utc;
use leadrelay_model::{ContactData, EmailAddress, Event, EventType, Origin};
use serde_json::json;

use super::*;
use crate::store::{Delivery, DeliveryState};

fn job(event_type: &str, data: Value) -> DeliveryJob {
    let now = Utc::now();
    let event = Event {
        id: leadrelay_model::new_id(),
        event_type: EventType::parse(event_type).unwrap(),
        origin: Origin::form("contact"),
        received_at: now,
        occurred_at: now,
        contact: ContactData {
            email: Some(EmailAddress::parse("jane@acme.io").unwrap()),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
            ..Default::default()
        },
        contact_id: None,
        data: data.as_object().cloned().unwrap_or_default(),
        attribution: Default::default(),
        consent: vec![],
        ip_hash: None,
        raw: Default::default(),
        spam: false,
        idempotency_key: None,
        external_id: None,
        vendor_refs: vec![],
        changes: vec![],
        playbooks: vec![],
    };
    DeliveryJob {
        delivery: Delivery {
            id: leadrelay_model::new_id(),
            event_id: event.id,
            destination: "crm".into(),
            contact_key: event.contact_key(),
            state: DeliveryState::InFlight,
            attempts: 0,
            failures: 0,
            created_at: now,
            updated_at: now,
            next_attempt_at: None,
            lease_id: None,
            last_status: None,
            last_error: None,
            reason: None,
            finished_at: None,
            replay_of: None,
            replayed_by: None,
            overrides: None,
        },
        event,
        contact: None,
        remote_ids: vec![],
        owner: None,
    }
}

#[derive(Deserialize)]
struct Nothing {}

fn settings(text: &str) -> CommonSettings {
    let t: toml::Table = toml::from_str(text).unwrap();
    let (c, Nothing {}) = parse_split::<Nothing>(&t).unwrap_or_else(|p| panic!("{p:?}"));
    c
}

#[test]
fn new_leads_write_company_note_and_optional_deal_and_task() {
    let s = settings("");
    let p = Plan::of(&job("lead.created", json!({"message": "hi"})), &s).unwrap();
    assert!(p.company && p.note && !p.task);
    assert_eq!(p.deal, DealStep::None);
    let p = Plan::of(&job("form.submitted", json!({})), &s).unwrap();
    assert!(!p.note, "no message, no note");

    let s = settings(
        "deals = true\nfollow_up_task = true\ndeal_stage = \"qualified\"\ncompanies = false",
    );
    let p = Plan::of(&job("lead.created", json!({})), &s).unwrap();
    assert!(p.task && !p.company);
    assert_eq!(
        p.deal,
        DealStep::Ensure {
            stage: Some("qualified".into())
        }
    );
}

#[test]
fn replies_meetings_and_stage_changes() {
    let s = settings("meeting_deal_stage = 3\nreply_as = \"task\"\n[stage_map]\nWon = 5\n");
    let p = Plan::of(&job("reply.received", json!({})), &s).unwrap();
    assert!(p.task && !p.note);
    let p = Plan::of(&job("meeting.booked", json!({})), &s).unwrap();
    assert!(p.meeting);
    assert_eq!(
        p.deal,
        DealStep::Move {
            stage: "3".into(),
            create: false
        }
    );
    let p = Plan::of(&job("deal.stage_changed", json!({"stage": "won"})), &s).unwrap();
    assert_eq!(
        p.deal,
        DealStep::Move {
            stage: "5".into(),
            create: true
        },
        "stage_map is case-insensitive"
    );
    let p = Plan::of(
        &job("deal.stage_changed", json!({"stage": "custom-id"})),
        &s,
    )
    .unwrap();
    assert_eq!(
        p.deal,
        DealStep::Move {
            stage: "custom-id".into(),
            create: true
        },
        "unmapped stages pass as ids"
    );
    let e = Plan::of(&job("deal.stage_changed", json!({})), &s).unwrap_err();
    assert!(e.contains("without a stage"), "{e}");
    let p = Plan::of(&job("contact.updated", json!({})), &s).unwrap();
    assert_eq!(p.kind, EventKind::Update);
    assert!(!p.note && !p.task && !p.meeting && !p.company);
}

#[test]
fn activity_text_per_event_type() {
    let s = settings("follow_up_due = \"2h\"");
    let j = job("lead.created", json!({"message": "  Call me  "}));
    let a = Activity::of(&j, &s);
    assert_eq!(a.subject, "Follow up with Jane Doe");
    assert_eq!(a.body, "Call me");
    assert_eq!(a.due_at, j.event.occurred_at + chrono::Duration::hours(2));

    let a = Activity::of(&job("reply.received", json!({"reply_text": "Yes!"})), &s);
    assert_eq!(
        (a.subject.as_str(), a.body.as_str()),
        ("Reply from Jane Doe", "Yes!")
    );
    let a = Activity::of(&job("reply.received", json!({})), &s);
    assert!(a.body.contains("replied"), "{}", a.body);

    let a = Activity::of(
        &job(
            "meeting.booked",
            json!({"meeting_name": "Demo", "start_time": "2030-01-02T15:00:00Z", "location": "Zoom"}),
        ),
        &s,
    );
    assert_eq!(a.subject, "Demo booked with Jane Doe");
    assert_eq!(
        a.start_at.map(|t| t.to_rfc3339()),
        Some("2030-01-02T15:00:00+00:00".into())
    );
    assert!(
        a.body.contains("Starts: 2030-01-02 15:00 UTC") && a.body.contains("Location: Zoom"),
        "{}",
        a.body
    );
    let mut ctx = json!({});
    a.into_context(&mut ctx);
    assert_eq!(ctx["activity"]["start_at"], "2030-01-02T15:00:00.000Z");
    assert_eq!(ctx["activity"]["subject"], "Demo booked with Jane Doe");
}

#[test]
fn settings_are_split_and_checked() {
    #[derive(Deserialize, Debug)]
    struct Own {
        #[allow(dead_code)]
        token_env: String,
    }
    let t: toml::Table = toml::from_str(
        "token_env = \"X\"\ndeals = \"maybe\"\nmystery = 1\nowner_id = 42\n[mapping.contact]\nfirstname = false",
    )
    .unwrap();
    let errs = parse_split::<Own>(&t).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"deals"), "{errs:?}");
    assert!(paths.contains(&"mystery"), "{errs:?}");
    let t: toml::Table = toml::from_str("token_env = \"X\"\nowner_id = 42").unwrap();
    let (c, _) = parse_split::<Own>(&t).unwrap();
    assert_eq!(c.owner_id.as_deref(), Some("42"), "numbers read as ids");
    assert!(c.companies && c.notes && !c.deals);
    assert!(base_url(Some("ftp://x"), "https://a").is_err());
    assert_eq!(
        base_url(Some("http://127.0.0.1:9/"), "https://a").unwrap(),
        "http://127.0.0.1:9"
    );
}

#[tokio::test]
async fn keyed_locks_serialise_one_key() {
    let locks = std::sync::Arc::new(KeyedLocks::default());
    let g = locks.lock("org:acme").await;
    use futures::FutureExt;
    assert!(
        locks.lock("org:acme").now_or_never().is_none(),
        "same key waits"
    );
    assert!(
        locks.lock("org:beta").now_or_never().is_some(),
        "other keys do not"
    );
    drop(g);
    assert!(locks.lock("org:acme").now_or_never().is_some());
}

#[test]
fn only_the_privacy_erase_makes_erase_requests() {
    let records = json!({"records": [{"object": "contact", "id": "123"}]});
    // The same body from a form, a webhook or the API deletes nothing.
    let mut j = job("privacy.erase", records.clone());
    for origin in [
        Origin::form("contact"),
        Origin::source("generic"),
        Origin::api("backend"),
        Origin::system("alerts"),
    ] {
        j.event.origin = origin;
        assert!(erase_targets(&j).is_none(), "{:?}", j.event.origin);
    }
    j.event.origin = Origin::system(crate::privacy::WITHDRAW_ORIGIN);
    assert_eq!(
        erase_targets(&j),
        Some(Ok(vec![EraseTarget {
            object: "contact".into(),
            id: "123".into()
        }]))
    );
}

#[test]
fn a_booking_is_keyed_by_its_own_vendor_id() {
    let r = |system: &str, object: &str, id: &str| leadrelay_model::VendorRef {
        system: system.into(),
        object: object.into(),
        id: id.into(),
    };
    let mut j = job("meeting.booked", json!({}));
    assert_eq!(meeting_key(&j.event), None, "no booking id, no key");
    // Calendly: the invitee (one person's booking) before the event, which
    // several invitees share.
    j.event.vendor_refs = vec![
        r(
            "calendly",
            "scheduled_event",
            "https://api.calendly.com/scheduled_events/E1",
        ),
        r(
            "calendly",
            "invitee",
            "https://api.calendly.com/scheduled_events/E1/invitees/I1",
        ),
    ];
    let key = meeting_key(&j.event).unwrap();
    assert!(key.starts_with("meeting:calendly:sha256:"), "{key}");
    j.event.vendor_refs.remove(1);
    assert_ne!(meeting_key(&j.event).unwrap(), key);
    j.event.vendor_refs = vec![
        r("salesloft", "meeting", "42"),
        r("salesloft", "person", "7"),
    ];
    assert_eq!(
        meeting_key(&j.event).as_deref(),
        Some("meeting:salesloft:42")
    );
    j.event.vendor_refs = vec![r("salesloft", "meeting", "  ")];
    assert_eq!(meeting_key(&j.event), None, "a blank id is no id");
}
