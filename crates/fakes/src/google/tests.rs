//! The fake Google over real HTTP: service-account tokens, then Sheets.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::common::Fault;

const OTHER_PRIVATE_KEY_PEM: &str = include_str!("../../testdata/google-other.key.pem");
const ID: &str = DEFAULT_SPREADSHEET_ID;

/// A plain-HTTP client (reqwest is built without a default TLS provider).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn start(config: GoogleConfig) -> FakeGoogle {
    FakeGoogle::start(config).await.expect("fake google starts")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn claims(google: &FakeGoogle) -> Value {
    let now = now();
    json!({
        "iss": TEST_CLIENT_EMAIL,
        "scope": SCOPE_SPREADSHEETS,
        "aud": google.token_url(),
        "iat": now,
        "exp": now + 3600,
    })
}

fn sign(claims: &Value, private_key_pem: &str) -> String {
    let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).expect("test key parses");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("signs")
}

async fn exchange(google: &FakeGoogle, assertion: &str) -> (u16, Value) {
    let resp = client()
        .post(google.token_url())
        .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)])
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

async fn token_with(google: &FakeGoogle, claims: &Value) -> String {
    let (status, body) = exchange(google, &sign(claims, TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

async fn token(google: &FakeGoogle) -> String {
    token_with(google, &claims(google)).await
}

/// Percent-encodes a range for a URL path, as client libraries do.
fn enc(range: &str) -> String {
    range
        .replace('%', "%25")
        .replace(' ', "%20")
        .replace('\'', "%27")
        .replace(':', "%3A")
        .replace('!', "%21")
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

fn values_url(google: &FakeGoogle, range: &str, suffix: &str, query: &str) -> String {
    format!(
        "{}/v4/spreadsheets/{ID}/values/{}{suffix}?{query}",
        google.sheets_url(),
        enc(range)
    )
}

async fn append(google: &FakeGoogle, token: &str, range: &str, rows: Value) -> (u16, Value) {
    let url = values_url(
        google,
        range,
        ":append",
        "valueInputOption=USER_ENTERED&insertDataOption=INSERT_ROWS",
    );
    call(
        reqwest::Method::POST,
        &url,
        Some(token),
        Some(json!({"majorDimension": "ROWS", "values": rows})),
    )
    .await
}

fn assert_google_error(result: &(u16, Value), code: u16, status: &str) {
    assert_eq!(result.0, code, "{}", result.1);
    assert_eq!(result.1["error"]["code"], code, "{}", result.1);
    assert_eq!(result.1["error"]["status"], status, "{}", result.1);
}

#[tokio::test]
async fn google_token_for_a_signed_assertion() {
    let google = start(GoogleConfig::default()).await;
    let (status, body) = exchange(&google, &sign(&claims(&google), TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["access_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ya29."))
    );
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    // Google's real token URI is an accepted audience too.
    let mut real_aud = claims(&google);
    real_aud["aud"] = json!("https://oauth2.googleapis.com/token");
    assert_eq!(
        exchange(&google, &sign(&real_aud, TEST_PRIVATE_KEY_PEM))
            .await
            .0,
        200
    );
    assert_eq!(google.issued_tokens(), 2);

    // The service-account key file points at the fake and carries the test key.
    let sa: Value = serde_json::from_str(&google.service_account_json()).expect("json");
    assert_eq!(sa["token_uri"], google.token_url());
    assert_eq!(sa["client_email"], TEST_CLIENT_EMAIL);
    assert_eq!(sa["type"], "service_account");
    assert!(
        sa["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PRIVATE KEY"))
    );
}

#[tokio::test]
async fn google_token_rejects_bad_assertions() {
    let google = start(GoogleConfig::default()).await;
    let base = claims(&google);
    let grant = |r: &(u16, Value), description: &str| {
        assert_eq!(r.0, 400, "{}", r.1);
        assert_eq!(r.1["error"], "invalid_grant", "{}", r.1);
        assert_eq!(r.1["error_description"], description);
    };

    let wrong_key = exchange(&google, &sign(&base, OTHER_PRIVATE_KEY_PEM)).await;
    grant(&wrong_key, "Invalid JWT Signature.");
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &base,
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("signs");
    grant(&exchange(&google, &hs256).await, "Invalid JWT Signature.");
    grant(
        &exchange(&google, "not.a.jwt").await,
        "Invalid JWT Signature.",
    );

    let mut unknown = base.clone();
    unknown["iss"] = json!("someone-else@leadrelay-fake.iam.gserviceaccount.com");
    grant(
        &exchange(&google, &sign(&unknown, TEST_PRIVATE_KEY_PEM)).await,
        "Invalid grant: account not found",
    );

    let timeframe = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
    let mut too_long = base.clone();
    too_long["exp"] = json!(now() + 3601);
    grant(
        &exchange(&google, &sign(&too_long, TEST_PRIVATE_KEY_PEM)).await,
        timeframe,
    );
    let mut expired = base.clone();
    expired["iat"] = json!(now() - 4000);
    expired["exp"] = json!(now() - 400);
    grant(
        &exchange(&google, &sign(&expired, TEST_PRIVATE_KEY_PEM)).await,
        timeframe,
    );
    let mut future = base.clone();
    future["iat"] = json!(now() + 1200);
    future["exp"] = json!(now() + 1800);
    grant(
        &exchange(&google, &sign(&future, TEST_PRIVATE_KEY_PEM)).await,
        timeframe,
    );
    let mut no_exp = base.clone();
    no_exp.as_object_mut().map(|o| o.remove("exp"));
    grant(
        &exchange(&google, &sign(&no_exp, TEST_PRIVATE_KEY_PEM)).await,
        timeframe,
    );

    let mut wrong_aud = base.clone();
    wrong_aud["aud"] = json!("https://example.com/token");
    let r = exchange(&google, &sign(&wrong_aud, TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!((r.0, r.1["error"].clone()), (400, json!("invalid_grant")));

    let mut no_scope = base.clone();
    no_scope.as_object_mut().map(|o| o.remove("scope"));
    let r = exchange(&google, &sign(&no_scope, TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!(r.0, 400);
    assert_eq!(
        r.1,
        json!({"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."})
    );

    let mut delegated = base.clone();
    delegated["sub"] = json!("ada@example.com");
    let r = exchange(&google, &sign(&delegated, TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!(
        (r.0, r.1["error"].clone()),
        (401, json!("unauthorized_client"))
    );

    let resp = client()
        .post(google.token_url())
        .form(&[("grant_type", "client_credentials"), ("assertion", "x")])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "unsupported_grant_type");
    let resp = client()
        .post(google.token_url())
        .form(&[("grant_type", JWT_BEARER_GRANT)])
        .send()
        .await
        .expect("request");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(google.issued_tokens(), 0);
}

#[tokio::test]
async fn google_sheets_requires_a_live_token_with_scope() {
    let config = GoogleConfig {
        token_lifetime: Duration::from_millis(1000),
        ..Default::default()
    };
    let google = start(config).await;
    let url = format!("{}/v4/spreadsheets/{ID}", google.sheets_url());

    let missing = call(reqwest::Method::GET, &url, None, None).await;
    assert_google_error(&missing, 401, "UNAUTHENTICATED");
    assert_eq!(
        missing.1["error"]["details"][0]["reason"],
        "CREDENTIALS_MISSING"
    );
    let unknown = call(reqwest::Method::GET, &url, Some("ya29.bogus"), None).await;
    assert_google_error(&unknown, 401, "UNAUTHENTICATED");
    assert!(
        unknown.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Request had invalid authentication credentials."))
    );

    let (status, body) = exchange(&google, &sign(&claims(&google), TEST_PRIVATE_KEY_PEM)).await;
    assert_eq!((status, body["expires_in"].clone()), (200, json!(0)));
    let token = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(
        call(reqwest::Method::GET, &url, Some(&token), None).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let expired = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_google_error(&expired, 401, "UNAUTHENTICATED");
    assert_eq!(
        expired.1["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_EXPIRED"
    );

    // The test hook expires tokens at once.
    let google = start(GoogleConfig::default()).await;
    let url = format!("{}/v4/spreadsheets/{ID}", google.sheets_url());
    let token = self::token(&google).await;
    assert_eq!(
        call(reqwest::Method::GET, &url, Some(&token), None).await.0,
        200
    );
    google.expire_tokens();
    assert_google_error(
        &call(reqwest::Method::GET, &url, Some(&token), None).await,
        401,
        "UNAUTHENTICATED",
    );

    // A read-only scope reads but cannot write.
    let mut readonly = claims(&google);
    readonly["scope"] = json!(SCOPE_SPREADSHEETS_READONLY);
    let ro = token_with(&google, &readonly).await;
    assert_eq!(
        call(reqwest::Method::GET, &url, Some(&ro), None).await.0,
        200
    );
    let denied = append(&google, &ro, "Sheet1", json!([["x"]])).await;
    assert_google_error(&denied, 403, "PERMISSION_DENIED");
    assert_eq!(
        denied.1["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
}

#[tokio::test]
async fn google_sheets_append_get_update() {
    let google = start(GoogleConfig::default()).await;
    let token = token(&google).await;

    let (status, body) = append(
        &google,
        &token,
        "Leads!A:Z",
        json!([["email", "name", "phone"]]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("tableRange").is_none());
    assert_eq!(body["spreadsheetId"], ID);
    assert_eq!(
        body["updates"],
        json!({"spreadsheetId": ID, "updatedRange": "Leads!A1:C1", "updatedRows": 1, "updatedColumns": 3, "updatedCells": 3})
    );
    let (status, body) = append(
        &google,
        &token,
        "Leads!A:Z",
        json!([
            ["ada@example.com", "Ada", "'+14155550100"],
            ["bob@example.com", "Bob", 42]
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tableRange"], "Leads!A1:C1");
    assert_eq!(body["updates"]["updatedRange"], "Leads!A2:C3");
    assert_eq!(body["updates"]["updatedRows"], 2);
    assert_eq!(body["updates"]["updatedCells"], 6);
    assert_eq!(
        google.rows(ID, "Leads").expect("tab"),
        vec![
            vec!["email", "name", "phone"],
            vec!["ada@example.com", "Ada", "+14155550100"],
            vec!["bob@example.com", "Bob", "42"]
        ]
    );
    assert_eq!(google.values(ID, "Leads").expect("tab")[2][2], json!(42));

    // values.get echoes the range clamped to the grid and trims trailing empties.
    let url = values_url(&google, "Leads", "", "");
    let (status, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    // INSERT_ROWS added three rows to the 1000-row grid.
    assert_eq!(body["range"], "Leads!A1:Z1003");
    assert_eq!(body["majorDimension"], "ROWS");
    assert_eq!(
        body["values"][1],
        json!(["ada@example.com", "Ada", "+14155550100"])
    );
    let url = values_url(
        &google,
        "Leads!B1:C3",
        "",
        "majorDimension=COLUMNS&valueRenderOption=UNFORMATTED_VALUE",
    );
    let (_, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(body["range"], "Leads!B1:C3");
    assert_eq!(
        body["values"],
        json!([["name", "Ada", "Bob"], ["phone", "+14155550100", 42]])
    );
    let url = values_url(&google, "Sheet1!A1:B2", "", "");
    let (_, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert!(body.get("values").is_none(), "{body}");

    // values.update writes a block and reports what it covered.
    let url = values_url(
        &google,
        "Sheet1!B2",
        "",
        "valueInputOption=RAW&includeValuesInResponse=true",
    );
    let (status, body) = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"values": [["1", true], [null, "=A1"]]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updatedRange"], "Sheet1!B2:C3");
    assert_eq!(body["updatedRows"], 2);
    assert_eq!(body["updatedColumns"], 2);
    assert_eq!(body["updatedCells"], 3);
    assert_eq!(
        body["updatedData"]["values"],
        json!([["1", "TRUE"], ["", "=A1"]])
    );
    // RAW keeps "1" as text.
    assert_eq!(google.values(ID, "Sheet1").expect("tab")[1][1], json!("1"));

    // A tab whose name needs quoting.
    let batch = format!("{}/v4/spreadsheets/{ID}:batchUpdate", google.sheets_url());
    let add = json!({"requests": [{"addSheet": {"properties": {"title": "Won deals"}}}]});
    assert_eq!(
        call(reqwest::Method::POST, &batch, Some(&token), Some(add))
            .await
            .0,
        200
    );
    let (status, body) = append(&google, &token, "'Won deals'!A1:Z", json!([["x", 1]])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updates"]["updatedRange"], "'Won deals'!A1:B1");
    assert_eq!(
        google.rows(ID, "Won deals").expect("tab"),
        vec![vec!["x", "1"]]
    );
}

#[tokio::test]
async fn google_sheets_insert_rows_and_overwrite() {
    let mut config = GoogleConfig::default();
    config.spreadsheets[0].sheets[0].rows = vec![
        vec![json!("h1"), json!("h2")],
        vec![json!("a"), json!("b")],
        vec![],
        vec![json!("footer")],
    ];
    let google = start(config).await;
    let token = token(&google).await;
    // INSERT_ROWS pushes the rows below the table down.
    let (_, body) = append(&google, &token, "Sheet1!A1:B", json!([["c", "d"]])).await;
    assert_eq!(body["tableRange"], "Sheet1!A1:B2");
    assert_eq!(body["updates"]["updatedRange"], "Sheet1!A3:B3");
    assert_eq!(
        google.rows(ID, "Sheet1").expect("tab"),
        vec![
            vec!["h1", "h2"],
            vec!["a", "b"],
            vec!["c", "d"],
            vec![],
            vec!["footer"]
        ]
    );
    // OVERWRITE writes into the blank row after the table.
    let url = values_url(
        &google,
        "Sheet1!A1:B",
        ":append",
        "valueInputOption=RAW&insertDataOption=OVERWRITE",
    );
    let (status, body) = call(
        reqwest::Method::POST,
        &url,
        Some(&token),
        Some(json!({"values": [["e", "f"]]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updates"]["updatedRange"], "Sheet1!A4:B4");
    assert_eq!(google.rows(ID, "Sheet1").expect("tab")[3], vec!["e", "f"]);
    assert_eq!(google.rows(ID, "Sheet1").expect("tab")[4], vec!["footer"]);
    // A single cell anchors the search: the table now runs down to the footer.
    let (_, body) = append(&google, &token, "Sheet1!A1", json!([["g"]])).await;
    assert_eq!(body["tableRange"], "Sheet1!A1:B5");
    assert_eq!(body["updates"]["updatedRange"], "Sheet1!A6");
}

#[tokio::test]
async fn google_sheets_rejects_like_google() {
    let google = start(GoogleConfig::default()).await;
    let token = token(&google).await;
    let body = Some(json!({"values": [["x"]]}));

    let url = format!(
        "{}/v4/spreadsheets/nope/values/Sheet1?valueInputOption=RAW",
        google.sheets_url()
    );
    let r = call(reqwest::Method::PUT, &url, Some(&token), body.clone()).await;
    assert_google_error(&r, 404, "NOT_FOUND");
    assert_eq!(r.1["error"]["message"], "Requested entity was not found.");

    let r = call(
        reqwest::Method::PUT,
        &values_url(&google, "Nope!A1", "", "valueInputOption=RAW"),
        Some(&token),
        body.clone(),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(r.1["error"]["message"], "Unable to parse range: Nope!A1");
    let r = call(
        reqwest::Method::GET,
        &values_url(&google, "Sheet1!A0", "", ""),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.1["error"]["message"], "Unable to parse range: Sheet1!A0");
    let r = call(
        reqwest::Method::GET,
        &values_url(&google, "Sheet1!A1001", "", ""),
        Some(&token),
        None,
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(
        r.1["error"]["message"],
        "Range ('Sheet1'!A1001) exceeds grid limits. Max rows: 1000, max columns: 26"
    );

    let r = call(
        reqwest::Method::PUT,
        &values_url(&google, "Sheet1!A1", "", ""),
        Some(&token),
        body.clone(),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(
        r.1["error"]["message"],
        "'valueInputOption' is required but not specified"
    );
    let r = append(&google, &token, "Sheet1", json!([["x"]])).await;
    assert_eq!(r.0, 200);
    let url = values_url(&google, "Sheet1", ":append", "insertDataOption=INSERT_ROWS");
    assert_google_error(
        &call(reqwest::Method::POST, &url, Some(&token), body.clone()).await,
        400,
        "INVALID_ARGUMENT",
    );
    let url = values_url(&google, "Sheet1", ":append", "valueInputOption=PLAIN");
    let r = call(reqwest::Method::POST, &url, Some(&token), body.clone()).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(
        r.1["error"]["details"][0]["fieldViolations"][0]["field"],
        "value_input_option"
    );

    let url = values_url(&google, "Sheet1!A1:B1", "", "valueInputOption=RAW");
    let r = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"values": [["a", "b", "c"]]})),
    )
    .await;
    assert_eq!(
        r.1["error"]["message"],
        "Requested writing within range [Sheet1!A1:B1], but tried writing to column [C]"
    );
    let r = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"values": [["a"], ["b"]]})),
    )
    .await;
    assert_eq!(
        r.1["error"]["message"],
        "Requested writing within range [Sheet1!A1:B1], but tried writing to row [2]"
    );
    let r = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"values": [[{"a": 1}]]})),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let r = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"values": [["x".repeat(50_001)]]})),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let r = call(
        reqwest::Method::PUT,
        &url,
        Some(&token),
        Some(json!({"rows": []})),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let resp = client()
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);

    // batchUpdate: duplicate title, unknown request, unimplemented request, no requests.
    let batch = format!("{}/v4/spreadsheets/{ID}:batchUpdate", google.sheets_url());
    let dup = json!({"requests": [{"addSheet": {"properties": {"title": "leads"}}}]});
    let r = call(reqwest::Method::POST, &batch, Some(&token), Some(dup)).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(
        r.1["error"]["message"],
        "Invalid requests[0].addSheet: A sheet with the name \"leads\" already exists. Please enter another name."
    );
    let r = call(
        reqwest::Method::POST,
        &batch,
        Some(&token),
        Some(json!({"requests": [{"makeCoffee": {}}]})),
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let r = call(
        reqwest::Method::POST,
        &batch,
        Some(&token),
        Some(json!({"requests": [{"sortRange": {}}]})),
    )
    .await;
    assert_google_error(&r, 501, "UNIMPLEMENTED");
    let r = call(
        reqwest::Method::POST,
        &batch,
        Some(&token),
        Some(json!({"requests": []})),
    )
    .await;
    assert_eq!(
        r.1["error"]["message"],
        "Must specify at least one request."
    );
    assert_eq!(
        google.sheet_titles(ID).expect("spreadsheet"),
        vec!["Sheet1", "Leads"]
    );
}

#[tokio::test]
async fn google_sheets_get_and_batch_update() {
    let google = start(GoogleConfig::default()).await;
    let token = token(&google).await;
    let url = format!("{}/v4/spreadsheets/{ID}", google.sheets_url());
    let (status, body) = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spreadsheetId"], ID);
    assert_eq!(body["sheets"][0]["properties"]["title"], "Sheet1");
    assert_eq!(body["sheets"][1]["properties"]["index"], 1);
    assert_eq!(
        body["sheets"][1]["properties"]["gridProperties"],
        json!({"rowCount": 1000, "columnCount": 26})
    );

    let batch = format!("{url}:batchUpdate");
    let req = json!({
        "requests": [
            {"addSheet": {"properties": {"title": "2024 leads", "gridProperties": {"rowCount": 10, "columnCount": 5}}}},
            {"addSheet": {}}
        ],
        "includeSpreadsheetInResponse": true
    });
    let (status, body) = call(reqwest::Method::POST, &batch, Some(&token), Some(req)).await;
    assert_eq!(status, 200, "{body}");
    let props = &body["replies"][0]["addSheet"]["properties"];
    assert_eq!(props["title"], "2024 leads");
    assert_eq!(props["index"], 2);
    assert_eq!(props["sheetType"], "GRID");
    assert_eq!(props["gridProperties"]["rowCount"], 10);
    assert_eq!(
        body["replies"][1]["addSheet"]["properties"]["title"],
        "Sheet4"
    );
    assert_eq!(
        body["updatedSpreadsheet"]["sheets"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    assert_eq!(
        google.sheet_titles(ID).expect("spreadsheet"),
        vec!["Sheet1", "Leads", "2024 leads", "Sheet4"]
    );

    // The new tab's grid is enforced, and appends grow it.
    let r = call(
        reqwest::Method::GET,
        &values_url(&google, "'2024 leads'!F1", "", ""),
        Some(&token),
        None,
    )
    .await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    let rows: Vec<Value> = (0..12).map(|i| json!([i])).collect();
    let (status, body) = append(&google, &token, "'2024 leads'!A:E", Value::Array(rows)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["updates"]["updatedRange"], "'2024 leads'!A1:A12");

    // A failing request leaves the spreadsheet untouched (all or nothing).
    let sheet_id = props["sheetId"].as_i64().expect("sheetId");
    let req = json!({"requests": [{"deleteSheet": {"sheetId": sheet_id}}, {"deleteSheet": {"sheetId": 424242}}]});
    let r = call(reqwest::Method::POST, &batch, Some(&token), Some(req)).await;
    assert_google_error(&r, 400, "INVALID_ARGUMENT");
    assert_eq!(google.sheet_titles(ID).expect("spreadsheet").len(), 4);
    let req = json!({"requests": [{"deleteSheet": {"sheetId": sheet_id}}]});
    assert_eq!(
        call(reqwest::Method::POST, &batch, Some(&token), Some(req))
            .await
            .0,
        200
    );
    assert_eq!(
        google.sheet_titles(ID).expect("spreadsheet"),
        vec!["Sheet1", "Leads", "Sheet4"]
    );

    // Clear.
    append(&google, &token, "Sheet1", json!([["a", "b"]])).await;
    let url = values_url(&google, "Sheet1!A1:A", ":clear", "");
    let (status, body) = call(reqwest::Method::POST, &url, Some(&token), Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["clearedRange"], "Sheet1!A1:A1001");
    assert_eq!(google.rows(ID, "Sheet1").expect("tab"), vec![vec!["", "b"]]);
}

#[tokio::test]
async fn google_sheets_write_quota_answers_resource_exhausted() {
    let config = GoogleConfig {
        write_requests_per_window: 2,
        quota_window: Duration::from_millis(1000),
        ..Default::default()
    };
    let google = start(config).await;
    let token = token(&google).await;
    assert_eq!(
        append(&google, &token, "Sheet1", json!([["1"]])).await.0,
        200
    );
    assert_eq!(
        append(&google, &token, "Sheet1", json!([["2"]])).await.0,
        200
    );
    let r = append(&google, &token, "Sheet1", json!([["3"]])).await;
    assert_google_error(&r, 429, "RESOURCE_EXHAUSTED");
    assert_eq!(
        r.1["error"]["message"],
        "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user' of service 'sheets.googleapis.com' for consumer 'project_number:100000000001'."
    );
    assert_eq!(r.1["error"]["details"][0]["reason"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(
        r.1["error"]["details"][0]["metadata"]["quota_limit"],
        "WriteRequestsPerMinutePerUser"
    );
    // Reads have their own quota.
    let url = values_url(&google, "Sheet1", "", "");
    assert_eq!(
        call(reqwest::Method::GET, &url, Some(&token), None).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(
        append(&google, &token, "Sheet1", json!([["4"]])).await.0,
        200
    );
    assert_eq!(
        google.rows(ID, "Sheet1").expect("tab"),
        vec![vec!["1"], vec!["2"], vec!["4"]]
    );
}

#[tokio::test]
async fn google_sheets_permission_and_faults() {
    let mut config = GoogleConfig::default();
    config.spreadsheets.push(SpreadsheetSeed {
        id: "private".into(),
        title: "not shared".into(),
        sheets: vec![SheetSeed::new("Sheet1")],
        shared_with: Some(vec!["someone@example.com".into()]),
    });
    let google = start(config).await;
    let token = token(&google).await;
    let url = format!("{}/v4/spreadsheets/private", google.sheets_url());
    let r = call(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_google_error(&r, 403, "PERMISSION_DENIED");
    assert_eq!(
        r.1["error"]["message"],
        "The caller does not have permission"
    );

    let unavailable = r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#;
    google.faults().push(
        Fault::Status {
            status: 503,
            body: unavailable.into(),
            headers: vec![],
        },
        1,
    );
    let r = append(&google, &token, "Sheet1", json!([["x"]])).await;
    assert_google_error(&r, 503, "UNAVAILABLE");
    assert_eq!(
        google.rows(ID, "Sheet1").expect("tab"),
        Vec::<Vec<String>>::new()
    );
    assert_eq!(
        append(&google, &token, "Sheet1", json!([["x"]])).await.0,
        200
    );
    let statuses: Vec<u16> = google
        .requests()
        .entries()
        .iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(statuses, vec![200, 403, 503, 200]);
    assert!(
        google
            .credentials_banner(&google.base_url())
            .contains(TEST_CLIENT_EMAIL)
    );
}
