//! The dashboard's operator pages over HTTP: issues and their group
//! actions, bulk actions by filter or selection (count first), the leads
//! list's delivery states, and the people pages — for admins and viewers,
//! every POST with its CSRF token.

use std::time::Duration;

use chrono::Utc;
use leadrelay::store::{DeliveryState, ReviewItem, ReviewStatus, Role};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::admin::{config, csrf_of, key, session_cookie, sign_in, submit};
use crate::support::{Receiver, TestApp, eventually, webhook_config};

const WAIT: Duration = Duration::from_secs(20);

/// A signed-in dashboard user.
pub(crate) struct Ui<'a> {
    app: &'a TestApp,
    pub(crate) cookie: String,
    csrf: String,
}

impl<'a> Ui<'a> {
    pub(crate) async fn new(app: &'a TestApp, role: Role, name: &str) -> Self {
        let k = key(app, name, role).await;
        let cookie = session_cookie(&sign_in(app, &k).await);
        let mut ui = Self {
            app,
            cookie,
            csrf: String::new(),
        };
        let (_, html) = ui.get("/ui/").await;
        ui.csrf = csrf_of(&html);
        ui
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .app
            .client
            .get(self.app.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// POSTs a form with the session's CSRF token; returns status,
    /// location and body.
    pub(crate) async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> (StatusCode, String, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        let r = self
            .app
            .client
            .post(self.app.url(path))
            .header("cookie", &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status(), loc, r.text().await.unwrap())
    }
}

/// An app whose receiver refused `n` leads with the same 400.
async fn app_with_dead_letters(n: usize) -> (Receiver, TestApp, Vec<Uuid>) {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    r.fail_next(
        400,
        r#"{"error":"INVALID_PROPERTY","message":"company is required"}"#,
        n,
    );
    let mut events = Vec::new();
    for i in 0..n {
        let ev = submit(
            &app,
            json!({"email": format!("person{i}@example.com"), "first_name": format!("Person{i}"), "consent": "yes"}),
        )
        .await;
        events.push(ev);
    }
    for ev in &events {
        eventually("the delivery is dead", WAIT, || async {
            let d = app.store.deliveries_for_event(*ev).await.unwrap().pop()?;
            (d.state == DeliveryState::Dead).then_some(())
        })
        .await;
    }
    (r, app, events)
}

fn issue_key_in(html: &str) -> String {
    html.split("href=\"/ui/issues/")
        .nth(1)
        .expect("an issue link")
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn issues_group_failures_and_act_on_the_whole_group() {
    let (r, app, events) = app_with_dead_letters(3).await;
    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;

    let (s, html) = admin.get("/ui/destinations").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("badge health failing"),
        "a destination failing every attempt is not shown healthy"
    );

    let (s, html) = admin.get("/ui/issues").await;
    assert_eq!(s, 200);
    assert_eq!(
        html.matches("href=\"/ui/issues/").count(),
        1,
        "one issue for three leads: {html}"
    );
    assert!(html.contains("HTTP 400"), "{html}");
    let key = issue_key_in(&html);

    let (s, html) = admin.get(&format!("/ui/issues/{key}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("id=\"issue-count\">3<"), "{html}");
    assert!(html.contains("person0@example.com") && html.contains("Person2"));
    assert!(
        html.contains("INVALID_PROPERTY"),
        "the sample attempt's response is shown"
    );

    // Viewers see the issue with addresses masked, and cannot act on it.
    let (s, html) = viewer.get(&format!("/ui/issues/{key}")).await;
    assert_eq!(s, 200);
    assert!(!html.contains("person0@example.com"), "masked for viewers");
    assert!(!html.contains("Retry all"), "no actions offered to viewers");
    let (s, _, _) = viewer.post(&format!("/ui/issues/{key}/retry"), &[]).await;
    assert_eq!(s, 403);

    // Without its CSRF token a group action is refused.
    let resp = app
        .client
        .post(app.url(&format!("/ui/issues/{key}/discard")))
        .header("cookie", &admin.cookie)
        .form(&[("overrides", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Mute moves it out of the open list; unmute brings it back.
    let (s, loc, _) = admin.post(&format!("/ui/issues/{key}/mute"), &[]).await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/ui/issues?notice=muted")
    );
    let (_, html) = admin.get("/ui/issues").await;
    assert!(
        html.contains("Muted issues (1)") && html.contains("No open issues"),
        "{html}"
    );
    admin.post(&format!("/ui/issues/{key}/unmute"), &[]).await;

    // A bad override is refused with the reason, nothing replayed.
    let (s, _, body) = admin
        .post(
            &format!("/ui/issues/{key}/retry"),
            &[("overrides", "no equals sign")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("FIELD=VALUE"), "{body}");

    // Retry after editing the payload: every lead of the group is sent again
    // with the override.
    let (s, loc, _) = admin
        .post(
            &format!("/ui/issues/{key}/retry"),
            &[("overrides", "company=Acme Rockets")],
        )
        .await;
    assert_eq!(s, 303);
    assert!(loc.starts_with("/ui/jobs/"), "{loc}");
    eventually("the group is delivered", WAIT, || async {
        (r.delivered().len() == 3).then_some(())
    })
    .await;
    for hit in r.delivered() {
        let body = String::from_utf8_lossy(&hit.body).to_string();
        assert!(body.contains("Acme Rockets"), "{body}");
    }
    let (s, html) = admin.get(&loc).await;
    assert_eq!(s, 200);
    assert!(html.contains("3 of 3 processed"), "{html}");
    // The issue resolved itself.
    let (_, html) = admin.get("/ui/issues").await;
    assert!(html.contains("No open issues"));
    let (s, _) = admin.get(&format!("/ui/issues/{key}")).await;
    assert_eq!(s, 404);
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn bulk_actions_by_filter_or_selection_count_before_confirming() {
    let (_r, app, events) = app_with_dead_letters(3).await;
    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;

    let (s, html) = admin.get("/ui/dead-letters?destination=hook").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("3 open dead letters match the filter"),
        "{html}"
    );
    assert!(
        html.contains("Person1") && html.contains("person1@example.com"),
        "rows name the person"
    );
    let (_, html) = viewer.get("/ui/dead-letters").await;
    assert!(
        html.contains("Person1") && !html.contains("person1@example.com"),
        "masked for viewers"
    );
    let (s, _, _) = viewer
        .post("/ui/dead-letters/bulk", &[("action", "discard")])
        .await;
    assert_eq!(s, 403);

    let (s, _) = admin.get("/ui/dead-letters?from=yesterday").await;
    assert_eq!(s, 400);
    let (s, _, body) = admin
        .post(
            "/ui/dead-letters/bulk",
            &[("action", "discard"), ("from", "2026-02-30")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("from:"), "{body}");
    let (s, _, _) = admin
        .post(
            "/ui/dead-letters/bulk",
            &[("action", "discard"), ("scope", "selected")],
        )
        .await;
    assert_eq!(s, 400, "nothing selected");

    // A date range that excludes them all counts zero.
    let (s, _, body) = admin
        .post(
            "/ui/dead-letters/bulk",
            &[("action", "discard"), ("to", "2001-01-01")],
        )
        .await;
    assert_eq!(s, 200);
    assert!(body.contains("Discard 0 dead letters?"), "{body}");

    // A selection of one, within the filter.
    let one = app.store.deliveries_for_event(events[0]).await.unwrap()[0].id;
    let one = one.to_string();
    let today = Utc::now().date_naive().to_string();
    let fields = [
        ("action", "discard"),
        ("scope", "selected"),
        ("destination", "hook"),
        ("from", today.as_str()),
        ("id", one.as_str()),
    ];
    let (s, _, body) = admin.post("/ui/dead-letters/bulk", &fields).await;
    assert_eq!(s, 200);
    assert!(body.contains("Discard 1 dead letter?"), "{body}");
    let still = app.store.deliveries_for_event(events[0]).await.unwrap()[0].state;
    assert_eq!(
        still,
        DeliveryState::Dead,
        "nothing changes before confirming"
    );
    let mut confirmed = fields.to_vec();
    confirmed.push(("confirm", "yes"));
    let (s, loc, _) = admin.post("/ui/dead-letters/bulk", &confirmed).await;
    assert_eq!(s, 303);
    assert!(loc.contains("notice=discarded_n"), "{loc}");
    let states: Vec<DeliveryState> = {
        let mut v = Vec::new();
        for e in &events {
            v.push(app.store.deliveries_for_event(*e).await.unwrap()[0].state);
        }
        v
    };
    assert_eq!(
        states,
        [
            DeliveryState::Discarded,
            DeliveryState::Dead,
            DeliveryState::Dead
        ]
    );

    // Every remaining match of the filter.
    let (_, _, body) = admin
        .post(
            "/ui/dead-letters/bulk",
            &[("action", "discard"), ("destination", "hook")],
        )
        .await;
    assert!(body.contains("Discard 2 dead letters?"), "{body}");
}

#[tokio::test]
async fn leads_list_shows_and_filters_delivery_state() {
    let (_r, app, events) = app_with_dead_letters(1).await;
    let ok = submit(
        &app,
        json!({"email": "fine@example.com", "first_name": "Fine", "consent": "yes"}),
    )
    .await;
    eventually("delivered", WAIT, || async {
        let d = app.store.deliveries_for_event(ok).await.unwrap().pop()?;
        (d.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let (s, html) = admin.get("/ui/leads").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("hook: dead") && html.contains("hook: delivered"),
        "{html}"
    );
    let (s, html) = admin.get("/ui/leads?delivery=failed").await;
    assert_eq!(s, 200);
    assert!(html.contains("person0@example.com") && !html.contains("fine@example.com"));
    let (_, html) = admin.get("/ui/leads?delivery=delivered").await;
    assert!(!html.contains("person0@example.com") && html.contains("fine@example.com"));
    let (s, html) = admin.get("/ui/leads?delivery=lost").await;
    assert_eq!(s, 400);
    assert!(html.contains("unknown delivery state"));
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn overview_range_and_auto_refresh() {
    let (_r, app, _events) = app_with_dead_letters(1).await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;
    let (s, html) = viewer.get("/ui/?range=24h&refresh=60").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Leads per hour by source, last 24 hours"),
        "{html}"
    );
    assert!(html.contains(r#"<meta http-equiv="refresh" content="60">"#));
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2);
    let (_, html) = viewer.get("/ui/?range=30d").await;
    assert!(html.contains("Leads per day by source, last 30 days"));
    assert!(!html.contains("http-equiv=\"refresh\""), "off by default");
    let (s, html) = viewer.get("/ui/?range=1y").await;
    assert_eq!(s, 400);
    assert!(html.contains("range: use 24h, 7d or 30d"));
    let (s, _) = viewer.get("/ui/issues?refresh=1").await;
    assert_eq!(s, 400, "no reload storm");
    let (s, html) = viewer.get("/ui/destinations?refresh=30").await;
    assert_eq!(s, 200);
    assert!(html.contains(r#"content="30""#));
}

#[tokio::test]
async fn contacts_review_and_privacy_pages_are_role_aware() {
    let (_r, app, _events) = app_with_dead_letters(1).await;
    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;

    let (s, html) = admin.get("/ui/contacts?q=person0").await;
    assert_eq!(s, 200);
    let id = html
        .split("href=\"/ui/contacts/")
        .nth(1)
        .expect("a contact")
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let (s, html) = admin.get(&format!("/ui/contacts/{id}")).await;
    assert_eq!(s, 200);
    assert!(html.contains("form:contact"), "field provenance: {html}");
    let (_, html) = viewer.get(&format!("/ui/contacts/{id}")).await;
    assert!(!html.contains("person0@example.com"), "masked for viewers");

    let item = leadrelay_model::new_id();
    app.store
        .add_review_item(ReviewItem {
            id: item,
            kind: "possible_duplicate".into(),
            status: ReviewStatus::Open,
            summary: "two contacts may be one person".into(),
            contact_id: None,
            destination: None,
            details: json!({"emails": ["person0@example.com", "p0@example.com"]}),
            created_at: Utc::now(),
            resolved_at: None,
            resolved_by: None,
            resolution: None,
        })
        .await
        .unwrap();
    let (s, html) = viewer.get("/ui/review").await;
    assert_eq!(s, 200);
    assert!(html.contains("two contacts may be one person"));
    assert!(
        !html.contains("person0@example.com"),
        "details masked for viewers"
    );
    let (s, _, _) = viewer
        .post(&format!("/ui/review/{item}"), &[("status", "resolved")])
        .await;
    assert_eq!(s, 403);
    let (s, loc, _) = admin
        .post(
            &format!("/ui/review/{item}"),
            &[
                ("status", "dismissed"),
                ("resolution", "same company, two people"),
            ],
        )
        .await;
    assert_eq!(
        (s, loc.as_str()),
        (StatusCode::SEE_OTHER, "/ui/review?notice=dismissed")
    );
    let (_, html) = admin.get("/ui/review").await;
    assert!(html.contains("Nothing to review"));

    let (s, _) = viewer.get("/ui/privacy").await;
    assert_eq!(s, 403, "privacy is admin-only");
    let (s, _, body) = admin
        .post(
            "/ui/privacy/erase",
            &[
                ("email", "person0@example.com"),
                ("confirm_email", "person1@example.com"),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("Nothing was erased"));
    assert!(
        app.store
            .find_contact_by_email("person0@example.com")
            .await
            .unwrap()
            .is_some()
    );
    let (s, _, body) = admin
        .post(
            "/ui/privacy/export",
            &[
                ("email", "person0@example.com"),
                ("reason", "subject access request"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    assert!(body.contains("person0@example.com") && body.contains("audit_id"));
    let (s, _, body) = admin
        .post(
            "/ui/privacy/erase",
            &[
                ("email", "person0@example.com"),
                ("confirm_email", "Person0@Example.com"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("Erasure report") && body.contains("id=\"erased-events\">1<"),
        "{body}"
    );
    assert!(
        app.store
            .find_contact_by_email("person0@example.com")
            .await
            .unwrap()
            .is_none()
    );
    let (_, html) = admin.get("/ui/privacy").await;
    assert_eq!(html.matches("<td>erase</td>").count(), 1, "{html}");
    assert_eq!(html.matches("<td>export</td>").count(), 1);
    assert!(
        !html.contains("person0@example.com"),
        "the log never shows the address"
    );
}

/// Attempt inspection shows the request as sent and the response headers:
/// secrets as their env var names (never their values, in the page or in
/// the database), personal data masked for viewers, curl for admins only.
#[tokio::test]
async fn attempt_shows_the_request_as_sent_without_secrets() {
    const KEY: &str = "sk-live-h22b-SECRETVALUE-7781";
    let r = Receiver::start().await;
    let toml = config(&r).replace(
        "timeout = \"2s\"",
        "timeout = \"2s\"\nsecret_headers = { \"X-Api-Key\" = \"H22B_API_KEY\" }\n\
         headers = { \"Authorization\" = \"Bearer static-h22b-token\", \"X-Team\" = \"sales\" }",
    );
    let app = TestApp::builder(&toml)
        .env("H22B_API_KEY", KEY)
        .start()
        .await;
    r.fail_next(
        400,
        r#"{"error":"INVALID_PROPERTY","message":"company is required"}"#,
        1,
    );
    let ev = submit(
        &app,
        json!({"email": "inspect.me@example.com", "first_name": "Ines", "consent": "yes"}),
    )
    .await;
    let delivery = eventually("the delivery is dead", WAIT, || async {
        let d = app.store.deliveries_for_event(ev).await.unwrap().pop()?;
        (d.state == DeliveryState::Dead).then_some(d)
    })
    .await;
    // The secret really was sent: the checks below can fail.
    let hit = r.hits().pop().expect("the receiver saw the request");
    assert_eq!(hit.header("x-api-key").as_deref(), Some(KEY));

    // Stored: headers with the var name, the body as sent, response headers.
    let attempts = app.store.attempts(delivery.id).await.unwrap();
    let x = attempts[0]
        .exchange
        .clone()
        .expect("the exchange is recorded");
    assert!(
        x.request_headers
            .contains(&("x-api-key".into(), "$H22B_API_KEY".into())),
        "{x:?}"
    );
    assert!(
        x.request_headers
            .contains(&("authorization".into(), "Bearer [hidden]".into())),
        "{x:?}"
    );
    assert!(x.request_body.contains("inspect.me@example.com"), "{x:?}");
    assert!(!x.request_body_truncated);
    assert!(
        x.response_headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type")),
        "{x:?}"
    );
    assert!(!format!("{x:?}").contains(KEY) && !format!("{x:?}").contains("static-h22b-token"));

    // No byte of the database holds the secret (the SQLite files, or a
    // pg_dump), while the body as sent is there.
    assert!(app.db.contains("inspect.me@example.com"));
    assert!(!app.db.contains(KEY) && !app.db.contains("static-h22b-token"));

    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "look").await;
    let (_, html) = admin.get("/ui/issues").await;
    let page = format!("/ui/issues/{}", issue_key_in(&html));
    let (s, html) = admin.get(&page).await;
    assert_eq!(s, 200);
    assert!(html.contains("$H22B_API_KEY"), "{html}");
    assert!(html.contains("x-team") && html.contains("sales"), "{html}");
    assert!(
        html.contains("inspect.me@example.com"),
        "admins see the body"
    );
    assert!(html.contains("Copy as curl"), "{html}");
    assert!(
        html.contains("-H &#x27;x-api-key: &#x27;&quot;$H22B_API_KEY&quot;&#x27;&#x27;"),
        "curl reads the secret from the environment: {html}"
    );
    assert!(!html.contains(KEY) && !html.contains("static-h22b-token"));

    let (s, html) = viewer.get(&page).await;
    assert_eq!(s, 200);
    assert!(html.contains("$H22B_API_KEY"), "{html}");
    assert!(
        !html.contains("inspect.me@example.com"),
        "masked for viewers"
    );
    assert!(html.contains("i***@example.com"), "{html}");
    assert!(!html.contains("Copy as curl"), "no curl for viewers");
    assert!(!html.contains(KEY) && !html.contains("static-h22b-token"));

    // Erasing the person clears the requests that carried their data.
    let k = key(&app, "dpo", Role::Admin).await;
    let resp = app
        .client
        .post(app.url("/api/v1/privacy/erase"))
        .bearer_auth(&k)
        .json(&json!({"email": "inspect.me@example.com", "reason": "erasure request"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let attempts = app.store.attempts(delivery.id).await.unwrap();
    assert!(
        attempts.iter().all(|a| a.exchange.is_none()),
        "{attempts:?}"
    );
}

/// The states of the deliveries of some events (one destination each).
async fn states_of(app: &TestApp, events: &[Uuid]) -> Vec<leadrelay::store::Delivery> {
    let mut v = Vec::new();
    for e in events {
        v.push(app.store.deliveries_for_event(*e).await.unwrap()[0].clone());
    }
    v
}

/// Follows a bulk job's page until it says finished; returns its text.
async fn job_finished(ui: &Ui<'_>, location: &str) -> String {
    assert!(location.starts_with("/ui/jobs/"), "{location}");
    eventually("the bulk job finishes", WAIT, || async {
        let (s, html) = ui.get(location).await;
        assert_eq!(s, 200);
        html.contains("— finished").then_some(html)
    })
    .await
}

#[tokio::test]
async fn waiting_deliveries_bulk_retry_now_and_cancel_with_a_reason() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&config(&r)).await;
    // A paused destination keeps its deliveries waiting.
    let far = Utc::now() + chrono::Duration::days(1);
    app.store
        .pause_destination("hook", far, "test")
        .await
        .unwrap();
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(
            submit(
                &app,
                json!({"email": format!("wait{i}@example.com"), "first_name": format!("Waiter{i}"), "consent": "yes"}),
            )
            .await,
        );
    }
    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;

    let (s, html) = admin.get("/ui/waiting?destination=hook").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("3 waiting deliveries match the filter"),
        "{html}"
    );
    assert!(html.contains("wait1@example.com") && html.contains("Waiter1"));
    let (s, html) = viewer.get("/ui/waiting").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("Waiter1") && !html.contains("wait1@example.com"),
        "masked for viewers"
    );
    assert!(!html.contains("/ui/waiting/bulk"), "no actions for viewers");
    let (s, _, _) = viewer
        .post("/ui/waiting/bulk", &[("action", "retry_now")])
        .await;
    assert_eq!(s, 403, "viewers cannot act");
    let forged = app
        .client
        .post(app.url("/ui/waiting/bulk"))
        .header("cookie", &admin.cookie)
        .form(&[("csrf", "forged"), ("action", "cancel"), ("confirm", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "CSRF token checked");

    // Bad input names the field.
    let (s, html) = admin.get("/ui/waiting?from=yesterday").await;
    assert_eq!(s, 400);
    assert!(html.contains("from:"), "{html}");
    let (s, _, body) = admin
        .post("/ui/waiting/bulk", &[("action", "explode")])
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("action:"), "{body}");
    let (s, _, body) = admin
        .post(
            "/ui/waiting/bulk",
            &[("action", "cancel"), ("origin", "contact")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("origin:"), "{body}");
    let (s, _, body) = admin
        .post(
            "/ui/waiting/bulk",
            &[("action", "cancel"), ("scope", "selected"), ("id", "nope")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(body.contains("id:"), "{body}");

    // Cancel one selected delivery: the count first, then a reason is required.
    let before = states_of(&app, &events).await;
    let one = before[0].id.to_string();
    let fields = [
        ("action", "cancel"),
        ("scope", "selected"),
        ("destination", "hook"),
        ("id", one.as_str()),
    ];
    let (s, _, body) = admin.post("/ui/waiting/bulk", &fields).await;
    assert_eq!(s, 200);
    assert!(body.contains("Cancel: 1 waiting delivery?"), "{body}");
    assert_eq!(
        states_of(&app, &events).await,
        before,
        "nothing changes before confirming"
    );
    let mut confirmed = fields.to_vec();
    confirmed.push(("confirm", "yes"));
    let (s, _, body) = admin.post("/ui/waiting/bulk", &confirmed).await;
    assert_eq!(s, 400, "a cancel needs a reason");
    assert!(body.contains("reason:"), "{body}");
    confirmed.push(("reason", "test lead from the staging site"));
    let (s, loc, _) = admin.post("/ui/waiting/bulk", &confirmed).await;
    assert_eq!(s, 303);
    let html = job_finished(&admin, &loc).await;
    assert!(
        html.contains("1 of 1 processed (100%), 1 cancelled"),
        "{html}"
    );
    let after = states_of(&app, &events).await;
    assert_eq!(after[0].state, DeliveryState::Discarded, "ended, not lost");
    let reason = after[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("cancelled by key:ops at ")
            && reason.ends_with("test lead from the staging site"),
        "{reason}"
    );
    assert!(after[0].finished_at.is_some());
    assert_eq!(after[1].state, DeliveryState::Pending);

    // Retry now every remaining match of the filter (a date range that
    // covers today, and the form as source).
    let today = Utc::now().date_naive().to_string();
    let fields = [
        ("action", "retry_now"),
        ("destination", "hook"),
        ("from", today.as_str()),
        ("to", today.as_str()),
        ("origin", "form:contact"),
    ];
    let (s, _, body) = admin.post("/ui/waiting/bulk", &fields).await;
    assert_eq!(s, 200);
    assert!(body.contains("Retry now: 2 waiting deliveries?"), "{body}");
    for narrower in [
        ("to", "2001-01-01"),
        ("origin", "form:other"),
        ("cause", "HTTP 503"),
    ] {
        let (_, _, body) = admin
            .post("/ui/waiting/bulk", &[("action", "retry_now"), narrower])
            .await;
        assert!(
            body.contains("Retry now: 0 waiting deliveries?"),
            "{narrower:?}: {body}"
        );
    }
    let mut confirmed = fields.to_vec();
    confirmed.push(("confirm", "yes"));
    let (s, loc, _) = admin.post("/ui/waiting/bulk", &confirmed).await;
    assert_eq!(s, 303);
    let html = job_finished(&admin, &loc).await;
    assert!(
        html.contains("2 of 2 processed (100%), 2 made due now"),
        "{html}"
    );
    let now = Utc::now();
    for d in &states_of(&app, &events).await[1..] {
        assert!(d.next_attempt_at.unwrap() <= now, "due now: {d:?}");
        assert!(d.updated_at > before[1].updated_at);
    }
    // Once the destination is resumed they are sent; the cancelled one never is.
    app.store.resume_destination("hook").await.unwrap();
    eventually("both are delivered", WAIT, || async {
        let s = states_of(&app, &events).await;
        (s[1].state == DeliveryState::Delivered && s[2].state == DeliveryState::Delivered)
            .then_some(())
    })
    .await;
    assert_eq!(r.delivered().len(), 2);
    // Finished deliveries are left alone by both actions.
    let ids: Vec<Uuid> = states_of(&app, &events)
        .await
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(app.store.retry_now(ids.clone()).await.unwrap(), 0);
    assert_eq!(app.store.cancel_waiting(ids, "late").await.unwrap(), 0);
    assert_eq!(
        states_of(&app, &events).await[0].reason.as_deref(),
        Some(reason),
        "a second cancel does not overwrite the first"
    );
}

#[tokio::test]
async fn destination_page_charts_latency_and_errors_over_a_chosen_range() {
    let (_r, app, _events) = app_with_dead_letters(2).await;
    let ok = submit(
        &app,
        json!({"email": "fine@example.com", "first_name": "Fine", "consent": "yes"}),
    )
    .await;
    eventually("delivered", WAIT, || async {
        let d = app.store.deliveries_for_event(ok).await.unwrap().pop()?;
        (d.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    let series = app
        .store
        .destination_series("hook", Utc::now() - chrono::Duration::hours(1), 3600)
        .await
        .unwrap();
    assert_eq!(
        series.iter().map(|b| b.succeeded).sum::<u64>(),
        1,
        "{series:?}"
    );
    assert_eq!(series.iter().map(|b| b.client_errors).sum::<u64>(), 2);
    assert_eq!(
        series
            .iter()
            .map(|b| b.server_errors + b.other_errors)
            .sum::<u64>(),
        0
    );
    assert!(
        series
            .iter()
            .all(|b| b.max_ms.is_some() && b.avg_ms.is_some())
    );
    assert!(
        app.store
            .destination_series("other", Utc::now() - chrono::Duration::hours(1), 3600)
            .await
            .unwrap()
            .is_empty()
    );

    let admin = Ui::new(&app, Role::Admin, "ops").await;
    let viewer = Ui::new(&app, Role::Viewer, "sales").await;
    let (s, html) = viewer.get("/ui/destinations").await;
    assert_eq!(s, 200);
    assert!(html.contains("href=\"/ui/destinations/hook\""), "{html}");
    let (s, html) = viewer.get("/ui/destinations/hook?range=24h").await;
    assert_eq!(s, 200);
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 2, "{html}");
    assert!(html.contains("hook: attempt latency per hour, last 24 hours"));
    assert!(html.contains("hook: failed and throttled attempts per hour, last 24 hours"));
    assert!(html.contains("4xx answers"), "the errors chart's legend");
    assert!(
        html.contains("class=\"range-picker"),
        "a range picker on each chart"
    );
    assert_eq!(html.matches("class=\"range-picker").count(), 2);
    assert!(
        html.contains("href=\"/ui/issues/"),
        "the destination's open issue"
    );
    assert!(
        !html.contains("/ui/destinations/hook/pause"),
        "viewers cannot pause"
    );
    let (_, html) = admin
        .get("/ui/destinations/hook?range=30d&refresh=60")
        .await;
    assert!(html.contains("per day, last 30 days"));
    assert!(html.contains("/ui/destinations/hook/pause"), "admins can");
    assert!(html.contains(r#"content="60""#));
    let (s, html) = admin.get("/ui/destinations/hook?range=1y").await;
    assert_eq!(s, 400);
    assert!(html.contains("range: use 24h, 7d or 30d"));
    let (s, _) = admin.get("/ui/destinations/nope").await;
    assert_eq!(s, 404);
    let (_, html) = admin.get("/ui/?range=24h").await;
    assert_eq!(
        html.matches("class=\"range-picker").count(),
        2,
        "overview charts too"
    );
}

/// An alert monitor over the app's store, notifying `ops`.
fn monitor(app: &TestApp, debounce: &str) -> leadrelay::delivery::AlertMonitor {
    let cfg: leadrelay::config::AlertsConfig = toml::from_str(&format!(
        "notify = [\"ops\"]\nissue_debounce = \"{debounce}\"\ndead_letters = 1000\nmin_attempts = 1000\n"
    ))
    .unwrap();
    leadrelay::delivery::AlertMonitor::new(
        app.store.clone(),
        cfg,
        vec!["hook".into(), "ops".into()],
        ["hook".to_string(), "ops".to_string()].into(),
    )
    .with_public_url("https://leads.example.test/")
}

async fn issue_alerts(app: &TestApp) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let filter = leadrelay::store::EventFilter {
        event_type: Some(leadrelay_model::EventType::Custom(
            leadrelay::delivery::ALERT_EVENT_TYPE.into(),
        )),
        ..Default::default()
    };
    let mut v: Vec<_> = app
        .store
        .list_events(&filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.data)
        .filter(|d| d["alert"] == "issue")
        .collect();
    v.reverse();
    v
}

#[tokio::test]
async fn issue_alerts_are_debounced_and_sent_once_by_racing_nodes() {
    let r = Receiver::start().await;
    let ops = Receiver::start().await;
    let extra = format!(
        "\n[destinations.ops]\nconnector = \"webhook\"\nurl = \"{}\"\nallow_private_networks = true\nlegal_basis = \"legitimate_interest\"\n\n[alerts]\nnotify = [\"ops\"]\nissues = false\n",
        ops.url()
    );
    let app = TestApp::spawn(&webhook_config(&r.url(), &extra)).await;
    r.fail_next(400, "rejected", 2);
    let events = [
        submit(&app, crate::support::lead("a@example.com")).await,
        submit(&app, crate::support::lead("b@example.com")).await,
    ];
    eventually("both dead", WAIT, || async {
        states_of(&app, &events)
            .await
            .iter()
            .all(|d| d.state == DeliveryState::Dead)
            .then_some(())
    })
    .await;
    // Within the debounce time nothing is sent.
    monitor(&app, "1h").check_issues().await.unwrap();
    assert!(issue_alerts(&app).await.is_empty());
    // Past it, three nodes racing send one alert.
    let (a, b, c) = (
        monitor(&app, "0s"),
        monitor(&app, "0s"),
        monitor(&app, "0s"),
    );
    let (x, y, z) = tokio::join!(a.check_issues(), b.check_issues(), c.check_issues());
    x.unwrap();
    y.unwrap();
    z.unwrap();
    a.check_issues().await.unwrap();
    let sent = issue_alerts(&app).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["status"], "firing");
    assert_eq!(sent[0]["destination"], "hook");
    let url = sent[0]["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://leads.example.test/ui/issues/"),
        "{url}"
    );
    assert!(
        sent[0]["message"]
            .as_str()
            .unwrap()
            .contains("2 dead letters, 2 people")
    );
    assert!(
        !serde_json::Value::Object(sent[0].clone())
            .to_string()
            .contains("a@example.com"),
        "no personal data"
    );
    // The alert is delivered like any other.
    eventually("the alert reaches ops", WAIT, || async {
        ops.delivered().into_iter().next()
    })
    .await;

    // Resolved: the dead letters are discarded. Debounced too, then one notice.
    let ids: Vec<Uuid> = states_of(&app, &events)
        .await
        .iter()
        .map(|d| d.id)
        .collect();
    app.store.discard(ids).await.unwrap();
    monitor(&app, "1h").check_issues().await.unwrap();
    assert_eq!(
        issue_alerts(&app).await.len(),
        1,
        "not yet: gone for less than the debounce"
    );
    let (x, y) = tokio::join!(a.check_issues(), b.check_issues());
    x.unwrap();
    y.unwrap();
    c.check_issues().await.unwrap();
    let sent = issue_alerts(&app).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1]["status"], "resolved");
    assert_eq!(sent[1]["url"], sent[0]["url"]);
    assert!(
        sent[1]["message"]
            .as_str()
            .unwrap()
            .contains("issue resolved")
    );
}

#[tokio::test]
async fn issue_alert_survives_a_restart_without_repeating() {
    let r = Receiver::start().await;
    let ops = Receiver::start().await;
    let extra = format!(
        "\n[destinations.ops]\nconnector = \"webhook\"\nurl = \"{}\"\nallow_private_networks = true\nlegal_basis = \"legitimate_interest\"\n\n[alerts]\nnotify = [\"ops\"]\nissue_debounce = \"0s\"\ncheck_interval = \"100ms\"\ndead_letters = 1000\nmin_attempts = 1000\n",
        ops.url()
    );
    let toml = webhook_config(&r.url(), &extra).replacen(
        "[forms.contact]",
        "[server]\npublic_url = \"https://leads.example.test\"\n\n[forms.contact]",
        1,
    );
    let app = TestApp::spawn(&toml).await;
    r.fail_next(400, "rejected", 1);
    submit(&app, crate::support::lead("c@example.com")).await;
    let hit = eventually("the issue alert", WAIT, || async {
        ops.delivered()
            .into_iter()
            .find(|h| h.json()["data"]["fields"]["alert"] == "issue")
    })
    .await;
    let fields = &hit.json()["data"]["fields"];
    assert_eq!(fields["status"], "firing");
    assert!(
        fields["url"]
            .as_str()
            .unwrap()
            .starts_with("https://leads.example.test/ui/issues/"),
        "{fields}"
    );
    let stopped = app.stop().await;
    let app = TestApp::builder(&toml).resume(stopped).start().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let firing = issue_alerts(&app)
        .await
        .iter()
        .filter(|d| d["status"] == "firing")
        .count();
    assert_eq!(firing, 1, "no second alert after a restart");
}
