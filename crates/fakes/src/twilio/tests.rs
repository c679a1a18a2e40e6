//! The fake Twilio over real HTTP.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::common::Fault;

const SID: &str = TwilioConfig::DEFAULT_ACCOUNT_SID;
const TOKEN: &str = TwilioConfig::DEFAULT_AUTH_TOKEN;

/// A plain-HTTP client (reqwest is built without a default TLS provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn start(config: TwilioConfig) -> FakeTwilio {
    FakeTwilio::start(config).await.expect("fake twilio starts")
}

async fn send(
    twilio: &FakeTwilio,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = client().post(twilio.messages_url()).form(form);
    if let Some((user, pass)) = auth {
        req = req.basic_auth(user, Some(pass));
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

fn sms<'a>(to: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("To", to),
        ("From", TwilioConfig::DEFAULT_FROM),
        ("Body", body),
    ]
}

fn assert_error(result: &(u16, Value), status: u16, code: u64) {
    assert_eq!(result.0, status, "{}", result.1);
    assert_eq!(result.1["code"], code, "{}", result.1);
    assert_eq!(result.1["status"], status);
    assert_eq!(
        result.1["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
    assert!(result.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn twilio_sends_an_sms() {
    assert_eq!(SID.len(), 34);
    assert_eq!(TOKEN.len(), 32);
    let twilio = start(TwilioConfig::default()).await;
    let (status, body) = send(
        &twilio,
        Some((SID, TOKEN)),
        &sms("+14155550100", "New lead: Ada Lovelace"),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let sid = body["sid"].as_str().expect("sid");
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+14155550100");
    assert_eq!(body["from"], TwilioConfig::DEFAULT_FROM);
    assert_eq!(body["body"], "New lead: Ada Lovelace");
    assert_eq!(body["num_segments"], "1");
    assert_eq!(body["direction"], "outbound-api");
    assert_eq!(body["api_version"], "2010-04-01");
    assert_eq!(body["account_sid"], SID);
    let created = body["date_created"].as_str().expect("date");
    assert!(
        chrono::DateTime::parse_from_rfc2822(created).is_ok(),
        "{created}"
    );
    assert_eq!(
        body["uri"],
        format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json")
    );

    let stored = twilio.messages_to("+14155550100");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].sid, sid);

    // Fetch it back, move it to delivered.
    assert!(twilio.set_status(sid, "delivered"));
    let fetched: Value = client()
        .get(format!(
            "{}/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
            twilio.base_url()
        ))
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["status"], "delivered");

    // An API key works too; a long GSM body takes several segments.
    let long = "a".repeat(161);
    let (status, body) = send(
        &twilio,
        Some((
            TwilioConfig::DEFAULT_API_KEY_SID,
            TwilioConfig::DEFAULT_API_KEY_SECRET,
        )),
        &sms("+14155550101", &long),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["num_segments"], "2");

    // Through a Messaging Service: accepted, no sender yet.
    let (status, body) = send(
        &twilio,
        Some((SID, TOKEN)),
        &[
            ("To", "+14155550102"),
            (
                "MessagingServiceSid",
                TwilioConfig::DEFAULT_MESSAGING_SERVICE_SID,
            ),
            ("Body", "hi"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "accepted");
    assert!(body["from"].is_null());
    assert_eq!(body["num_segments"], "0");
    assert_eq!(twilio.messages().len(), 3);
}

#[tokio::test]
async fn twilio_rejects_bad_credentials() {
    let twilio = start(TwilioConfig::default()).await;
    let msg = sms("+14155550100", "x");
    let resp = client()
        .post(twilio.messages_url())
        .form(&msg)
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"Twilio API\""
    );
    let result = (
        resp.status().as_u16(),
        resp.json::<Value>().await.expect("json"),
    );
    assert_error(&result, 401, 20003);
    assert_error(&send(&twilio, Some((SID, "wrong")), &msg).await, 401, 20003);
    assert_error(
        &send(&twilio, Some(("ACnope", TOKEN)), &msg).await,
        401,
        20003,
    );
    assert_error(
        &send(
            &twilio,
            Some((TwilioConfig::DEFAULT_API_KEY_SID, "wrong")),
            &msg,
        )
        .await,
        401,
        20003,
    );
    // Valid credentials, another account in the path.
    let other = format!(
        "{}/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
        twilio.base_url()
    );
    let resp = client()
        .post(other)
        .basic_auth(SID, Some(TOKEN))
        .form(&msg)
        .send()
        .await
        .expect("request");
    let result = (
        resp.status().as_u16(),
        resp.json::<Value>().await.expect("json"),
    );
    assert_error(&result, 404, 20404);
    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn twilio_validates_parameters_with_its_error_codes() {
    let twilio = start(TwilioConfig {
        rate_limit: 1000,
        ..Default::default()
    })
    .await;
    let auth = Some((SID, TOKEN));
    let from = TwilioConfig::DEFAULT_FROM;
    assert_error(
        &send(&twilio, auth, &[("From", from), ("Body", "x")]).await,
        400,
        21604,
    );
    assert_error(
        &send(&twilio, auth, &[("To", "+14155550100"), ("Body", "x")]).await,
        400,
        21603,
    );
    assert_error(
        &send(&twilio, auth, &[("To", "+14155550100"), ("From", from)]).await,
        400,
        21602,
    );
    assert_error(
        &send(&twilio, auth, &sms("+14155550100", "   ")).await,
        400,
        21602,
    );
    let too_long = "a".repeat(1601);
    assert_error(
        &send(&twilio, auth, &sms("+14155550100", &too_long)).await,
        400,
        21617,
    );
    let result = send(&twilio, auth, &sms("415-555-0100", "x")).await;
    assert_error(&result, 400, 21211);
    assert_eq!(
        result.1["message"],
        "Invalid 'To' Phone Number: 415-555-0100"
    );
    assert_error(&send(&twilio, auth, &sms("+0123", "x")).await, 400, 21211);
    let with_from = |f: &'static str| vec![("To", "+14155550100"), ("From", f), ("Body", "x")];
    assert_error(
        &send(&twilio, auth, &with_from(TwilioConfig::VOICE_ONLY_NUMBER)).await,
        400,
        21606,
    );
    assert_error(
        &send(&twilio, auth, &with_from("+14155559999")).await,
        400,
        21659,
    );
    assert_error(
        &send(
            &twilio,
            auth,
            &with_from(TwilioConfig::OTHER_ACCOUNT_NUMBER),
        )
        .await,
        400,
        21660,
    );
    assert_error(
        &send(&twilio, auth, &with_from("not a number!")).await,
        400,
        21212,
    );
    assert_error(
        &send(&twilio, auth, &sms(TwilioConfig::DEFAULT_FROM, "x")).await,
        400,
        21266,
    );
    let bad_service = [
        ("To", "+14155550100"),
        ("MessagingServiceSid", "MGnope"),
        ("Body", "x"),
    ];
    assert_error(&send(&twilio, auth, &bad_service).await, 400, 21701);
    let result = send(&twilio, auth, &sms(TwilioConfig::OPTED_OUT_NUMBER, "x")).await;
    assert_error(&result, 400, 21610);
    assert_eq!(
        result.1["message"],
        "Attempt to send to unsubscribed recipient"
    );
    twilio.opt_out("+14155550123");
    assert_error(
        &send(&twilio, auth, &sms("+14155550123", "x")).await,
        400,
        21610,
    );
    // An alphanumeric sender ID is a valid From.
    assert_eq!(send(&twilio, auth, &with_from("LeadRelay")).await.0, 201);
    // A JSON body carries no form parameters.
    let resp = client()
        .post(twilio.messages_url())
        .basic_auth(SID, Some(TOKEN))
        .header("content-type", "application/json")
        .body(r#"{"To":"+14155550100"}"#)
        .send()
        .await
        .expect("request");
    let result = (
        resp.status().as_u16(),
        resp.json::<Value>().await.expect("json"),
    );
    assert_error(&result, 400, 21604);
    assert_eq!(twilio.messages().len(), 1);
}

#[tokio::test]
async fn twilio_rate_limit_answers_20429() {
    let config = TwilioConfig {
        rate_limit: 2,
        rate_window: Duration::from_millis(1000),
        ..Default::default()
    };
    let twilio = start(config).await;
    let auth = Some((SID, TOKEN));
    assert_eq!(send(&twilio, auth, &sms("+14155550100", "1")).await.0, 201);
    assert_eq!(send(&twilio, auth, &sms("+14155550100", "2")).await.0, 201);
    assert_error(
        &send(&twilio, auth, &sms("+14155550100", "3")).await,
        429,
        20429,
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(send(&twilio, auth, &sms("+14155550100", "4")).await.0, 201);
    assert_eq!(twilio.messages().len(), 3);
}

#[tokio::test]
async fn twilio_account_fetch_checks_credentials() {
    let twilio = start(TwilioConfig::default()).await;
    let url = format!("{}/2010-04-01/Accounts/{SID}.json", twilio.base_url());
    let resp = client()
        .get(&url)
        .basic_auth(SID, Some(TOKEN))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["sid"], SID);
    assert_eq!(body["status"], "active");
    let resp = client()
        .get(&url)
        .basic_auth(SID, Some("nope"))
        .send()
        .await
        .expect("request");
    let result = (
        resp.status().as_u16(),
        resp.json::<Value>().await.expect("json"),
    );
    assert_error(&result, 401, 20003);
    let resp = client()
        .get(format!("{}/2010-04-01/Nope.json", twilio.base_url()))
        .send()
        .await
        .expect("request");
    let result = (
        resp.status().as_u16(),
        resp.json::<Value>().await.expect("json"),
    );
    assert_error(&result, 404, 20404);
}

#[tokio::test]
async fn twilio_faults_and_request_log() {
    let twilio = start(TwilioConfig::default()).await;
    let body = r#"{"code":20500,"message":"Internal Server Error","more_info":"https://www.twilio.com/docs/errors/20500","status":500}"#;
    twilio.faults().push(
        Fault::Status {
            status: 500,
            body: body.into(),
            headers: vec![],
        },
        2,
    );
    let auth = Some((SID, TOKEN));
    assert_error(
        &send(&twilio, auth, &sms("+14155550100", "x")).await,
        500,
        20500,
    );
    assert_error(
        &send(&twilio, auth, &sms("+14155550100", "x")).await,
        500,
        20500,
    );
    assert_eq!(send(&twilio, auth, &sms("+14155550100", "x")).await.0, 201);
    let statuses: Vec<u16> = twilio
        .requests()
        .entries()
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 201]);
    assert_eq!(twilio.messages().len(), 1);
    assert!(
        twilio
            .credentials_banner(&twilio.base_url())
            .contains(TOKEN)
    );
}
