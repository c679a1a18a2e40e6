//! HubSpot form submissions read into leadrelay: each submission of a
//! configured form becomes a `form.submitted` event about the person whose
//! `email` it carries.
//!
//! HubSpot answers a form's submissions newest first
//! (`GET /form-integrations/v1/submissions/forms/{guid}`, 50 a page, paged
//! by `after`) and has no "changed since" filter, so each round reads pages
//! until it passes a floor: the newest `submittedAt` seen so far less
//! `form_lookback` (on the first round, now less `form_history`). The
//! lookback catches submissions HubSpot stores late or that an integration
//! backdated (the submit API takes a `submittedAt`). The conversion ids
//! seen above the floor are recorded (`hubspot_read:NAME:form:GUID`), so a
//! submission is submitted to the store once; the event's external id
//! `form:GUID:CONVERSION` makes a repeat after a crash a duplicate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadrelay_model::{EventType, VendorRef};
use leadrelay_sources::InboundEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{ReadError, ReadHealth, Reader};
use crate::connectors::crm;
use crate::connectors::hubspot::api::Family;

/// HubSpot's largest submissions page.
const SUBMISSIONS_PAGE: usize = 50;
/// Submission values kept in the event's `fields`, and the longest value.
const MAX_FIELDS: usize = 200;
const MAX_VALUE_CHARS: usize = 10_000;

/// What the reader recorded about one form.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct FormState {
    /// The newest `submittedAt` seen (epoch ms).
    #[serde(default)]
    newest_ms: Option<i64>,
    /// Conversion id → `submittedAt` of the submissions already stored,
    /// those not older than the floor.
    #[serde(default)]
    seen: BTreeMap<String, i64>,
}

/// `submittedAt`: epoch milliseconds, as a number or a string of digits.
fn millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn at(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// The `utm_*` and click-id parameters of the page's query string.
fn utm_of(page_url: &str) -> Map<String, Value> {
    let mut out = Map::new();
    let Ok(url) = url::Url::parse(page_url) else {
        return out;
    };
    for (k, v) in url.query_pairs() {
        let k = k.to_ascii_lowercase();
        if (k.starts_with("utm_")
            || ["gclid", "fbclid", "msclkid", "li_fat_id"].contains(&k.as_str()))
            && !v.trim().is_empty()
            && !out.contains_key(&k)
        {
            out.insert(k, json!(v.trim()));
        }
    }
    out
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_VALUE_CHARS).collect()
}

impl Reader {
    /// Reads one form's new submissions and stores them as events.
    pub(super) async fn read_form(
        &self,
        guid: &str,
        health: &mut ReadHealth,
    ) -> Result<(), ReadError> {
        let rest = format!("form:{}", guid.to_ascii_lowercase());
        let mut st: FormState = self.load(&rest).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ms =
            |d: &crate::config::HumanDuration| d.get().as_millis().min(i64::MAX as u128) as i64;
        let floor = match st.newest_ms {
            Some(n) => n.saturating_sub(ms(&self.settings.form_lookback)),
            None => now_ms.saturating_sub(ms(&self.settings.form_history)),
        };
        let seg = crm::path_segment(guid);
        let form = self
            .get(&self.api.path(Family::Forms, &format!("/{seg}")))
            .await
            .map_err(|e| format!("form {guid}: {e}"))?;
        let name = form["name"].as_str().unwrap_or_default().to_string();
        let path =
            format!("/form-integrations/v1/submissions/forms/{seg}?limit={SUBMISSIONS_PAGE}");
        let mut after: Option<String> = None;
        loop {
            let (results, next) = self
                .page(&path, after.as_deref(), "submissions")
                .await
                .map_err(|e| format!("form {guid} submissions: {e}"))?;
            let mut passed_floor = false;
            let mut events = Vec::new();
            let mut raws = Vec::new();
            let mut stored = Vec::new();
            for r in &results {
                let (Some(submitted), Some(conversion)) =
                    (millis(&r["submittedAt"]), r["conversionId"].as_str())
                else {
                    continue;
                };
                if submitted < floor {
                    passed_floor = true;
                    continue;
                }
                st.newest_ms = Some(st.newest_ms.map_or(submitted, |n| n.max(submitted)));
                if conversion.is_empty() || st.seen.contains_key(conversion) {
                    continue;
                }
                match self.submission_event(guid, &name, conversion, submitted, r) {
                    Some(e) => {
                        events.push(e);
                        raws.push(r.clone());
                    }
                    None => health.submissions_without_email += 1,
                }
                stored.push((conversion.to_string(), submitted));
            }
            health.last_round_events += self.store_events(events, &raws).await?;
            st.seen.extend(stored);
            self.save(&rest, &st).await?;
            match next {
                Some(a) if !passed_floor => after = Some(a),
                _ => break,
            }
        }
        // Forget what the next round's floor no longer reaches.
        if let Some(n) = st.newest_ms {
            let next_floor = n.saturating_sub(ms(&self.settings.form_lookback));
            let before = st.seen.len();
            st.seen.retain(|_, t| *t >= next_floor);
            if st.seen.len() != before {
                self.save(&rest, &st).await?;
            }
        }
        Ok(())
    }

    /// The event of one submission; None without a usable email.
    fn submission_event(
        &self,
        guid: &str,
        form_name: &str,
        conversion: &str,
        submitted: i64,
        r: &Value,
    ) -> Option<InboundEvent> {
        let values: Vec<(&str, &str)> = r["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| Some((v["name"].as_str()?, v["value"].as_str()?)))
            .collect();
        let (contact, mut data) = leadrelay_sources::hubspot_contact(values.iter().copied());
        contact.email.as_ref()?;
        let mut fields = Map::new();
        for (k, v) in values.iter().take(MAX_FIELDS) {
            // A multi-select field repeats its name: keep every value.
            match fields.get_mut(*k) {
                Some(Value::String(first)) => {
                    let first = std::mem::take(first);
                    fields.insert(k.to_string(), json!([first, clip(v)]));
                }
                Some(Value::Array(all)) => all.push(json!(clip(v))),
                _ => {
                    fields.insert(k.to_string(), json!(clip(v)));
                }
            }
        }
        let page_url = r["pageUrl"].as_str().unwrap_or_default();
        data.insert("form_id".into(), json!(guid));
        data.insert("form_name".into(), json!(form_name));
        data.insert("conversion_id".into(), json!(conversion));
        data.insert(
            "submitted_at".into(),
            json!(at(submitted).map(|t| t.to_rfc3339())),
        );
        data.insert("page_url".into(), json!(clip(page_url)));
        data.insert("fields".into(), Value::Object(fields));
        let utm = utm_of(page_url);
        if !utm.is_empty() {
            data.insert("utm".into(), Value::Object(utm));
        }
        Some(InboundEvent {
            event_type: EventType::FormSubmitted,
            external_id: Some(format!("form:{}:{conversion}", guid.to_ascii_lowercase())),
            occurred_at: at(submitted),
            contact,
            data,
            vendor_refs: vec![VendorRef {
                system: "hubspot".into(),
                object: "form_submission".into(),
                id: conversion.to_string(),
            }],
            changes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_at_is_read_as_number_or_text() {
        assert_eq!(
            millis(&json!(1_700_000_000_123_i64)),
            Some(1_700_000_000_123)
        );
        assert_eq!(millis(&json!("1700000000123")), Some(1_700_000_000_123));
        assert_eq!(millis(&json!("soon")), None);
        assert_eq!(millis(&json!(null)), None);
        assert_eq!(millis(&json!(1.5)), None);
    }

    #[test]
    fn utm_parameters_come_from_the_page_url() {
        let u = utm_of(
            "https://example.com/p?utm_source=news&UTM_Medium=email&gclid=abc&x=1&utm_term=",
        );
        assert_eq!(u.get("utm_source"), Some(&json!("news")));
        assert_eq!(u.get("utm_medium"), Some(&json!("email")));
        assert_eq!(u.get("gclid"), Some(&json!("abc")));
        assert!(!u.contains_key("x"));
        assert!(!u.contains_key("utm_term"));
        assert!(utm_of("not a url").is_empty());
        assert!(utm_of("").is_empty());
    }
}
