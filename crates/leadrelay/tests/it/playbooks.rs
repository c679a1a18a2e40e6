//! The `playbooks/` folder end to end: each playbook file, as shipped, runs
//! against the local fakes (its vendor URLs pointed at them, Slack channels
//! at the fake's `#leads`), and a webhook signed as the vendor signs it
//! ends in the fakes' final state — CRM records, Slack messages, enrollment
//! and exit in the sequence tools — with the playbook recorded on the event.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use leadrelay::store::{DeliveryState, Role};
use leadrelay_fakes::hubspot::{FakeHubSpot, HubSpotConfig};
use leadrelay_fakes::lemlist::{FakeLemlist, LemlistConfig};
use leadrelay_fakes::pipedrive::{FakePipedrive, PipedriveConfig};
use leadrelay_fakes::slack::{FakeSlack, SlackConfig};
use leadrelay_fakes::smartlead::{FakeSmartlead, SmartleadConfig};
use leadrelay_model::OwnerAssignment;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::{Receiver, TestApp, eventually};

const WAIT: Duration = Duration::from_secs(40);
const PUBLIC: &str = "https://leads.example.com";

const SECRETS: [(&str, &str); 8] = [
    ("SMARTLEAD_WEBHOOK_SECRET", "smartlead-signing-secret-01"),
    ("LEMLIST_HOOK_TOKEN", "lemlist-hook-token-01"),
    ("CALENDLY_SIGNING_KEY", "calendly-signing-key-0123456789"),
    ("SALESLOFT_CALLBACK_TOKEN", "salesloft-callback-token-01"),
    ("HUBSPOT_CLIENT_SECRET", "hubspot-client-secret-01"),
    ("PIPEDRIVE_HOOK_PASSWORD", "pipedrive-hook-password-01"),
    ("SALESFORCE_HOOK_TOKEN", "salesforce-hook-token-01"),
    ("WOODPECKER_HOOK_TOKEN", "woodpecker-hook-token-01"),
];

fn secret(name: &str) -> &'static str {
    SECRETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap()
}

fn playbooks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../playbooks")
}

fn hmac_sha256(key: &str, message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The local fakes every playbook may talk to.
struct Fakes {
    hubspot: FakeHubSpot,
    pipedrive: FakePipedrive,
    slack: FakeSlack,
    smartlead: FakeSmartlead,
    lemlist: FakeLemlist,
    receiver: Receiver,
}

impl Fakes {
    async fn start() -> Fakes {
        Fakes {
            hubspot: FakeHubSpot::start(HubSpotConfig::default()).await.unwrap(),
            pipedrive: FakePipedrive::start(PipedriveConfig::default())
                .await
                .unwrap(),
            slack: FakeSlack::start(SlackConfig::default()).await.unwrap(),
            smartlead: FakeSmartlead::start(SmartleadConfig {
                per_minute: 600,
                ..Default::default()
            })
            .await
            .unwrap(),
            lemlist: FakeLemlist::start(LemlistConfig::default()).await.unwrap(),
            receiver: Receiver::start().await,
        }
    }

    /// Puts `email` into the Smartlead and lemlist campaigns.
    fn in_sequences(&self, email: &str) {
        self.smartlead
            .seed_lead(SmartleadConfig::DEFAULT_CAMPAIGN, email);
        self.lemlist
            .seed_lead(LemlistConfig::DEFAULT_CAMPAIGN, email);
    }

    /// `email` is in no Smartlead or lemlist campaign any more.
    fn assert_out_of_sequences(&self, email: &str) {
        assert!(
            self.smartlead
                .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN)
                .iter()
                .all(|e| e != email)
        );
        let left = self.lemlist.leads();
        assert!(left.iter().all(|l| l.email != email), "{left:?}");
    }

    /// `#leads` messages' text.
    fn slack_texts(&self) -> Vec<String> {
        self.slack
            .messages("#leads")
            .into_iter()
            .filter_map(|m| m.text)
            .collect()
    }
}

/// The playbook file `name`, its vendors pointed at the fakes, plus fast
/// polling and retries.
fn playbook_config(name: &str, fakes: &Fakes) -> String {
    let path = playbooks_dir().join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    if let Some(toml::Value::Table(dests)) = doc.get_mut("destinations") {
        for (_, d) in dests.iter_mut() {
            let d = d.as_table_mut().unwrap();
            let connector = d["connector"].as_str().unwrap().to_string();
            let mut set = |k: &str, v: toml::Value| {
                d.insert(k.to_string(), v);
            };
            match connector.as_str() {
                "hubspot" => set("base_url", fakes.hubspot.base_url().into()),
                "pipedrive" => set("base_url", fakes.pipedrive.base_url().into()),
                "slack" => {
                    set("base_url", fakes.slack.api_url().into());
                    set("channel", "#leads".into());
                }
                "smartlead" => {
                    set("base_url", fakes.smartlead.base_url().into());
                    set(
                        "campaign_id",
                        (SmartleadConfig::DEFAULT_CAMPAIGN as i64).into(),
                    );
                    set("rate_limit", "8/1s".into());
                }
                "lemlist" => {
                    set("base_url", fakes.lemlist.base_url().into());
                    set("campaign_id", LemlistConfig::DEFAULT_CAMPAIGN.into());
                }
                _ => {}
            }
            set("allow_private_networks", true.into());
        }
    }
    let server = doc
        .entry("server")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    server
        .as_table_mut()
        .unwrap()
        .insert("public_url".into(), PUBLIC.into());
    let text = toml::to_string(&doc).unwrap();
    format!(
        "[delivery]\npoll_interval = \"100ms\"\n[delivery.retry]\nbase = \"50ms\"\ncap = \"200ms\"\n\n{text}"
    )
}

async fn start(name: &str, fakes: &Fakes) -> TestApp {
    let mut b = TestApp::builder(&playbook_config(name, fakes))
        .env("HUBSPOT_ACCESS_TOKEN", HubSpotConfig::DEFAULT_TOKEN)
        .env("PIPEDRIVE_API_TOKEN", PipedriveConfig::DEFAULT_TOKEN)
        .env("SLACK_BOT_TOKEN", SlackConfig::DEFAULT_BOT_TOKEN)
        .env("SMARTLEAD_API_KEY", SmartleadConfig::DEFAULT_API_KEY)
        .env("LEMLIST_API_KEY", LemlistConfig::DEFAULT_API_KEY)
        .env("QWILR_PROPOSAL_WEBHOOK_URL", &fakes.receiver.url());
    for (k, v) in SECRETS {
        b = b.env(k, v);
    }
    b.start().await
}

/// POSTs a vendor webhook; returns the status.
async fn hook(app: &TestApp, path: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut r = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Smartlead: `X-Smartlead-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
async fn smartlead_hook(app: &TestApp, body: &Value, request_id: &str) -> u16 {
    let body = body.to_string();
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(
            secret("SMARTLEAD_WEBHOOK_SECRET"),
            body.as_bytes()
        ))
    );
    let headers = [
        ("x-smartlead-signature", sig),
        ("x-request-id", request_id.to_string()),
    ];
    hook(app, "/v1/hooks/smartlead", &headers, &body).await
}

fn smartlead_event(event_type: &str, email: &str, extra: Value) -> Value {
    let mut body = json!({
        "webhook_id": 94, "sl_email_lead_id": "2077", "sl_lead_email": email,
        "stats_id": "9b0f5d6e-stats", "event_type": event_type,
        "event_timestamp": "2026-03-04T17:29:11.618881+00:00",
        "to_email": email, "to_name": "Dana Reyes", "subject": "Re: Q2 plans",
        "campaign_id": SmartleadConfig::DEFAULT_CAMPAIGN, "campaign_name": "Outbound Q2",
        "sequence_number": 1,
        "sent_message": {"message_id": "<sent-1@ourco.com>", "text": "Hi Dana"},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

/// The stored events from `source`, newest first, as the events API shows them.
async fn events_from(app: &TestApp, key: &str, origin: &str) -> Vec<Value> {
    let (status, page) = crate::admin::get(
        app,
        key,
        &format!("/api/v1/events?source={origin}&limit=50"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// Waits until every delivery of `destination` has ended (delivered,
/// skipped or dead) and there are at least `n`.
async fn all_settled(
    app: &TestApp,
    destination: &str,
    n: usize,
) -> Vec<leadrelay::store::Delivery> {
    eventually(
        &format!("{n} settled deliveries to {destination}"),
        WAIT,
        || async {
            let d = app.deliveries(destination).await;
            (d.len() >= n
                && d.iter().all(|d| {
                    matches!(
                        d.state,
                        DeliveryState::Delivered | DeliveryState::Skipped | DeliveryState::Dead
                    )
                }))
            .then_some(d)
        },
    )
    .await
}

fn assert_delivered(ds: &[leadrelay::store::Delivery]) {
    for d in ds {
        assert_eq!(
            d.state,
            DeliveryState::Delivered,
            "{}: {:?} {:?}",
            d.destination,
            d.reason,
            d.last_error
        );
    }
}

#[test]
fn every_playbook_file_passes_the_configuration_check() {
    let env = |name: &str| {
        Some(if name.ends_with("_URL") {
            "https://hooks.example.com/proposal".to_string()
        } else {
            "dummy-secret-value".to_string()
        })
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(playbooks_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let loaded = leadrelay::config::load_file(&path, &env)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Every route of a playbook file carries the file's name.
        assert!(!loaded.config.routes.is_empty(), "{name}");
        for r in &loaded.config.routes {
            assert_eq!(
                r.playbook.as_deref(),
                Some(name.as_str()),
                "{name}: {}",
                r.name
            );
        }
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "activity-sync",
            "deal-stage-changed",
            "meeting-booked",
            "mql",
            "reply-received"
        ]
    );
    // A playbook name that is not one is refused with its path.
    let bad = "[destinations.b]\nconnector = \"file\"\npath = \"./x\"\nlegal_basis = \"legitimate_interest\"\n[[routes]]\nname = \"r\"\nplaybook = \"Reply Received\"\ndestinations = [\"b\"]\n";
    let err = leadrelay::config::load_str(bad, "t.toml", &env).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.path == "routes[0].playbook"),
        "{:?}",
        err.problems
    );
}

/// Playbook 1: a signed Smartlead reply → HubSpot contact upserted, the
/// reply as a note and a follow-up task for the owner, Slack to the owner,
/// the person out of every Smartlead and lemlist sequence. The same reply
/// sent again with a new request id (a vendor retry) is a second event but
/// never a second note or task.
#[tokio::test]
async fn reply_received_playbook_end_to_end() {
    let fakes = Fakes::start().await;
    let email = "dana@prospect.io";
    fakes.in_sequences(email);
    fakes
        .lemlist
        .seed_lead(LemlistConfig::OTHER_CAMPAIGN, email);
    let app = start("reply-received", &fakes).await;
    let key = crate::admin::key(&app, "ops", Role::Admin).await;

    // The person is known and assigned to Ana (as a handoff would have).
    let sent = smartlead_event("EMAIL_SENT", email, json!({}));
    assert_eq!(smartlead_hook(&app, &sent, "req-sent-1").await, 200);
    let contact = eventually("the contact", WAIT, || async {
        app.store.find_contact_by_email(email).await.unwrap()
    })
    .await;
    app.store
        .assign_owner(
            contact.id,
            OwnerAssignment {
                owner: "ana".into(),
                reason: "test".into(),
                assigned_at: Utc::now(),
            },
        )
        .await
        .unwrap();

    let reply = smartlead_event(
        "EMAIL_REPLY",
        email,
        json!({"reply_message": {"message_id": "<reply-1@prospect.io>", "text": "Yes, let's talk on Tuesday"},
               "time_replied": "2026-03-04T17:29:11Z"}),
    );
    assert_eq!(smartlead_hook(&app, &reply, "req-reply-1").await, 200);
    for dest in ["crm", "slack_owner", "smartlead", "lemlist"] {
        assert_delivered(&all_settled(&app, dest, 1).await);
    }
    // The vendor sends the same reply again under a new request id.
    assert_eq!(smartlead_hook(&app, &reply, "req-reply-2").await, 200);
    let crm = all_settled(&app, "crm", 2).await;
    assert_delivered(&crm);
    assert_delivered(&all_settled(&app, "slack_owner", 2).await);

    let c = fakes
        .hubspot
        .contact_by_email(email)
        .expect("contact upserted");
    assert_eq!(c.get("hs_lead_status"), Some("CONNECTED"));
    let notes = fakes.hubspot.notes();
    assert_eq!(notes.len(), 1, "one note for one reply: {notes:?}");
    let body = notes[0].get("hs_note_body").unwrap_or_default();
    assert!(body.starts_with("Yes, let&#39;s talk on Tuesday"), "{body}");
    assert!(
        body.ends_with("<p>leadrelay-activity:smartlead:reply.received:reply-1@prospect.io</p>"),
        "{body}"
    );
    let tasks = fakes.hubspot.tasks();
    assert_eq!(tasks.len(), 1, "one follow-up task: {tasks:?}");
    assert_eq!(tasks[0].get("hubspot_owner_id"), Some("123456"));
    assert_eq!(
        fakes
            .hubspot
            .associated_ids("tasks", &tasks[0].id, "contacts"),
        vec![c.id.clone()]
    );

    let texts = fakes.slack_texts();
    assert!(
        texts.iter().any(|t| t.contains("<@U024BE7LH>")
            && t.contains("Yes, let")
            && t.contains("Outbound Q2")),
        "{texts:?}"
    );
    // Out of every sequence in both tools.
    fakes.assert_out_of_sequences(email);

    // The events API records the playbook on the reply, not on the email sent.
    let events = events_from(&app, &key, "smartlead").await;
    for e in &events {
        let expected: Vec<&str> = if e["type"] == "reply.received" {
            vec!["reply-received"]
        } else {
            vec![]
        };
        let got: Vec<&str> = e["playbooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(got, expected, "{e}");
    }
    // … and the lead timeline shows it.
    let reply_id = events
        .iter()
        .find(|e| e["type"] == "reply.received")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = crate::admin::session_cookie(&crate::admin::sign_in(&app, &key).await);
    let page = app
        .client
        .get(app.url(&format!("/ui/leads/{reply_id}")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("badge playbook\">reply-received<"), "{page}");
}

/// Playbook 2: a signed Calendly booking → HubSpot lifecycle stage and lead
/// status, a deal in the pipeline's first stage, the meeting as a HubSpot
/// meeting engagement (start and end) on the contact and the deal, the AE
/// told in Slack, and the person out of every sequence.
#[tokio::test]
async fn meeting_booked_playbook_end_to_end() {
    let fakes = Fakes::start().await;
    let email = "test@example.com";
    fakes.in_sequences(email);
    let app = start("meeting-booked", &fakes).await;

    let body = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../sources/tests/fixtures/calendly_invitee_created.json"),
    )
    .unwrap();
    let t = Utc::now().timestamp();
    let v1 = hex::encode(hmac_sha256(
        secret("CALENDLY_SIGNING_KEY"),
        format!("{t}.{body}").as_bytes(),
    ));
    let headers = [("calendly-webhook-signature", format!("t={t},v1={v1}"))];
    assert_eq!(hook(&app, "/v1/hooks/calendly", &headers, &body).await, 200);
    for dest in ["crm", "slack_ae", "smartlead", "lemlist"] {
        assert_delivered(&all_settled(&app, dest, 1).await);
    }

    let c = fakes.hubspot.contact_by_email(email).expect("contact");
    assert_eq!(c.get("lifecyclestage"), Some("salesqualifiedlead"));
    assert_eq!(c.get("hs_lead_status"), Some("IN_PROGRESS"));
    let deals = fakes.hubspot.deals();
    assert_eq!(deals.len(), 1, "{deals:?}");
    assert_eq!(deals[0].get("dealstage"), Some("appointmentscheduled"));
    assert_eq!(
        fakes
            .hubspot
            .associated_ids("deals", &deals[0].id, "contacts"),
        vec![c.id.clone()]
    );
    let meetings = fakes.hubspot.meetings();
    assert_eq!(meetings.len(), 1, "{meetings:?}");
    assert_eq!(
        meetings[0].get("hs_meeting_title"),
        Some("15 Minute Meeting booked with John Doe")
    );
    assert!(
        meetings[0]
            .get("hs_meeting_start_time")
            .is_some_and(|t| t.starts_with("2024-06-12T14:00:00"))
            && meetings[0]
                .get("hs_meeting_end_time")
                .is_some_and(|t| t.starts_with("2024-06-12T14:15:00")),
        "{meetings:?}"
    );
    assert_eq!(
        fakes
            .hubspot
            .associated_ids("meetings", &meetings[0].id, "deals"),
        vec![deals[0].id.clone()]
    );
    assert!(fakes.hubspot.notes().is_empty(), "a meeting, not a note");
    let texts = fakes.slack_texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Meeting booked: 15 Minute Meeting with John Doe")),
        "{texts:?}"
    );
    fakes.assert_out_of_sequences(email);
}

/// Playbook 3: a demo request from a VP crosses the threshold → an owner is
/// routed, the CRM gets the owner, stage and follow-up task, the person is
/// enrolled in the Smartlead campaign, the owner is told, the SLA timer runs.
#[tokio::test]
async fn mql_playbook_end_to_end() {
    let fakes = Fakes::start().await;
    let app = start("mql", &fakes).await;
    let email = "vp@bigco.io";
    let r = app
        .post_json(
            "/v1/forms/demo",
            &json!({"email": email, "first_name": "Vera", "company": "BigCo",
                    "title": "VP Sales", "consent": "yes"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    for dest in ["crm", "outbound", "slack_owner"] {
        assert_delivered(&all_settled(&app, dest, 1).await);
    }
    let contact = app
        .store
        .find_contact_by_email(email)
        .await
        .unwrap()
        .unwrap();
    let owner = contact
        .lead
        .owner
        .as_ref()
        .expect("owner assigned")
        .owner
        .clone();
    let (owner_id, slack_id) = match owner.as_str() {
        "ana" => ("123456", "U024BE7LH"),
        "ben" => ("234567", "U024BEN00"),
        other => panic!("routed to {other}"),
    };
    let c = fakes.hubspot.contact_by_email(email).expect("contact");
    assert_eq!(c.get("hubspot_owner_id"), Some(owner_id));
    assert_eq!(c.get("lifecyclestage"), Some("marketingqualifiedlead"));
    let tasks = fakes.hubspot.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].get("hubspot_owner_id"), Some(owner_id));
    assert_eq!(
        fakes
            .smartlead
            .campaign_emails(SmartleadConfig::DEFAULT_CAMPAIGN),
        [email]
    );
    let texts = fakes.slack_texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains(&format!("<@{slack_id}>")) && t.contains("lead.qualified")),
        "{texts:?}"
    );
    let filter = leadrelay::store::TimerFilter {
        contact_id: Some(contact.id),
        ..Default::default()
    };
    let timers = app.store.list_timers(&filter, None, 10).await.unwrap();
    assert!(
        timers
            .iter()
            .any(|t| t.kind == "sla" && t.state == "pending"),
        "{timers:?}"
    );
}

/// Playbook 4: a signed HubSpot `dealstage` change → the stakeholders told
/// in Slack, for a proposal stage the Qwilr proposal hook called, and the
/// stage's task on that HubSpot deal (the webhook names no person); a
/// Pipedrive deal webhook → the stage's activity on the Pipedrive deal; a
/// stage change that names the person gets the task on the person's deal.
#[tokio::test]
async fn deal_stage_changed_playbook_end_to_end() {
    let fakes = Fakes::start().await;
    let app = start("deal-stage-changed", &fakes).await;
    let deal = fakes.hubspot.seed(
        "deals",
        &[
            ("dealname", "Acme renewal"),
            ("dealstage", "appointmentscheduled"),
        ],
    );
    let now = Utc::now().timestamp_millis();
    let body = json!([{
        "eventId": 4001, "subscriptionId": 7, "portalId": 62515, "appId": 1,
        "occurredAt": now, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
        "objectId": deal.parse::<u64>().unwrap(), "propertyName": "dealstage",
        "propertyValue": "presentationscheduled", "changeSource": "CRM"
    }])
    .to_string();
    let uri = format!("{PUBLIC}/v1/hooks/hubspot");
    let ts = now.to_string();
    let sig = STANDARD.encode(hmac_sha256(
        secret("HUBSPOT_CLIENT_SECRET"),
        format!("POST{uri}{body}{ts}").as_bytes(),
    ));
    let headers = [
        ("x-hubspot-signature-v3", sig),
        ("x-hubspot-request-timestamp", ts),
        ("x-hubspot-signature-version", "v3".to_string()),
    ];
    assert_eq!(hook(&app, "/v1/hooks/hubspot", &headers, &body).await, 200);
    assert_delivered(&all_settled(&app, "slack_deals", 1).await);
    assert_delivered(&all_settled(&app, "qwilr_proposal", 1).await);
    let texts = fakes.slack_texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("moved to *presentationscheduled*") && t.contains("hubspot")),
        "{texts:?}"
    );
    let hits = fakes.receiver.delivered();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].json()["type"], "deal.stage_changed");
    // The deal webhook names no person: the stage's task goes on the deal,
    // and nothing else is written (no contact, no second deal).
    assert_delivered(&all_settled(&app, "crm", 1).await);
    let tasks = fakes.hubspot.tasks();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(
        tasks[0].get("hs_task_subject"),
        Some("Prepare the proposal")
    );
    assert!(
        tasks[0]
            .get("hs_task_body")
            .is_some_and(|b| b.contains("The deal moved to presentationscheduled")),
        "{:?}",
        tasks[0].get("hs_task_body")
    );
    assert_eq!(
        fakes.hubspot.associated_ids("tasks", &tasks[0].id, "deals"),
        [deal]
    );
    assert!(fakes.hubspot.contacts().is_empty());
    assert_eq!(fakes.hubspot.deals().len(), 1);

    // A Pipedrive deal moves to stage 3: its activity, on the deal.
    let pd_deal = fakes.pipedrive.seed_deal("Globex expansion", 2);
    let pd_body = json!({
        "data": {"id": pd_deal, "title": "Globex expansion", "status": "open", "stage_id": 3,
                 "pipeline_id": 1, "owner_id": 1, "update_time": "2026-03-04T17:29:11Z"},
        "previous": {"stage_id": 2},
        "meta": {"action": "change", "entity": "deal", "version": "2.0",
                 "id": "5b7e0c1d-4d2f-4c3e-9a8b-7f6e5d4c3b2a", "entity_id": pd_deal.to_string(),
                 "timestamp": "2026-03-04T17:29:11.123Z", "change_source": "app"}
    })
    .to_string();
    let auth = format!(
        "Basic {}",
        STANDARD.encode(format!("leadrelay:{}", secret("PIPEDRIVE_HOOK_PASSWORD")))
    );
    let headers = [("authorization", auth)];
    assert_eq!(
        hook(&app, "/v1/hooks/pipedrive", &headers, &pd_body).await,
        200
    );
    assert_delivered(&all_settled(&app, "pipedrive_crm", 1).await);
    assert_delivered(&all_settled(&app, "slack_deals", 2).await);
    let acts = fakes.pipedrive.activities();
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0].subject, "Prepare the proposal");
    assert_eq!(acts[0].activity_type, "task");
    assert_eq!(acts[0].deal_id, Some(pd_deal));
    assert!(fakes.pipedrive.persons().is_empty());
    // The HubSpot destination got none of it.
    assert_eq!(app.deliveries("crm").await.len(), 1);

    // A stage change that names the person (here through the API) gets the
    // stage's task on the person's deal.
    let key = crate::admin::key(&app, "ingest", Role::Admin).await;
    let r = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&key)
        .json(
            &json!({"type": "deal.stage_changed", "contact": {"email": "buyer@acme.io"},
                      "data": {"stage": "contractsent"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    assert_delivered(&all_settled(&app, "crm", 2).await);
    let tasks = fakes.hubspot.tasks();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(
        tasks
            .iter()
            .any(|t| t.get("hs_task_subject") == Some("Follow up on the contract"))
    );
    let deals = fakes.hubspot.deals();
    assert_eq!(deals.len(), 2);
    assert!(
        deals
            .iter()
            .any(|d| d.get("dealstage") == Some("contractsent"))
    );
}

/// Playbook 5: emails sent and opened from Smartlead → one HubSpot note per
/// vendor activity; the same activities sent again under new request ids
/// (vendor retries, stored as new events) make none twice.
#[tokio::test]
async fn activity_sync_playbook_dedupes_by_vendor_activity_id() {
    let fakes = Fakes::start().await;
    let app = start("activity-sync", &fakes).await;
    let email = "sam@prospect.io";
    let sent = smartlead_event("EMAIL_SENT", email, json!({}));
    let opened = smartlead_event(
        "EMAIL_OPEN",
        email,
        json!({"time_opened": "2026-03-04T18:00:00Z", "event_timestamp": "2026-03-04T18:00:00Z"}),
    );
    for (body, id) in [
        (&sent, "r-1"),
        (&opened, "r-2"),
        (&sent, "r-3"),
        (&opened, "r-4"),
    ] {
        assert_eq!(smartlead_hook(&app, body, id).await, 200);
    }
    let crm = all_settled(&app, "crm", 4).await;
    assert_delivered(&crm);
    let notes = fakes.hubspot.notes();
    assert_eq!(notes.len(), 2, "one note per activity: {notes:?}");
    let bodies: Vec<String> = notes
        .iter()
        .map(|n| n.get("hs_note_body").unwrap_or_default().to_string())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Email sent to Dana Reyes")),
        "{bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Email opened by Dana Reyes")),
        "{bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b.contains("Campaign: Outbound Q2")),
        "{bodies:?}"
    );

    assert_eq!(fakes.hubspot.contacts().len(), 1);
}
