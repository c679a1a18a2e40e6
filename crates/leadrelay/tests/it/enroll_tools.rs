//! The Woodpecker, Reply.io and Mailshake destinations against their
//! fakes, through the real server, under the shared enrollment model: 500
//! leads for 100 people make exactly 100 vendor records and 100
//! memberships per tool (Woodpecker never sees two requests at once, even
//! with four workers); an unsubscribed person — on the tool's list or on
//! leadrelay's suppression list — is never enrolled; a lost answer makes no
//! duplicate; the add limit's overflow drains in the next window;
//! `exit_sequences` takes the person out.

use std::time::Duration;

use leadrelay::store::DeliveryState;
use leadrelay_fakes::common::Fault;
use leadrelay_fakes::mailshake::{FakeMailshake, MailshakeConfig};
use leadrelay_fakes::replyio::{FakeReply, ReplyConfig};
use leadrelay_fakes::woodpecker::{FakeWoodpecker, WoodpeckerConfig};
use serde_json::json;

use crate::notify_support::{config, post, settled};
use crate::support::TestApp;

enum Tool {
    Woodpecker(FakeWoodpecker),
    Reply(FakeReply),
    Mailshake(FakeMailshake),
}

const TOOLS: [&str; 3] = ["woodpecker", "replyio", "mailshake"];

impl Tool {
    async fn start(name: &str) -> Tool {
        match name {
            "woodpecker" => Tool::Woodpecker(
                FakeWoodpecker::start(WoodpeckerConfig::default())
                    .await
                    .unwrap(),
            ),
            "replyio" => Tool::Reply(
                FakeReply::start(ReplyConfig {
                    per_minute: 100_000,
                    per_hour: 100_000,
                    ..Default::default()
                })
                .await
                .unwrap(),
            ),
            _ => Tool::Mailshake(
                FakeMailshake::start(MailshakeConfig {
                    polls_to_finish: 2,
                    ..Default::default()
                })
                .await
                .unwrap(),
            ),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Tool::Woodpecker(_) => "woodpecker",
            Tool::Reply(_) => "replyio",
            Tool::Mailshake(_) => "mailshake",
        }
    }

    /// `[destinations.seq]` for this tool, with `extra` keys.
    fn destination(&self, extra: &str, enrollment: &str) -> String {
        let (base, campaign) = match self {
            Tool::Woodpecker(f) => (f.base_url(), WoodpeckerConfig::DEFAULT_CAMPAIGN),
            Tool::Reply(f) => (f.base_url(), ReplyConfig::DEFAULT_CAMPAIGN),
            Tool::Mailshake(f) => (
                format!("{}/2017-04-01", f.base_url()),
                MailshakeConfig::DEFAULT_CAMPAIGN,
            ),
        };
        let tool_keys = match self {
            Tool::Mailshake(_) => "status_poll_interval = \"20ms\"\n",
            Tool::Reply(_) => "rate_limit = \"1000/1s\"\n",
            Tool::Woodpecker(_) => "",
        };
        format!(
            r#"
[destinations.seq]
connector = "{name}"
campaign_id = {campaign}
base_url = "{base}"
allow_private_networks = true
purposes = ["crm"]
{tool_keys}{extra}
[destinations.seq.enrollment]
{enrollment}
"#,
            name = self.name()
        )
    }

    fn env(&self) -> (&'static str, &'static str) {
        match self {
            Tool::Woodpecker(_) => ("WOODPECKER_API_KEY", WoodpeckerConfig::DEFAULT_API_KEY),
            Tool::Reply(_) => ("REPLYIO_API_KEY", ReplyConfig::DEFAULT_API_KEY),
            Tool::Mailshake(_) => ("MAILSHAKE_API_KEY", MailshakeConfig::DEFAULT_API_KEY),
        }
    }

    /// The addresses active in the destination's campaign.
    fn active(&self) -> Vec<String> {
        let mut v = match self {
            Tool::Woodpecker(f) => f.active_in(WoodpeckerConfig::DEFAULT_CAMPAIGN),
            Tool::Reply(f) => f.active_in(ReplyConfig::DEFAULT_CAMPAIGN),
            Tool::Mailshake(f) => f.active_in(MailshakeConfig::DEFAULT_CAMPAIGN),
        };
        v.sort();
        v
    }

    /// Vendor records (prospects, contacts, recipients).
    fn records(&self) -> usize {
        match self {
            Tool::Woodpecker(f) => f.prospects().len(),
            Tool::Reply(f) => f.contacts().len(),
            Tool::Mailshake(f) => f.recipients().len(),
        }
    }

    fn requests(&self) -> Vec<leadrelay_fakes::common::LoggedRequest> {
        match self {
            Tool::Woodpecker(f) => f.requests().entries(),
            Tool::Reply(f) => f.requests().entries(),
            Tool::Mailshake(f) => f.requests().entries(),
        }
    }

    fn faults(&self) -> &leadrelay_fakes::common::Faults {
        match self {
            Tool::Woodpecker(f) => f.faults(),
            Tool::Reply(f) => f.faults(),
            Tool::Mailshake(f) => f.faults(),
        }
    }

    /// The address each fake lists as unsubscribed / blacklisted / opted out.
    fn vendor_unsubscribed(&self) -> &'static str {
        match self {
            Tool::Woodpecker(_) => WoodpeckerConfig::BLACKLISTED,
            Tool::Reply(_) => ReplyConfig::OPTED_OUT,
            Tool::Mailshake(_) => MailshakeConfig::UNSUBSCRIBED,
        }
    }
}

async fn app(tool: &Tool, extra: &str, enrollment: &str) -> TestApp {
    let rest = format!(
        r#"
[forms.unsubscribe]
event_type = "unsubscribed"
[forms.unsubscribe.fields.email]
type = "email"
required = true
[forms.meeting]
event_type = "meeting.booked"
[forms.meeting.fields.email]
type = "email"
required = true
{destination}
[[routes]]
name = "enroll"
forms = ["contact"]
destinations = ["seq"]

[[routes]]
name = "exit_sequences"
forms = ["meeting"]
destinations = ["seq"]
"#,
        destination = tool.destination(extra, enrollment)
    );
    let (var, key) = tool.env();
    TestApp::builder(&config(&[], &rest))
        .env(var, key)
        .start()
        .await
}

async fn five_hundred_leads_for_a_hundred_people(name: &str, extra: &str) -> Tool {
    let tool = Tool::start(name).await;
    let app = app(&tool, extra, "").await;
    let mut events = Vec::new();
    for round in 0..5 {
        let posts = (0..100).map(|i| {
            let body = json!({"email": format!("p{i}@example.com"), "first_name": format!("P{i}"),
                "company": "Acme", "consent": "yes", "message": format!("round {round}")});
            let app = &app;
            async move { post(app, "contact", &body).await }
        });
        events.extend(futures::future::join_all(posts).await);
    }
    for id in &events {
        let d = settled(&app, *id, "seq").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{name}: {:?}", d.reason);
    }
    let active = tool.active();
    assert_eq!(
        active.len(),
        100,
        "{name}: exactly one membership per person"
    );
    let mut unique = active.clone();
    unique.dedup();
    assert_eq!(unique.len(), 100, "{name}");
    assert_eq!(
        tool.records(),
        100,
        "{name}: exactly one vendor record per person"
    );
    tool
}

#[tokio::test]
async fn woodpecker_500_leads_for_100_people_one_request_at_a_time() {
    // Four workers: still never two requests at Woodpecker at once.
    let tool = five_hundred_leads_for_a_hundred_people("woodpecker", "concurrency = 4").await;
    let Tool::Woodpecker(f) = &tool else {
        unreachable!()
    };
    assert_eq!(f.overlapping(), 0, "Woodpecker saw concurrent requests");
    assert_eq!(f.dropped(), 0);
    let fields = &f
        .prospects()
        .into_iter()
        .find(|p| p.email == "p7@example.com")
        .unwrap()
        .fields;
    assert_eq!(fields["first_name"], "P7");
    assert_eq!(fields["company"], "Acme");
}

#[tokio::test]
async fn replyio_500_leads_for_100_people() {
    let tool = five_hundred_leads_for_a_hundred_people("replyio", "").await;
    let Tool::Reply(f) = &tool else {
        unreachable!()
    };
    let c = f
        .contacts()
        .into_iter()
        .find(|c| c.email == "p7@example.com")
        .unwrap();
    assert_eq!(c.fields["firstName"], "P7");
}

#[tokio::test]
async fn mailshake_500_leads_for_100_people() {
    let tool = five_hundred_leads_for_a_hundred_people("mailshake", "").await;
    let Tool::Mailshake(f) = &tool else {
        unreachable!()
    };
    let r = f
        .recipients()
        .into_iter()
        .find(|r| r.email == "p7@example.com")
        .unwrap();
    assert_eq!(r.full_name, "P7");
    assert_eq!(r.fields["company"], "Acme");
    // The asynchronous import was polled.
    assert!(
        tool.requests()
            .iter()
            .any(|r| r.path.ends_with("/recipients/add-status"))
    );
}

/// Unsubscribed people are never enrolled (the tool's own list: `skipped`
/// after asking; leadrelay's suppression list: `skipped` without a
/// request), and a booked meeting takes the person out, twice harmlessly.
#[tokio::test]
async fn unsubscribed_people_are_never_enrolled_and_a_meeting_exits() {
    for name in TOOLS {
        let tool = Tool::start(name).await;
        let app = app(&tool, "", "").await;
        let resp = app
            .post_json(
                "/v1/forms/unsubscribe",
                &json!({"email": "sue@example.com"}),
            )
            .await;
        assert_eq!(resp.status(), 202);
        for who in ["sue@example.com", tool.vendor_unsubscribed()] {
            let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
            let d = settled(&app, id, "seq").await;
            assert_eq!(
                d.state,
                DeliveryState::Skipped,
                "{name} {who}: {:?}",
                d.reason
            );
        }
        assert!(
            tool.requests().is_empty() || tool.requests().iter().all(|r| !r.path.contains("sue")),
            "{name}"
        );
        for who in ["ana@example.com", "keep@example.com"] {
            let id = post(&app, "contact", &json!({"email": who, "consent": "yes"})).await;
            let d = settled(&app, id, "seq").await;
            assert_eq!(d.state, DeliveryState::Delivered, "{name}: {:?}", d.reason);
        }
        assert_eq!(
            tool.active(),
            ["ana@example.com", "keep@example.com"],
            "{name}"
        );
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
            let d = settled(&app, id, "seq").await;
            assert_eq!(d.state, DeliveryState::Delivered, "{name}: {:?}", d.reason);
        }
        assert_eq!(
            tool.active(),
            ["keep@example.com"],
            "{name}: the exit removed Ana"
        );
        app.stop().await;
    }
}

/// The answer to the add is lost (the vendor did the work, the client
/// timed out): the retry finds the membership and makes no duplicate.
#[tokio::test]
async fn a_lost_answer_makes_no_duplicate() {
    for name in TOOLS {
        let tool = Tool::start(name).await;
        let app = app(&tool, "timeout = \"1s\"", "").await;
        // The first request answered late is the lookup or the add; every
        // answer of the first three is lost.
        tool.faults()
            .push(Fault::DelayAnswer(Duration::from_millis(1500)), 3);
        let id = post(
            &app,
            "contact",
            &json!({"email": "late@example.com", "first_name": "Late", "consent": "yes"}),
        )
        .await;
        let d = settled(&app, id, "seq").await;
        assert_eq!(d.state, DeliveryState::Delivered, "{name}: {:?}", d.reason);
        assert!(
            app.store.attempts(d.id).await.unwrap().len() >= 2,
            "{name}: the first attempt timed out"
        );
        assert_eq!(tool.active(), ["late@example.com"], "{name}");
        assert_eq!(tool.records(), 1, "{name}: no duplicate record");
        app.stop().await;
    }
}

/// The add limit's overflow waits (never dead-lettered) and goes out in
/// the next windows.
#[tokio::test]
async fn overflow_over_the_add_limit_drains_in_the_next_window() {
    for name in TOOLS {
        let tool = Tool::start(name).await;
        let app = app(&tool, "", "add_limit = \"2/2s\"").await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let who = format!("o{i}@example.com");
            ids.push(post(&app, "contact", &json!({"email": who, "consent": "yes"})).await);
        }
        let mut overflowed = 0;
        for id in ids {
            let d = settled(&app, id, "seq").await;
            assert_eq!(d.state, DeliveryState::Delivered, "{name}: {:?}", d.reason);
            let attempts = app.store.attempts(d.id).await.unwrap();
            if attempts.iter().any(|a| a.outcome == "overflow") {
                overflowed += 1;
            }
        }
        assert!(
            overflowed >= 1,
            "{name}: nothing waited for the next window"
        );
        assert_eq!(tool.active().len(), 5, "{name}");
        app.stop().await;
    }
}
