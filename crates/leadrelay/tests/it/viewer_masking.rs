//! Viewer keys see personal data masked however it was sent: the README's
//! no-JavaScript form posts `application/x-www-form-urlencoded`, whose raw
//! body (`email=omar%40example.com…`) must be masked after decoding, in the
//! API and on the dashboard's lead page.

use leadrelay::store::Role;
use serde_json::Value;

use crate::admin::{key, sign_in};
use crate::support::{Receiver, TestApp, webhook_config};

#[tokio::test]
async fn viewers_see_urlencoded_raw_payloads_masked() {
    let r = Receiver::start().await;
    let app = TestApp::spawn(&webhook_config(
        &r.url(),
        "[forms.contact.fields.phone]\ntype = \"phone\"\ndefault_region = \"US\"\n",
    ))
    .await;
    let admin = key(&app, "ops", Role::Admin).await;
    let viewer = key(&app, "marketing", Role::Viewer).await;
    let resp = app
        .client
        .post(app.url("/v1/forms/contact"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body("email=omar.haddad%40example.com&phone=%2B1+415+555+2671&first_name=Omar&consent=on")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let get = |k: String| {
        let app = &app;
        let id = id.clone();
        async move {
            app.client
                .get(app.url(&format!("/api/v1/events/{id}")))
                .bearer_auth(k)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let seen = get(viewer.clone()).await;
    let raw = seen["event"]["raw"]["body"].as_str().unwrap();
    assert!(
        !seen.to_string().contains("omar.haddad") && !raw.contains("omar.haddad"),
        "{raw}"
    );
    assert!(!raw.contains("2671"), "{raw}");
    assert!(raw.contains("o***%40example.com"), "{raw}");
    // The received_at date is not a phone number.
    let received = seen["event"]["received_at"].as_str().unwrap();
    assert!(received.starts_with("20"), "{received}");

    let full = get(admin).await;
    assert!(
        full["event"]["raw"]["body"]
            .as_str()
            .unwrap()
            .contains("omar.haddad%40example.com"),
        "admins see the raw body"
    );

    // The dashboard's lead page shows the same masked raw body.
    let signed = sign_in(&app, &viewer).await;
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("lr_session="))
        .expect("a session")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = app
        .client
        .get(app.url(&format!("/ui/leads/{id}")))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Raw payload"), "the raw payload is shown");
    assert!(!html.contains("omar.haddad"), "the dashboard masks it too");
    assert!(!html.contains("555+2671") && !html.contains("555 2671"));
}
