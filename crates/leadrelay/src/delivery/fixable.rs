//! Fixable dead letters: a destination refused a delivery for a reason a
//! person can fix in the destination — a property missing in the portal, a
//! picklist value not allowed, a validation rule, a required field, a
//! read-only property. Such dead letters are kept with their cause
//! ([`crate::store::FixableStore`]) and retried by themselves once the cause
//! may be gone:
//!
//! - the destination's configuration changed (checked at start-up against
//!   the fingerprint of the last run);
//! - the connector finds the cause fixed (the property now exists, the
//!   value is now an option): asked every `delivery.fixable.check_every`,
//!   and by `leadrelay check`;
//! - on the schedule, every `delivery.fixable.retry_every` (daily).
//!
//! At most `max_retries` automatic retries per event and destination; a
//! retry is a replay (history kept), so a lead refused again returns here
//! with its count. A permanent refusal — an invalid email, a deleted
//! record, anything not recognised below — is never retried this way.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Destination;
use crate::config::{Config, FixableConfig};
use crate::store::{Completion, FixableCause, NewFixable, Store, Transition};

/// A cause as read from a connector's dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub kind: &'static str,
    pub object: Option<String>,
    pub field: String,
    pub value: Option<String>,
}

/// Reads a fixable cause from a dead letter's reason, as the connectors of
/// `connector_kind` word it. `None` when any refusal in it is not fixable
/// (retrying an invalid email would fail again however long we wait).
pub fn classify(connector_kind: &str, reason: &str) -> Option<Cause> {
    match connector_kind {
        "hubspot" => hubspot(reason),
        "salesforce" => salesforce(reason),
        "marketing_cloud" => marketing_cloud(reason),
        _ => None,
    }
}

/// `HubSpot rejected property "NAME": MESSAGE (CODE)`, joined with `; `.
fn hubspot(reason: &str) -> Option<Cause> {
    const MARK: &str = "HubSpot rejected property \"";
    let mut first = None;
    let mut rest = reason;
    let mut found = false;
    while let Some(i) = rest.find(MARK) {
        found = true;
        let after = &rest[i + MARK.len()..];
        let (name, tail) = after.split_once("\": ")?;
        // The message ends at the code in parentheses before the next part.
        let end = tail.find(MARK).unwrap_or(tail.len());
        let part = tail[..end].trim_end_matches("; ").trim_end();
        let open = part.rfind(" (")?;
        let message = &part[..open];
        let code = part[open + 2..].trim_end_matches(')');
        let cause = match code {
            "PROPERTY_DOESNT_EXIST" | "INVALID_PROPERTY" => Cause {
                kind: "missing_property",
                object: None,
                field: name.to_string(),
                value: None,
            },
            "INVALID_OPTION" => Cause {
                kind: "invalid_option",
                object: None,
                field: name.to_string(),
                value: message
                    .split_once(" was not one of the allowed options")
                    .map(|(v, _)| v.to_string()),
            },
            "READ_ONLY_VALUE" => Cause {
                kind: "read_only",
                object: None,
                field: name.to_string(),
                value: None,
            },
            "REQUIRED" => Cause {
                kind: "required_field",
                object: None,
                field: name.to_string(),
                value: None,
            },
            // INVALID_EMAIL, INVALID_INTEGER, INVALID_DATE …: the record's
            // own data is wrong; no change in the portal fixes it.
            _ => return None,
        };
        first.get_or_insert(cause);
        rest = &tail[end..];
    }
    if found { first } else { None }
}

/// `Salesforce CODE: MESSAGE (fields A, B)`, joined with `; `.
fn salesforce(reason: &str) -> Option<Cause> {
    const MARK: &str = "Salesforce ";
    let mut first = None;
    for part in reason.split("; ") {
        let i = part.find(MARK)?;
        let (code, message) = part[i + MARK.len()..].split_once(": ")?;
        let fields = message
            .rfind(" (fields ")
            .map(|j| message[j + 9..].trim_end_matches(')'))
            .and_then(|f| f.split(", ").next())
            .map(str::to_string);
        let kind = match code {
            "REQUIRED_FIELD_MISSING" => "required_field",
            "FIELD_CUSTOM_VALIDATION_EXCEPTION" => "validation_rule",
            "INVALID_FIELD" | "INVALID_FIELD_FOR_INSERT_UPDATE" => "missing_property",
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" => "invalid_option",
            "INVALID_FIELD_WHEN_USING_TEMPLATE" | "FIELD_INTEGRITY_EXCEPTION" => "validation_rule",
            // INVALID_EMAIL_ADDRESS, ENTITY_IS_DELETED, DUPLICATE_VALUE …
            _ => return None,
        };
        // A validation rule has no field to name: its message is its name.
        let field = match (kind, fields) {
            (_, Some(f)) => f,
            ("validation_rule", None) => message.chars().take(120).collect(),
            _ => return None,
        };
        first.get_or_insert(Cause {
            kind,
            object: None,
            field,
            value: None,
        });
    }
    first
}

/// Marketing Cloud's refusals, as the `marketing_cloud` connector words
/// them: `Marketing Cloud HTTP 400: MESSAGE; row N: PROBLEM; …` (REST) or
/// `Marketing Cloud refused the row (CODE): PROBLEM; …` (the asynchronous
/// API). Fixable: a column the data extension lacks (`Invalid column name
/// 'X'.`), a required column (`X is required`), a data extension or an
/// event definition that does not exist (yet). A value that does not fit
/// its column is the lead's own data: not fixable.
fn marketing_cloud(reason: &str) -> Option<Cause> {
    let body = match reason.split_once("Marketing Cloud refused the row (") {
        Some((_, rest)) => rest.split_once("): ")?.1,
        None => reason.split_once("Marketing Cloud HTTP 400: ")?.1,
    };
    let mut first = None;
    for part in body.split("; ") {
        let part = match part.strip_prefix("row ").and_then(|r| r.split_once(": ")) {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => part,
        }
        .trim();
        if part.starts_with("Unable to save rows") {
            continue;
        }
        let cause = |kind, object: Option<&str>, field: &str| Cause {
            kind,
            object: object.map(str::to_string),
            field: field.to_string(),
            value: None,
        };
        let c = if let Some(rest) = part.strip_prefix("Invalid column name '") {
            cause("missing_property", None, rest.split('\'').next()?)
        } else if let Some(col) = part.strip_suffix(" is required") {
            cause("required_field", None, col)
        } else if let Some(k) = part
            .strip_prefix("Event definition key ")
            .and_then(|r| r.strip_suffix(" not found"))
        {
            cause("missing_property", Some("event_definition"), k)
        } else if let Some(k) =
            part.strip_prefix("Unable to find data extension with external key ")
        {
            cause("missing_property", Some("data_extension"), k)
        } else {
            return None;
        };
        first.get_or_insert(c);
    }
    first
}

/// The fixable rows of a batch of completions that dead-letter deliveries.
pub fn from_completions(
    dest: &Destination,
    completions: &[Completion],
    config: &FixableConfig,
) -> Vec<NewFixable> {
    let next =
        Utc::now() + chrono::Duration::from_std(config.retry_every.get()).unwrap_or_default();
    completions
        .iter()
        .filter_map(|c| {
            let Transition::Dead { reason, .. } = &c.transition else {
                return None;
            };
            let cause = classify(dest.connector_kind, reason)?;
            Some(NewFixable {
                delivery_id: c.delivery_id,
                destination: dest.name.clone(),
                kind: cause.kind.to_string(),
                object: cause.object,
                field: cause.field,
                value: cause.value,
                message: reason.chars().take(500).collect(),
                next_retry_at: next,
            })
        })
        .collect()
}

/// A fingerprint of each destination's configuration (and of the field
/// mapping every destination shares): when it changes between runs, the
/// destination's fixable dead letters are retried at start-up.
pub fn config_fingerprints(config: &Config) -> BTreeMap<String, String> {
    config
        .destinations
        .iter()
        .map(|(name, d)| {
            let text = format!("{d:?}\n{:?}", config.contacts);
            (name.clone(), hex::encode(Sha256::digest(text.as_bytes())))
        })
        .collect()
}

fn fingerprint_key(destination: &str) -> String {
    format!("fixable:config:{destination}")
}

/// Asks each destination's connector whether the causes of its waiting
/// dead letters are gone, and brings those forward to now. Returns each
/// waiting cause with the connector's answer (`None`: it cannot tell).
pub async fn probe(
    store: &dyn Store,
    destinations: &[Arc<Destination>],
    causes: Vec<FixableCause>,
) -> Vec<(FixableCause, Option<bool>)> {
    let mut out = Vec::new();
    for cause in causes.into_iter().filter(|c| c.waiting > 0) {
        let Some(dest) = destinations.iter().find(|d| d.name == cause.destination) else {
            continue;
        };
        let fixed = dest.connector.cause_fixed(&cause).await;
        if fixed == Some(true) {
            match store
                .reschedule_fixable(&dest.name, Some(&cause.cause_key), Utc::now())
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(destination = %dest.name, cause = %cause.cause_key, dead_letters = n, "fixable cause is gone; retrying its dead letters")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "rescheduling fixable dead letters failed"),
            }
        }
        out.push((cause, fixed));
    }
    out
}

/// Replays the fixable dead letters that are due. Returns how many.
pub async fn retry_due(store: &dyn Store, config: &FixableConfig) -> usize {
    let mut total = 0;
    loop {
        let due = match store.due_fixable(Utc::now(), config.max_retries, 500).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading due fixable dead letters failed");
                return total;
            }
        };
        if due.is_empty() {
            return total;
        }
        let ids: Vec<_> = due.iter().map(|d| d.delivery_id).collect();
        match store.replay(ids, None).await {
            Ok(pairs) => {
                tracing::info!(dead_letters = pairs.len(), "fixable dead letters retried");
                total += pairs.len();
                // Another node replayed them first: nothing left for us.
                if pairs.is_empty() {
                    return total;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retrying fixable dead letters failed");
                return total;
            }
        }
    }
}

/// The background job of `leadrelay serve`.
pub async fn run(
    store: Arc<dyn Store>,
    destinations: Vec<Arc<Destination>>,
    config: FixableConfig,
    fingerprints: BTreeMap<String, String>,
    shutdown: CancellationToken,
) {
    // The configuration changed since the last run: the cause may be gone.
    for d in &destinations {
        let Some(fp) = fingerprints.get(&d.name) else {
            continue;
        };
        let key = fingerprint_key(&d.name);
        match store.kv_get(&key).await {
            Ok(Some(old)) if &old == fp => {}
            Ok(old) => {
                if old.is_some() {
                    match store.reschedule_fixable(&d.name, None, Utc::now()).await {
                        Ok(n) if n > 0 => {
                            tracing::info!(destination = %d.name, dead_letters = n, "configuration changed; retrying fixable dead letters")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "rescheduling fixable dead letters failed")
                        }
                    }
                }
                if let Err(e) = store.kv_set(&key, fp).await {
                    tracing::warn!(error = %e, "recording the configuration fingerprint failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the configuration fingerprint failed"),
        }
    }
    let every = config.check_every.get();
    loop {
        match store.fixable_causes(config.max_retries).await {
            Ok(causes) => {
                probe(store.as_ref(), &destinations, causes).await;
            }
            Err(e) => tracing::warn!(error = %e, "reading fixable causes failed"),
        }
        retry_due(store.as_ref(), &config).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hubspot_causes() {
        let c = classify(
            "hubspot",
            "HubSpot rejected property \"lead_tier\": Property \"lead_tier\" does not exist (PROPERTY_DOESNT_EXIST)",
        )
        .unwrap();
        assert_eq!(
            (c.kind, c.field.as_str()),
            ("missing_property", "lead_tier")
        );
        let c = classify(
            "hubspot",
            "HubSpot rejected property \"plan\": gold was not one of the allowed options: [a, b] (INVALID_OPTION)",
        )
        .unwrap();
        assert_eq!(c.kind, "invalid_option");
        assert_eq!(c.value.as_deref(), Some("gold"));
        // An invalid email beside a missing property: retrying cannot help.
        assert_eq!(
            classify(
                "hubspot",
                "HubSpot rejected property \"x\": Property \"x\" does not exist (PROPERTY_DOESNT_EXIST); \
                 HubSpot rejected property \"email\": Email address [redacted] is invalid (INVALID_EMAIL)"
            ),
            None
        );
        assert_eq!(
            classify(
                "hubspot",
                "HubSpot rejected property \"email\": Email address x is invalid (INVALID_EMAIL)"
            ),
            None
        );
        assert_eq!(
            classify("hubspot", "HubSpot HTTP 404 error: not found"),
            None
        );
        assert_eq!(classify("webhook", "HTTP 400"), None);
    }

    #[test]
    fn reads_marketing_cloud_causes() {
        let c = classify(
            "marketing_cloud",
            "Marketing Cloud HTTP 400: Unable to save rows for data extension ID; row 0: Invalid column name 'Tier'.",
        )
        .unwrap();
        assert_eq!(
            (c.kind, c.field.as_str(), c.object),
            ("missing_property", "Tier", None)
        );
        let c = classify(
            "marketing_cloud",
            "Marketing Cloud refused the row (UnexpectedError): Region is required",
        )
        .unwrap();
        assert_eq!((c.kind, c.field.as_str()), ("required_field", "Region"));
        let c = classify(
            "marketing_cloud",
            "Marketing Cloud HTTP 400: Event definition key APIEvent-x not found",
        )
        .unwrap();
        assert_eq!(c.object.as_deref(), Some("event_definition"));
        // A value that does not fit its column is the lead's: not fixable,
        // also beside a missing column.
        assert_eq!(
            classify(
                "marketing_cloud",
                "Marketing Cloud refused the row (UnexpectedError): Invalid column name 'Tier'.; Score: the value does not fit the column type Number"
            ),
            None
        );
        assert_eq!(
            classify("marketing_cloud", "Marketing Cloud HTTP 404: Not Found"),
            None
        );
    }

    #[test]
    fn reads_salesforce_causes() {
        let c = classify(
            "salesforce",
            "Salesforce REQUIRED_FIELD_MISSING: Required fields are missing: [Company] (fields Company)",
        )
        .unwrap();
        assert_eq!((c.kind, c.field.as_str()), ("required_field", "Company"));
        let c = classify(
            "salesforce",
            "Salesforce FIELD_CUSTOM_VALIDATION_EXCEPTION: Budget must be set",
        )
        .unwrap();
        assert_eq!(
            (c.kind, c.field.as_str()),
            ("validation_rule", "Budget must be set")
        );
        assert_eq!(
            classify(
                "salesforce",
                "Salesforce INVALID_EMAIL_ADDRESS: Email: invalid email address: x (fields Email)"
            ),
            None
        );
        assert_eq!(
            classify(
                "salesforce",
                "Salesforce ENTITY_IS_DELETED: entity is deleted"
            ),
            None
        );
    }
}
