//! The golden record: one contact per person, merged from every event about
//! them, with the provenance of each field.
//!
//! Email (normalised: trimmed, lower-cased) identifies the person. Which
//! value a field keeps when sources disagree is decided per field by a
//! [`FieldRule`] (`[contacts.fields.NAME]`): the latest value (the default),
//! the first one, the one from the most trusted source, or whichever came
//! first and never changes. Whatever the rule, an empty value never erases
//! and any source fills a field that is still empty. Consent keeps the
//! latest answer per purpose. The merge is pure so both stores share it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadrelay_model::{
    CONTACT_FIELDS, ConsentRecord, Contact, ContactData, Event, FieldProvenance, OriginKind,
};
use serde::Deserialize;
use serde_json::Value;

use crate::config::ContactsConfig;

/// How a field's value is chosen when a new event brings a different one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The most recent event (by when it happened) wins; an older event
    /// arriving late (a vendor backfill) never overwrites a newer value.
    #[default]
    Latest,
    /// The earliest event wins: a late-arriving older event replaces the
    /// value, a newer one never does.
    First,
    /// The source listed earliest in `sources` wins regardless of time;
    /// between values of equally ranked sources, the latest. A source not
    /// listed only fills an empty field.
    Priority,
    /// Once set, the value never changes.
    NeverOverwrite,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Latest => "latest",
            Strategy::First => "first",
            Strategy::Priority => "priority",
            Strategy::NeverOverwrite => "never_overwrite",
        }
    }
}

/// A source pattern: `form:contact`, `form:*`, `source:hubspot`, `api:*`,
/// `*`, or a bare name (`hubspot`) meaning the webhook source of that name
/// (`source:hubspot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePattern {
    /// None: any kind.
    kind: Option<OriginKind>,
    /// None: any name.
    name: Option<String>,
}

impl SourcePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self {
                kind: None,
                name: None,
            });
        }
        let (kind, name) = match s.split_once(':') {
            Some((k, n)) => {
                let kind = if k == "*" {
                    None
                } else {
                    Some(OriginKind::parse(k).ok_or_else(|| {
                        format!(
                            "{s:?}: unknown source kind {k:?} (expected form, source, api, system or *)"
                        )
                    })?)
                };
                (kind, n)
            }
            None => (Some(OriginKind::Source), s),
        };
        let name = match name {
            "*" => None,
            n if is_name(n) => Some(n.to_string()),
            n => {
                return Err(format!(
                    "{s:?}: invalid source name {n:?} (a-z, 0-9, '_', '-', or * for any)"
                ));
            }
        };
        Ok(Self { kind, name })
    }

    /// Whether a provenance source (`kind:name`) matches.
    pub fn matches(&self, source: &str) -> bool {
        let Some((kind, name)) = source.split_once(':') else {
            return false;
        };
        self.kind.is_none_or(|k| k.as_str() == kind)
            && self.name.as_deref().is_none_or(|n| n == name)
    }

    /// The configured form or source this pattern names, if it names one.
    pub fn named(&self) -> Option<(OriginKind, &str)> {
        Some((self.kind?, self.name.as_deref()?))
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The rule of one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldRule {
    pub strategy: Strategy,
    /// Sources allowed to change a value once it is set, most trusted
    /// first. Empty: every source.
    pub sources: Vec<SourcePattern>,
}

impl FieldRule {
    /// The rank of `source` in `sources` (0 = most trusted); None when not listed.
    fn rank(&self, source: &str) -> Option<usize> {
        if self.sources.is_empty() {
            return Some(0);
        }
        self.sources.iter().position(|p| p.matches(source))
    }

    /// Whether `incoming` replaces the value set as `current` describes
    /// (None: the field is empty).
    pub fn replaces(&self, current: Option<&FieldProvenance>, incoming: &FieldProvenance) -> bool {
        let Some(current) = current else {
            return true;
        };
        let Some(new_rank) = self.rank(&incoming.source) else {
            return false;
        };
        match self.strategy {
            Strategy::Latest => current.at <= incoming.at,
            Strategy::First => incoming.at < current.at,
            Strategy::NeverOverwrite => false,
            Strategy::Priority => match self.rank(&current.source) {
                Some(old_rank) if old_rank < new_rank => false,
                Some(old_rank) if old_rank == new_rank => current.at <= incoming.at,
                _ => true,
            },
        }
    }
}

/// Per-field rules; fields without one use [`Strategy::Latest`] from every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergeRules {
    fields: BTreeMap<String, FieldRule>,
}

/// Contact fields that can carry a rule (email identifies the person and
/// `full_name` is stored as first and last name).
pub fn rule_fields() -> impl Iterator<Item = &'static str> {
    CONTACT_FIELDS
        .into_iter()
        .filter(|f| !matches!(*f, "email" | "full_name"))
}

impl MergeRules {
    /// Builds the rules of `[contacts.fields]`, reporting every problem as
    /// (key path, message).
    pub fn compile(config: &ContactsConfig) -> Result<Self, Vec<(String, String)>> {
        let mut fields = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, c) in &config.fields {
            let path = format!("contacts.fields.{name}");
            let standard = rule_fields().any(|f| f == name);
            if name == "email" {
                problems.push((
                    path.clone(),
                    "email identifies the person and is never merged".to_string(),
                ));
            } else if name == "full_name" {
                problems.push((
                    path.clone(),
                    "full_name is stored as first_name and last_name: give those rules".to_string(),
                ));
            } else if standard && c.custom {
                problems.push((
                    format!("{path}.custom"),
                    format!("{name} is a standard contact field, not a custom one"),
                ));
            } else if !standard && !c.custom {
                problems.push((
                    path.clone(),
                    format!(
                        "unknown contact field {name:?} (standard fields: {}; set custom = true for a custom field)",
                        rule_fields().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let mut sources = Vec::new();
            for (i, s) in c.sources.iter().enumerate() {
                match SourcePattern::parse(s) {
                    Ok(p) => sources.push(p),
                    Err(m) => problems.push((format!("{path}.sources[{i}]"), m)),
                }
            }
            let strategy = c.strategy.unwrap_or(if sources.is_empty() {
                Strategy::Latest
            } else {
                Strategy::Priority
            });
            if strategy == Strategy::Priority && c.sources.is_empty() {
                problems.push((
                    format!("{path}.strategy"),
                    "strategy \"priority\" needs a sources list (most trusted first)".to_string(),
                ));
            }
            fields.insert(name.clone(), FieldRule { strategy, sources });
        }
        if problems.is_empty() {
            Ok(Self { fields })
        } else {
            Err(problems)
        }
    }

    /// The rule of `field` (the default when none is configured).
    pub fn rule(&self, field: &str) -> FieldRule {
        self.fields.get(field).cloned().unwrap_or_default()
    }

    fn get(&self, field: &str) -> Option<&FieldRule> {
        self.fields.get(field)
    }
}

/// The secondary identity of an event without an email: its company's
/// normalised web domain and name. Both are needed — a domain alone names
/// a company, not a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryKey {
    pub domain: String,
    pub company: String,
}

/// What the secondary match found among the contacts of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecondaryMatch {
    /// Exactly one contact matches: the event is about them (the index
    /// into the candidates).
    Unique(usize),
    /// Several contacts match: the event is stored without a contact and
    /// the ambiguity recorded for review.
    Ambiguous(Vec<uuid::Uuid>),
    /// Nobody matches: the event is stored without a contact (a contact is
    /// only ever created from an email).
    None,
}

/// `https://WWW.Acme.io/pricing` → `acme.io`; None when it is no domain.
pub fn normalise_domain(s: &str) -> Option<String> {
    let s = s.trim().to_lowercase();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(&s);
    let host = s.split(['/', '?', '#', ':']).next().unwrap_or("");
    let host = host
        .strip_prefix("www.")
        .unwrap_or(host)
        .trim_end_matches('.');
    let valid = host.contains('.')
        && !host.starts_with('.')
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    valid.then(|| host.to_string())
}

/// Legal forms dropped from the end of a company name before comparing.
const LEGAL_FORMS: [&str; 26] = [
    "inc",
    "incorporated",
    "llc",
    "llp",
    "ltd",
    "limited",
    "corp",
    "corporation",
    "co",
    "company",
    "gmbh",
    "ag",
    "kg",
    "sa",
    "sas",
    "sarl",
    "srl",
    "spa",
    "bv",
    "nv",
    "plc",
    "pty",
    "oy",
    "ab",
    "as",
    "se",
];

/// `Acme, Inc.` and `ACME` → `acme`: lower-cased, punctuation as spaces,
/// trailing legal forms dropped (never the whole name).
pub fn normalise_company(s: &str) -> Option<String> {
    let cleaned: String = s
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    while words.len() > 1 && words.last().is_some_and(|w| LEGAL_FORMS.contains(w)) {
        words.pop();
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// The secondary key of an event's contact (the domain, else the
/// website's), None unless it has both a domain and a company name.
pub fn secondary_key(data: &ContactData) -> Option<SecondaryKey> {
    let domain = data
        .domain
        .as_deref()
        .and_then(normalise_domain)
        .or_else(|| data.website.as_deref().and_then(normalise_domain))?;
    let company = normalise_company(data.company.as_deref()?)?;
    Some(SecondaryKey { domain, company })
}

/// Matches an event without an email against `candidates` (the contacts
/// of the key's domain): same domain and company name, and nothing that
/// says it is someone else (a different first or last name or phone).
pub fn secondary_match(
    key: &SecondaryKey,
    incoming: &ContactData,
    candidates: &[Contact],
) -> SecondaryMatch {
    let matching: Vec<usize> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.data
                .domain
                .as_deref()
                .and_then(normalise_domain)
                .as_deref()
                == Some(&key.domain)
                && c.data
                    .company
                    .as_deref()
                    .and_then(normalise_company)
                    .as_deref()
                    == Some(&key.company)
                && !conflicts(incoming, &c.data)
        })
        .map(|(i, _)| i)
        .collect();
    match matching.as_slice() {
        [] => SecondaryMatch::None,
        [one] => SecondaryMatch::Unique(*one),
        many => SecondaryMatch::Ambiguous(many.iter().map(|i| candidates[*i].id).collect()),
    }
}

/// Whether two descriptions name different people.
fn conflicts(a: &ContactData, b: &ContactData) -> bool {
    let differ = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x.trim().to_lowercase() != y.trim().to_lowercase(),
        _ => false,
    };
    differ(&a.first_name, &b.first_name)
        || differ(&a.last_name, &b.last_name)
        || matches!((&a.phone, &b.phone), (Some(x), Some(y)) if x != y)
}

/// The review item that records an ambiguous secondary match (no personal
/// data in the summary; the candidates by id).
pub fn ambiguous_match_review(
    event: &Event,
    key: &SecondaryKey,
    candidates: &[uuid::Uuid],
    now: DateTime<Utc>,
) -> crate::store::ReviewItem {
    crate::store::ReviewItem {
        id: leadrelay_model::new_id(),
        kind: AMBIGUOUS_MATCH.to_string(),
        status: crate::store::ReviewStatus::Open,
        summary: format!(
            "an event without an email matches {} contacts by company domain and name; not merged",
            candidates.len()
        ),
        contact_id: None,
        destination: None,
        details: serde_json::json!({
            "event_id": event.id,
            "source": provenance_of(event).source,
            "domain": key.domain,
            "company": key.company,
            "candidates": candidates,
        }),
        created_at: now,
        resolved_at: None,
        resolved_by: None,
        resolution: None,
    }
}

/// The review-item kind of an ambiguous secondary match.
pub const AMBIGUOUS_MATCH: &str = "ambiguous_contact_match";

/// Merges `event`'s contact data into `existing` (or starts a new record)
/// under the default rules (latest value wins).
pub fn merge(existing: Option<Contact>, event: &Event, now: DateTime<Utc>) -> Option<Contact> {
    merge_with(&MergeRules::default(), existing, event, now)
}

/// Merges `event`'s contact data into `existing` (or starts a new record
/// when the event has an email). Returns None when there is no existing
/// record and the event identifies nobody (no email).
pub fn merge_with(
    rules: &MergeRules,
    existing: Option<Contact>,
    event: &Event,
    now: DateTime<Utc>,
) -> Option<Contact> {
    let mut contact = match existing {
        Some(c) => c,
        None => new_contact(event.contact.email.clone()?, now),
    };
    let incoming = provenance_of(event);
    merge_fields(rules, &mut contact, &event.contact, &incoming);
    merge_consent(&mut contact, &event.consent);
    merge_suppression(&mut contact, event);
    contact.updated_at = now;
    Some(contact)
}

/// The suppression list lives on the golden record: an email bounce, or an
/// unsubscribe that withdraws `marketing_email` (the default withdrawal),
/// from whatever source, keeps the person out of every sequence from then
/// on (the enrollment gate checks it at send time). The first such event
/// is kept.
fn merge_suppression(contact: &mut Contact, event: &Event) {
    if contact.lead.suppressed.is_some() {
        return;
    }
    let reason = match event.event_type {
        leadrelay_model::EventType::EmailBounced => "bounced",
        leadrelay_model::EventType::Unsubscribed
            if event
                .consent
                .iter()
                .any(|c| !c.granted && c.purpose.as_str() == "marketing_email") =>
        {
            "unsubscribed"
        }
        _ => return,
    };
    contact.lead.suppressed = Some(leadrelay_model::Suppression {
        reason: reason.into(),
        origin: provenance_of(event).source,
        at: event.occurred_at,
    });
}

fn new_contact(email: leadrelay_model::EmailAddress, now: DateTime<Utc>) -> Contact {
    Contact {
        id: leadrelay_model::new_id(),
        data: ContactData {
            email: Some(email),
            ..Default::default()
        },
        provenance: Default::default(),
        consent: Default::default(),
        lead: Default::default(),
        created_at: now,
        updated_at: now,
    }
}

/// Where an event's values come from: `kind:name`, its id, when it happened.
pub fn provenance_of(event: &Event) -> FieldProvenance {
    FieldProvenance {
        source: format!("{}:{}", event.origin.kind.as_str(), event.origin.name),
        event_id: event.id,
        at: event.occurred_at,
    }
}

/// Merges the person-level fields, each under its rule.
fn merge_fields(
    rules: &MergeRules,
    contact: &mut Contact,
    incoming: &ContactData,
    provenance: &FieldProvenance,
) {
    let provenances = &mut contact.provenance;
    let default_rule = FieldRule::default();
    // Whether `field` (currently `filled` or not) takes the incoming value;
    // records the provenance when it does.
    let mut take = |field: &str, filled: bool| {
        let rule = rules.get(field).unwrap_or(&default_rule);
        // A value without provenance (stored before provenance was kept)
        // counts as the oldest, from no listed source.
        let unknown = FieldProvenance {
            source: String::new(),
            event_id: uuid::Uuid::nil(),
            at: DateTime::<Utc>::MIN_UTC,
        };
        let current = filled.then(|| provenances.get(field).unwrap_or(&unknown));
        let wins = rule.replaces(current, provenance);
        if wins {
            provenances.insert(field.to_string(), provenance.clone());
        }
        wins
    };
    let data = &mut contact.data;
    if let Some(p) = &incoming.phone
        && take("phone", data.phone.is_some())
    {
        data.phone = Some(p.clone());
    }
    let text_fields: [(&str, &Option<String>, &mut Option<String>); 9] = [
        ("first_name", &incoming.first_name, &mut data.first_name),
        ("last_name", &incoming.last_name, &mut data.last_name),
        ("company", &incoming.company, &mut data.company),
        ("domain", &incoming.domain, &mut data.domain),
        ("title", &incoming.title, &mut data.title),
        ("website", &incoming.website, &mut data.website),
        ("country", &incoming.country, &mut data.country),
        ("region", &incoming.region, &mut data.region),
        ("city", &incoming.city, &mut data.city),
    ];
    for (field, value, slot) in text_fields {
        if let Some(v) = value.as_ref().filter(|v| !v.trim().is_empty())
            && take(field, slot.is_some())
        {
            // Domains are kept normalised: the secondary match looks them up.
            *slot = Some(match field {
                "domain" => normalise_domain(v).unwrap_or_else(|| v.clone()),
                _ => v.clone(),
            });
        }
    }
    for (field, value) in &incoming.custom {
        if !is_empty(value) && take(field, data.custom.contains_key(field)) {
            data.custom.insert(field.clone(), value.clone());
        }
    }
}

/// Keeps the latest answer per consent purpose.
fn merge_consent(contact: &mut Contact, records: &[ConsentRecord]) {
    for record in records {
        let newer = contact
            .consent
            .get(record.purpose.as_str())
            .is_none_or(|c| c.recorded_at <= record.recorded_at);
        if newer {
            contact
                .consent
                .insert(record.purpose.as_str().to_string(), record.clone());
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadrelay_model::{ConsentPurpose, ConsentRecord, EmailAddress, EventType, Origin};

    fn event(first: &str, company: Option<&str>, at: DateTime<Utc>) -> Event {
        let mut contact = ContactData {
            email: Some(EmailAddress::parse("jane@acme.io").unwrap()),
            first_name: Some(first.into()),
            company: company.map(String::from),
            ..Default::default()
        };
        contact
            .custom
            .insert("industry".into(), Value::String("SaaS".into()));
        Event {
            id: leadrelay_model::new_id(),
            event_type: EventType::LeadCreated,
            origin: Origin::form("contact"),
            received_at: at,
            occurred_at: at,
            contact,
            contact_id: None,
            data: Default::default(),
            attribution: Default::default(),
            consent: vec![ConsentRecord {
                purpose: ConsentPurpose::parse("crm").unwrap(),
                granted: first != "Withdrawn",
                text_version: Some("v1".into()),
                recorded_at: at,
            }],
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
            playbooks: vec![],
        }
    }

    #[test]
    fn latest_non_empty_value_wins_and_keeps_provenance() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(5);
        let c = merge(None, &event("Jane", Some("Acme"), t0), t0).unwrap();
        let c2 = merge(Some(c.clone()), &event("Janet", None, t1), t1).unwrap();
        assert_eq!(c2.id, c.id);
        assert_eq!(c2.data.first_name.as_deref(), Some("Janet"));
        assert_eq!(
            c2.data.company.as_deref(),
            Some("Acme"),
            "an empty value never erases"
        );
        assert_eq!(c2.data.custom["industry"], "SaaS");
        assert_eq!(c2.provenance["first_name"].at, t1);
        assert_eq!(c2.provenance["company"].at, t0);
    }

    #[test]
    fn older_events_do_not_overwrite() {
        let t0 = Utc::now();
        let older = t0 - chrono::Duration::hours(1);
        let c = merge(None, &event("Jane", None, t0), t0).unwrap();
        let c2 = merge(Some(c), &event("Old", None, older), t0).unwrap();
        assert_eq!(c2.data.first_name.as_deref(), Some("Jane"));
    }

    #[test]
    fn consent_keeps_latest_answer() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let c = merge(None, &event("Jane", None, t0), t0).unwrap();
        assert!(c.consent["crm"].granted);
        let c2 = merge(Some(c), &event("Withdrawn", None, t1), t1).unwrap();
        assert!(!c2.consent["crm"].granted);
    }

    #[test]
    fn no_email_no_contact() {
        let mut e = event("Jane", None, Utc::now());
        e.contact.email = None;
        assert!(merge(None, &e, Utc::now()).is_none());
    }

    fn from(origin: Origin, phone: &str, at: DateTime<Utc>) -> Event {
        let mut e = event("Jane", None, at);
        e.origin = origin;
        e.contact.phone = Some(leadrelay_model::PhoneE164::parse(phone, None).unwrap());
        e
    }

    fn rules(toml_text: &str) -> MergeRules {
        let c: crate::config::ContactsConfig = toml::from_str(toml_text).unwrap();
        MergeRules::compile(&c).unwrap()
    }

    fn phone_after(rules: &MergeRules, events: &[Event]) -> (String, String) {
        let mut c = None;
        for e in events {
            c = merge_with(rules, c, e, Utc::now());
        }
        let c = c.unwrap();
        (
            c.data.phone.unwrap().as_str().to_string(),
            c.provenance["phone"].source.clone(),
        )
    }

    #[test]
    fn latest_is_the_default_strategy() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = MergeRules::default();
        let events = [
            from(Origin::source("hubspot"), "+14155552601", t0),
            from(Origin::form("contact"), "+14155552602", t1),
        ];
        assert_eq!(
            phone_after(&r, &events),
            ("+14155552602".into(), "form:contact".into())
        );
    }

    #[test]
    fn first_keeps_the_earliest_value_even_when_it_arrives_late() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = rules("[fields.phone]\nstrategy = \"first\"\n");
        let newer_first = [
            from(Origin::form("contact"), "+14155552602", t1),
            from(Origin::source("hubspot"), "+14155552601", t0),
        ];
        assert_eq!(
            phone_after(&r, &newer_first),
            ("+14155552601".into(), "source:hubspot".into())
        );
        let in_order = [
            from(Origin::source("hubspot"), "+14155552601", t0),
            from(Origin::form("contact"), "+14155552602", t1),
        ];
        assert_eq!(phone_after(&r, &in_order).0, "+14155552601");
    }

    #[test]
    fn priority_prefers_listed_sources_regardless_of_time() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let t2 = t0 + chrono::Duration::seconds(2);
        // A sources list alone means priority.
        let r = rules("[fields.phone]\nsources = [\"hubspot\", \"form:*\"]\n");
        assert_eq!(r.rule("phone").strategy, Strategy::Priority);
        let events = [
            from(Origin::source("hubspot"), "+14155552601", t0),
            // Lower-ranked and newer: loses.
            from(Origin::form("contact"), "+14155552602", t1),
            // Unlisted: only fills empty fields.
            from(Origin::api("admin"), "+14155552603", t2),
        ];
        assert_eq!(
            phone_after(&r, &events),
            ("+14155552601".into(), "source:hubspot".into())
        );
        // A higher-ranked source replaces a lower-ranked one even when older.
        let events = [
            from(Origin::form("contact"), "+14155552602", t1),
            from(Origin::source("hubspot"), "+14155552601", t0),
        ];
        assert_eq!(phone_after(&r, &events).0, "+14155552601");
        // Equal rank: the latest.
        let events = [
            from(Origin::form("contact"), "+14155552602", t0),
            from(Origin::form("demo"), "+14155552604", t1),
        ];
        assert_eq!(
            phone_after(&r, &events),
            ("+14155552604".into(), "form:demo".into())
        );
        // An unlisted source fills an empty field; a listed one then replaces it.
        let events = [
            from(Origin::api("admin"), "+14155552603", t2),
            from(Origin::form("contact"), "+14155552602", t0),
        ];
        assert_eq!(phone_after(&r, &events).0, "+14155552602");
    }

    #[test]
    fn never_overwrite_keeps_the_first_value_set() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = rules("[fields.phone]\nstrategy = \"never_overwrite\"\n");
        let events = [
            from(Origin::form("contact"), "+14155552602", t1),
            from(Origin::source("hubspot"), "+14155552601", t0),
            from(Origin::source("hubspot"), "+14155552605", t1),
        ];
        assert_eq!(
            phone_after(&r, &events),
            ("+14155552602".into(), "form:contact".into())
        );
    }

    #[test]
    fn latest_with_sources_lets_only_listed_sources_overwrite() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = rules("[fields.phone]\nstrategy = \"latest\"\nsources = [\"source:*\"]\n");
        let events = [
            from(Origin::source("hubspot"), "+14155552601", t0),
            from(Origin::form("contact"), "+14155552602", t1),
        ];
        assert_eq!(phone_after(&r, &events).0, "+14155552601");
        let events = [
            from(Origin::source("hubspot"), "+14155552601", t0),
            from(Origin::source("pipedrive"), "+14155552606", t1),
        ];
        assert_eq!(phone_after(&r, &events).0, "+14155552606");
    }

    #[test]
    fn custom_fields_follow_their_rules() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let r = rules("[fields.industry]\ncustom = true\nstrategy = \"first\"\n");
        let mut a = event("Jane", None, t0);
        a.contact.custom.insert("industry".into(), "SaaS".into());
        let mut b = event("Jane", None, t1);
        b.contact.custom.insert("industry".into(), "Retail".into());
        let c = merge_with(&r, None, &a, t0).unwrap();
        let c = merge_with(&r, Some(c), &b, t1).unwrap();
        assert_eq!(c.data.custom["industry"], "SaaS");
    }

    #[test]
    fn rule_problems_are_reported_by_path() {
        let c: crate::config::ContactsConfig = toml::from_str(
            "[fields.emial]\n[fields.email]\n[fields.phone]\nsources = [\"crm:hubspot\", \"form:Bad Name\", \"form:*\"]\n[fields.city]\nstrategy = \"priority\"\n[fields.title]\ncustom = true\n",
        )
        .unwrap();
        let problems = MergeRules::compile(&c).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "contacts.fields.city.strategy",
                "contacts.fields.email",
                "contacts.fields.emial",
                "contacts.fields.phone.sources[0]",
                "contacts.fields.phone.sources[1]",
                "contacts.fields.title.custom",
            ]
        );
        assert!(
            problems[2].1.contains("unknown contact field"),
            "{problems:?}"
        );
        assert!(
            problems[3].1.contains("unknown source kind \"crm\""),
            "{problems:?}"
        );
    }

    #[test]
    fn source_patterns() {
        let p = SourcePattern::parse("form:*").unwrap();
        assert!(p.matches("form:contact") && !p.matches("source:contact"));
        let p = SourcePattern::parse("hubspot").unwrap();
        assert!(p.matches("source:hubspot") && !p.matches("form:hubspot"));
        let p = SourcePattern::parse("*:demo").unwrap();
        assert!(p.matches("form:demo") && p.matches("api:demo") && !p.matches("api:x"));
        assert!(SourcePattern::parse("*").unwrap().matches("system:x"));
        assert!(SourcePattern::parse("form:").is_err());
    }

    #[test]
    fn check_reports_rule_problems_with_lines() {
        let text = "[forms.contact]\n[forms.contact.fields.email]\ntype = \"email\"\n\n[contacts.fields.phone]\nsources = [\"form:*\", \"crm:x\"]\n[contacts.fields.compnay]\nstrategy = \"latest\"\n[contacts.fields.city]\nstrategy = \"newest\"\n";
        let err = crate::config::load_str(text, "t.toml", &|_| None).unwrap_err();
        let rendered: Vec<String> = err.problems.iter().map(|p| p.render("t.toml")).collect();
        assert!(
            rendered
                .iter()
                .any(|r| r.starts_with("t.toml:10:") && r.contains("unknown variant `newest`")),
            "{rendered:?}"
        );
        let text = text.replace("strategy = \"newest\"", "strategy = \"first\"");
        let err = crate::config::load_str(&text, "t.toml", &|_| None).unwrap_err();
        let rendered: Vec<String> = err.problems.iter().map(|p| p.render("t.toml")).collect();
        assert!(
            rendered.iter().any(|r| r.starts_with("t.toml:6:")
                && r.contains("contacts.fields.phone.sources[1]: \"crm:x\": unknown source kind")),
            "{rendered:?}"
        );
        assert!(
            rendered.iter().any(|r| r.starts_with("t.toml:7:")
                && r.contains("contacts.fields.compnay: unknown contact field")),
            "{rendered:?}"
        );
        // A pattern naming a form that does not exist is a warning.
        let text = text
            .replace("\"crm:x\"", "\"form:demo\"")
            .replace("[contacts.fields.compnay]", "[contacts.fields.company]");
        let loaded = crate::config::load_str(&text, "t.toml", &|_| None).unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.path == "contacts.fields.phone.sources[1]"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn domains_and_company_names_are_normalised() {
        assert_eq!(
            normalise_domain("https://WWW.Acme.io/pricing?x=1").as_deref(),
            Some("acme.io")
        );
        assert_eq!(normalise_domain(" acme.io. ").as_deref(), Some("acme.io"));
        assert_eq!(normalise_domain("localhost"), None);
        assert_eq!(normalise_domain("not a domain.com"), None);
        assert_eq!(normalise_company("Acme, Inc.").as_deref(), Some("acme"));
        assert_eq!(
            normalise_company("ACME  GmbH & Co. KG").as_deref(),
            Some("acme")
        );
        assert_eq!(normalise_company("Company").as_deref(), Some("company"));
        assert_eq!(normalise_company(" - ").as_deref(), None);
    }

    fn at_acme(email: &str, first: &str) -> Contact {
        let mut e = event(first, Some("Acme Inc"), Utc::now());
        e.contact.email = Some(EmailAddress::parse(email).unwrap());
        e.contact.domain = Some("acme.io".into());
        merge(None, &e, Utc::now()).unwrap()
    }

    #[test]
    fn secondary_match_needs_exactly_one_candidate_without_conflicts() {
        let jane = at_acme("jane@acme.io", "Jane");
        let bo = at_acme("bo@acme.io", "Bo");
        let other = {
            let mut c = at_acme("x@acme.io", "Xi");
            c.data.company = Some("Acme Labs".into());
            c
        };
        let incoming = ContactData {
            company: Some("ACME".into()),
            website: Some("https://www.acme.io".into()),
            title: Some("CTO".into()),
            ..Default::default()
        };
        let key = secondary_key(&incoming).unwrap();
        assert_eq!(
            key,
            SecondaryKey {
                domain: "acme.io".into(),
                company: "acme".into()
            }
        );
        let candidates = [jane.clone(), other.clone()];
        assert_eq!(
            secondary_match(&key, &incoming, &candidates),
            SecondaryMatch::Unique(0)
        );
        let candidates = [jane.clone(), bo.clone(), other];
        assert_eq!(
            secondary_match(&key, &incoming, &candidates),
            SecondaryMatch::Ambiguous(vec![jane.id, bo.id])
        );
        // A name tells them apart.
        let named = ContactData {
            first_name: Some("bo".into()),
            ..incoming.clone()
        };
        assert_eq!(
            secondary_match(&key, &named, &candidates),
            SecondaryMatch::Unique(1)
        );
        assert_eq!(secondary_match(&key, &incoming, &[]), SecondaryMatch::None);
        // No company or no domain: no secondary key.
        assert!(
            secondary_key(&ContactData {
                company: None,
                ..incoming.clone()
            })
            .is_none()
        );
        assert!(
            secondary_key(&ContactData {
                website: None,
                ..incoming
            })
            .is_none()
        );
    }

    #[test]
    fn an_event_without_email_merges_into_the_matched_contact() {
        let jane = at_acme("jane@acme.io", "Jane");
        let mut e = event(
            "Jane",
            Some("Acme"),
            Utc::now() + chrono::Duration::seconds(1),
        );
        e.contact.email = None;
        e.origin = Origin::source("crm");
        e.contact.title = Some("CTO".into());
        let merged = merge(Some(jane.clone()), &e, Utc::now()).unwrap();
        assert_eq!(merged.id, jane.id);
        assert_eq!(merged.data.email, jane.data.email);
        assert_eq!(merged.data.title.as_deref(), Some("CTO"));
        assert_eq!(merged.provenance["title"].source, "source:crm");
    }
}
