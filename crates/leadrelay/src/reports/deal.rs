//! Deals from `deal.stage_changed` events: which deal, its stage, status,
//! amount, probability and owner, and its stage history.
//!
//! The fields read from the event's `data` (the CRM sources put them there;
//! API callers can send them): `deal_id` (else the event's `deal` /
//! `opportunity` vendor reference), `stage` (else `stage_id`), `status`
//! (`won`/`lost`/`open`, else from the stage via `reports.won_stages` /
//! `lost_stages`), `amount` (else `value`), `currency`, `probability`
//! (0..1 or a percentage), `owner` (else `owner_id`), `expected_close`
//! (else `close_date`).

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::config::ReportsConfig;
use crate::store::{DealRow, RollupEvent, StagePeriod};

/// What one deal event says.
#[derive(Debug, Clone, PartialEq)]
pub struct DealUpdate {
    pub deal_id: String,
    pub at: DateTime<Utc>,
    pub stage: Option<String>,
    pub status: Option<String>,
    pub amount: Option<f64>,
    pub currency: Option<String>,
    pub probability: Option<f64>,
    pub owner: Option<String>,
    pub expected_close: Option<DateTime<Utc>>,
    /// The event's `deal` / `opportunity` vendor references.
    pub refs: Vec<leadrelay_model::VendorRef>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

fn date(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The deal update a `deal.stage_changed` event carries; None when it names
/// no deal.
pub fn update_of(e: &RollupEvent) -> Option<DealUpdate> {
    let data = &e.doc.data;
    let get = |k: &str| data.get(k).filter(|v| !v.is_null());
    let first = |keys: &[&str]| keys.iter().find_map(|k| get(k).and_then(text));
    let refs: Vec<leadrelay_model::VendorRef> = e
        .doc
        .vendor_refs
        .iter()
        .filter(|r| {
            (r.object == "deal" || r.object.eq_ignore_ascii_case("opportunity"))
                && !r.id.trim().is_empty()
        })
        .cloned()
        .collect();
    let deal_id =
        first(&["deal_id"]).or_else(|| refs.first().map(|r| format!("{}:{}", r.system, r.id)))?;
    let status = first(&["status"])
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| ["won", "lost", "open"].contains(&s.as_str()));
    let probability = get("probability")
        .and_then(number)
        .map(|p| if p > 1.0 { p / 100.0 } else { p })
        .filter(|p| (0.0..=1.0).contains(p));
    Some(DealUpdate {
        deal_id,
        at: e.occurred_at,
        stage: first(&["stage", "stage_id"]),
        status,
        amount: get("amount").or_else(|| get("value")).and_then(number),
        currency: first(&["currency"]),
        probability,
        owner: first(&["owner", "owner_id"]),
        expected_close: get("expected_close")
            .or_else(|| get("close_date"))
            .and_then(date),
        refs,
    })
}

/// Applies an update to a deal (a new one when `deal` is None). Returns the
/// new state and whether the update closed it as won just now.
pub fn apply(
    deal: Option<DealRow>,
    u: &DealUpdate,
    contact_id: Option<uuid::Uuid>,
    cfg: &ReportsConfig,
) -> (DealRow, bool) {
    let mut d = deal.unwrap_or_else(|| DealRow {
        deal_id: u.deal_id.clone(),
        contact_id,
        stage: String::new(),
        status: "open".into(),
        amount: None,
        currency: None,
        probability: None,
        owner: None,
        expected_close: None,
        created_at: u.at,
        closed_at: None,
        origin: None,
        channel: None,
        source: None,
        campaign: None,
        periods: Vec::new(),
        refs: Vec::new(),
    });
    if d.contact_id.is_none() {
        d.contact_id = contact_id;
    }
    for r in &u.refs {
        if !d.refs.contains(r) {
            d.refs.push(r.clone());
        }
    }
    if u.at < d.created_at {
        d.created_at = u.at;
    }
    let was_won = d.status == "won";
    if let Some(stage) = &u.stage
        && *stage != d.stage
    {
        if let Some(open) = d.periods.iter_mut().rev().find(|p| p.left_at.is_none()) {
            open.left_at = Some(u.at.max(open.entered_at));
        }
        d.periods.push(StagePeriod {
            stage: stage.clone(),
            entered_at: u.at,
            left_at: None,
        });
        d.stage = stage.clone();
    }
    let status = u
        .status
        .clone()
        .unwrap_or_else(|| cfg.status_of_stage(&d.stage).to_string());
    if status != "open" {
        if d.status == "open" || d.closed_at.is_none() {
            d.closed_at = Some(u.at);
        }
    } else {
        d.closed_at = None;
    }
    d.status = status;
    d.amount = u.amount.or(d.amount);
    d.currency = u.currency.clone().or(d.currency.take());
    d.owner = u.owner.clone().or(d.owner.take());
    d.expected_close = u.expected_close.or(d.expected_close);
    d.probability = match d.status.as_str() {
        "won" => Some(1.0),
        "lost" => Some(0.0),
        _ => u
            .probability
            .or_else(|| cfg.probabilities.get(&d.stage).copied())
            .or(d.probability),
    };
    let won_now = d.status == "won" && !was_won;
    (d, won_now)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use leadrelay_model::VendorRef;
    use serde_json::json;

    use super::*;
    use crate::store::RollupDoc;

    fn ev(data: Value, refs: Vec<VendorRef>, minutes: i64) -> RollupEvent {
        RollupEvent {
            id: uuid::Uuid::nil(),
            event_type: "deal.stage_changed".into(),
            origin_kind: "source".into(),
            origin_name: "pipedrive".into(),
            occurred_at: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
                + Duration::minutes(minutes),
            contact_id: None,
            spam: false,
            doc: RollupDoc {
                data: data.as_object().cloned().unwrap_or_default(),
                vendor_refs: refs,
                ..Default::default()
            },
        }
    }

    #[test]
    fn pipedrive_and_hubspot_shapes() {
        let refs = vec![VendorRef {
            system: "pipedrive".into(),
            object: "deal".into(),
            id: "7".into(),
        }];
        let u = update_of(&ev(
            json!({"stage_id": 3, "status": "won", "value": "1200.50", "currency": "EUR", "owner_id": 42}),
            refs,
            0,
        ))
        .unwrap();
        assert_eq!(u.deal_id, "pipedrive:7");
        assert_eq!(u.stage.as_deref(), Some("3"));
        assert_eq!(u.status.as_deref(), Some("won"));
        assert_eq!(u.amount, Some(1200.5));
        assert_eq!(u.owner.as_deref(), Some("42"));
        let u = update_of(&ev(
            json!({"deal_id": "d1", "stage": "closedwon", "probability": 60}),
            vec![],
            0,
        ))
        .unwrap();
        assert_eq!((u.deal_id.as_str(), u.probability), ("d1", Some(0.6)));
        assert!(update_of(&ev(json!({"stage": "x"}), vec![], 0)).is_none());
    }

    #[test]
    fn stage_history_and_close() {
        let cfg = ReportsConfig::default();
        let step = |d: Option<DealRow>, data: Value, m: i64| {
            let u = update_of(&ev(data, vec![], m)).unwrap();
            apply(d, &u, None, &cfg)
        };
        let (d, won) = step(
            None,
            json!({"deal_id": "a", "stage": "qualified", "amount": 100}),
            0,
        );
        assert!(!won);
        let (d, won) = step(Some(d), json!({"deal_id": "a", "stage": "proposal"}), 60);
        assert!(!won);
        // Same stage again: no new period.
        let (d, _) = step(Some(d), json!({"deal_id": "a", "stage": "proposal"}), 90);
        let (d, won) = step(Some(d), json!({"deal_id": "a", "stage": "Closed Won"}), 120);
        assert!(won);
        assert_eq!(d.status, "won");
        assert_eq!(d.amount, Some(100.0));
        assert_eq!(d.probability, Some(1.0));
        assert_eq!(d.closed_at, Some(d.created_at + Duration::minutes(120)));
        let stages: Vec<(&str, Option<i64>)> = d
            .periods
            .iter()
            .map(|p| {
                (
                    p.stage.as_str(),
                    p.left_at.map(|l| (l - p.entered_at).num_minutes()),
                )
            })
            .collect();
        assert_eq!(
            stages,
            [
                ("qualified", Some(60)),
                ("proposal", Some(60)),
                ("Closed Won", None)
            ]
        );
        // A repeated won event does not close it again.
        let (_, won) = step(Some(d), json!({"deal_id": "a", "status": "won"}), 130);
        assert!(!won);
    }
}
