//! The sales feedback loop end to end: leads scored into bands, the handoff
//! message in the fake Slack with rating buttons, a click signed as Slack
//! signs it, a rating from the dashboard, CRM dispositions mapped to
//! ratings, won deals — then the feedback and calibration reports in the
//! API, as CSV and on the dashboard, and every report page for admins and
//! viewers. On SQLite and, with `LEADRELAY_TEST_BACKEND=postgres`, on
//! PostgreSQL.

use std::time::Duration;

use leadrelay::store::Role;
use leadrelay_fakes::slack::{FakeSlack, SlackConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::key;
use crate::dashboard::Ui;
use crate::support::{TestApp, eventually, webhook_config};

const WAIT: Duration = Duration::from_secs(30);

fn config() -> String {
    webhook_config(
        "http://127.0.0.1:9/",
        r#"
[scoring]
mql = 40
sql = 75
[[scoring.rules]]
name = "ceo"
field = "title"
equals = "CEO"
points = 80
[[scoring.rules]]
name = "company"
field = "company"
present = true
points = 30

[[owners]]
name = "ann"
email = "ann@example.com"
groups = ["east"]

[handoff]
poll_interval = "100ms"

[destinations.slack]
connector = "slack"
webhook_url_env = "SLACK_WEBHOOK_URL"
allow_private_networks = true
purposes = ["crm"]
rating_buttons = true

[[routes]]
name = "handoff"
events = ["lead.qualified"]
destinations = ["slack"]

[reports]
rollup_lag = "0s"
rollup_interval = "50ms"

[feedback]
fields = ["hs_lead_status"]
bands = [20, 40, 80]
min_leads = 2
slack_signing_secret_env = "SLACK_SIGNING_SECRET"
lag = "0s"
interval = "50ms"
batch = 3
[feedback.ratings]
Qualified = 5
Unqualified = 1
"#,
    )
}

struct Api<'a> {
    app: &'a TestApp,
    key: String,
}

impl Api<'_> {
    async fn send(&self, body: Value) -> Uuid {
        let r = self
            .app
            .client
            .post(self.app.url("/v1/events"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        let v: Value = r.json().await.unwrap();
        Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.app
            .client
            .get(self.app.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
    }

    async fn report(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }
}

fn lead(email: &str, title: Option<&str>, company: Option<&str>, source: &str) -> Value {
    let mut contact = json!({"email": email});
    if let Some(t) = title {
        contact["title"] = json!(t);
    }
    if let Some(c) = company {
        contact["company"] = json!(c);
    }
    json!({"type": "lead.created", "contact": contact, "consent": {"crm": true},
           "attribution": {"utm_source": source, "utm_medium": "cpc", "utm_campaign": "spring"}})
}

/// The row of `report` whose first cell is `key`, as column → value.
fn row(report: &Value, key: &str) -> serde_json::Map<String, Value> {
    let cols = report["columns"].as_array().unwrap();
    let r = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("no row {key} in {report}"));
    cols.iter()
        .zip(r.as_array().unwrap())
        .map(|(c, v)| (c.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

async fn signed_post(app: &TestApp, ts: &str, sig: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url("/v1/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn ratings_from_slack_the_dashboard_and_the_crm_calibrate_the_scoring() {
    let slack = FakeSlack::start(SlackConfig::default()).await.unwrap();
    let app = TestApp::builder(&config())
        .env("SLACK_WEBHOOK_URL", &slack.webhook_url())
        .env("SLACK_SIGNING_SECRET", SlackConfig::DEFAULT_SIGNING_SECRET)
        .start()
        .await;
    let api = Api {
        app: &app,
        key: key(&app, "backend", Role::Admin).await,
    };

    // Four CEOs at companies (score 110: "80 and above", handed off to
    // sales), four at companies only (30: "20 to 40"), two with neither
    // (0: "below 20").
    let mut ceo_events = Vec::new();
    for i in 0..4 {
        ceo_events.push(
            api.send(lead(
                &format!("ceo{i}@example.com"),
                Some("CEO"),
                Some("Acme"),
                "google",
            ))
            .await,
        );
    }
    for i in 0..4 {
        api.send(lead(
            &format!("staff{i}@example.com"),
            None,
            Some("Beta"),
            "newsletter",
        ))
        .await;
    }
    for i in 0..2 {
        api.send(lead(&format!("anon{i}@example.com"), None, None, "bing"))
            .await;
    }
    let contact = |email: &str| {
        let store = app.store.clone();
        let email = email.to_string();
        async move {
            store
                .find_contact_by_email(&email)
                .await
                .unwrap()
                .expect("contact")
                .id
        }
    };
    let ceo0 = contact("ceo0@example.com").await;

    // The handoff messages carry the rating buttons, valid Block Kit.
    let messages = eventually("four handoff messages in Slack", WAIT, || async {
        let m = slack.messages("leads");
        (m.len() >= 4).then_some(m)
    })
    .await;
    let msg = messages
        .iter()
        .find(|m| {
            m.blocks
                .as_ref()
                .unwrap()
                .to_string()
                .contains(&format!("{ceo0}:1"))
        })
        .expect("the handoff message of ceo0");
    // A click, signed as Slack signs it: ceo0 is a poor lead.
    let click = slack
        .click(&msg.ts, "leadrelay_rate_1", "U0SALES1", None)
        .expect("the button");
    // Tampered, stale or unsigned requests are refused before anything is read.
    let tampered = click.body.replace("leadrelay_rate_1", "leadrelay_rate_5");
    let r = signed_post(&app, &click.timestamp, &click.signature, &tampered).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let stale = slack
        .click(&msg.ts, "leadrelay_rate_5", "U0SALES1", Some(1_000_000_000))
        .unwrap();
    let r = signed_post(&app, &stale.timestamp, &stale.signature, &stale.body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("5 minutes"));
    let r = signed_post(&app, &click.timestamp, "v0=00", &click.body).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = signed_post(&app, &click.timestamp, &click.signature, &click.body).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // The link button's interaction rates nothing and is answered 200.
    let open = slack
        .click(&msg.ts, "open_lead", "U0SALES1", None)
        .expect("the link button");
    let r = signed_post(&app, &open.timestamp, &open.signature, &open.body).await;
    assert_eq!(r.status(), StatusCode::OK);

    // ceo1 rated 2 from the dashboard by an admin; a viewer may not.
    let admin = Ui::new(&app, Role::Admin, "sales-lead").await;
    let viewer = Ui::new(&app, Role::Viewer, "board").await;
    let page = format!("/ui/leads/{}/rate", ceo_events[1]);
    let (status, _, _) = viewer.post(&page, &[("rating", "2")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = admin.post(&page, &[("rating", "9")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, location, _) = admin.post(&page, &[("rating", "2")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.ends_with("?notice=rated"), "{location}");

    // The CRM: two staff leads marked Qualified (5), one anon lead's status
    // is a value with no rating.
    for (email, status) in [
        ("staff0@example.com", "Qualified"),
        ("staff1@example.com", "QUALIFIED"),
        ("anon0@example.com", "Working"),
    ] {
        api.send(
            json!({"type": "contact.updated", "contact": {"email": email},
            "data": {"hs_lead_status": status}, "consent": {"crm": true}}),
        )
        .await;
    }
    // Two staff leads' deals are won.
    for (i, email) in ["staff2@example.com", "staff3@example.com"]
        .iter()
        .enumerate()
    {
        api.send(
            json!({"type": "deal.stage_changed", "contact": {"email": email},
            "data": {"deal_id": format!("d{i}"), "stage": "closedwon", "amount": 1000},
            "consent": {"crm": true}}),
        )
        .await;
    }

    // Calibration: 10 scored leads, 2 won (0.2); ratings 1, 2, 5, 5 (3.25).
    let cal = eventually("every rating in the calibration report", WAIT, || async {
        let c = api.report("/api/v1/reports/calibration").await;
        (c["totals"]["average_rating"] == json!(3.25) && c["totals"]["conversion"] == json!(0.2))
            .then_some(c)
    })
    .await;
    let top = row(&cal, "80 and above");
    assert_eq!(top["leads"], json!(4));
    assert_eq!(top["won"], json!(0));
    assert_eq!(top["conversion_lift"], json!(0.0));
    assert_eq!(top["conversion_verdict"], json!("over-rates"));
    assert_eq!(top["rated"], json!(2));
    assert_eq!(top["average_rating"], json!(1.5));
    assert_eq!(top["rating_verdict"], json!("over-rates"));
    let mid = row(&cal, "20 to 40");
    assert_eq!(mid["leads"], json!(4));
    assert_eq!(mid["won"], json!(2));
    assert_eq!(mid["conversion"], json!(0.5));
    assert_eq!(mid["conversion_lift"], json!(2.5));
    assert_eq!(mid["conversion_verdict"], json!("under-rates"));
    assert_eq!(mid["average_rating"], json!(5.0));
    assert_eq!(mid["rating_verdict"], json!("under-rates"));
    let low = row(&cal, "below 20");
    assert_eq!(low["leads"], json!(2));
    assert_eq!(low["conversion_verdict"], json!("in line"));
    assert_eq!(low["rating_verdict"], json!("no data"));
    assert_eq!(cal["totals"]["over_rated_bands"], json!(["80 and above"]));
    assert_eq!(cal["totals"]["under_rated_bands"], json!(["20 to 40"]));

    // Feedback by source and by band; the source filter.
    let fb = api.report("/api/v1/reports/feedback?by=source").await;
    let google = row(&fb, "google");
    assert_eq!(google["rated"], json!(2));
    assert_eq!(google["poor"], json!(2));
    assert_eq!(google["average_rating"], json!(1.5));
    let news = row(&fb, "newsletter");
    assert_eq!(news["good"], json!(2));
    assert_eq!(news["won"], json!(2));
    assert_eq!(news["conversion"], json!(0.5));
    assert_eq!(fb["totals"]["leads"], json!(10));
    assert_eq!(fb["totals"]["rated_share"], json!(0.4));
    let by_band = api.report("/api/v1/reports/feedback?by=band").await;
    assert_eq!(row(&by_band, "80 and above")["leads"], json!(4));
    let only = api
        .report("/api/v1/reports/feedback?source=newsletter")
        .await;
    assert_eq!(only["totals"]["leads"], json!(4));
    // The owner filter: only the handed-off CEOs have an owner.
    let ann = api.report("/api/v1/reports/feedback?owner=ann").await;
    assert_eq!(ann["totals"]["leads"], json!(4));
    let east = api.report("/api/v1/reports/calibration?team=east").await;
    assert_eq!(east["totals"]["leads"], json!(4));
    // CSV, and precise errors.
    let r = api.get("/api/v1/reports/calibration?format=csv").await;
    assert_eq!(r.status(), 200);
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("band,leads,share_of_leads,"), "{csv}");
    assert!(
        csv.contains("80 and above,4,0.4,0,0,0.0,0.0,over-rates,2,1.5,0.0,"),
        "{csv}"
    );
    let r = api.get("/api/v1/reports/win-rates?by=band").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("by"));
    let list: Value = api.report("/api/v1/reports").await;
    assert!(list.to_string().contains("calibration"));

    // A second rating replaces the first in the counters (no double count).
    let (status, _, _) = admin.post(&page, &[("rating", "4")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cal = eventually("the new rating counted", WAIT, || async {
        let c = api.report("/api/v1/reports/calibration").await;
        (row(&c, "80 and above")["average_rating"] == json!(2.5)).then_some(c)
    })
    .await;
    assert_eq!(row(&cal, "80 and above")["rated"], json!(2));

    // The lead page shows the rating; a viewer sees no form and no rater.
    let lead_page = format!("/ui/leads/{}", ceo_events[1]);
    let (status, html) = admin.get(&lead_page).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Rated <strong>4 of 5</strong> via dashboard by sales-lead"),
        "{html}"
    );
    assert!(html.contains("2 ratings in all"));
    let (_, html) = viewer.get(&lead_page).await;
    assert!(
        html.contains("by (hidden)") && !html.contains("sales-lead"),
        "{html}"
    );
    assert!(!html.contains("Save rating"));
    let (_, html) = admin.get(&format!("/ui/leads/{}", ceo_events[0])).await;
    assert!(html.contains("via slack by slack:U0SALES1"), "{html}");

    // Every report page, for both roles, with its chart, table and CSV link.
    for ui in [&admin, &viewer] {
        let (status, html) = ui.get("/ui/reports").await;
        assert_eq!(status, 200);
        assert!(html.contains("id=\"kpi-table\"") && html.contains("<svg class=\"chart\""));
        for name in [
            "funnel",
            "velocity",
            "win-rates",
            "time-in-stage",
            "outliers",
            "channels",
            "attribution",
            "forecast",
            "forecast-accuracy",
            "feedback",
            "calibration",
        ] {
            let (status, html) = ui.get(&format!("/ui/reports/{name}")).await;
            assert_eq!(status, 200, "{name}: {html}");
            assert!(html.contains("id=\"report-table\""), "{name}");
            // The CSV link (minijinja escapes `/` in attributes).
            assert!(html.contains("id=\"csv\" download"), "{name}");
            assert!(
                html.contains(&format!("reports&#x2f;{name}&#x2f;csv")),
                "{name}"
            );
        }
        let (_, html) = ui.get("/ui/reports/calibration").await;
        assert!(
            html.contains("over-rates") && html.contains("<svg class=\"chart\""),
            "{html}"
        );
        let (_, html) = ui.get("/ui/reports/feedback?by=band&source=google").await;
        assert!(html.contains("80 and above"), "{html}");
        let (status, csv) = ui.get("/ui/reports/feedback/csv?by=source").await;
        assert_eq!(status, 200);
        assert!(
            csv.starts_with("source,leads,rated,average_rating,"),
            "{csv}"
        );
    }
    // Bad filters are refused with the field and the reason.
    for (q, needle) in [
        ("/ui/reports/funnel?since=yesterday", "since"),
        (
            "/ui/reports/funnel?since=2026-02-02&until=2026-01-01",
            "since",
        ),
        ("/ui/reports/funnel?by=source", "no grouping"),
        ("/ui/reports/channels?model=best", "model"),
    ] {
        let (status, html) = admin.get(q).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(html.contains(needle), "{q}: {html}");
    }
    let (status, _) = admin.get("/ui/reports/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let long = "x".repeat(201);
    let (status, _) = admin
        .get(&format!("/ui/reports/feedback?source={long}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn slack_interactions_are_off_without_a_signing_secret() {
    let app = TestApp::spawn(&webhook_config("http://127.0.0.1:9/", "")).await;
    let r = signed_post(&app, "1", "v0=00", "payload=%7B%7D").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("slack_signing_secret_env"));
}
