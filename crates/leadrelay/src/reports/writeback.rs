//! Attribution written back to the CRMs: when the rollups see a deal won,
//! an `attribution.updated` event about the deal's person goes to the
//! destinations of `[reports.writeback]`. Each CRM connector writes the
//! fields its `[destinations.NAME.attribution]` names (see
//! [`crate::connectors::crm::AttributionFields`]).
//!
//! The event is stored before the rollup batch that won the deal commits,
//! with the idempotency key `attribution.updated:<deal>:<close ms>` (scope
//! `reports`): a pass that is refused or crashes and runs again stores it
//! once, and the delivery's retries write the same values again.

use chrono::{DateTime, SecondsFormat, Utc};
use leadrelay_model::{Event, EventType, Origin};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::attribution::Touchpoint;
use super::config::ReportsConfig;
use crate::store::*;

/// The event type the writeback stores.
pub const EVENT_TYPE: &str = "attribution.updated";

/// What one won deal writes back.
#[derive(Debug, Clone)]
pub struct Writeback {
    pub deal: DealRow,
    pub contact_id: Uuid,
    /// The touches that counted (inside the lookback window), oldest first.
    pub touches: Vec<Touchpoint>,
    /// Its credits under every model.
    pub credits: Vec<CreditRow>,
}

/// The fields `[destinations.NAME.attribution]` can name, as the event's
/// `data` carries them.
pub const FIELDS: &[&str] = &[
    "first_touch_channel",
    "first_touch_source",
    "first_touch_campaign",
    "first_touch_at",
    "last_touch_channel",
    "last_touch_source",
    "last_touch_campaign",
    "last_touch_at",
    "attributed_channel",
    "attributed_source",
    "attributed_campaign",
    "attributed_credit",
    "attribution_model",
    "touches",
    "revenue",
    "attributed_revenue",
    "currency",
    "closed_at",
    "deal_id",
];

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event's `data`: the fields of [`FIELDS`] and every credit.
pub fn data_of(w: &Writeback, model: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    for (prefix, t) in [
        ("first_touch", w.touches.first()),
        ("last_touch", w.touches.last()),
    ] {
        if let Some(t) = t {
            put(&format!("{prefix}_channel"), json!(t.channel));
            put(&format!("{prefix}_source"), json!(t.source));
            put(&format!("{prefix}_campaign"), json!(t.campaign));
            put(&format!("{prefix}_at"), json!(rfc(t.at)));
        }
    }
    // The model's largest credit (the first of equals, in stored order).
    let top = w
        .credits
        .iter()
        .filter(|c| c.model == model)
        .fold(None::<&CreditRow>, |best, c| match best {
            Some(b) if b.credit >= c.credit => Some(b),
            _ => Some(c),
        });
    if let Some(c) = top {
        put("attributed_channel", json!(c.channel));
        put("attributed_source", json!(c.source));
        put("attributed_campaign", json!(c.campaign));
        put("attributed_credit", round4(c.credit));
        put("attributed_revenue", round4(c.revenue));
    }
    put("attribution_model", json!(model));
    put("touches", json!(w.touches.len()));
    put("revenue", round4(w.deal.amount.unwrap_or(0.0)));
    if let Some(c) = &w.deal.currency {
        put("currency", json!(c));
    }
    if let Some(t) = w.deal.closed_at {
        put("closed_at", json!(rfc(t)));
    }
    put("deal_id", json!(w.deal.deal_id));
    put(
        "credits",
        Value::Array(
            w.credits
                .iter()
                .map(|c| {
                    json!({
                        "model": c.model,
                        "channel": c.channel,
                        "source": c.source,
                        "campaign": c.campaign,
                        "credit": round4(c.credit),
                        "revenue": round4(c.revenue),
                    })
                })
                .collect(),
        ),
    );
    m
}

/// Rounded to 4 decimals; a whole number as an integer (`3250`, not
/// `3250.0`: CRMs store what they are sent as text).
fn round4(x: f64) -> Value {
    let r = (x * 10_000.0).round() / 10_000.0;
    if r.fract() == 0.0 && r.abs() < 1e15 {
        json!(r as i64)
    } else {
        json!(r)
    }
}

/// Stores one `attribution.updated` event per won deal, for the configured
/// destinations. People erased meanwhile (no contact) get none.
pub async fn emit(
    store: &dyn Store,
    cfg: &ReportsConfig,
    writebacks: Vec<Writeback>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let wb = &cfg.writeback;
    if wb.destinations.is_empty() || writebacks.is_empty() {
        return Ok(());
    }
    let event_type =
        EventType::parse(EVENT_TYPE).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut items = Vec::new();
    for w in writebacks {
        let Some(contact) = store.get_contact(w.contact_id).await? else {
            continue;
        };
        let mut event = Event::internal(
            event_type.clone(),
            Origin::system("reports"),
            contact.data.clone(),
            data_of(&w, &wb.model),
            now,
        );
        event.contact_id = Some(w.contact_id);
        event.vendor_refs = w.deal.refs.clone();
        let closed = w.deal.closed_at.map(|t| t.timestamp_millis()).unwrap_or(0);
        items.push(IngestItem {
            event,
            destinations: wb.destinations.clone(),
            idempotency: Some(IdempotencyKey {
                scope: "reports".into(),
                key: format!("{EVENT_TYPE}:{}:{closed}", w.deal.deal_id),
                fingerprint: None,
            }),
        });
    }
    // Bounded batches, as any ingest.
    for chunk in items.chunks(100) {
        store.ingest(chunk.to_vec()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::crm::AttributionFields;

    fn credit(model: &str, channel: &str, campaign: &str, credit: f64) -> CreditRow {
        CreditRow {
            deal_id: "d1".into(),
            model: model.into(),
            channel: channel.into(),
            source: "s".into(),
            campaign: campaign.into(),
            credit,
            revenue: credit * 1000.0,
            closed_at: Utc::now(),
        }
    }

    #[test]
    fn the_models_largest_credit_is_the_attributed_one_and_touches_are_first_and_last() {
        let t0 = Utc::now() - chrono::Duration::days(3);
        let touch = |days: i64, campaign: &str| Touchpoint {
            at: t0 + chrono::Duration::days(days),
            channel: "email".into(),
            source: "news".into(),
            campaign: campaign.into(),
        };
        let deal: DealRow = serde_json::from_value(json!({
            "deal_id": "d1", "contact_id": null, "stage": "won", "status": "won",
            "amount": 1000.0, "currency": "EUR", "probability": null, "owner": null,
            "expected_close": null, "created_at": t0, "closed_at": t0,
            "origin": null, "channel": null, "source": null, "campaign": null, "periods": []
        }))
        .unwrap();
        let w = Writeback {
            deal,
            contact_id: Uuid::nil(),
            touches: vec![touch(0, "a"), touch(1, "b"), touch(2, "c")],
            credits: vec![
                credit("linear", "email", "a", 0.25),
                credit("linear", "paid_search", "b", 0.5),
                credit("linear", "email", "c", 0.25),
                credit("first_touch", "email", "a", 1.0),
            ],
        };
        let d = data_of(&w, "linear");
        assert_eq!(d["first_touch_campaign"], "a");
        assert_eq!(d["last_touch_campaign"], "c");
        assert_eq!(d["attributed_channel"], "paid_search");
        assert_eq!(d["attributed_credit"], json!(0.5));
        assert_eq!(d["attributed_revenue"], json!(500));
        assert_eq!(d["revenue"], json!(1000));
        assert_eq!(d["currency"], "EUR");
        assert_eq!(d["credits"].as_array().unwrap().len(), 4);
        // Every value a destination may name is one the event carries here.
        for f in FIELDS {
            assert!(d.contains_key(*f), "{f}");
        }
    }

    #[test]
    fn unknown_objects_and_values_are_refused_by_path() {
        let fields: AttributionFields = toml::from_str(
            "contact = { lr_ch = \"first_touch_channel\", bad = \"first_touch_colour\" }\nlead = { x = \"revenue\" }",
        )
        .unwrap();
        let problems: Vec<String> = fields
            .problems(&["contact", "deal"])
            .into_iter()
            .map(|p| format!("{p:?}"))
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("attribution.contact.bad"))
        );
        assert!(problems.iter().any(|p| p.contains("attribution.lead")));
    }
}
