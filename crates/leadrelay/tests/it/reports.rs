//! Reports end to end: journeys sent through a website form and the API
//! (touches with UTMs, leads, CRM deal stage changes with amounts), then
//! every report's figures checked against hand-computed values, CSV export,
//! the campaign cost import and precise errors — on SQLite and, with
//! `LEADRELAY_TEST_BACKEND=postgres`, on PostgreSQL.

use chrono::{DateTime, Duration, Utc};
use leadrelay::auth::generate_key;
use leadrelay::store::Role;
use serde_json::{Value, json};

use crate::support::{TestApp, eventually, lead, webhook_config};

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
    assert_eq!(k(&kpis, "uptime")["measured"], false);
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
