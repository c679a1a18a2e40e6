//! The fake Salesforce over real HTTP: OAuth flows, sessions, validation,
//! duplicate rules, upserts, SOQL, composite, limits and fault injection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use super::*;
use crate::common::Fault;

const OTHER_KEY: &str = include_str!("../../testdata/salesforce/other.key.pem");
const V: &str = "/services/data/v60.0";

async fn start(config: SalesforceConfig) -> (FakeSalesforce, Client) {
    let fake = FakeSalesforce::start(config).await.expect("start fake");
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    (fake, Client::new())
}

async fn call(
    fake: &FakeSalesforce,
    client: &Client,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = client
        .request(method, format!("{}{}", fake.base_url(), path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request")
}

async fn json_of(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn token_request(
    fake: &FakeSalesforce,
    client: &Client,
    form: &[(&str, &str)],
) -> (u16, Value) {
    json_of(
        client
            .post(format!("{}/services/oauth2/token", fake.base_url()))
            .form(form)
            .send()
            .await
            .expect("send"),
    )
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn assertion(key_pem: &str, claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign")
}

fn claims(exp: u64) -> Value {
    json!({"iss": SalesforceConnectedApp::DEFAULT_CLIENT_ID, "sub": SalesforceConfig::DEFAULT_USERNAME, "aud": "https://login.salesforce.com", "exp": exp})
}

fn first_error(body: &Value) -> (&str, &str) {
    (
        body[0]["errorCode"].as_str().unwrap_or_default(),
        body[0]["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn refresh_token_flow_issues_a_working_session() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let (status, body) = token_request(
        &fake,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
            (
                "client_secret",
                SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
            ),
            ("refresh_token", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["instance_url"], fake.base_url());
    for k in ["access_token", "id", "issued_at", "signature"] {
        assert!(body[k].as_str().is_some_and(|s| !s.is_empty()), "{k}");
    }
    let token = body["access_token"].as_str().expect("token");
    let (status, limits) = json_of(
        call(
            &fake,
            &client,
            token,
            Method::GET,
            &format!("{V}/limits"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(limits["DailyApiRequests"]["Max"].is_number());

    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            &[
                ("grant_type", "refresh_token"),
                ("client_id", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
                ("client_secret", "wrong"),
                ("refresh_token", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
            ],
            "invalid_client",
            "invalid client credentials",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "nope"),
                ("client_secret", "x"),
                ("refresh_token", SalesforceConfig::DEFAULT_REFRESH_TOKEN),
            ],
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("client_id", SalesforceConnectedApp::DEFAULT_CLIENT_ID),
                (
                    "client_secret",
                    SalesforceConnectedApp::DEFAULT_CLIENT_SECRET,
                ),
                ("refresh_token", "revoked"),
            ],
            "invalid_grant",
            "expired access/refresh token",
        ),
        (
            &[("grant_type", "password")],
            "unsupported_grant_type",
            "grant type not supported",
        ),
    ];
    for (form, error, description) in cases {
        let (status, body) = token_request(&fake, &client, form).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], error);
        assert_eq!(body["error_description"], description);
    }
}

#[tokio::test]
async fn jwt_bearer_flow_verifies_signature_audience_expiry_and_user() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let grant = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let good = assertion(
        SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM,
        claims(now() + 120),
    );
    let (status, body) = token_request(
        &fake,
        &client,
        &[("grant_type", grant), ("assertion", &good)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance_url"], fake.base_url());
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(
        call(
            &fake,
            &client,
            token,
            Method::GET,
            &format!("{V}/sobjects"),
            None
        )
        .await
        .status()
        .as_u16(),
        200
    );

    let mut wrong_aud = claims(now() + 120);
    wrong_aud["aud"] = json!("https://example.my.salesforce.com");
    let mut unknown_user = claims(now() + 120);
    unknown_user["sub"] = json!("someone@else.test");
    let mut unknown_app = claims(now() + 120);
    unknown_app["iss"] = json!("3MVGunknown");
    let cases = [
        (
            assertion(OTHER_KEY, claims(now() + 120)),
            "invalid_grant",
            "invalid assertion",
        ),
        (
            assertion(SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM, wrong_aud),
            "invalid_grant",
            "audience is invalid",
        ),
        (
            assertion(
                SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM,
                claims(now() - 10),
            ),
            "invalid_grant",
            "expired authorization code",
        ),
        (
            assertion(
                SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM,
                claims(now() + 3600),
            ),
            "invalid_grant",
            "invalid assertion",
        ),
        (
            assertion(SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM, unknown_user),
            "invalid_grant",
            "user hasn't approved this consumer",
        ),
        (
            assertion(SalesforceConnectedApp::TEST_PRIVATE_KEY_PEM, unknown_app),
            "invalid_client_id",
            "client identifier invalid",
        ),
        (
            "not.a.jwt".to_string(),
            "invalid_grant",
            "invalid assertion",
        ),
    ];
    for (a, error, description) in cases {
        let (status, body) =
            token_request(&fake, &client, &[("grant_type", grant), ("assertion", &a)]).await;
        assert_eq!(status, 400, "{description}");
        assert_eq!(body["error"], error);
        assert_eq!(body["error_description"], description);
    }
}

#[tokio::test]
async fn sessions_expire_and_can_be_expired_on_command() {
    let config = SalesforceConfig {
        session_lifetime: Duration::from_millis(300),
        ..SalesforceConfig::default()
    };
    let (fake, client) = start(config).await;
    let token = fake.issue_access_token();
    let path = format!("{V}/limits");
    assert_eq!(
        call(&fake, &client, &token, Method::GET, &path, None)
            .await
            .status()
            .as_u16(),
        200
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, body) =
        json_of(call(&fake, &client, &token, Method::GET, &path, None).await).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );

    let fresh = fake.issue_access_token();
    assert_eq!(
        call(&fake, &client, &fresh, Method::GET, &path, None)
            .await
            .status()
            .as_u16(),
        200
    );
    fake.expire_all_sessions();
    assert_eq!(
        call(&fake, &client, &fresh, Method::GET, &path, None)
            .await
            .status()
            .as_u16(),
        401
    );
    let (status, _) = json_of(
        client
            .get(format!("{}{path}", fake.base_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn lead_crud_and_field_validation() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let (status, created) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(json!({"LastName": "Lovelace", "Company": "Engines", "Email": "ada@example.com"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["success"], true);
    assert_eq!(created["errors"], json!([]));
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("00Q"));

    let (status, lead) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::GET,
            &format!("{V}/sobjects/Lead/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(lead["attributes"]["type"], "Lead");
    assert_eq!(lead["Status"], "Open - Not Contacted");
    let (_, some) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::GET,
            &format!("{V}/sobjects/Lead/{id}?fields=Email,Company"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(some["Email"], "ada@example.com");
    assert!(some.get("LastName").is_none());

    let resp = call(
        &fake,
        &client,
        t,
        Method::PATCH,
        &format!("{V}/sobjects/Lead/{id}"),
        Some(json!({"Status": "Working - Contacted", "Title": "CTO"})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        fake.record(&id)
            .and_then(|r| r.text("Title").map(String::from)),
        Some("CTO".into())
    );

    let cases = [
        (
            json!({"LastName": "X"}),
            "REQUIRED_FIELD_MISSING",
            Some(json!(["Company"])),
        ),
        (
            json!({"Company": "X"}),
            "REQUIRED_FIELD_MISSING",
            Some(json!(["LastName"])),
        ),
        (
            json!({"LastName": "X", "Company": "Y", "Favourite__c": "blue"}),
            "INVALID_FIELD",
            None,
        ),
        (
            json!({"LastName": "X", "Company": "Y", "Status": "Hot"}),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            Some(json!(["Status"])),
        ),
        (
            json!({"LastName": "X", "Company": "Y", "Email": "not-an-email"}),
            "INVALID_EMAIL_ADDRESS",
            Some(json!(["Email"])),
        ),
        (
            json!({"LastName": "X", "Company": "Y", "CreatedDate": "2020-01-01T00:00:00Z"}),
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            Some(json!(["CreatedDate"])),
        ),
        (
            json!({"LastName": "X", "Company": "Y", "NumberOfEmployees": "many"}),
            "JSON_PARSER_ERROR",
            None,
        ),
        (
            json!({"LastName": "X".repeat(81), "Company": "Y"}),
            "STRING_TOO_LONG",
            Some(json!(["LastName"])),
        ),
    ];
    for (body, code, fields) in cases {
        let (status, out) = json_of(
            call(
                &fake,
                &client,
                t,
                Method::POST,
                &format!("{V}/sobjects/Lead"),
                Some(body.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(out[0]["errorCode"], code, "{out}");
        assert!(out[0]["message"].is_string());
        if let Some(f) = fields {
            assert_eq!(out[0]["fields"], f);
        }
    }
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(json!({"Name": "Deal", "StageName": "Won-ish"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "REQUIRED_FIELD_MISSING");
    assert_eq!(out[0]["fields"], json!(["CloseDate"]));
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(json!({"Name": "Deal", "StageName": "Won-ish", "CloseDate": "2024-12-31"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        first_error(&out).0,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Opportunity"),
            Some(json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "31/12/2024"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "JSON_PARSER_ERROR");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Task"),
            Some(json!({"WhoId": id, "ActivityDate": "2024-06-01", "Priority": "High"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "Task subject is optional");
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Task"),
            Some(json!({"WhoId": "001000000000000AAA"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "MALFORMED_ID");

    assert_eq!(
        call(
            &fake,
            &client,
            t,
            Method::DELETE,
            &format!("{V}/sobjects/Lead/{id}"),
            None
        )
        .await
        .status()
        .as_u16(),
        204
    );
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::GET,
            &format!("{V}/sobjects/Lead/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(first_error(&out).0, "NOT_FOUND");
    assert!(fake.leads().is_empty());
    assert_eq!(fake.tasks().len(), 1);
}

#[tokio::test]
async fn malformed_bodies_and_unknown_versions() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let resp = client
        .post(format!("{}{V}/sobjects/Lead", fake.base_url()))
        .bearer_auth(t)
        .header("content-type", "application/json")
        .body("{\"LastName\": ")
        .send()
        .await
        .expect("send");
    let (status, out) = json_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "JSON_PARSER_ERROR");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::GET,
            "/services/data/v59.0/limits",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Widget__c"),
            Some(json!({})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn duplicate_rules_alert_on_same_email_unless_allowed() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let existing = fake.seed(
        "Lead",
        json!({"LastName": "First", "Company": "A", "Email": "dup@example.com"}),
    );
    let body = json!({"LastName": "Second", "Company": "B", "Email": "DUP@example.com"});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(body.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(out[0]["errorCode"], "DUPLICATES_DETECTED");
    let dup = &out[0]["duplicateResult"];
    assert_eq!(dup["allowSave"], true, "the standard rules alert");
    assert_eq!(dup["duplicateRuleEntityType"], "Lead");
    assert_eq!(
        dup["matchResults"][0]["matchRecords"][0]["record"]["Id"],
        existing.as_str()
    );
    assert_eq!(fake.leads().len(), 1);

    let resp = client
        .post(format!("{}{V}/sobjects/Lead", fake.base_url()))
        .bearer_auth(t)
        .header("Sforce-Duplicate-Rule-Header", "allowSave=true")
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(fake.leads().len(), 2);

    // The Lead rule also checks Contacts, fuzzily: the same name and
    // company (the Contact's Account) match whatever the email.
    let account = fake.seed("Account", json!({"Name": "Globex"}));
    let contact = fake.seed(
        "Contact",
        json!({"FirstName": "John", "LastName": "Smith", "Email": "john@globex.io", "AccountId": account}),
    );
    let namesake = json!({"FirstName": "john", "LastName": "SMITH", "Company": "Globex", "Email": "js@gmail.com"});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(namesake.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let results = &out[0]["duplicateResult"]["matchResults"];
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(results[0]["entityType"], "Contact");
    assert_eq!(results[0]["rule"], "Standard_Contact_Match_Rule_v1_1");
    assert_eq!(
        results[0]["matchRecords"][0]["record"]["Id"],
        contact.as_str()
    );

    // A rule whose action is Block refuses even with the header.
    let (fake, client) = start(SalesforceConfig {
        duplicate_rules_block: true,
        ..SalesforceConfig::default()
    })
    .await;
    fake.seed(
        "Lead",
        json!({"LastName": "A", "Company": "B", "Email": "b@example.com"}),
    );
    let resp = client
        .post(format!("{}{V}/sobjects/Lead", fake.base_url()))
        .bearer_auth(t)
        .header("Sforce-Duplicate-Rule-Header", "allowSave=true")
        .json(&json!({"LastName": "Z", "Company": "Y", "Email": "b@example.com"}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out[0]["duplicateResult"]["allowSave"], false);

    let (fake, client) = start(SalesforceConfig {
        duplicate_rules: false,
        ..SalesforceConfig::default()
    })
    .await;
    fake.seed(
        "Contact",
        json!({"LastName": "C", "Email": "c@example.com"}),
    );
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Contact"),
            Some(json!({"LastName": "D", "Email": "c@example.com"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn upsert_by_external_id_creates_then_updates() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let path = format!("{V}/sobjects/Lead/External_Id__c/lr-42");
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &path,
            Some(json!({"LastName": "Upsert", "Company": "U"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["created"], true);
    let id = out["id"].as_str().expect("id").to_string();
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &path,
            Some(json!({"Title": "VP"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["created"], false);
    assert_eq!(out["id"], id.as_str());
    let leads = fake.leads();
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0].text("External_Id__c"), Some("lr-42"));
    assert_eq!(leads[0].text("Title"), Some("VP"));

    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &format!("{V}/sobjects/Lead/Email/x@example.com"),
            Some(json!({"LastName": "Z"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(first_error(&out).0, "NOT_FOUND");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &format!("{V}/sobjects/Lead/External_Id__c/new-one?updateOnly=true"),
            Some(json!({"LastName": "Z", "Company": "Z"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &format!("{V}/sobjects/Lead/External_Id__c/lr-43"),
            Some(json!({"Company": "No name"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "REQUIRED_FIELD_MISSING");
    assert_eq!(fake.leads().len(), 1);
}

#[tokio::test]
async fn soql_queries_with_escaping_limits_and_errors() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    fake.seed(
        "Lead",
        json!({"LastName": "O'Brien", "Company": "Pub", "Email": "ob@example.com"}),
    );
    fake.seed(
        "Lead",
        json!({"LastName": "Smith", "Company": "Forge", "Email": "smith@example.com"}),
    );
    fake.seed(
        "Lead",
        json!({"LastName": "Smythe", "Company": "Forge", "Email": "smythe@example.com"}),
    );
    let query = |q: &str| {
        let url = format!("{}{V}/query", fake.base_url());
        let req = client.get(url).bearer_auth(t).query(&[("q", q)]);
        async move { json_of(req.send().await.expect("send")).await }
    };
    let (status, out) = query(r"SELECT Id, Email FROM Lead WHERE LastName = 'O\'Brien'").await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["totalSize"], 1);
    assert_eq!(out["done"], true);
    assert_eq!(out["records"][0]["Email"], "ob@example.com");
    assert_eq!(out["records"][0]["attributes"]["type"], "Lead");

    let (_, out) =
        query("select id from lead where company = 'forge' order by LastName desc limit 1").await;
    assert_eq!(out["totalSize"], 1);
    let (_, out) =
        query("SELECT COUNT() FROM Lead WHERE Email LIKE 'sm%' OR Email IN ('ob@example.com')")
            .await;
    assert_eq!(out["totalSize"], 3);
    let (_, out) = query("SELECT Id FROM Lead WHERE Email = 'nobody@example.com' LIMIT 1").await;
    assert_eq!(out["totalSize"], 0);

    let (status, out) = query("SELECT Id, Favourite__c FROM Lead").await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "INVALID_FIELD");
    let (status, out) = query("SELECT Id FROM Widget__c").await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "INVALID_TYPE");
    let (status, out) = query("SELECT Id FROM Lead WHERE Email = 'unterminated").await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "MALFORMED_QUERY");
    let (status, out) = query("SELECT Id FROM Lead WHERE NumberOfEmployees = '12'").await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "INVALID_FIELD");
}

#[tokio::test]
async fn composite_references_and_all_or_none_rollback() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let ok = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "refAccount", "body": {"Name": "Acme"}},
        {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "refContact", "body": {"LastName": "Road", "AccountId": "@{refAccount.id}"}},
        {"method": "GET", "url": format!("{V}/sobjects/Contact/@{{refContact.id}}?fields=AccountId"), "referenceId": "readBack"},
    ]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite"),
            Some(ok),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let responses = out["compositeResponse"].as_array().expect("responses");
    assert_eq!(responses[0]["httpStatusCode"], 201);
    assert!(
        responses[0]["httpHeaders"]["Location"]
            .as_str()
            .is_some_and(|l| l.contains("/sobjects/Account/"))
    );
    assert_eq!(
        responses[2]["body"]["AccountId"],
        responses[0]["body"]["id"]
    );
    assert_eq!(fake.contacts().len(), 1);

    let failing = json!({"allOrNone": true, "compositeRequest": [
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "a1", "body": {"Name": "Rolled back"}},
        {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "c1", "body": {"FirstName": "No last name"}},
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "a2", "body": {"Name": "Never"}},
    ]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite"),
            Some(failing),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let responses = out["compositeResponse"].as_array().expect("responses");
    assert_eq!(responses[1]["httpStatusCode"], 400);
    assert_eq!(
        responses[1]["body"][0]["errorCode"],
        "REQUIRED_FIELD_MISSING"
    );
    for i in [0, 2] {
        assert_eq!(responses[i]["httpStatusCode"], 400);
        assert_eq!(responses[i]["body"][0]["errorCode"], "PROCESSING_HALTED");
    }
    assert_eq!(fake.accounts().len(), 1, "the rolled-back account is gone");

    let partial = json!({"allOrNone": false, "compositeRequest": [
        {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "bad", "body": {"FirstName": "x"}},
        {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "dependent", "body": {"LastName": "Y", "AccountId": "@{bad.id}"}},
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "fine", "body": {"Name": "Kept"}},
    ]});
    let (_, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite"),
            Some(partial),
        )
        .await,
    )
    .await;
    let responses = out["compositeResponse"].as_array().expect("responses");
    assert_eq!(responses[1]["body"][0]["errorCode"], "PROCESSING_HALTED");
    assert_eq!(responses[2]["httpStatusCode"], 201);
    assert_eq!(fake.accounts().len(), 2);

    let too_many: Vec<Value> = (0..26).map(|i| json!({"method": "GET", "url": format!("{V}/limits"), "referenceId": format!("r{i}")})).collect();
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite"),
            Some(json!({"compositeRequest": too_many})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn sobject_collections_create_with_and_without_all_or_none() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let records = json!([
        {"attributes": {"type": "Lead"}, "LastName": "One", "Company": "C1"},
        {"attributes": {"type": "Lead"}, "LastName": "Two"},
    ]);
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite/sobjects"),
            Some(json!({"allOrNone": false, "records": records.clone()})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[1]["success"], false);
    assert_eq!(out[1]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(fake.leads().len(), 1);

    let (_, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/composite/sobjects"),
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await,
    )
    .await;
    assert_eq!(
        out[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(fake.leads().len(), 1);
}

#[tokio::test]
async fn api_request_limit_lock_row_and_validation_rules() {
    let rule = SalesforceValidationRule::new(
        "Lead",
        "Needs_Phone_Or_Email",
        "Enter a phone number or an email address.",
        Some("Phone"),
        |r| r.get("Phone").is_none_or(Value::is_null) && r.get("Email").is_none_or(Value::is_null),
    );
    let config = SalesforceConfig {
        api_request_limit: 5,
        validation_rules: vec![rule],
        ..SalesforceConfig::default()
    };
    let (fake, client) = start(config).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let lead = format!("{V}/sobjects/Lead");

    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &lead,
            Some(json!({"LastName": "V", "Company": "R"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(out[0]["errorCode"], "FIELD_CUSTOM_VALIDATION_EXCEPTION");
    assert_eq!(
        out[0]["message"],
        "Enter a phone number or an email address."
    );
    assert_eq!(out[0]["fields"], json!(["Phone"]));

    fake.fail_next_writes_with_lock(1);
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &lead,
            Some(json!({"LastName": "V", "Company": "R", "Phone": "1"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(first_error(&out).0, "UNABLE_TO_LOCK_ROW");
    let resp = call(
        &fake,
        &client,
        t,
        Method::POST,
        &lead,
        Some(json!({"LastName": "V", "Company": "R", "Phone": "1"})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers()["sforce-limit-info"], "api-usage=3/5");

    for _ in 0..2 {
        assert_eq!(
            call(&fake, &client, t, Method::GET, &format!("{V}/limits"), None)
                .await
                .status()
                .as_u16(),
            200
        );
    }
    let (status, out) =
        json_of(call(&fake, &client, t, Method::GET, &format!("{V}/limits"), None).await).await;
    assert_eq!(status, 403);
    assert_eq!(
        out,
        json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    );
    assert_eq!(fake.leads().len(), 1);
}

#[tokio::test]
async fn faults_are_injected_before_the_fake() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    fake.faults().push(
        Fault::Status {
            status: 503,
            body: "[{\"errorCode\":\"SERVER_UNAVAILABLE\",\"message\":\"down\"}]".into(),
            headers: vec![],
        },
        1,
    );
    let body = json!({"LastName": "F", "Company": "F"});
    assert_eq!(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(body.clone())
        )
        .await
        .status()
        .as_u16(),
        503
    );
    fake.faults()
        .push(Fault::Delay(Duration::from_millis(300)), 1);
    let slow = client
        .post(format!("{}{V}/sobjects/Lead", fake.base_url()))
        .bearer_auth(t)
        .json(&body)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(slow.is_err(), "the client times out");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(json!({"LastName": "G", "Company": "G"}))
        )
        .await
        .status()
        .as_u16(),
        201
    );
    assert!(fake.requests().entries().iter().any(|e| e.status == 503));
}

#[tokio::test]
async fn soql_pages_by_system_modstamp_through_query_locators() {
    let (fake, client) = start(SalesforceConfig {
        query_batch_size: 2,
        ..Default::default()
    })
    .await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let old = "2020-01-02T03:04:05.000+0000";
    let old_id = fake.seed(
        "Lead",
        json!({"LastName": "Old", "Company": "A", "SystemModstamp": old, "LastModifiedDate": old}),
    );
    for n in 0..4 {
        fake.seed(
            "Lead",
            json!({"LastName": format!("New{n}"), "Company": "A"}),
        );
    }
    let get = |path: String, q: Option<&str>| {
        let mut req = client
            .get(format!("{}{path}", fake.base_url()))
            .bearer_auth(t);
        if let Some(q) = q {
            req = req.query(&[("q", q)]);
        }
        async move { json_of(req.send().await.expect("send")).await }
    };
    // dateTime literals compare as instants, in any documented form.
    for literal in [
        "2021-01-01T00:00:00Z",
        "2021-01-01T01:00:00+01:00",
        "2020-12-31T16:00:00-08:00",
    ] {
        let q = format!("SELECT COUNT() FROM Lead WHERE SystemModstamp >= {literal}");
        let (status, out) = get(format!("{V}/query"), Some(&q)).await;
        assert_eq!(
            (status, out["totalSize"].clone()),
            (200, json!(4)),
            "{literal}: {out}"
        );
    }
    let (status, out) = get(
        format!("{V}/query"),
        Some("SELECT Id FROM Lead WHERE SystemModstamp < 2021-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["records"][0]["Id"], json!(old_id));
    // A dateTime literal only filters dateTime fields, and must be one.
    let (status, out) = get(
        format!("{V}/query"),
        Some("SELECT Id FROM Lead WHERE NumberOfEmployees > 2021-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!((status, first_error(&out).0), (400, "INVALID_FIELD"));
    let (status, out) = get(
        format!("{V}/query"),
        Some("SELECT Id FROM Lead WHERE SystemModstamp > 2021-13-01T00:00:00Z"),
    )
    .await;
    assert_eq!((status, first_error(&out).0), (400, "MALFORMED_QUERY"));

    // Five records in batches of two: the rest behind nextRecordsUrl.
    let (_, first) = get(
        format!("{V}/query"),
        Some("SELECT Id, LastName FROM Lead ORDER BY SystemModstamp ASC"),
    )
    .await;
    assert_eq!(first["totalSize"], 5);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"][0]["LastName"], "Old");
    let mut names = vec![];
    let mut page = first;
    loop {
        for r in page["records"].as_array().unwrap() {
            names.push(r["LastName"].as_str().unwrap().to_string());
        }
        let Some(next) = page["nextRecordsUrl"].as_str() else {
            assert_eq!(page["done"], true);
            break;
        };
        assert!(next.starts_with("/services/data/v60.0/query/01g"), "{next}");
        page = get(next.to_string(), None).await.1;
    }
    assert_eq!(names, ["Old", "New0", "New1", "New2", "New3"]);
    let (status, out) = get(format!("{V}/query/01gNOSUCHLOCATOR-2"), None).await;
    assert_eq!(
        (status, first_error(&out).0),
        (400, "INVALID_QUERY_LOCATOR")
    );

    // An edit moves SystemModstamp on.
    assert!(fake.edit(&old_id, json!({"Title": "Back"})));
    let (_, out) = get(
        format!("{V}/query"),
        Some("SELECT COUNT() FROM Lead WHERE SystemModstamp >= 2021-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(out["totalSize"], 5);
}

#[tokio::test]
async fn sobject_collections_update_each_record_by_id() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let a = fake.seed("Lead", json!({"LastName": "A", "Company": "X"}));
    let b = fake.seed("Lead", json!({"LastName": "B", "Company": "Y"}));
    let before = fake
        .record(&a)
        .unwrap()
        .text("SystemModstamp")
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Lead"}, "id": a, "Title": "CTO"},
        {"attributes": {"type": "Lead"}, "id": b, "Status": "Nope"},
        {"attributes": {"type": "Lead"}, "Title": "no id"},
    ]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &format!("{V}/composite/sobjects"),
            Some(body),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out[0]["success"], true);
    assert_eq!(out[0]["id"], json!(a));
    assert_eq!(out[1]["success"], false);
    assert_eq!(
        out[1]["errors"][0]["statusCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(out[2]["errors"][0]["statusCode"], "MISSING_ARGUMENT");
    let rec = fake.record(&a).unwrap();
    assert_eq!(rec.text("Title"), Some("CTO"));
    assert!(rec.text("SystemModstamp").unwrap() > before.as_str());
    assert_eq!(
        fake.record(&b).unwrap().text("Status"),
        Some("Open - Not Contacted")
    );
}

#[tokio::test]
async fn contact_roles_name_contacts_keep_one_primary_and_go_with_their_opportunity() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let opp = fake.seed(
        "Opportunity",
        json!({"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2027-01-01"}),
    );
    let ada = fake.seed("Contact", json!({"LastName": "Ada"}));
    let bo = fake.seed("Contact", json!({"LastName": "Bo"}));
    let lead = fake.seed("Lead", json!({"LastName": "Lee", "Company": "L"}));
    let role = |contact: &str, primary: bool| {
        json!({"attributes": {"type": "OpportunityContactRole"}, "OpportunityId": opp,
               "ContactId": contact, "Role": "Decision Maker", "IsPrimary": primary})
    };
    let create = |records: Value| {
        let client = client.clone();
        let fake = &fake;
        async move {
            json_of(
                call(
                    fake,
                    &client,
                    t,
                    Method::POST,
                    &format!("{V}/composite/sobjects"),
                    Some(json!({"allOrNone": false, "records": records})),
                )
                .await,
            )
            .await
            .1
        }
    };
    // A Lead is no Contact; the opportunity is required; the same contact
    // twice is allowed.
    let out = create(json!([
        role(&ada, true),
        role(&lead, false),
        {"attributes": {"type": "OpportunityContactRole"}, "ContactId": bo},
        role(&ada, false),
    ]))
    .await;
    assert_eq!(out[0]["success"], true, "{out}");
    assert_eq!(out[1]["errors"][0]["statusCode"], "MALFORMED_ID", "{out}");
    assert_eq!(
        out[2]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING",
        "{out}"
    );
    assert_eq!(out[3]["success"], true, "{out}");
    // One primary per opportunity: a new primary clears the first.
    let out = create(json!([role(&bo, true)])).await;
    let bo_role = out[0]["id"].as_str().unwrap().to_string();
    let primaries: Vec<String> = fake
        .records("OpportunityContactRole")
        .into_iter()
        .filter(|r| r.get("IsPrimary") == Some(&json!(true)))
        .map(|r| r.id)
        .collect();
    assert_eq!(primaries, vec![bo_role.clone()]);
    // The opportunity cannot be moved.
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::PATCH,
            &format!("{V}/sobjects/OpportunityContactRole/{bo_role}"),
            Some(json!({"OpportunityId": opp})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // sObject Collections delete: one result per id, a gone id refused.
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::DELETE,
            &format!("{V}/composite/sobjects?ids={bo_role},{bo_role}&allOrNone=false"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out[0]["success"], true, "{out}");
    assert_eq!(
        out[1]["errors"][0]["statusCode"], "ENTITY_IS_DELETED",
        "{out}"
    );
    assert_eq!(fake.records("OpportunityContactRole").len(), 2);
    // Deleting the opportunity deletes its contact roles.
    assert!(fake.delete(&opp));
    assert!(fake.records("OpportunityContactRole").is_empty());
}

/// A receiver of outbound messages: refuses the first `refuse` messages
/// (503), then acknowledges; returns its URL and the bodies it got.
async fn outbound_receiver(
    refuse: usize,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::http::HeaderMap;
    let got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/om",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let n = {
                    let mut g = seen.lock().unwrap();
                    g.push((ct, body));
                    g.len()
                };
                if n <= refuse {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                } else {
                    (
                        axum::http::StatusCode::OK,
                        "<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\"><soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>".to_string(),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/om", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn outbound_messages_carry_the_latest_fields_and_are_retried_until_acknowledged() {
    let (fake, client) = start(SalesforceConfig::default()).await;
    let t = SalesforceConfig::DEFAULT_STATIC_TOKEN;
    let (url, got) = outbound_receiver(2).await;
    fake.set_outbound_retry(OutboundRetry {
        first: Duration::from_millis(20),
        max_interval: Duration::from_millis(40),
        max_age: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
    });
    let action = fake.add_outbound_message(OutboundMessageDef {
        object: "Lead".into(),
        fields: vec!["Id".into(), "Email".into(), "Title".into(), "Phone".into()],
        endpoint_url: url,
        send_session_id: false,
    });
    // A change made through the API sends it, like a person's edit.
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            t,
            Method::POST,
            &format!("{V}/sobjects/Lead"),
            Some(json!({"LastName": "Ada", "Company": "A & B", "Email": "ada@x.test", "Title": "R&D <lead>"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let id = out["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.outbound_sent().iter().all(|s| !s.acked) {
        assert!(std::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = fake.outbound_sent();
    assert_eq!(sent.len(), 3, "two refusals, then the ack");
    assert_eq!(
        sent.iter().map(|s| s.status).collect::<Vec<_>>(),
        vec![Some(503), Some(503), Some(200)]
    );
    // The same notification each time, until acknowledged.
    assert!(
        sent.windows(2)
            .all(|w| w[0].notifications == w[1].notifications)
    );
    assert_eq!(fake.outbound_queued(), 0);
    let (ct, body) = got.lock().unwrap()[2].clone();
    assert!(ct.starts_with("text/xml"), "{ct}");
    let org = &fake.state().inner.config.org_id;
    for part in [
        format!("<OrganizationId>{org}</OrganizationId>"),
        format!("<ActionId>{action}</ActionId>"),
        "<SessionId xsi:nil=\"true\"/>".to_string(),
        format!("<EnterpriseUrl>{}/services/Soap/c/", fake.base_url()),
        format!("<sf:Id>{id}</sf:Id>"),
        "<sf:Email>ada@x.test</sf:Email>".to_string(),
        "<sf:Title>R&amp;D &lt;lead&gt;</sf:Title>".to_string(),
        "<sf:Phone xsi:nil=\"true\"/>".to_string(),
        "xsi:type=\"sf:Lead\"".to_string(),
    ] {
        assert!(body.contains(&part), "{part} in {body}");
    }
    assert!(!body.contains("Company"), "only the message's fields");
    // Other objects' saves send nothing.
    fake.seed("Contact", json!({"LastName": "Bo"}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.outbound_sent().len(), 3);
}
