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
use crate::support::{Receiver, TestApp, eventually};

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
