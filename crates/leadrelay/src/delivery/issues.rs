//! Issues: open dead letters grouped by destination and cause, so that the
//! daily question "what is failing, for whom, since when" has one answer
//! per cause instead of one row per lead. Shared by the dashboard (issue
//! pages and group actions) and the alert monitor (an alert when an issue
//! opens, a notice when it resolves).
//!
//! Grouping happens in the server, over the open dead letters read page by
//! page (at most [`SCAN_CAP`]); see the known limits.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::store::{Delivery, DeliveryFilter, DeliveryState, Store, StoreResult};

/// Most open dead letters read to group or filter them.
pub const SCAN_CAP: usize = 5000;
/// Store page size while scanning.
const SCAN_PAGE: usize = 500;
/// Longest cause text kept.
const CAUSE_CHARS: usize = 120;

/// What went wrong, independent of the lead it happened to: the status
/// class and code, and the reason with the varying parts (numbers, ids,
/// addresses, attempt counts) taken out.
pub fn cause_of(d: &Delivery) -> String {
    let text = d
        .reason
        .as_deref()
        .or(d.last_error.as_deref())
        .unwrap_or("no reason recorded");
    // The dispatcher's wrapper says how many tries it took, not why.
    let text = match text.split_once("; last error: ") {
        Some((head, tail)) if head.starts_with("gave up after") => tail,
        _ => text,
    };
    let mut out = String::with_capacity(text.len().min(CAUSE_CHARS));
    for word in text.split_whitespace() {
        if out.chars().count() >= CAUSE_CHARS {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&normalise_word(word));
    }
    let out: String = out.chars().take(CAUSE_CHARS).collect();
    match d.last_status {
        Some(s) if !out.contains(&s.to_string()) => format!("HTTP {s}: {out}"),
        _ => out,
    }
}

/// A word of a reason with its lead-specific parts replaced: addresses by
/// `<email>`, ids and long numbers by `<id>`; status-like numbers (three
/// digits) are kept, they name the cause.
fn normalise_word(word: &str) -> String {
    let core = word.trim_matches(|c: char| !c.is_alphanumeric());
    if core.contains('@') && core.contains('.') {
        return word.replace(core, "<email>");
    }
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let hexish = core.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if (digits > 3 && digits * 2 >= core.len()) || (hexish && core.len() >= 16 && digits > 0) {
        return word.replace(core, "<id>");
    }
    word.to_string()
}

/// `4xx`, `5xx`, or the kind of failure without a status.
pub fn status_class(d: &Delivery) -> String {
    match d.last_status {
        Some(s) => format!("{}xx", s / 100),
        None => {
            let r = d.reason.as_deref().unwrap_or("").to_ascii_lowercase();
            if r.starts_with("consent") {
                "consent".into()
            } else if r.contains("mapping") || r.contains("required field") {
                "mapping".into()
            } else if r.contains("timed out") || r.contains("timeout") {
                "timeout".into()
            } else if r.contains("connect") {
                "network".into()
            } else {
                "other".into()
            }
        }
    }
}

/// A stable short id for a destination and cause (used in URLs).
pub fn issue_key(destination: &str, cause: &str) -> String {
    let h = crate::auth::hash_secret(&format!("{destination}\n{cause}"));
    h[..16].to_string()
}

/// Open dead letters sharing a destination and a cause.
#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub key: String,
    pub destination: String,
    pub cause: String,
    pub class: String,
    pub count: usize,
    /// Distinct people (contact keys) affected.
    pub people: usize,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The newest dead letter of the group.
    pub sample: Uuid,
    pub sample_event: Uuid,
    pub muted: bool,
    #[serde(skip)]
    pub ids: Vec<Uuid>,
}

pub fn seen_at(d: &Delivery) -> DateTime<Utc> {
    d.finished_at.unwrap_or(d.updated_at)
}

/// Groups dead letters (newest first in, biggest group first out).
pub fn group(dead: &[Delivery]) -> Vec<Issue> {
    let mut by: BTreeMap<(String, String), (Issue, BTreeSet<String>)> = BTreeMap::new();
    for d in dead {
        let cause = cause_of(d);
        let at = seen_at(d);
        let entry = by
            .entry((d.destination.clone(), cause.clone()))
            .or_insert_with(|| {
                (
                    Issue {
                        key: issue_key(&d.destination, &cause),
                        destination: d.destination.clone(),
                        class: status_class(d),
                        cause,
                        count: 0,
                        people: 0,
                        first_seen: at,
                        last_seen: at,
                        sample: d.id,
                        sample_event: d.event_id,
                        muted: false,
                        ids: Vec::new(),
                    },
                    BTreeSet::new(),
                )
            });
        let (issue, people) = entry;
        issue.count += 1;
        issue.ids.push(d.id);
        people.insert(d.contact_key.clone());
        issue.first_seen = issue.first_seen.min(at);
        if at > issue.last_seen {
            issue.last_seen = at;
            issue.sample = d.id;
            issue.sample_event = d.event_id;
        }
    }
    let mut out: Vec<Issue> = by
        .into_values()
        .map(|(mut i, people)| {
            i.people = people.len();
            i
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    out
}

/// The open dead letters (not replayed), newest first, at most
/// [`SCAN_CAP`]; the flag says whether there were more.
pub async fn open_dead_letters(
    store: &dyn Store,
    destination: Option<String>,
) -> StoreResult<(Vec<Delivery>, bool)> {
    let filter = DeliveryFilter {
        destination,
        state: Some(DeliveryState::Dead),
        exclude_replayed: true,
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_deliveries(&filter, cursor, SCAN_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        let n = page.len();
        all.extend(page);
        if all.len() >= SCAN_CAP {
            all.truncate(SCAN_CAP);
            return Ok((all, true));
        }
        if n < SCAN_PAGE {
            break;
        }
    }
    Ok((all, false))
}

/// The kv key recording that an issue is muted.
pub fn mute_key(issue: &str) -> String {
    format!("ui.issue.muted.{issue}")
}

/// Every open issue, with its muted flag; the flag says the scan was capped.
pub async fn open_issues(store: &dyn Store) -> StoreResult<(Vec<Issue>, bool)> {
    let (dead, capped) = open_dead_letters(store, None).await?;
    let mut issues = group(&dead);
    for i in &mut issues {
        i.muted = store.kv_get(&mute_key(&i.key)).await?.as_deref() == Some("1");
    }
    Ok((issues, capped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(dest: &str, status: Option<u16>, reason: &str, contact: &str) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: leadrelay_model::new_id(),
            event_id: leadrelay_model::new_id(),
            destination: dest.into(),
            contact_key: contact.into(),
            state: DeliveryState::Dead,
            attempts: 1,
            failures: 1,
            created_at: now,
            updated_at: now,
            next_attempt_at: None,
            lease_id: None,
            last_status: status,
            last_error: None,
            reason: Some(reason.into()),
            finished_at: Some(now),
            replay_of: None,
            replayed_by: None,
            overrides: None,
        }
    }

    #[test]
    fn same_cause_for_different_leads_is_one_issue() {
        let rows = vec![
            dead(
                "crm",
                Some(400),
                "HTTP 400: property email value jane@example.com is invalid (record 123456)",
                "email:jane@example.com",
            ),
            dead(
                "crm",
                Some(400),
                "HTTP 400: property email value bob@example.org is invalid (record 987654)",
                "email:bob@example.org",
            ),
            dead(
                "crm",
                Some(400),
                "HTTP 400: property email value bob@example.org is invalid (record 987654)",
                "email:bob@example.org",
            ),
            dead(
                "crm",
                Some(500),
                "gave up after 5 failed attempts; last error: HTTP 500: down",
                "email:a@b.co",
            ),
            dead(
                "crm",
                Some(500),
                "gave up after 3 failed attempts; last error: HTTP 500: down",
                "email:c@b.co",
            ),
            dead("mail", None, "consent: no consent for crm", "email:a@b.co"),
        ];
        let issues = group(&rows);
        assert_eq!(issues.len(), 3, "{issues:#?}");
        assert_eq!(issues[0].count, 3);
        assert_eq!(issues[0].people, 2);
        assert_eq!(issues[0].class, "4xx");
        assert!(
            issues[0]
                .cause
                .contains("property email value <email> is invalid"),
            "{}",
            issues[0].cause
        );
        assert!(!issues[0].cause.contains("jane"), "no personal data");
        assert_eq!(issues[1].count, 2);
        assert_eq!(issues[1].cause, "HTTP 500: down");
        assert_eq!(issues[2].class, "consent");
        assert_ne!(issues[0].key, issues[1].key);
        assert_eq!(issues[0].key, issue_key("crm", &issues[0].cause));
    }
}
