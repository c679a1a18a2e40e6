//! `connect` against small local fakes of each vendor's subscription API.
//! Each fake enforces what the vendor enforces for these calls: its auth
//! scheme, the required fields, and its error shape (401 with a JSON body).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;

/// Every request a fake accepted: (path, body as JSON).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Value)>>>);

impl Seen {
    fn push(&self, path: &str, body: Value) {
        if let Ok(mut v) = self.0.lock() {
            v.push((path.to_string(), body));
        }
    }
    fn all(&self) -> Vec<(String, Value)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid credentials"})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

const HOOK: &str = "https://leads.example.com/v1/hooks/sales";

#[tokio::test]
async fn mailshake_creates_one_push_per_event_with_a_unique_target_url() {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/push/create",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                    if header(&headers, "authorization") != basic("ms-api-key", "") {
                        return unauthorized();
                    }
                    let form: Vec<(String, String)> =
                        serde_urlencoded::from_str(&body).unwrap_or_default();
                    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    match (field("event"), field("targetUrl")) {
                        (Some(event), Some(target)) => {
                            seen.push("/push/create", json!({"event": event, "targetUrl": target}));
                            axum::Json(json!({})).into_response()
                        }
                        _ => bad_request("event and targetUrl are required"),
                    }
                },
            ),
        )
        .with_state(seen.clone());
    let base = serve(app).await;
    let settings = json!({"token_env": "T", "api_key_env": "K", "api_base_url": base, "subscribe": ["Replied", "Clicked"]});
    let env = env_of(&[("T", "tok en"), ("K", "ms-api-key")]);
    let regs = register("mailshake", &settings, &env, HOOK).await.unwrap();
    assert_eq!(regs.len(), 2);
    assert_eq!(regs[0].url, format!("{HOOK}?token=tok+en&event=Replied"));
    let calls = seen.all();
    assert_eq!(calls[1].1["event"], "Clicked");
    assert_eq!(
        calls[1].1["targetUrl"],
        format!("{HOOK}?token=tok+en&event=Clicked")
    );
    assert!(matches!(
        list("mailshake", &settings, &env).await,
        Err(ConnectError::Unsupported(_))
    ));

    let wrong_key = env_of(&[("T", "t"), ("K", "nope")]);
    let err = register("mailshake", &settings, &wrong_key, HOOK)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Vendor {
                vendor: "mailshake",
                status: 401,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn smartlead_creates_a_webhook_and_lists_a_campaigns_webhooks() {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/webhook/create",
            post(|State(seen): State<Seen>, Query(q): Query<Vec<(String, String)>>, axum::Json(body): axum::Json<Value>| async move {
                if !q.iter().any(|(k, v)| k == "api_key" && v == "sl-key") {
                    return unauthorized();
                }
                if body.get("webhook_url").is_none() || !body["event_type_map"].is_object() {
                    return bad_request("webhook_url and event_type_map are required");
                }
                seen.push("/webhook/create", body);
                axum::Json(json!({"ok": true, "id": 501})).into_response()
            }),
        )
        .route(
            "/campaigns/{id}/webhooks",
            axum::routing::get(|Path(id): Path<u64>, Query(q): Query<Vec<(String, String)>>| async move {
                if !q.iter().any(|(k, v)| k == "api_key" && v == "sl-key") {
                    return unauthorized();
                }
                axum::Json(json!([{"id": 501, "name": "leadrelay", "webhook_url": format!("{HOOK}?token=t"),
                    "event_types": ["EMAIL_REPLY"], "is_active": true, "email_campaign_id": id}]))
                .into_response()
            }),
        )
        .with_state(seen.clone());
    let base = serve(app).await;
    let settings = json!({"token_env": "T", "api_key_env": "K", "api_base_url": base, "campaign_id": 77,
                          "subscribe": ["EMAIL_REPLY", "EMAIL_BOUNCE"]});
    let env = env_of(&[("T", "t"), ("K", "sl-key")]);
    let regs = register("smartlead", &settings, &env, HOOK).await.unwrap();
    assert_eq!(regs[0].vendor_id.as_deref(), Some("501"));
    let body = &seen.all()[0].1;
    assert_eq!(body["association_type"], "campaign");
    assert_eq!(body["email_campaign_id"], 77);
    assert_eq!(
        body["event_type_map"],
        json!({"EMAIL_REPLY": true, "EMAIL_BOUNCE": true})
    );
    assert_eq!(body["webhook_url"], format!("{HOOK}?token=t"));
    let hooks = list("smartlead", &settings, &env).await.unwrap();
    assert_eq!((hooks[0].id.as_str(), hooks[0].active), ("501", Some(true)));
    assert_eq!(hooks[0].events, ["EMAIL_REPLY"]);
}

#[tokio::test]
async fn lemlist_creates_one_hook_for_every_event_with_the_secret() {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/hooks",
            post(|State(seen): State<Seen>, headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                if header(&headers, "authorization") != basic("", "lem-key") {
                    return unauthorized();
                }
                if body.get("targetUrl").is_none() {
                    return bad_request("targetUrl is required");
                }
                seen.push("/hooks", body.clone());
                axum::Json(json!({"_id": "hoo_1", "targetUrl": body["targetUrl"], "createdAt": "2024-06-10T00:00:00Z"}))
                    .into_response()
            })
            .get(|headers: HeaderMap| async move {
                if header(&headers, "authorization") != basic("", "lem-key") {
                    return unauthorized();
                }
                axum::Json(json!([{"_id": "hoo_1", "targetUrl": "x", "type": "emailsReplied"}])).into_response()
            }),
        )
        .with_state(seen.clone());
    let base = serve(app).await;
    let settings =
        json!({"token_env": "T", "secret_env": "S", "api_key_env": "K", "api_base_url": base});
    let env = env_of(&[("T", "t"), ("S", "hook-secret"), ("K", "lem-key")]);
    let regs = register("lemlist", &settings, &env, HOOK).await.unwrap();
    assert_eq!(regs.len(), 1);
    assert_eq!(regs[0].vendor_id.as_deref(), Some("hoo_1"));
    let body = &seen.all()[0].1;
    assert_eq!(body["secret"], "hook-secret");
    assert!(body.get("type").is_none());
    let hooks = list("lemlist", &settings, &env).await.unwrap();
    assert_eq!(hooks[0].events, ["emailsReplied"]);
}

#[tokio::test]
async fn salesloft_subscribes_with_the_callback_token_the_source_verifies() {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/v2/webhook_subscriptions",
            post(|State(seen): State<Seen>, headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                if header(&headers, "authorization") != "Bearer slk-api" {
                    return unauthorized();
                }
                for field in ["callback_url", "callback_token", "event_type"] {
                    if body.get(field).is_none() {
                        return bad_request(&format!("{field} is required"));
                    }
                }
                let n = seen.all().len() + 1;
                seen.push("/v2/webhook_subscriptions", body.clone());
                let mut data = body;
                data["id"] = json!(n);
                data["enabled"] = json!(true);
                (StatusCode::CREATED, axum::Json(json!({"data": data}))).into_response()
            })
            .get(|headers: HeaderMap| async move {
                if header(&headers, "authorization") != "Bearer slk-api" {
                    return unauthorized();
                }
                axum::Json(json!({"data": [{"id": 1, "callback_url": HOOK, "event_type": "person_created", "enabled": true}]}))
                    .into_response()
            }),
        )
        .with_state(seen.clone());
    let base = serve(app).await;
    let settings = json!({"callback_token_env": "CB", "api_key_env": "K", "api_base_url": base,
                          "subscribe": ["person_created", "email_updated"]});
    let env = env_of(&[("CB", "callback-secret"), ("K", "slk-api")]);
    let regs = register("salesloft", &settings, &env, HOOK).await.unwrap();
    assert_eq!(
        regs.iter()
            .map(|r| r.vendor_id.clone().unwrap())
            .collect::<Vec<_>>(),
        ["1", "2"]
    );
    assert!(
        seen.all()
            .iter()
            .all(|(_, b)| b["callback_token"] == "callback-secret" && b["callback_url"] == HOOK)
    );
    let hooks = list("salesloft", &settings, &env).await.unwrap();
    assert_eq!(hooks[0].events, ["person_created"]);
}

#[tokio::test]
async fn calendly_creates_one_subscription_with_the_signing_key() {
    let seen = Seen::default();
    let app = Router::new()
        .route(
            "/webhook_subscriptions",
            post(|State(seen): State<Seen>, headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                if header(&headers, "authorization") != "Bearer cal-pat" {
                    return unauthorized();
                }
                for field in ["url", "events", "organization", "scope"] {
                    if body.get(field).is_none() {
                        return bad_request(&format!("{field} is required"));
                    }
                }
                seen.push("/webhook_subscriptions", body.clone());
                let resource = json!({"uri": "https://api.calendly.com/webhook_subscriptions/AAA", "callback_url": body["url"],
                                      "events": body["events"], "scope": body["scope"], "state": "active"});
                (StatusCode::CREATED, axum::Json(json!({"resource": resource}))).into_response()
            })
            .get(|headers: HeaderMap, Query(q): Query<Vec<(String, String)>>| async move {
                if header(&headers, "authorization") != "Bearer cal-pat" {
                    return unauthorized();
                }
                if !q.iter().any(|(k, _)| k == "organization") {
                    return bad_request("organization is required");
                }
                axum::Json(json!({"collection": [{"uri": "https://api.calendly.com/webhook_subscriptions/AAA",
                    "callback_url": HOOK, "events": ["invitee.created"], "state": "disabled"}], "pagination": {}}))
                .into_response()
            }),
        )
        .with_state(seen.clone());
    let base = serve(app).await;
    let settings = json!({"signing_key_env": "SK", "api_token_env": "PAT", "api_base_url": base,
                          "organization": "https://api.calendly.com/organizations/ORG"});
    let env = env_of(&[("SK", "signing-key"), ("PAT", "cal-pat")]);
    let regs = register("calendly", &settings, &env, HOOK).await.unwrap();
    assert_eq!(
        regs[0].vendor_id.as_deref(),
        Some("https://api.calendly.com/webhook_subscriptions/AAA")
    );
    let body = &seen.all()[0].1;
    assert_eq!(body["signing_key"], "signing-key");
    assert_eq!(body["scope"], "organization");
    assert_eq!(
        body["events"],
        json!(["invitee.created", "invitee.canceled"])
    );
    let hooks = list("calendly", &settings, &env).await.unwrap();
    assert_eq!(hooks[0].active, Some(false));

    let wrong = env_of(&[("SK", "signing-key"), ("PAT", "expired")]);
    assert!(matches!(
        list("calendly", &settings, &wrong).await,
        Err(ConnectError::Vendor { status: 401, .. })
    ));
}

#[tokio::test]
async fn configuration_problems_and_unsupported_kinds() {
    let env = env_of(&[("T", "t")]);
    let err = register("mailshake", &json!({"token_env": "T"}), &env, HOOK)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Config(e) if e[0].field == "api_key_env"),
        "{err}"
    );
    let err = register(
        "mailshake",
        &json!({"token_env": "T", "api_key_env": "T", "api_base_url": "ftp://x"}),
        &env,
        HOOK,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Config(e) if e[0].field == "api_base_url"),
        "{err}"
    );
    let err = register(
        "calendly",
        &json!({"signing_key_env": "T", "api_token_env": "T"}),
        &env,
        HOOK,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Config(e) if e[0].field == "organization"),
        "{err}"
    );
    for kind in ["yesware", "hubspot", "pipedrive", "nope"] {
        assert!(
            matches!(
                register(kind, &json!({}), &env, HOOK).await,
                Err(ConnectError::Unsupported(_))
            ),
            "{kind}"
        );
    }
    let Err(ConnectError::Unsupported(why)) = register("yesware", &json!({}), &env, HOOK).await
    else {
        panic!()
    };
    assert!(why.contains("Salesforce"));
    let refused = register(
        "salesloft",
        &json!({"callback_token_env": "T", "api_key_env": "T", "api_base_url": "http://127.0.0.1:9"}),
        &env,
        HOOK,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, ConnectError::Transport { .. }),
        "{refused}"
    );
}

/// `connect` subscribes only to push events Mailshake documents (Pushes >
/// Events): an undocumented name would be refused by push/create.
#[test]
fn mailshake_default_subscriptions_are_documented_push_events() {
    let documented = [
        "Clicked",
        "Opened",
        "Replied",
        "MessageSent",
        "LeadCreated",
        "LeadStatusChanged",
    ];
    for event in super::mailshake::DEFAULT_EVENTS {
        assert!(documented.contains(&event), "{event}");
    }
}

#[tokio::test]
async fn a_transport_error_does_not_print_the_query_token() {
    // A closed port: the request fails before any answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client().unwrap();
    let err = send(
        "smartlead",
        c.post(format!(
            "http://127.0.0.1:{port}/api/v1/webhooks?api_key=CANARYSECRET42"
        )),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConnectError::Transport { .. }), "{text}");
    assert!(!text.contains("CANARYSECRET42"), "{text}");
    assert!(text.contains("/api/v1/webhooks"), "{text}");
}
