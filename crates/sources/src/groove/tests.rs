use serde_json::json;

use crate::testutil::{
    TestRequest, assert_largest_fits, build, data_str, email_of, has_ref, long_text, one_event,
    receive,
};
use crate::{HookError, SourceKind};

const URL: &str = "https://leads.example.com/v1/hooks/groove?token=gr-token";

fn source() -> Box<dyn SourceKind> {
    build(
        "groove",
        json!({"token_env": "GROOVE_TOKEN"}),
        &[("GROOVE_TOKEN", "gr-token")],
    )
}

#[test]
fn a_sale_is_a_custom_event_with_the_buyer() {
    let body = r#"{"event": "Sale", "transaction_id": "GS-99812", "product_id": 771, "product_name": "Pro plan",
                   "amount": "97.00", "currency": "USD", "buyer_email": "Kim@Shop.io", "buyer_first_name": "Kim", "buyer_last_name": "Lee"}"#;
    let e = one_event(source().as_ref(), &TestRequest::post(URL, body));
    assert_eq!(e.event_type.as_str(), "custom");
    assert_eq!(data_str(&e, "vendor_event"), "sale");
    assert_eq!(email_of(&e), "kim@shop.io");
    assert_eq!(e.contact.last_name.as_deref(), Some("Lee"));
    assert_eq!(data_str(&e, "amount"), "97.00");
    assert!(has_ref(&e, "transaction", "GS-99812") && has_ref(&e, "product", "771"));
    assert_eq!(
        one_event(source().as_ref(), &TestRequest::post(URL, body)).external_id,
        e.external_id
    );
}

#[test]
fn form_posts_are_read_and_refunds_differ_from_sales() {
    let form = "event=refund&transaction_id=GS-99812&buyer_email=kim%40shop.io";
    let req = TestRequest::post(URL, form).content_type("application/x-www-form-urlencoded");
    let e = one_event(source().as_ref(), &req);
    assert_eq!(data_str(&e, "vendor_event"), "refund");
    assert_eq!(email_of(&e), "kim@shop.io");
}

#[test]
fn wrong_token_401_bad_body_400_wrong_type_415() {
    let wrong = TestRequest::post("https://leads.example.com/v1/hooks/groove?token=x", "{}");
    assert!(matches!(
        receive(source().as_ref(), &wrong),
        Err(HookError::Unauthorized(_))
    ));
    assert_eq!(
        receive(source().as_ref(), &TestRequest::post(URL, "{"))
            .unwrap_err()
            .status(),
        400
    );
    let xml = TestRequest::post(URL, "<a/>").content_type("application/xml");
    assert_eq!(receive(source().as_ref(), &xml).unwrap_err().status(), 415);
}

#[test]
fn the_largest_documented_request_fits() {
    let body = json!({"event": "Sale", "transaction_id": "GS-99812", "product_id": 771,
                      "product_name": long_text(2_000), "amount": "97.00", "currency": "USD",
                      "buyer_email": "Kim@Shop.io", "buyer_first_name": "Kim", "buyer_last_name": "Lee"});
    let req = TestRequest::post(URL, body.to_string());
    assert_largest_fits(source().as_ref(), &req, 1);
}
