//! The feedback pass: reads the events stored since its own cursor, in id
//! (= receipt) order and in batches, and updates each person's feedback row
//! — created by their lead event (or first rating or deal), rated by
//! `lead.rated` events and by the configured CRM disposition field, told
//! their deals' outcomes by `deal.stage_changed`, and given the contact's
//! current score and owner. One store transaction per batch writes the rows
//! and adds the difference they make to the daily counters, so a report
//! reads counters, never events. It runs in the background every
//! `feedback.interval` and before a feedback report answers.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::RATED;
use crate::config::Config;
use crate::reports::{attribution, deal};
use crate::store::*;

/// Serialises passes in this process; across nodes the cursor check does.
static PASS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads every event older than `feedback.lag` into the rollups. Returns
/// how many events were read.
pub async fn catch_up(store: &dyn Store, cfg: &Config, now: DateTime<Utc>) -> StoreResult<u64> {
    let _one = PASS.lock().await;
    let fc = &cfg.feedback;
    let lag = Duration::from_std(fc.lag.get()).unwrap_or_default();
    let until = uuid_v7_floor_id(now - lag);
    let limit = fc.batch.max(1);
    let mut read = 0;
    loop {
        let from = store
            .kv_get(FEEDBACK_CURSOR_KEY)
            .await?
            .and_then(|s| Uuid::parse_str(&s).ok());
        let events = store.rollup_events(from, until, limit).await?;
        let Some(cursor) = events.last().map(|e| e.id) else {
            return Ok(read);
        };
        let n = events.len();
        let people = build(store, cfg, events).await?;
        match store
            .feedback_apply(FeedbackBatch {
                from,
                cursor,
                people,
            })
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
        read += n as u64;
        if n < limit {
            return Ok(read);
        }
    }
}

/// Text of a JSON value (strings trimmed, numbers as written).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The CRM disposition an event carries in one of `fields`: a data key,
/// the value of a property change of that property, or a custom contact
/// field.
pub fn disposition(e: &RollupEvent, fields: &[String]) -> Option<String> {
    let data = &e.doc.data;
    fields.iter().find_map(|f| {
        data.get(f.as_str())
            .and_then(text)
            .or_else(|| {
                let named = data
                    .get("property_name")
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.eq_ignore_ascii_case(f));
                named
                    .then(|| data.get("property_value").and_then(text))
                    .flatten()
            })
            .or_else(|| {
                e.doc
                    .contact
                    .get("custom")
                    .and_then(|c| c.get(f.as_str()))
                    .and_then(text)
            })
    })
}

/// The rating a `lead.rated` event carries (1..=5).
fn rated(e: &RollupEvent) -> Option<u8> {
    let r = e.doc.data.get("rating")?;
    let n = r
        .as_u64()
        .or_else(|| r.as_str().and_then(|s| s.trim().parse().ok()))?;
    u8::try_from(n)
        .ok()
        .filter(|n| (RATING_MIN..=RATING_MAX).contains(n))
}

/// `system:object:id` of the CRM people an event names.
fn person_refs(e: &RollupEvent) -> impl Iterator<Item = String> + '_ {
    e.doc
        .vendor_refs
        .iter()
        .filter(|r| matches!(r.object.as_str(), "person" | "contact" | "lead") && !r.id.is_empty())
        .map(|r| format!("{}:{}:{}", r.system, r.object, r.id))
}

fn new_person(cid: Uuid, e: &RollupEvent) -> FeedbackPerson {
    let t = attribution::touchpoint(&e.doc.attribution, e.occurred_at);
    FeedbackPerson {
        contact_id: cid,
        lead_at: e.occurred_at,
        origin: format!("{}:{}", e.origin_kind, e.origin_name),
        channel: t.channel,
        source: t.source,
        campaign: t.campaign,
        owner: None,
        score: None,
        rating: None,
        rated_at: None,
        rated_via: None,
        rated_by: None,
        disposition: None,
        ratings: 0,
        deals: Default::default(),
    }
}

fn set_rating(
    p: &mut FeedbackPerson,
    rating: u8,
    at: DateTime<Utc>,
    via: String,
    by: Option<String>,
) {
    p.ratings += 1;
    if p.rated_at.is_none_or(|r| at >= r) {
        p.rating = Some(rating);
        p.rated_at = Some(at);
        p.rated_via = Some(via);
        p.rated_by = by;
    }
}

/// The people a batch changes: (stored row, new row).
async fn build(
    store: &dyn Store,
    cfg: &Config,
    mut events: Vec<RollupEvent>,
) -> StoreResult<Vec<(Option<FeedbackPerson>, FeedbackPerson)>> {
    let fc = &cfg.feedback;
    // A CRM disposition that names only the CRM's person id: find the
    // contact through the references the report rollups learnt.
    let wanted: Vec<String> = events
        .iter()
        .filter(|e| e.contact_id.is_none() && !e.spam && disposition(e, &fc.fields).is_some())
        .flat_map(person_refs)
        .collect();
    if !wanted.is_empty() {
        let known: HashMap<String, Uuid> = store
            .report_ref_contacts(wanted)
            .await?
            .into_iter()
            .collect();
        for e in events.iter_mut().filter(|e| e.contact_id.is_none()) {
            let found = person_refs(e).find_map(|r| known.get(&r).copied());
            e.contact_id = found;
        }
    }
    let mut ids: Vec<Uuid> = events
        .iter()
        .filter(|e| !e.spam)
        .filter_map(|e| e.contact_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let stored = store.feedback_people(ids).await?;
    let mut people: HashMap<Uuid, (Option<FeedbackPerson>, Option<FeedbackPerson>)> = stored
        .into_iter()
        .map(|p| (p.contact_id, (Some(p.clone()), Some(p))))
        .collect();
    let mut touched: Vec<Uuid> = Vec::new();
    for e in events.iter().filter(|e| !e.spam) {
        let Some(cid) = e.contact_id else { continue };
        let t = e.event_type.as_str();
        let lead = e.origin_kind != "system" && LEAD_EVENT_TYPES.contains(&t);
        let rating = if t == RATED {
            rated(e).map(|r| {
                let via = e
                    .doc
                    .data
                    .get("via")
                    .and_then(text)
                    .unwrap_or_else(|| format!("{}:{}", e.origin_kind, e.origin_name));
                (r, via, e.doc.data.get("rated_by").and_then(text))
            })
        } else {
            None
        };
        let disp = disposition(e, &fc.fields);
        let disp_rating = disp.as_deref().and_then(|d| fc.rating_of(d));
        let deal = (t == "deal.stage_changed")
            .then(|| deal::update_of(e))
            .flatten();
        let slot = people.entry(cid).or_insert((None, None));
        if slot.1.is_none() {
            if !(lead || rating.is_some() || disp_rating.is_some() || deal.is_some()) {
                continue;
            }
            slot.1 = Some(new_person(cid, e));
        }
        let Some(p) = slot.1.as_mut() else { continue };
        if let Some((r, via, by)) = rating {
            set_rating(p, r, e.occurred_at, via, by);
        }
        if let Some(d) = disp {
            if let Some(r) = disp_rating {
                let via = format!("{}:{}", e.origin_kind, e.origin_name);
                set_rating(p, r, e.occurred_at, via, None);
            }
            p.disposition = Some(d);
        }
        if let Some(u) = deal {
            let status = u
                .status
                .clone()
                .or_else(|| {
                    u.stage
                        .as_deref()
                        .map(|s| cfg.reports.status_of_stage(s).to_string())
                })
                .unwrap_or_else(|| "open".into());
            p.deals.insert(u.deal_id, status);
        }
        touched.push(cid);
    }
    touched.sort_unstable();
    touched.dedup();
    // The score and owner as they are now.
    for cid in touched {
        let Some(contact) = store.get_contact(cid).await? else {
            continue;
        };
        if let Some((_, Some(p))) = people.get_mut(&cid) {
            p.score = cfg.scoring.enabled().then_some(contact.lead.score);
            p.owner = contact.lead.owner.map(|o| o.owner);
        }
    }
    Ok(people
        .into_values()
        .filter_map(|(old, new)| new.filter(|n| old.as_ref() != Some(n)).map(|n| (old, n)))
        .collect())
}

/// Runs [`catch_up`] every `feedback.interval` until shutdown.
pub async fn run(store: Arc<dyn Store>, cfg: Arc<Config>, shutdown: CancellationToken) {
    let every = cfg
        .feedback
        .interval
        .get()
        .max(std::time::Duration::from_millis(50));
    loop {
        if let Err(e) = catch_up(store.as_ref(), &cfg, Utc::now()).await {
            tracing::warn!(error = %e, "feedback rollup pass failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Value, contact: Value) -> RollupEvent {
        RollupEvent {
            id: Uuid::nil(),
            event_type: "contact.updated".into(),
            origin_kind: "source".into(),
            origin_name: "hubspot".into(),
            occurred_at: Utc::now(),
            contact_id: None,
            spam: false,
            doc: RollupDoc {
                data: data.as_object().cloned().unwrap_or_default(),
                contact: contact.as_object().cloned().unwrap_or_default(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn disposition_is_read_from_data_property_changes_and_custom_fields() {
        let fields = vec!["hs_lead_status".to_string(), "disposition".to_string()];
        let hubspot = event(
            json!({"property_name": "hs_lead_status", "property_value": " UNQUALIFIED "}),
            json!({}),
        );
        assert_eq!(
            disposition(&hubspot, &fields).as_deref(),
            Some("UNQUALIFIED")
        );
        let other = event(
            json!({"property_name": "firstname", "property_value": "Ann"}),
            json!({}),
        );
        assert_eq!(disposition(&other, &fields), None);
        let plain = event(json!({"disposition": "Good fit"}), json!({}));
        assert_eq!(disposition(&plain, &fields).as_deref(), Some("Good fit"));
        let custom = event(json!({}), json!({"custom": {"disposition": 4}}));
        assert_eq!(disposition(&custom, &fields).as_deref(), Some("4"));
        let mut r = event(json!({"rating": 5}), json!({}));
        assert_eq!(rated(&r), Some(5));
        r.doc.data.insert("rating".into(), json!("6"));
        assert_eq!(rated(&r), None);
        r.doc.data.insert("rating".into(), json!(-1));
        assert_eq!(rated(&r), None);
    }
}
