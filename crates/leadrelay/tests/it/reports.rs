//! Reports end to end: journeys sent through a website form and the API
//! (touches with UTMs, leads, CRM deal stage changes with amounts), then
//! every report's figures checked against hand-computed values, CSV export,
//! the campaign cost import and precise errors — on SQLite and, with
//! `LEADRELAY_TEST_BACKEND=postgres`, on PostgreSQL.

use chrono::{DateTime, Duration, Timelike, Utc};
use leadrelay::auth::generate_key;
use leadrelay::store::Role;
use serde_json::{Value, json};

use crate::support::{Receiver, TestApp, eventually, lead, webhook_config};

fn config() -> String {
    webhook_config(
        "http://127.0.0.1:9/",
        r#"
[reports]
rollup_lag = "0s"
rollup_interval = "50ms"
rollup_batch = 3
kpis.window = "7d"
stages = ["qualified", "proposal", "won"]
[reports.probabilities]
qualified = 0.2
proposal = 0.5
"#,
    )
}

struct Api {
    app: TestApp,
    key: String,
}

impl Api {
    async fn send(&self, body: Value) {
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

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn deal(email: &str, id: &str, stage: &str, t: DateTime<Utc>, extra: Value) -> Value {
    let mut data = json!({"deal_id": id, "stage": stage});
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    json!({"type": "deal.stage_changed", "occurred_at": at(t), "contact": {"email": email},
           "data": data, "consent": {"crm": true}})
}

/// The cell of `column` in the row whose first cell is `key`.
fn cell(report: &Value, key: &str, column: &str) -> Value {
    let cols: Vec<&str> = report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let i = cols.iter().position(|c| *c == column).unwrap();
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == key)
        .unwrap_or_else(|| panic!("no row {key} in {report}"))[i]
        .clone()
}

#[tokio::test]
async fn journeys_become_every_report() {
    let app = TestApp::spawn(&config()).await;
    let (key, record) = generate_key("crm", Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    let api = Api { app, key };
    let now = Utc::now();
    let close = now - Duration::days(2);

    // Alice: a display touch 91 days before her deal closes (outside the
    // lookback), a paid-search form lead, a nurture email click, then a
    // deal qualified → proposal → won for 1000.
    api.send(
        json!({"type": "email.clicked", "occurred_at": at(close - Duration::days(91)),
        "contact": {"email": "alice@example.com"}, "consent": {"crm": true},
        "attribution": {"utm_source": "dsp", "utm_medium": "display", "utm_campaign": "old"}}),
    )
    .await;
    api.send(
        json!({"type": "lead.created", "occurred_at": at(now - Duration::days(40)),
        "contact": {"email": "alice@example.com"}, "consent": {"crm": true},
        "attribution": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}}),
    )
    .await;
    api.send(json!({"type": "email.clicked", "occurred_at": at(now - Duration::days(20)),
        "contact": {"email": "alice@example.com"}, "consent": {"crm": true},
        "attribution": {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "nurture"}}))
        .await;
    let a = "alice@example.com";
    api.send(deal(
        a,
        "d1",
        "qualified",
        now - Duration::days(10),
        json!({"amount": 1000, "owner": "ana"}),
    ))
    .await;
    api.send(deal(
        a,
        "d1",
        "proposal",
        now - Duration::days(5),
        json!({}),
    ))
    .await;
    api.send(deal(a, "d1", "won", close, json!({}))).await;

    // Bob: a website form with UTMs in the POST URL, then a deal that is
    // qualified and lost an hour later.
    let r =
        api.app
            .client
            .post(api.app.url(
                "/v1/forms/contact?utm_source=newsletter&utm_medium=email&utm_campaign=nurture",
            ))
            .json(&lead("bob@example.com"))
            .send()
            .await
            .unwrap();
    assert!(r.status().is_success());
    let b = "bob@example.com";
    api.send(deal(
        b,
        "d2",
        "qualified",
        now - Duration::hours(2),
        json!({"value": "400", "owner": "ben"}),
    ))
    .await;
    api.send(deal(
        b,
        "d2",
        "closed lost",
        now - Duration::hours(1),
        json!({}),
    ))
    .await;

    // Carol: a lead without attribution; a deal open in proposal for 2000,
    // expected to close in ten days.
    api.send(
        json!({"type": "lead.created", "occurred_at": at(now - Duration::days(15)),
        "contact": {"email": "carol@example.com"}, "consent": {"crm": true}}),
    )
    .await;
    let c = "carol@example.com";
    api.send(deal(
        c,
        "d3",
        "proposal",
        now - Duration::days(3),
        json!({"amount": 2000, "expected_close": at(now + Duration::days(10))}),
    ))
    .await;

    let since = (now - Duration::days(60)).format("%Y-%m-%dT%H:%M:%SZ");
    let q = |r: &str, extra: &str| format!("/api/v1/reports/{r}?since={since}{extra}");

    let funnel = api.report(&q("funnel", "")).await;
    assert_eq!(funnel["totals"]["leads"], 3);
    assert_eq!(funnel["totals"]["opportunities"], 3);
    assert_eq!(funnel["totals"]["won"], 1);
    assert_eq!(cell(&funnel, "stage: qualified", "count"), 2);
    assert_eq!(
        cell(&funnel, "stage: qualified", "conversion_from_previous"),
        json!(0.6667)
    );
    assert_eq!(cell(&funnel, "stage: proposal", "count"), 2);
    assert_eq!(
        cell(&funnel, "stage: won", "conversion_from_previous"),
        json!(0.5)
    );
    // Filtered to paid-search first touches there is no lead (Alice's
    // first touch is the display ad).
    let display = api.report(&q("funnel", "&channel=display")).await;
    assert_eq!(display["totals"]["leads"], 1);
    assert_eq!(display["totals"]["opportunities"], 1);

    let v = api.report(&q("velocity", "")).await;
    assert_eq!(v["totals"]["open_opportunities"], json!(1.0));
    assert_eq!(v["totals"]["average_won_deal"], json!(1000.0));
    assert_eq!(v["totals"]["win_rate"], json!(0.5));
    assert_eq!(v["totals"]["sales_cycle_days"], json!(8.0));
    assert_eq!(v["totals"]["velocity_per_day"], json!(62.5));

    let w = api.report(&q("win-rates", "&by=channel")).await;
    assert_eq!(cell(&w, "display", "won"), 1);
    assert_eq!(cell(&w, "display", "won_amount"), json!(1000.0));
    assert_eq!(cell(&w, "email", "lost"), 1);
    assert_eq!(w["totals"]["win_rate"], json!(0.5));
    let by_owner = api.report(&q("win-rates", "&by=owner&owner=ben")).await;
    assert_eq!(by_owner["rows"].as_array().unwrap().len(), 1);
    assert_eq!(cell(&by_owner, "ben", "win_rate"), json!(0.0));

    let tis = api.report(&q("time-in-stage", "")).await;
    // Qualified: Alice 120 h, Bob 1 h.
    assert_eq!(cell(&tis, "qualified", "stays"), 2);
    assert_eq!(cell(&tis, "qualified", "average_hours"), json!(60.5));
    assert_eq!(cell(&tis, "proposal", "stays"), 1);
    assert_eq!(cell(&tis, "proposal", "average_hours"), json!(72.0));
    assert_eq!(cell(&tis, "proposal", "in_stage_now"), 1);
    let outliers = api.report(&q("outliers", "")).await;
    assert_eq!(
        outliers["totals"]["outliers"], 0,
        "too few stays for a fence"
    );

    // Linear: the display touch is outside the 90-day lookback, so the
    // paid-search lead and the email click share Alice's 1000.
    let r = api
        .app
        .client
        .post(api.app.url("/api/v1/reports/campaign-costs"))
        .bearer_auth(&api.key)
        .header("content-type", "text/csv")
        .body(format!(
            "campaign,month,cost,channel\r\nspring,{},250,paid_search\r\n",
            now.format("%Y-%m")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let ch = api.report(&q("channels", "")).await;
    assert_eq!(cell(&ch, "paid_search", "revenue"), json!(500.0));
    assert_eq!(cell(&ch, "email", "revenue"), json!(500.0));
    assert_eq!(cell(&ch, "paid_search", "cost"), json!(250.0));
    assert_eq!(cell(&ch, "paid_search", "roi"), json!(1.0));
    assert!(
        ch["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[0] != "display")
    );
    let first = api.report(&q("channels", "&model=first_touch")).await;
    assert_eq!(cell(&first, "paid_search", "revenue"), json!(1000.0));
    let u = api.report(&q("attribution", "&model=u_shaped")).await;
    // U-shaped with two touches, the lead at the first: 80 % / 20 %.
    let credits: Vec<(&str, f64)> = u["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[3].as_str().unwrap(), r[4].as_f64().unwrap()))
        .collect();
    assert_eq!(credits, [("nurture", 0.2), ("spring", 0.8)]);
    assert_eq!(u["totals"]["coverage"], json!(1.0));

    let until = (now + Duration::days(60)).format("%Y-%m-%dT%H:%M:%SZ");
    let f = api
        .report(&format!("/api/v1/reports/forecast?until={until}"))
        .await;
    assert_eq!(f["totals"]["deals"], 1);
    assert_eq!(f["totals"]["pipeline"], json!(2000.0));
    assert_eq!(f["totals"]["weighted"], json!(1000.0));
    let fa = api.report(&q("forecast-accuracy", "")).await;
    assert!(!fa["rows"].as_array().unwrap().is_empty());

    // KPIs over seven days: Alice's won deal is attributed; the webhook
    // destination at port 9 fails every attempt.
    let k = |kpis: &Value, name: &str| {
        kpis.as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()
            .clone()
    };
    let kpis: Value = eventually(
        "a failed attempt",
        Duration::seconds(20).to_std().unwrap(),
        || async {
            let kpis: Value = api.get("/api/v1/kpis").await.json().await.unwrap();
            (!k(&kpis, "sync_success_rate")["value"].is_null()).then_some(kpis)
        },
    )
    .await;
    let coverage = k(&kpis, "attribution_coverage");
    assert_eq!(coverage["value"], json!(1.0), "{coverage}");
    assert_eq!(coverage["target"], json!(0.9));
    assert_eq!(coverage["met"], true);
    assert_eq!(k(&kpis, "uptime")["measured"], true);
    let sync = k(&kpis, "sync_success_rate");
    assert_eq!(sync["value"], json!(0.0), "{sync}");
    assert_eq!(sync["met"], false);
    let metrics = api.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kpi_target{kpi=\"attribution_coverage\"} 0.9"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kpi_value{kpi=\"attribution_coverage\"} 1.0"),
        "{metrics}"
    );

    // CSV export.
    let r = api.get(&q("win-rates", "&by=channel&format=csv")).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    assert!(
        csv.starts_with("channel,won,lost,win_rate,average_deal_size,won_amount\r\n"),
        "{csv}"
    );
    assert!(csv.contains("display,1,0,1.0,1000.0,1000.0\r\n"), "{csv}");

    // Precise errors.
    for (path, status) in [
        ("/api/v1/reports/nope".to_string(), 400),
        (q("channels", "&model=magic"), 400),
        (q("win-rates", "&by=colour"), 400),
        (format!("/api/v1/reports/funnel?since={until}"), 400),
    ] {
        let r = api.get(&path).await;
        assert_eq!(r.status(), status, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let bad = api
        .app
        .client
        .post(api.app.url("/api/v1/reports/campaign-costs"))
        .bearer_auth(&api.key)
        .header("content-type", "text/csv")
        .body("campaign,month,cost\nspring,2026-05,10\nfall,May,5\nx,2026-13,1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body: Value = bad.json().await.unwrap();
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["line 3: month", "line 4: month"]);
    // All or nothing: spring's May cost was not stored.
    let costs: Value = api
        .get("/api/v1/reports/campaign-costs")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(costs.as_array().unwrap().len(), 1);
    let json_body = api
        .app
        .client
        .post(api.app.url("/api/v1/reports/campaign-costs"))
        .bearer_auth(&api.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 415);
    api.app.stop().await;
}

/// Stores an event as a source (or, with `origin = "system"`, leadrelay
/// itself) would: at `at`, about `email` (none: a CRM activity naming only
/// the CRM's person id), routed to `destinations`.
#[allow(clippy::too_many_arguments)]
async fn store_event(
    app: &TestApp,
    event_type: &str,
    system: bool,
    email: Option<&str>,
    contact: Value,
    data: Value,
    refs: &[(&str, &str, &str)],
    at: DateTime<Utc>,
    destinations: &[&str],
) {
    use leadrelay_model::{
        ConsentPurpose, ConsentRecord, EmailAddress, Event, EventType, Origin, VendorRef,
    };
    let mut c: leadrelay_model::ContactData = serde_json::from_value(contact).unwrap();
    c.email = email.map(|e| EmailAddress::parse(e).unwrap());
    let mut event = Event::internal(
        EventType::parse(event_type).unwrap(),
        if system {
            Origin::system("pipeline")
        } else {
            Origin::source("test")
        },
        c,
        data.as_object().cloned().unwrap_or_default(),
        at,
    );
    event.occurred_at = at;
    event.consent = vec![ConsentRecord {
        purpose: ConsentPurpose::parse("crm").unwrap(),
        granted: true,
        text_version: None,
        recorded_at: at,
    }];
    event.vendor_refs = refs
        .iter()
        .map(|(s, o, i)| VendorRef {
            system: s.to_string(),
            object: o.to_string(),
            id: i.to_string(),
        })
        .collect();
    app.store
        .ingest(vec![leadrelay::store::IngestItem {
            event,
            destinations: destinations.iter().map(|d| d.to_string()).collect(),
            idempotency: None,
        }])
        .await
        .unwrap();
}

fn kpi_of(kpis: &[leadrelay::reports::kpi::Kpi], name: &str) -> leadrelay::reports::kpi::Kpi {
    kpis.iter().find(|k| k.name == name).unwrap().clone()
}

#[tokio::test]
async fn lead_response_data_quality_handoffs_uptime_and_kpi_alerts() {
    // Data quality is counted by the hour the leads are received in, and
    // the KPIs below are computed at the start of the minute the test
    // starts in: in the first minute of an hour (or just before one) the
    // leads' hour would begin at or after that moment and hold nothing yet.
    // Start clear of it.
    let clock = Utc::now();
    let wait = match (clock.minute(), clock.second()) {
        (0, s) => 61 - s,
        (59, s) if s >= 30 => 121 - s,
        _ => 0,
    };
    tokio::time::sleep(std::time::Duration::from_secs(u64::from(wait))).await;
    let receiver = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(
        &receiver.url(),
        r#"
[alerts]
notify = ["hook"]
[reports]
rollup_lag = "0s"
rollup_interval = "1h"
rollup_batch = 4
kpis.window = "7d"
kpis.mql_events = ["lead.mql"]
kpis.required_fields = ["email", "first_name", "company"]
kpis.alert_after = "1h"
kpis.check_interval = "1h"
"#,
    ))
    .await;
    let now = Utc::now();
    let h = Duration::hours;
    let none = json!({});
    let person = |first: &str, company: Option<&str>| {
        let mut c = json!({"first_name": first});
        if let Some(co) = company {
            c["company"] = json!(co);
        }
        c
    };
    // Leads: Ann and Dee complete and valid; Bob's first name is a
    // placeholder (invalid); Cy has no company (incomplete). Dee's lead
    // comes from Pipedrive, which names her person id 77.
    for (email, first, company, refs) in [
        ("ann@example.com", "Ann", Some("Acme"), vec![]),
        ("bob@example.com", "n/a", Some("Beta"), vec![]),
        ("cy@example.com", "Cy", None, vec![]),
        (
            "dee@example.com",
            "Dee",
            Some("Delta"),
            vec![("pipedrive", "person", "77")],
        ),
    ] {
        store_event(
            &app,
            "lead.created",
            false,
            Some(email),
            person(first, company),
            none.clone(),
            &refs,
            now - h(12),
            &[],
        )
        .await;
    }
    // Response clocks: Ann answered after 2 h, Bob never (9 h so far: past
    // the 4 h target), Cy became MQL an hour ago (still waiting), Dee's
    // Pipedrive activity names only person 77, 3 h after her MQL.
    for (email, mql) in [
        ("ann@example.com", 10),
        ("bob@example.com", 9),
        ("cy@example.com", 1),
        ("dee@example.com", 7),
    ] {
        store_event(
            &app,
            "lead.mql",
            false,
            Some(email),
            none.clone(),
            none.clone(),
            &[],
            now - h(mql),
            &[],
        )
        .await;
    }
    store_event(
        &app,
        "meeting.booked",
        false,
        Some("ann@example.com"),
        none.clone(),
        none.clone(),
        &[],
        now - h(8),
        &[],
    )
    .await;
    store_event(
        &app,
        "activity.logged",
        false,
        None,
        none.clone(),
        none.clone(),
        &[("pipedrive", "person", "77")],
        now - h(4),
        &[],
    )
    .await;
    // Handoffs: one with an owner, notified through the webhook; one without
    // an owner; one with an owner but no route to tell anyone.
    let owner = json!({"owner": {"name": "ana"}});
    store_event(
        &app,
        "lead.qualified",
        true,
        Some("ann@example.com"),
        none.clone(),
        owner.clone(),
        &[],
        now - h(6),
        &["hook"],
    )
    .await;
    store_event(
        &app,
        "lead.qualified",
        true,
        Some("bob@example.com"),
        none.clone(),
        json!({"owner": null}),
        &[],
        now - h(6),
        &["hook"],
    )
    .await;
    store_event(
        &app,
        "lead.qualified",
        true,
        Some("cy@example.com"),
        none.clone(),
        owner,
        &[],
        now - h(6),
        &[],
    )
    .await;
    app.settled("hook", 2, std::time::Duration::from_secs(20))
        .await;
    // Uptime: heartbeats in 8 of the 10 minutes before `now`.
    let minute = |m: i64| {
        use chrono::DurationRound;
        (now - Duration::minutes(m))
            .duration_trunc(Duration::minutes(1))
            .unwrap()
    };
    for m in (1..=10).filter(|m| *m != 3 && *m != 5) {
        app.store.record_heartbeat(minute(m)).await.unwrap();
    }

    let cfg = leadrelay::reports::kpi::KpiConfig {
        window: leadrelay::config::HumanDuration::secs(7 * 86_400),
        mql_events: vec!["lead.mql".into()],
        required_fields: vec!["email".into(), "first_name".into(), "company".into()],
        ..Default::default()
    };
    let rc = leadrelay::reports::ReportsConfig {
        rollup_lag: leadrelay::config::HumanDuration::secs(0),
        kpis: cfg.clone(),
        ..Default::default()
    };
    leadrelay::reports::rollup::catch_up(app.store.as_ref(), &rc, now + h(1))
        .await
        .unwrap();
    let at = minute(0);
    let kpis = leadrelay::reports::kpi::compute(app.store.as_ref(), &cfg, at)
        .await
        .unwrap();
    let response = kpi_of(&kpis, "lead_response_hours");
    // (2 + 9 + 3) / 3, Cy still within her 4 hours.
    let mean = response.value.unwrap();
    assert!((mean - 14.0 / 3.0).abs() < 0.02, "{response:?}");
    assert_eq!(response.met, Some(false));
    assert!(
        response
            .detail
            .starts_with("4 MQLs: 2 answered, 1 unanswered past the target, 1 waiting"),
        "{}",
        response.detail
    );
    let quality = kpi_of(&kpis, "data_quality");
    assert_eq!(quality.value, Some(0.5), "{quality:?}");
    assert!(
        quality.detail.contains("(3 complete, 3 valid)"),
        "{}",
        quality.detail
    );
    let handoff = kpi_of(&kpis, "handoff_completion");
    assert_eq!(handoff.value, Some(1.0 / 3.0), "{handoff:?}");
    assert!(
        handoff
            .detail
            .contains("1 without an owner, 1 with no notification route"),
        "{}",
        handoff.detail
    );
    let uptime = kpi_of(&kpis, "uptime");
    assert_eq!(uptime.value, Some(0.8), "{uptime:?}");
    assert_eq!(uptime.met, Some(false));
    assert!(kpis.iter().all(|k| k.measured));

    // The API and the gauges show the same (uptime there runs to now).
    let (key, record) = generate_key("ops", Role::Admin);
    app.store.create_api_key(record).await.unwrap();
    let api: Value = app
        .client
        .get(app.url("/api/v1/kpis"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let q = api
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "data_quality")
        .unwrap();
    assert_eq!(q["value"], json!(0.5), "{api}");
    assert_eq!(q["target"], json!(0.95));
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("kpi_value{kpi=\"data_quality\"} 0.5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kpi_target{kpi=\"lead_response_hours\"} 4.0"),
        "{metrics}"
    );

    // Alerts: below target at `at` starts the clock; an hour later the
    // alert goes out once; when quality recovers, one notice.
    let alerts_cfg = leadrelay::config::AlertsConfig {
        notify: vec!["hook".into()],
        ..Default::default()
    };
    let enabled = ["hook".to_string()].into_iter().collect();
    let monitor =
        leadrelay::delivery::AlertMonitor::new(app.store.clone(), alerts_cfg, vec![], enabled);
    let quality_alerts = || {
        receiver
            .delivered()
            .into_iter()
            .map(|hit| hit.json())
            .filter(|b| b.to_string().contains("\"alert\":\"data_quality\""))
            .collect::<Vec<_>>()
    };
    use leadrelay::reports::kpi::check_alerts;
    check_alerts(app.store.as_ref(), &cfg, &monitor, at)
        .await
        .unwrap();
    check_alerts(
        app.store.as_ref(),
        &cfg,
        &monitor,
        at + Duration::minutes(30),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        quality_alerts().is_empty(),
        "below for less than alert_after"
    );
    check_alerts(app.store.as_ref(), &cfg, &monitor, at + h(1))
        .await
        .unwrap();
    check_alerts(
        app.store.as_ref(),
        &cfg,
        &monitor,
        at + Duration::minutes(70),
    )
    .await
    .unwrap();
    let fired = eventually(
        "the data quality alert",
        std::time::Duration::from_secs(20),
        || async {
            let a = quality_alerts();
            (!a.is_empty()).then_some(a)
        },
    )
    .await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let text = fired[0].to_string();
    assert!(
        text.contains("firing") && text.contains("KPI data_quality is 0.5000"),
        "{text}"
    );
    // Forty complete leads: 42 of 44 ≥ 95 %.
    for i in 0..40 {
        store_event(
            &app,
            "lead.created",
            false,
            Some(&format!("p{i}@example.com")),
            person("Pat", Some("Pco")),
            none.clone(),
            &[],
            now - h(1),
            &[],
        )
        .await;
    }
    leadrelay::reports::rollup::catch_up(app.store.as_ref(), &rc, now + h(2))
        .await
        .unwrap();
    check_alerts(app.store.as_ref(), &cfg, &monitor, at + h(2))
        .await
        .unwrap();
    check_alerts(app.store.as_ref(), &cfg, &monitor, at + h(3))
        .await
        .unwrap();
    let all = eventually(
        "the recovery notice",
        std::time::Duration::from_secs(20),
        || async {
            let a = quality_alerts();
            (a.len() >= 2).then_some(a)
        },
    )
    .await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].to_string().contains("resolved"), "{}", all[1]);
    app.stop().await;
}
