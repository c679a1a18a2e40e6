//! The fake HubSpot over real HTTP: happy paths, every enforced rule, limits
//! and fault injection.

use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use super::*;
use crate::common::Fault;

const TOKEN: &str = HubSpotConfig::DEFAULT_TOKEN;

async fn start(config: HubSpotConfig) -> (FakeHubSpot, Client) {
    let fake = FakeHubSpot::start(config).await.expect("start fake");
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    (fake, Client::new())
}

async fn call(
    fake: &FakeHubSpot,
    client: &Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = client
        .request(method, format!("{}{}", fake.base_url(), path))
        .bearer_auth(TOKEN);
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

/// The decoded `Property values were not valid: [...]` list.
fn property_errors(body: &Value) -> Vec<Value> {
    let msg = body["message"].as_str().unwrap_or_default();
    let list = msg
        .strip_prefix("Property values were not valid: ")
        .unwrap_or("[]");
    serde_json::from_str::<Vec<Value>>(list).unwrap_or_default()
}

#[tokio::test]
async fn rejects_missing_and_wrong_tokens() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let url = format!("{}/crm/v3/objects/contacts?limit=1", fake.base_url());
    for req in [
        client.get(&url),
        client.get(&url).bearer_auth("pat-na1-wrong"),
    ] {
        let (status, body) = json_of(req.send().await.expect("send")).await;
        assert_eq!(status, 401);
        assert_eq!(body["status"], "error");
        assert_eq!(body["category"], "INVALID_AUTHENTICATION");
        assert!(body["correlationId"].is_string());
    }
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts?limit=1",
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
            "/account-info/v3/details",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["portalId"], 12345678);
}

#[tokio::test]
async fn batch_upsert_creates_then_updates_by_email() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let body = json!({"inputs": [
        {"idProperty": "email", "id": "ada@example.com", "properties": {"firstname": "Ada", "lifecyclestage": "lead"}},
        {"idProperty": "email", "id": "bob@example.com", "properties": {"firstname": "Bob"}},
    ]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(body),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "COMPLETE");
    let results = out["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| r["new"] == true && r["id"].is_string())
    );
    let ada_id = results[0]["id"].as_str().expect("id").to_string();
    assert_eq!(results[0]["properties"]["email"], "ada@example.com");

    let again = json!({"inputs": [
        {"idProperty": "email", "id": "ADA@example.com", "properties": {"lastname": "Lovelace"}},
    ]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(again),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["results"][0]["new"], false);
    assert_eq!(out["results"][0]["id"], ada_id.as_str());

    let contacts = fake.contacts();
    assert_eq!(contacts.len(), 2);
    let ada = fake.contact_by_email("ada@example.com").expect("ada");
    assert_eq!(ada.id, ada_id);
    assert_eq!(ada.get("firstname"), Some("Ada"));
    assert_eq!(ada.get("lastname"), Some("Lovelace"));
    assert_eq!(ada.get("lifecyclestage"), Some("lead"));
}

#[tokio::test]
async fn batch_upsert_rejects_more_than_100_inputs_and_duplicates() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let inputs: Vec<Value> = (0..101)
        .map(
            |i| json!({"idProperty": "email", "id": format!("p{i}@example.com"), "properties": {}}),
        )
        .collect();
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(json!({"inputs": inputs})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["category"], "VALIDATION_ERROR");
    assert!(body["message"].as_str().unwrap_or_default().contains("100"));

    let dup = json!({"inputs": [
        {"idProperty": "email", "id": "x@example.com", "properties": {}},
        {"idProperty": "email", "id": "x@example.com", "properties": {}},
    ]});
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(dup),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);

    let bad_email =
        json!({"inputs": [{"idProperty": "email", "id": "not an email", "properties": {}}]});
    let resp = call(
        &fake,
        &client,
        Method::POST,
        "/crm/v3/objects/contacts/batch/upsert",
        Some(bad_email),
    )
    .await;
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&body)
            .iter()
            .any(|e| e["error"] == "INVALID_EMAIL")
    );

    let not_unique =
        json!({"inputs": [{"idProperty": "firstname", "id": "Ada", "properties": {}}]});
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(not_unique),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(fake.contacts().is_empty());
}

#[tokio::test]
async fn unknown_property_and_invalid_options_are_rejected_with_hubspot_errors() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let body = json!({"properties": {"email": "a@example.com", "favourite_colour": "blue", "lifecyclestage": "hot", "hs_lead_status": "NEW"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(body),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(out["status"], "error");
    assert_eq!(out["category"], "VALIDATION_ERROR");
    let errs = property_errors(&out);
    assert!(errs.iter().any(|e| e["error"] == "PROPERTY_DOESNT_EXIST"
        && e["name"] == "favourite_colour"
        && e["isValid"] == false));
    assert!(
        errs.iter()
            .any(|e| e["error"] == "INVALID_OPTION" && e["name"] == "lifecyclestage")
    );
    assert!(!errs.iter().any(|e| e["name"] == "hs_lead_status"));

    let batch = json!({"inputs": [{"idProperty": "email", "id": "b@example.com", "properties": {"hs_lead_status": "MAYBE"}}]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/batch/upsert",
            Some(batch),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["error"] == "INVALID_OPTION" && e["name"] == "hs_lead_status")
    );

    let read_only = json!({"properties": {"createdate": "2020-01-01"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(read_only),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["error"] == "READ_ONLY_VALUE")
    );

    let bad_email = json!({"properties": {"email": "not an email"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(bad_email),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["error"] == "INVALID_EMAIL")
    );
    assert!(fake.contacts().is_empty());
}

#[tokio::test]
async fn malformed_json_gets_a_validation_error_not_a_panic() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let resp = client
        .post(format!("{}/crm/v3/objects/contacts", fake.base_url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"properties\": ")
        .send()
        .await
        .expect("send");
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid input JSON")
    );
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/widgets",
            Some(json!({})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("widgets")
    );
}

#[tokio::test]
async fn create_read_patch_and_conflict_on_duplicate_email() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let (status, created) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "c@example.com", "firstname": "C"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id").to_string();

    let (status, read) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts/c@example.com?idProperty=email",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["id"], id.as_str());
    assert_eq!(read["properties"]["firstname"], "C");

    let (status, read) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/crm/v3/objects/contacts/{id}?properties=phone"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(read["properties"]["phone"], Value::Null);

    let (status, patched) = json_of(
        call(
            &fake,
            &client,
            Method::PATCH,
            &format!("/crm/v3/objects/contacts/{id}"),
            Some(json!({"properties": {"phone": "+15550100"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(patched["properties"]["phone"], "+15550100");

    let (status, conflict) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "C@example.com"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(conflict["category"], "CONFLICT");
    assert_eq!(
        conflict["message"],
        format!("Contact already exists. Existing ID: {id}")
    );

    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts/999999",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(fake.contacts().len(), 1);
}

#[tokio::test]
async fn search_by_email_and_domain() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    fake.seed(
        "contacts",
        &[("email", "dee@example.com"), ("firstname", "Dee")],
    );
    fake.seed("companies", &[("name", "Acme"), ("domain", "acme.test")]);
    let q = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "DEE@example.com"}]}], "properties": ["email", "firstname"]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(q),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(out["total"], 1);
    assert_eq!(out["results"][0]["properties"]["firstname"], "Dee");

    let q = json!({"filterGroups": [{"filters": [{"propertyName": "domain", "operator": "EQ", "value": "acme.test"}]}]});
    let (_, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/companies/search",
            Some(q),
        )
        .await,
    )
    .await;
    assert_eq!(out["total"], 1);
    assert_eq!(out["results"][0]["properties"]["name"], "Acme");

    let q = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "nobody@example.com"}]}]});
    let (_, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(q),
        )
        .await,
    )
    .await;
    assert_eq!(out["total"], 0);

    let groups: Vec<Value> = (0..6).map(|_| json!({"filters": []})).collect();
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(json!({"filterGroups": groups})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn deals_must_use_configured_pipeline_and_stage() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let ok = json!({"properties": {"dealname": "Big", "pipeline": "default", "dealstage": "qualifiedtobuy", "amount": 1000}});
    let (status, deal) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/deals",
            Some(ok),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{deal}");
    assert_eq!(deal["properties"]["amount"], "1000");

    let bad_stage =
        json!({"properties": {"dealname": "X", "pipeline": "default", "dealstage": "won-ish"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/deals",
            Some(bad_stage),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["name"] == "dealstage" && e["error"] == "INVALID_OPTION")
    );

    let bad_pipeline = json!({"properties": {"dealname": "X", "pipeline": "enterprise", "dealstage": "qualifiedtobuy"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/deals",
            Some(bad_pipeline),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["name"] == "pipeline")
    );

    let id = deal["id"].as_str().expect("id");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::PATCH,
            &format!("/crm/v3/objects/deals/{id}"),
            Some(json!({"properties": {"dealstage": "nope"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(fake.deals().len(), 1);
    assert_eq!(fake.deals()[0].get("dealstage"), Some("qualifiedtobuy"));
}

#[tokio::test]
async fn notes_and_tasks_require_timestamp_and_valid_picklists_and_associate_inline() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let contact = fake.seed("contacts", &[("email", "e@example.com")]);

    let note = json!({
        "properties": {"hs_timestamp": "2024-05-01T10:00:00Z", "hs_note_body": "Called"},
        "associations": [{"to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}],
    });
    let (status, created) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/notes",
            Some(note),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let note_id = created["id"].as_str().expect("id").to_string();
    assert_eq!(
        fake.associated_ids("notes", &note_id, "contacts"),
        vec![contact.clone()]
    );
    assert_eq!(
        fake.associated_ids("contacts", &contact, "notes"),
        vec![note_id]
    );

    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/notes",
            Some(json!({"properties": {"hs_note_body": "x"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&out)
            .iter()
            .any(|e| e["name"] == "hs_timestamp")
    );

    let bad_task = json!({"properties": {"hs_timestamp": "1714557600000", "hs_task_subject": "Call", "hs_task_status": "DONE", "hs_task_priority": "URGENT"}});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/tasks",
            Some(bad_task),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let errs = property_errors(&out);
    assert!(
        errs.iter()
            .any(|e| e["name"] == "hs_task_status" && e["error"] == "INVALID_OPTION")
    );
    assert!(
        errs.iter()
            .any(|e| e["name"] == "hs_task_priority" && e["error"] == "INVALID_OPTION")
    );

    let wrong_type = json!({
        "properties": {"hs_timestamp": "1714557600000", "hs_task_status": "NOT_STARTED"},
        "associations": [{"to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}],
    });
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/tasks",
            Some(wrong_type),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "202 is note→contact, not a task association");

    let missing_target = json!({
        "properties": {"hs_timestamp": "1714557600000"},
        "associations": [{"to": {"id": "424242"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}],
    });
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/tasks",
            Some(missing_target),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(fake.tasks().is_empty());
}

#[tokio::test]
async fn v4_default_associations_single_and_batch() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let contact = fake.seed("contacts", &[("email", "f@example.com")]);
    let company = fake.seed("companies", &[("name", "F Inc"), ("domain", "f.test")]);
    let deal = fake.seed(
        "deals",
        &[
            ("dealname", "F deal"),
            ("pipeline", "default"),
            ("dealstage", "contractsent"),
        ],
    );

    let path =
        format!("/crm/v4/objects/contacts/{contact}/associations/default/companies/{company}");
    let (status, out) = json_of(call(&fake, &client, Method::PUT, &path, None).await).await;
    assert_eq!(status, 200, "{out}");
    let ids: Vec<u64> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["associationSpec"]["associationTypeId"].as_u64())
        .collect();
    assert!(ids.contains(&279) && ids.contains(&280));
    assert_eq!(
        fake.associated_ids("contacts", &contact, "companies"),
        vec![company.clone()]
    );

    let batch = json!({"inputs": [{"from": {"id": deal}, "to": {"id": contact}}, {"from": {"id": deal}, "to": {"id": "999999"}}]});
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v4/associations/deals/contacts/batch/associate/default",
            Some(batch),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207);
    assert_eq!(out["numErrors"], 1);
    assert_eq!(
        fake.associated_ids("deals", &deal, "contacts"),
        vec![contact.clone()]
    );
    let (status, listed) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/crm/v4/objects/contacts/{contact}/associations/deals"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["results"][0]["associationTypes"][0]["typeId"], 4);

    let missing =
        format!("/crm/v4/objects/contacts/{contact}/associations/default/companies/777777");
    let (status, _) = json_of(call(&fake, &client, Method::PUT, &missing, None).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn custom_objects_and_properties_listing() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let (status, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/2-12345",
            Some(json!({"properties": {"project_name": "Roof", "project_status": "active"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/p_projects",
            Some(json!({"properties": {"project_status": "active"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "project_name is required");
    assert_eq!(fake.records("p_projects").len(), 1);

    let (status, props) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/properties/contacts",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = props["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"email")
            && names.contains(&"lifecyclestage")
            && names.contains(&"leadrelay_source")
    );
    let tier = props["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|p| p["name"] == "lead_tier")
        .expect("lead_tier");
    assert_eq!(tier["type"], "enumeration");
    assert_eq!(tier["options"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn gdpr_delete_removes_the_contact() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    fake.seed("contacts", &[("email", "gone@example.com")]);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/gdpr-delete",
            Some(json!({"objectId": "gone@example.com", "idProperty": "email"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 204);
    assert!(fake.contact_by_email("gone@example.com").is_none());
    assert_eq!(
        fake.gdpr_deleted_emails(),
        vec!["gone@example.com".to_string()]
    );
}

#[tokio::test]
async fn rolling_limit_answers_429_with_hubspot_body_and_headers() {
    let config = HubSpotConfig {
        rolling_limit: 3,
        rolling_window: Duration::from_millis(400),
        ..HubSpotConfig::default()
    };
    let (fake, client) = start(config).await;
    for remaining in [2, 1, 0] {
        let resp = call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts?limit=1",
            None,
        )
        .await;
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["x-hubspot-ratelimit-max"], "3");
        assert_eq!(
            resp.headers()["x-hubspot-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert_eq!(
            resp.headers()["x-hubspot-ratelimit-interval-milliseconds"],
            "400"
        );
        assert!(
            resp.headers()
                .contains_key("x-hubspot-ratelimit-daily-remaining")
        );
    }
    let resp = call(
        &fake,
        &client,
        Method::GET,
        "/crm/v3/objects/contacts?limit=1",
        None,
    )
    .await;
    assert_eq!(resp.headers()["x-hubspot-ratelimit-remaining"], "0");
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 429);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(
        body["message"],
        "You have reached your ten_secondly_rolling limit."
    );
    assert!(body["correlationId"].is_string());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts?limit=1",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn daily_limit_answers_429_daily() {
    let config = HubSpotConfig {
        daily_limit: 10,
        ..HubSpotConfig::default()
    };
    let (fake, client) = start(config).await;
    fake.set_daily_usage(9);
    let resp = call(
        &fake,
        &client,
        Method::GET,
        "/crm/v3/objects/contacts?limit=1",
        None,
    )
    .await;
    assert_eq!(resp.headers()["x-hubspot-ratelimit-daily-remaining"], "0");
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            "/crm/v3/objects/contacts?limit=1",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["policyName"], "DAILY");
    assert_eq!(body["message"], "You have reached your daily limit.");
}

#[tokio::test]
async fn injected_faults_answer_before_the_fake() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    fake.faults().push(
        Fault::Status {
            status: 502,
            body: "bad gateway".into(),
            headers: vec![],
        },
        2,
    );
    for _ in 0..2 {
        let resp = call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "z@example.com"}})),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 502);
    }
    assert!(fake.contacts().is_empty());
    fake.faults().push(Fault::Reset, 1);
    assert!(
        client
            .get(format!("{}/crm/v3/objects/contacts", fake.base_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_err()
    );
    let resp = call(
        &fake,
        &client,
        Method::POST,
        "/crm/v3/objects/contacts",
        Some(json!({"properties": {"email": "z@example.com"}})),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 201);
    let statuses: Vec<u16> = fake.requests().entries().iter().map(|e| e.status).collect();
    assert_eq!(statuses.first(), Some(&502));
    assert_eq!(statuses.last(), Some(&201));
}

#[tokio::test]
async fn search_index_delay_hides_fresh_records() {
    let config = HubSpotConfig {
        search_index_delay: Duration::from_millis(300),
        ..HubSpotConfig::default()
    };
    let (fake, client) = start(config).await;
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts",
            Some(json!({"properties": {"email": "late@example.com"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201);
    let q = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "late@example.com"}]}]});
    let (_, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(q.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(out["total"], 0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, out) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/contacts/search",
            Some(q),
        )
        .await,
    )
    .await;
    assert_eq!(out["total"], 1);
}

#[tokio::test]
async fn batch_create_echoes_trace_ids_associates_and_is_all_or_nothing() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let contact = fake.seed("contacts", &[("email", "jane@acme.io")]);
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/notes/batch/create",
            Some(json!({"inputs": [
                {"objectWriteTraceId": "a", "properties": {"hs_timestamp": "2024-05-01T00:00:00Z", "hs_note_body": "hello"},
                 "associations": [{"to": {"id": contact}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]}]},
                {"objectWriteTraceId": "b", "properties": {"hs_timestamp": "2024-05-01T00:00:00Z", "hs_note_body": "again"}},
            ]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let a = results
        .iter()
        .find(|r| r["objectWriteTraceId"] == "a")
        .unwrap();
    let note_id = a["id"].as_str().unwrap();
    assert_eq!(
        fake.associated_ids("notes", note_id, "contacts"),
        vec![contact.clone()]
    );
    assert_eq!(fake.notes().len(), 2);

    // One invalid input fails the whole batch.
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/notes/batch/create",
            Some(json!({"inputs": [
                {"properties": {"hs_timestamp": "2024-05-01T00:00:00Z", "hs_note_body": "ok"}},
                {"properties": {"hs_note_body": "no timestamp", "nope": "x"}},
            ]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let errs = property_errors(&body);
    assert!(
        errs.iter()
            .any(|e| e["error"] == "PROPERTY_DOESNT_EXIST" && e["name"] == "nope"),
        "{body}"
    );
    assert_eq!(fake.notes().len(), 2);

    // The contact's notes, through the associations, and their bodies: both
    // read at once (no index lag).
    let (status, assoc) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v4/associations/contacts/notes/batch/read",
            Some(json!({"inputs": [{"id": contact}, {"id": "999999"}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207, "{assoc}");
    assert_eq!(assoc["results"][0]["from"]["id"], json!(contact));
    assert_eq!(
        assoc["results"][0]["to"][0]["toObjectId"].to_string(),
        note_id
    );
    assert_eq!(assoc["errors"][0]["context"]["fromId"], json!(["999999"]));
    let (status, read) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/notes/batch/read",
            Some(json!({"properties": ["hs_note_body"], "inputs": [{"id": note_id}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["results"][0]["properties"]["hs_note_body"], "hello");
}

#[tokio::test]
async fn batch_update_applies_found_records_and_reports_missing_ones() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let deal = fake.seed(
        "deals",
        &[
            ("dealname", "D"),
            ("pipeline", "default"),
            ("dealstage", "appointmentscheduled"),
        ],
    );
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/deals/batch/update",
            Some(json!({"inputs": [
                {"id": deal, "properties": {"dealstage": "qualifiedtobuy"}},
                {"id": "999999", "properties": {"dealstage": "qualifiedtobuy"}},
            ]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["numErrors"], 1);
    assert_eq!(body["errors"][0]["context"]["ids"][0], "999999");
    assert_eq!(
        fake.record("deals", &deal).unwrap().get("dealstage"),
        Some("qualifiedtobuy")
    );
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/deals/batch/update",
            Some(json!({"inputs": [{"id": deal, "properties": {"dealstage": "nowhere"}}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        property_errors(&body)
            .iter()
            .any(|e| e["error"] == "INVALID_OPTION"),
        "{body}"
    );
}

#[tokio::test]
async fn dated_and_numbered_paths_share_one_portal() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    let (status, created) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/objects/2026-03/contacts/batch/upsert",
            Some(json!({"inputs": [{"idProperty": "email", "id": "ada@example.com", "properties": {"email": "ada@example.com", "firstname": "Ada"}}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let id = created["results"][0]["id"].as_str().unwrap().to_string();
    // The numbered path reads what the dated one wrote, and back.
    let (status, read) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/crm/v3/objects/contacts/{id}?properties=firstname"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, read["properties"]["firstname"].as_str()),
        (200, Some("Ada"))
    );
    let (status, company) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/objects/companies",
            Some(json!({"properties": {"name": "Acme", "domain": "acme.io"}})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{company}");
    let company_id = company["id"].as_str().unwrap();
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/associations/2026-03/contacts/companies/batch/associate/default",
            Some(json!({"inputs": [{"from": {"id": id}, "to": {"id": company_id}}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fake.associated_ids("contacts", &id, "companies"),
        vec![company_id.to_string()]
    );
    let (status, listed) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/crm/objects/2026-03/contacts/{id}/associations/companies"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["results"][0]["toObjectId"]
            .to_string()
            .trim_matches('"'),
        company_id
    );
    for path in [
        "/crm/properties/2026-03/contacts/email",
        "/crm/pipelines/2026-03/deals",
        "/account-info/2026-03/details",
    ] {
        let r = call(&fake, &client, Method::GET, path, None).await;
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // A version HubSpot has not released is not served.
    let r = call(
        &fake,
        &client,
        Method::GET,
        "/crm/objects/2031-03/contacts",
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn lists_are_created_searched_and_their_memberships_paged_and_changed() {
    let (fake, client) = start(HubSpotConfig::default()).await;
    // The token is checked here too.
    let unauth = client
        .get(format!("{}/crm/v3/lists/1", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);

    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/lists",
            Some(json!({"name": "Webinar"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["category"], "VALIDATION_ERROR");
    assert!(
        body["message"].as_str().unwrap().contains("objectTypeId"),
        "{body}"
    );
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/lists",
            Some(json!({"name": "Webinar", "objectTypeId": "0-1", "processingType": "MANUAL"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list = body["list"]["listId"].as_str().unwrap().to_string();
    assert_eq!(body["list"]["processingStatus"], "COMPLETE");
    // Names are unique.
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/lists",
            Some(json!({"name": "webinar", "objectTypeId": "0-1", "processingType": "MANUAL"})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);

    let ids: Vec<String> = (0..5)
        .map(|i| fake.seed("contacts", &[("email", &format!("p{i}@acme.io"))]))
        .collect();
    let mut body: Vec<Value> = ids.iter().map(|i| json!(i)).collect();
    body.push(json!("999999"));
    let (status, added) = json_of(
        call(
            &fake,
            &client,
            Method::PUT,
            &format!("/crm/v3/lists/{list}/memberships/add"),
            Some(Value::Array(body)),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["recordIdsAdded"].as_array().unwrap().len(), 5);
    assert_eq!(added["recordIdsMissing"], json!(["999999"]));

    // Paged two at a time, in both orders, under both path schemes.
    for path in [
        format!("/crm/v3/lists/{list}/memberships"),
        format!("/crm/v3/lists/{list}/memberships/join-order"),
        format!("/crm/lists/2026-03/{list}/memberships"),
    ] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = match &after {
                Some(a) => format!("{path}?limit=2&after={a}"),
                None => format!("{path}?limit=2"),
            };
            let (status, page) = json_of(call(&fake, &client, Method::GET, &q, None).await).await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["total"], 5);
            for r in page["results"].as_array().unwrap() {
                assert!(r["membershipTimestamp"].is_string());
                seen.push(r["recordId"].as_str().unwrap().to_string());
            }
            match page["paging"]["next"]["after"].as_str() {
                Some(a) => after = Some(a.to_string()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort_by_key(|s| s.parse::<u64>().unwrap());
        assert_eq!(seen, sorted, "{path}");
        assert_eq!(seen.len(), 5, "{path}");
    }
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::GET,
            &format!("/crm/v3/lists/{list}/memberships?limit=251"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);

    // Removed; a deleted contact leaves the list too.
    let (status, removed) = json_of(
        call(
            &fake,
            &client,
            Method::PUT,
            &format!("/crm/v3/lists/{list}/memberships/remove"),
            Some(json!([ids[0]])),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(removed["recordIdsRemoved"], json!([ids[0]]));
    call(
        &fake,
        &client,
        Method::DELETE,
        &format!("/crm/v3/objects/contacts/{}", ids[1]),
        None,
    )
    .await;
    assert_eq!(fake.list(&list).unwrap().members.len(), 3);

    // A dynamic list's memberships follow its filters, not these calls.
    let dynamic = fake.create_list("Hot leads", "DYNAMIC");
    let (status, body) = json_of(
        call(
            &fake,
            &client,
            Method::PUT,
            &format!("/crm/v3/lists/{dynamic}/memberships/add"),
            Some(json!([ids[2]])),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (status, found) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/lists/search",
            Some(json!({"query": "hot", "offset": 0})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["total"], 1);
    assert_eq!(found["lists"][0]["listId"], json!(dynamic));
    assert_eq!(found["hasMore"], false);
    let (status, _) = json_of(
        call(
            &fake,
            &client,
            Method::POST,
            "/crm/v3/lists/search",
            Some(json!({"count": 501, "offset": 0})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);

    let (status, body) =
        json_of(call(&fake, &client, Method::GET, "/crm/v3/lists/424242", None).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["category"], "OBJECT_NOT_FOUND");
}
