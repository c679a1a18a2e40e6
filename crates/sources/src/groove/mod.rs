//! Groove.cm (GrooveSell) product webhooks: sales, refunds, failed rebills
//! and cancellations, posted as JSON or as a form. None of these has a
//! canonical meaning, so they are `custom` events (`data.vendor_event` =
//! `sale`, `refund` …) with the buyer as the contact and the transaction in
//! `data`. Groove.cm has no public API and does not sign webhooks; a shared
//! token in the URL authenticates.

use serde_json::Value;

use crate::config::Env;
use crate::event::{EventDraft, parse_time};
use crate::json::{event_name, expect_object, fill_contact, first_text, text};
use crate::token_source::build_token_only;
use crate::{
    HookError, InboundEvent, InboundRequest, KIB, KindInfo, SourceConfigError, SourceKind,
};

#[cfg(test)]
mod tests;

pub(crate) const INFO: KindInfo = KindInfo {
    name: "groove",
    title: "Groove.cm / GrooveSell (product webhooks: sale, refund, failed rebill, cancellation)",
    auth: "shared token in the URL (?token=) — GrooveSell does not sign webhooks",
    setup: "In GrooveSell open the product > Settings > Webhooks (IPN) and paste \
            https://<leadrelay>/v1/hooks/<source>?token=<token>. Put the token in the env var named by token_env. \
            Groove.cm has no public REST API; for GrooveMail events use Zapier into a generic source.",
    largest_request: "one sale, refund or cancellation (GrooveSell publishes no payload reference)",
    max_body_bytes: 256 * KIB,
    docs: &[],
};

pub(crate) fn build(
    settings: &Value,
    env: Env,
) -> Result<Box<dyn SourceKind>, Vec<SourceConfigError>> {
    build_token_only(&INFO, settings, env, true, map)
}

fn map(req: &InboundRequest<'_>, body: &Value) -> Result<Vec<InboundEvent>, HookError> {
    expect_object(body, "a GrooveSell webhook body")?;
    let name = event_name(req, body, &["event", "event_type", "type", "action"])
        .unwrap_or_else(|| "sale".into());
    let mut d = EventDraft::custom("groove", &name.to_ascii_lowercase());
    let transaction = first_text(
        body,
        &["transaction_id", "trans_id", "order_id", "/transaction/id"],
    )
    .unwrap_or_default();
    d.digest_id(&[
        &name.to_ascii_lowercase(),
        &transaction,
        &text(body, "timestamp").unwrap_or_default(),
    ]);
    d.occurred_at(
        first_text(body, &["timestamp", "date", "created_at"])
            .map(Value::String)
            .as_ref()
            .and_then(parse_time),
    );
    let customer = crate::json::first_object(body, &["/customer", "/buyer"]).unwrap_or(body);
    fill_contact(&mut d, customer);
    d.vendor_ref("transaction", &transaction);
    d.vendor_ref(
        "product",
        &first_text(body, &["product_id", "/product/id"]).unwrap_or_default(),
    );
    d.data_at(
        body,
        &[
            ("/product_id", "product_id"),
            ("/product_name", "product_name"),
            ("/product/name", "product_name"),
            ("/amount", "amount"),
            ("/price", "amount"),
            ("/currency", "currency"),
            ("/affiliate_id", "affiliate_id"),
            ("/subscription_id", "subscription_id"),
        ],
    );
    d.data("transaction_id", transaction);
    Ok(vec![d.finish()])
}
