//! The dashboard's side of issues (grouping lives in
//! [`crate::delivery::issues`]): the dead-letter filter shared by the list,
//! the issue pages and the bulk actions (by filter or by selection, with
//! the count shown before anything changes), and the people a dead letter
//! is about.

use std::collections::{BTreeSet, HashMap};

use chrono::NaiveDate;
use serde::Serialize;
use uuid::Uuid;

pub use crate::delivery::issues::{Issue, SCAN_CAP, cause_of, issue_key, mute_key};
use crate::delivery::issues::{open_dead_letters, seen_at};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::api::views::EventSummary;
use crate::store::Delivery;

/// A filter field, trimmed; none when absent or blank.
pub(super) fn text_field(fields: &HashMap<String, String>, k: &str) -> Option<String> {
    fields
        .get(k)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// A day field (`YYYY-MM-DD`); the error names the field.
pub(super) fn day_field(
    fields: &HashMap<String, String>,
    k: &str,
) -> Result<Option<NaiveDate>, String> {
    text_field(fields, k)
        .map(|v| {
            NaiveDate::parse_from_str(&v, "%Y-%m-%d")
                .map_err(|_| format!("{k}: {v:?} is not a date (YYYY-MM-DD)"))
        })
        .transpose()
}

/// A `from`–`to` day range must not run backwards.
pub(super) fn check_days(from: Option<NaiveDate>, to: Option<NaiveDate>) -> Result<(), String> {
    match (from, to) {
        (Some(a), Some(b)) if a > b => Err("from: the first day is after the last day".into()),
        _ => Ok(()),
    }
}

/// Filter pairs as a query string.
pub(super) fn query_of(pairs: &[(&'static str, String)]) -> String {
    let mut qs = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        qs.append_pair(k, v);
    }
    qs.finish()
}

/// Which dead letters an action or a list covers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeadFilter {
    pub destination: Option<String>,
    /// An [`issue_key`].
    pub issue: Option<String>,
    /// Dead since this day (inclusive), `YYYY-MM-DD` UTC.
    pub from: Option<NaiveDate>,
    /// Dead up to this day (inclusive).
    pub to: Option<NaiveDate>,
    /// `form:NAME`, `source:NAME`, `api:KEY`.
    pub origin: Option<String>,
}

impl DeadFilter {
    /// Reads the filter fields of a query or form; errors name the field.
    pub fn parse(fields: &HashMap<String, String>) -> Result<Self, String> {
        let f = Self {
            destination: text_field(fields, "destination"),
            issue: text_field(fields, "issue"),
            from: day_field(fields, "from")?,
            to: day_field(fields, "to")?,
            origin: text_field(fields, "origin"),
        };
        check_days(f.from, f.to)?;
        if let Some(i) = &f.issue
            && (i.len() != 16 || !i.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("issue: not an issue id".into());
        }
        Ok(f)
    }

    /// The filter as query-string pairs (for links and hidden fields).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(d) = &self.destination {
            v.push(("destination", d.clone()));
        }
        if let Some(i) = &self.issue {
            v.push(("issue", i.clone()));
        }
        if let Some(d) = self.from {
            v.push(("from", d.to_string()));
        }
        if let Some(d) = self.to {
            v.push(("to", d.to_string()));
        }
        if let Some(o) = &self.origin {
            v.push(("origin", o.clone()));
        }
        v
    }

    pub fn query(&self) -> String {
        query_of(&self.pairs())
    }

    pub fn is_empty(&self) -> bool {
        self.pairs().is_empty()
    }

    fn keeps(&self, d: &Delivery) -> bool {
        let day = seen_at(d).date_naive();
        self.from.is_none_or(|f| day >= f)
            && self.to.is_none_or(|t| day <= t)
            && self
                .issue
                .as_deref()
                .is_none_or(|k| issue_key(&d.destination, &cause_of(d)) == k)
    }
}

/// Open dead letters matching `filter` (and, when given, only the
/// `selected` ids), newest first; the flag says the scan was capped.
pub async fn matching(
    app: &AppState,
    filter: &DeadFilter,
    selected: Option<&BTreeSet<Uuid>>,
) -> Result<(Vec<Delivery>, bool), ApiError> {
    let (all, capped) = open_dead_letters(app.store.as_ref(), filter.destination.clone()).await?;
    let mut out: Vec<Delivery> = all
        .into_iter()
        .filter(|d| filter.keeps(d) && selected.is_none_or(|s| s.contains(&d.id)))
        .collect();
    if let Some(origin) = &filter.origin {
        let (kind, name) = origin.split_once(':').unwrap_or(("form", origin));
        let mut origin_of: HashMap<Uuid, bool> = HashMap::new();
        let mut kept = Vec::with_capacity(out.len());
        for d in out {
            let keep = match origin_of.get(&d.event_id) {
                Some(k) => *k,
                None => {
                    let k =
                        app.store.get_event(d.event_id).await?.is_some_and(|e| {
                            e.origin.kind.as_str() == kind && e.origin.name == name
                        });
                    origin_of.insert(d.event_id, k);
                    k
                }
            };
            if keep {
                kept.push(d);
            }
        }
        out = kept;
    }
    Ok((out, capped))
}

/// The person a dead letter is about, as the caller may see them.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub name: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
    pub origin: String,
}

/// The people of some deliveries' events (masked for viewers).
pub async fn people(
    app: &AppState,
    rows: &[Delivery],
    mask: bool,
) -> Result<HashMap<Uuid, Person>, ApiError> {
    let mut out = HashMap::new();
    for d in rows {
        if out.contains_key(&d.event_id) {
            continue;
        }
        if let Some(e) = app.store.get_event(d.event_id).await? {
            let s = EventSummary::new(&e, mask);
            out.insert(
                d.event_id,
                Person {
                    name: s.name,
                    email: s.email,
                    company: s.company,
                    origin: format!("{}:{}", s.origin.kind, s.origin.name),
                },
            );
        }
    }
    Ok(out)
}

/// Every open issue, with its muted flag.
pub async fn open_issues(app: &AppState) -> Result<(Vec<Issue>, bool), ApiError> {
    Ok(crate::delivery::issues::open_issues(app.store.as_ref()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_fields_are_checked() {
        let f = |pairs: &[(&str, &str)]| {
            DeadFilter::parse(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert!(
            f(&[("from", "2026-13-01")])
                .unwrap_err()
                .starts_with("from:")
        );
        assert!(
            f(&[("from", "2026-02-02"), ("to", "2026-02-01")])
                .unwrap_err()
                .contains("after")
        );
        assert!(f(&[("issue", "../etc")]).unwrap_err().starts_with("issue:"));
        let ok = f(&[
            ("destination", "crm"),
            ("from", "2026-02-01"),
            ("origin", " "),
        ])
        .unwrap();
        assert_eq!(ok.query(), "destination=crm&from=2026-02-01");
    }
}
