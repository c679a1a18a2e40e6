//! The fake Pipedrive over real HTTP: happy paths, validation, token-based
//! limits and fault injection.

use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use super::*;
use crate::common::Fault;

const TOKEN: &str = PipedriveConfig::DEFAULT_TOKEN;

async fn start(config: PipedriveConfig) -> (FakePipedrive, Client) {
    let fake = FakePipedrive::start(config).await.expect("start fake");
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    (fake, Client::new())
}

async fn call(
    fake: &FakePipedrive,
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = client
        .request(method, format!("{}{}", fake.base_url(), path))
        .header("x-api-token", TOKEN);
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

#[tokio::test]
async fn authenticates_by_header_or_query_parameter() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let url = format!("{}/api/v1/users/me", fake.base_url());
    let (status, body) = json_of(client.get(&url).send().await.expect("send")).await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], false);
    assert_eq!(body["errorCode"], 401);
    assert!(body["error"].is_string());
    let (status, _) = json_of(
        client
            .get(&url)
            .header("x-api-token", "nope")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 401);

    let (status, body) =
        json_of(call(&fake, &client, Method::GET, "/api/v1/users/me", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["id"], 10_001);
    let (status, _) = json_of(
        client
            .get(format!("{url}?api_token={TOKEN}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn person_lifecycle_and_exact_email_search() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let org = fake.seed_organization("Acme");
    let body = json!({
        "name": "Ada Lovelace",
        "org_id": org,
        "emails": [{"value": "ada@example.com", "primary": true, "label": "work"}, {"value": "ada@home.test", "label": "home"}],
        "phones": [{"value": "+15550100", "primary": true, "label": "mobile"}],
    });
    let (status, created) =
        json_of(call(&fake, &client, Method::POST, "/api/v2/persons", Some(body)).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["success"], true);
    let id = created["data"]["id"].as_u64().expect("id");
    assert_eq!(created["data"]["emails"][0]["primary"], true);
    assert_eq!(created["data"]["first_name"], "Ada");

    let (status, found) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/persons/search?term=ADA%40example.com&fields=email&exact_match=true",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let items = found["data"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["item"]["id"], id);
    assert_eq!(items[0]["item"]["emails"][0], "ada@example.com");
    assert_eq!(items[0]["item"]["organization"]["name"], "Acme");

    let (_, none) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/persons/search?term=ada%40example&fields=email&exact_match=true",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(none["data"]["items"].as_array().map(Vec::len), Some(0));

    let (status, patched) = json_of(
        call(
            &fake,
            &client,
            Method::PATCH,
            &format!("/api/v2/persons/{id}"),
            Some(json!({"name": "Ada King"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["data"]["name"], "Ada King");
    assert_eq!(
        fake.person_by_email("ada@example.com").map(|p| p.name),
        Some("Ada King".to_string())
    );

    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::DELETE,
            &format!("/api/v2/persons/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/api/v2/persons/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["success"], false);
    assert!(fake.persons().is_empty());
}

#[tokio::test]
async fn v2_rejects_bad_schemas_with_validation_errors() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    for bad in [
        json!({"name": "X", "emails": ["x@example.com"]}),
        json!({"name": "X", "emails": [{"primary": true}]}),
        json!({"name": "X", "nickname": "x"}),
        json!({"name": 42}),
        json!({"name": "X", "visible_to": 2}),
        json!({"name": "X", "org_id": 999_999}),
    ] {
        let (status, body) = json_of(
            call(
                &fake,
                &client,
                Method::POST,
                "/api/v2/persons",
                Some(bad.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["success"], false);
        assert!(body["error"].is_string());
    }
    let resp = client
        .post(format!("{}/api/v2/persons", fake.base_url()))
        .header("x-api-token", TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "ERR_SCHEMA_VALIDATION_FAILED");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/persons/search?term=a",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "term shorter than 2 characters");
    assert!(fake.persons().is_empty());
}

#[tokio::test]
async fn organizations_and_deals_validate_pipeline_and_stage() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let (status, org) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/organizations",
            Some(json!({"name": "Globex"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let org_id = org["data"]["id"].as_u64().expect("id");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/organizations",
            Some(json!({"owner_id": 1})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "name is required");
    let (_, found) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/organizations/search?term=globex&fields=name&exact_match=true",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(found["data"]["items"][0]["item"]["id"], org_id);

    let (status, deal) = json_of(
        call(&fake, &client, Method::POST, "/api/v2/deals", Some(json!({"title": "Globex deal", "org_id": org_id, "value": 5000, "currency": "EUR", "stage_id": 3}))).await,
    )
    .await;
    assert_eq!(status, 200, "{deal}");
    assert_eq!(deal["data"]["pipeline_id"], 1);
    assert_eq!(deal["data"]["stage_id"], 3);
    let deal_id = deal["data"]["id"].as_u64().expect("id");

    for bad in [
        json!({"org_id": org_id}),
        json!({"title": "x", "stage_id": 99}),
        json!({"title": "x", "pipeline_id": 7}),
        json!({"title": "x", "status": "pending"}),
        json!({"title": "x", "person_id": 424242}),
    ] {
        let (status, _) = json_of(
            call(
                &fake,
                &client,
                Method::POST,
                "/api/v2/deals",
                Some(bad.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, moved) = json_of(
        call(
            &fake,
            &client,
            Method::PATCH,
            &format!("/api/v2/deals/{deal_id}"),
            Some(json!({"stage_id": 5, "status": "won"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(moved["data"]["stage_id"], 5);
    let deals = fake.deals();
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].status, "won");
    assert_eq!(deals[0].currency, "EUR");
}

#[tokio::test]
async fn activities_need_known_type_and_links() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let person = fake.seed_person("Pat", Some("pat@example.com"));
    let ok = json!({"subject": "Intro call", "type": "call", "due_date": "2024-06-01", "due_time": "14:30", "duration": "00:30", "person_id": person});
    let (status, created) =
        json_of(call(&fake, &client, Method::POST, "/api/v2/activities", Some(ok)).await).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["data"]["type"], "call");
    for bad in [
        json!({"subject": "x", "type": "carrier_pigeon"}),
        json!({"subject": "x", "type": "call", "due_date": "01/06/2024"}),
        json!({"subject": "x", "type": "call", "person_id": 999_999}),
        json!({"subject": "x", "type": "call", "due_time": "2pm"}),
    ] {
        let (status, _) = json_of(
            call(
                &fake,
                &client,
                Method::POST,
                "/api/v2/activities",
                Some(bad.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }
    let acts = fake.activities();
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].person_id, Some(person));
    assert_eq!(acts[0].due_date.as_deref(), Some("2024-06-01"));
    // Listed by person at once (only search lags).
    let path =
        format!("/api/v2/activities?person_id={person}&sort_by=add_time&sort_direction=desc");
    let (status, listed) = json_of(call(&fake, &client, Method::GET, &path, None).await).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"][0]["subject"], "Intro call");
    let path = format!("/api/v2/activities?person_id={}", person + 1);
    let (_, listed) = json_of(call(&fake, &client, Method::GET, &path, None).await).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn leads_and_notes_on_v1() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let person = fake.seed_person("Lee", Some("lee@example.com"));
    let (status, lead) = json_of(
        call(&fake, &client, Method::POST, "/api/v1/leads", Some(json!({"title": "Lee from the website", "person_id": person, "value": {"amount": 200, "currency": "EUR"}}))).await,
    )
    .await;
    assert_eq!(status, 201, "{lead}");
    assert_eq!(lead["data"]["source_name"], "API");
    let lead_id = lead["data"]["id"].as_str().expect("uuid").to_string();

    for bad in [
        json!({"person_id": person}),
        json!({"title": "No link"}),
        json!({"title": "Ghost", "person_id": 999_999}),
        json!({"title": "Half value", "person_id": person, "value": {"amount": 1}}),
    ] {
        let (status, body) = json_of(
            call(
                &fake,
                &client,
                Method::POST,
                "/api/v1/leads",
                Some(bad.clone()),
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["success"], false);
    }
    assert_eq!(fake.leads().len(), 1);
    let (status, listed) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/api/v1/leads?person_id={person}&archived_status=not_archived&limit=1"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"][0]["id"], lead_id.as_str());
    assert_eq!(
        listed["additional_data"]["pagination"]["more_items_in_collection"],
        false
    );
    let (_, none) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v1/leads?person_id=424242",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(none["data"], json!([]));
    let (status, bad) =
        json_of(call(&fake, &client, Method::GET, "/api/v1/leads?limit=0", None).await).await;
    assert_eq!(status, 400, "{bad}");

    let (status, note) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v1/notes",
            Some(json!({"content": "<p>Asked for pricing</p>", "lead_id": lead_id})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{note}");
    assert_eq!(note["data"]["lead_id"], lead_id.as_str());
    let form = client
        .post(format!("{}/api/v1/notes", fake.base_url()))
        .header("x-api-token", TOKEN)
        .form(&[
            ("content", "From a form"),
            ("person_id", &person.to_string()),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(form.status().as_u16(), 201);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v1/notes",
            Some(json!({"content": "orphan"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v1/notes",
            Some(json!({"content": "", "person_id": person})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let notes = fake.notes();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[1].person_id, Some(person));
}

#[tokio::test]
async fn burst_limit_answers_429_with_headers_and_retry_after() {
    let config = PipedriveConfig {
        burst_limit: 3,
        burst_window: Duration::from_millis(500),
        ..PipedriveConfig::default()
    };
    let (fake, client) = start(config).await;
    for remaining in [2, 1, 0] {
        let resp = call(&fake, &client, Method::GET, "/api/v1/users/me", None).await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert!(resp.headers().contains_key("x-ratelimit-reset"));
        assert!(resp.headers().contains_key("x-daily-requests-left"));
    }
    let resp = call(&fake, &client, Method::GET, "/api/v1/users/me", None).await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["success"], false);
    assert_eq!(body["errorCode"], 429);
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        call(&fake, &client, Method::GET, "/api/v1/users/me", None)
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn search_has_its_own_burst_limit_and_costs_more_tokens() {
    let config = PipedriveConfig {
        search_burst_limit: 2,
        ..PipedriveConfig::default()
    };
    let (fake, client) = start(config).await;
    for _ in 0..2 {
        let (status, _) = json_of(
            call(
                &fake,
                &client,
                Method::GET,
                "/api/v2/persons/search?term=someone",
                None,
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/persons/search?term=someone",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        call(&fake, &client, Method::GET, "/api/v1/users/me", None)
            .await
            .status()
            .as_u16(),
        200
    );
    // Two v2 searches (20 each) and one v1 single GET (2).
    assert_eq!(fake.tokens_used_today(), 42);
}

#[tokio::test]
async fn daily_token_budget_exhaustion_answers_429() {
    let config = PipedriveConfig {
        daily_token_budget: 100,
        ..PipedriveConfig::default()
    };
    let (fake, client) = start(config).await;
    fake.set_tokens_used_today(95);
    let resp = call(
        &fake,
        &client,
        Method::POST,
        "/api/v2/organizations",
        Some(json!({"name": "Fits"})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-daily-requests-left"], "0");
    let resp = call(
        &fake,
        &client,
        Method::POST,
        "/api/v2/organizations",
        Some(json!({"name": "Over"})),
    )
    .await;
    assert!(resp.headers().contains_key("retry-after"));
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["success"], false);
    assert_eq!(fake.organizations().len(), 1);
}

#[tokio::test]
async fn faults_and_search_index_delay() {
    let config = PipedriveConfig {
        search_index_delay: Duration::from_millis(300),
        ..PipedriveConfig::default()
    };
    let (fake, client) = start(config).await;
    fake.faults().push(
        Fault::Status {
            status: 503,
            body: "{\"success\":false}".into(),
            headers: vec![],
        },
        1,
    );
    let resp = call(
        &fake,
        &client,
        Method::POST,
        "/api/v2/persons",
        Some(json!({"name": "Sam", "emails": [{"value": "sam@example.com"}]})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(fake.persons().is_empty());
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/persons",
            Some(json!({"name": "Sam", "emails": [{"value": "sam@example.com"}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let path = "/api/v2/persons/search?term=sam%40example.com&fields=email&exact_match=true";
    let (_, found) = json_of(call(&fake, &client, Method::GET, path, None).await).await;
    assert_eq!(
        found["data"]["items"].as_array().map(Vec::len),
        Some(0),
        "not indexed yet"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, found) = json_of(call(&fake, &client, Method::GET, path, None).await).await;
    assert_eq!(found["data"]["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        fake.requests().entries().first().map(|e| e.status),
        Some(503)
    );
}

#[tokio::test]
async fn plain_lists_show_new_records_at_once_while_search_lags() {
    let config = PipedriveConfig {
        search_index_delay: Duration::from_secs(60),
        ..PipedriveConfig::default()
    };
    let (fake, client) = start(config).await;
    // Written, then answered late: the record exists before the answer.
    fake.faults()
        .push(Fault::DelayAnswer(Duration::from_millis(200)), 1);
    let pending = {
        let (fake_url, client) = (fake.base_url(), client.clone());
        tokio::spawn(async move {
            client
                .post(format!("{fake_url}/api/v2/organizations"))
                .header("x-api-token", PipedriveConfig::DEFAULT_TOKEN)
                .json(&json!({"name": "Acme"}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.organizations().len(), 1, "written before the answer");
    assert_eq!(pending.await.unwrap().unwrap(), 200);
    let (_, person) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/persons",
            Some(json!({"name": "Sam", "emails": [{"value": "sam@example.com"}]})),
        )
        .await,
    )
    .await;
    let pid = person["data"]["id"].as_u64().unwrap();
    let (_, deal) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/deals",
            Some(json!({"title": "Sam deal", "person_id": pid})),
        )
        .await,
    )
    .await;
    let path = "/api/v2/persons/search?term=sam%40example.com&fields=email&exact_match=true";
    let (_, found) = json_of(call(&fake, &client, Method::GET, path, None).await).await;
    assert_eq!(found["data"]["items"].as_array().map(Vec::len), Some(0));
    let since = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (list, name) in [("persons", "Sam"), ("organizations", "Acme")] {
        let path = format!(
            "/api/v2/{list}?updated_since={}&sort_by=add_time&sort_direction=desc&limit=100",
            since.replace('+', "%2B")
        );
        let (status, listed) = json_of(call(&fake, &client, Method::GET, &path, None).await).await;
        assert_eq!(status, 200, "{listed}");
        assert_eq!(listed["data"][0]["name"], name, "{listed}");
    }
    let path = format!("/api/v2/deals?person_id={pid}&status=open&limit=1");
    let (_, listed) = json_of(call(&fake, &client, Method::GET, &path, None).await).await;
    assert_eq!(listed["data"][0]["id"], deal["data"]["id"]);
    let (_, none) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/deals?status=won",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(none["data"], json!([]));
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/deals?status=sold",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v2/persons?sort_by=name",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn notes_are_listed_by_person_newest_first() {
    let (fake, client) = start(PipedriveConfig::default()).await;
    let person = fake.seed_person("Noa", Some("noa@example.com"));
    for text in ["first", "second"] {
        let (status, _) = json_of(
            call(
                &fake,
                &client,
                Method::POST,
                "/api/v1/notes",
                Some(json!({"content": text, "person_id": person})),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201);
    }
    let path = format!("/api/v1/notes?person_id={person}&sort=add_time%20DESC&limit=1");
    let (status, listed) = json_of(call(&fake, &client, Method::GET, &path, None).await).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["content"], "second");
    assert_eq!(
        listed["additional_data"]["pagination"]["more_items_in_collection"],
        true
    );
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v1/notes?sort=colour%20ASC",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn field_lists_page_standard_then_custom_fields() {
    let key = "dcf558aac1ae4e8c4f849ba5e668430d8df9be12";
    let (fake, client) = start(PipedriveConfig {
        custom_fields: vec![PipedriveCustomField {
            object: "person".into(),
            key: key.into(),
            name: "First channel".into(),
            field_type: "varchar".into(),
        }],
        ..Default::default()
    })
    .await;
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v1/personFields?start=0&limit=4",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 4);
    let p = &body["additional_data"]["pagination"];
    assert_eq!(p["more_items_in_collection"], true);
    assert_eq!(p["next_start"], 4);
    let (_, body) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v1/personFields?start=4&limit=4",
            None,
        )
        .await,
    )
    .await;
    let keys: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert_eq!(keys, vec!["owner_id", key]);
    assert_eq!(
        body["additional_data"]["pagination"]["more_items_in_collection"],
        false
    );
    // The person's custom field is not a deal field.
    let (_, body) =
        json_of(call(&fake, &client, Method::GET, "/api/v1/dealFields", None).await).await;
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["key"] != key),
        "{body}"
    );
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/api/v1/dealFields?limit=501",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn deals_refuse_unknown_custom_fields_are_found_by_exact_search_and_gone_when_deleted() {
    let key = "dededededededededededededededededededede";
    let (fake, client) = start(PipedriveConfig {
        custom_fields: vec![PipedriveCustomField {
            object: "deal".into(),
            key: key.into(),
            name: "Key".into(),
            field_type: "varchar".into(),
        }],
        ..Default::default()
    })
    .await;
    // An organization custom field key is not a deal's.
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/deals",
            Some(json!({"title": "Big", "custom_fields": {"abc": "x"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "ERR_SCHEMA_VALIDATION_FAILED");
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/api/v2/deals",
            Some(json!({"title": "Big", "value": 5000, "custom_fields": {key: "deal-1"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["id"].as_u64().unwrap();
    // A title cannot be cleared.
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::PATCH,
            &format!("/api/v2/deals/{id}"),
            Some(json!({"title": null})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let search = |term: &'static str| {
        call(
            &fake,
            &client,
            Method::GET,
            match term {
                "deal" => "/api/v2/deals/search?term=deal&fields=custom_fields&exact_match=true",
                _ => "/api/v2/deals/search?term=DEAL-1&fields=custom_fields&exact_match=true",
            },
            None,
        )
    };
    let (_, body) = json_of(search("deal").await).await;
    assert_eq!(body["data"]["items"].as_array().unwrap().len(), 0, "{body}");
    let (_, body) = json_of(search("DEAL-1").await).await;
    assert_eq!(body["data"]["items"][0]["item"]["id"], id, "{body}");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::DELETE,
            &format!("/api/v2/deals/{id}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    for method in [Method::GET, Method::PATCH] {
        let (status, body) = json_of(
            call(
                &fake,
                &client,
                method,
                &format!("/api/v2/deals/{id}"),
                Some(json!({"value": 1})),
            )
            .await,
        )
        .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "Deal not found");
    }
}

#[tokio::test]
async fn webhook_subscriptions_are_validated_and_limited() {
    let (fake, client) = start(PipedriveConfig {
        burst_limit: 1000,
        ..Default::default()
    })
    .await;
    let create = |body: Value| call(&fake, &client, Method::POST, "/api/v1/webhooks", Some(body));
    let (status, _) = json_of(
        create(
            json!({"subscription_url": "not a url", "event_action": "*", "event_object": "deal"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = json_of(
        create(json!({"subscription_url": "http://127.0.0.1:9/x", "event_action": "updated.x", "event_object": "deal"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    for n in 0..40 {
        let (status, body) = json_of(
            create(
                json!({"subscription_url": format!("http://127.0.0.1:9/{n}"),
                          "event_action": "change", "event_object": "deal", "version": "2.0"}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["data"]["version"], "2.0");
    }
    let (status, _) = json_of(
        create(json!({"subscription_url": "http://127.0.0.1:9/41", "event_action": "*", "event_object": "*"}))
            .await,
    )
    .await;
    assert_eq!(status, 400, "40 webhooks a user");
    assert_eq!(fake.webhooks().len(), 40);
}
