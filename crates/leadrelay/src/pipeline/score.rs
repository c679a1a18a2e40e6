//! Lead scoring: configured rules over contact fields and events, each
//! contribution decaying with its own age, and the stage the score earns.
//!
//! Two kinds of rule:
//! - **field rules** test the golden record (`title contains "vp"`,
//!   `company_size gte 200`, `country in ["US", "DE"]`). They do not decay
//!   unless they set a `half_life`; then the age is that of the field's
//!   current value (its provenance time).
//! - **event rules** give points per matching event (`page.visited`,
//!   `reply.received`, `meeting.booked` …), optionally only when a field of
//!   the event's data matches, optionally capped (`max`), decaying with the
//!   global or their own half-life from the time the event happened.
//!
//! Storage choice: each event-rule hit is kept on the contact with its time
//! ([`ScoreHit`], the newest `max_hits`), so the score at any moment is
//! recomputed from the hits and the record — no event history is read at
//! ingest, and decay is exact. [`evaluate`] computes the same score from an
//! explicit list of events instead (for `leadrelay simulate`).
//!
//! Stages move forward only (lead → mql → sql) as the score crosses the
//! `mql` and `sql` thresholds; a decaying score never demotes anyone. A
//! `lead.disqualified` event sets `disqualified` and clears the hits; the
//! contact qualifies again only when new points carry it across `sql`.
//!
//! Everything here is pure: no I/O, `now` is a parameter.

use chrono::{DateTime, Utc};
use leadrelay_model::{Contact, ContactData, Event, ScoreHit, Stage};
use serde::Serialize;
use serde_json::Value;

use super::config::{Decay, ScoreRule, ScoringConfig};

/// The event that disqualifies a contact.
pub const DISQUALIFIED: &str = "lead.disqualified";

/// A score, the stage it earns and what made it up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreResult {
    pub score: f64,
    pub stage: Stage,
    /// Per rule that gave points, its (decayed, capped) points, in rule order.
    pub contributions: Vec<Contribution>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    pub rule: String,
    pub points: f64,
}

/// What one event did to a contact's score and stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub before: Stage,
    pub after: Stage,
    pub score: f64,
    /// The contact entered SQL with this event.
    pub crossed_sql: bool,
    /// …after having been disqualified.
    pub requalified: bool,
}

/// The score of `contact` at `now` from `events` (their event-rule hits) and
/// its fields, and the stage that earns starting from the contact's stored
/// stage. For `leadrelay simulate`; ingest uses [`apply`].
pub fn evaluate(
    cfg: &ScoringConfig,
    contact: &Contact,
    events: &[Event],
    now: DateTime<Utc>,
) -> ScoreResult {
    let hits: Vec<ScoreHit> = events.iter().flat_map(|e| hits_for(cfg, e, now)).collect();
    let (score, contributions) = compute(cfg, contact, &hits, now);
    ScoreResult {
        score,
        stage: advance(cfg, contact.lead.stage, score),
        contributions,
    }
}

/// The score of `contact` at `now` from its stored hits.
pub fn current(cfg: &ScoringConfig, contact: &Contact, now: DateTime<Utc>) -> ScoreResult {
    let (score, contributions) = compute(cfg, contact, &contact.lead.hits, now);
    ScoreResult {
        score,
        stage: advance(cfg, contact.lead.stage, score),
        contributions,
    }
}

/// Applies one event (already merged into `contact`'s fields) to its score
/// and stage, as ingest does in the transaction that stores the event.
pub fn apply(
    cfg: &ScoringConfig,
    contact: &mut Contact,
    event: &Event,
    now: DateTime<Utc>,
) -> Change {
    let before = contact.lead.stage;
    let before_score = compute(cfg, contact, &contact.lead.hits, now).0;
    let lead = &mut contact.lead;
    if event.event_type.as_str() == DISQUALIFIED {
        lead.stage = Stage::Disqualified;
        lead.disqualified_at = Some(event.occurred_at.min(now));
        lead.hits.clear();
    } else {
        lead.hits.extend(hits_for(cfg, event, now));
        lead.hits.sort_by_key(|h| h.at);
        let excess = lead.hits.len().saturating_sub(cfg.max_hits);
        lead.hits.drain(..excess);
    }
    let score = compute(cfg, contact, &contact.lead.hits, now).0;
    let lead = &mut contact.lead;
    let after = match lead.stage {
        Stage::Disqualified if event.event_type.as_str() != DISQUALIFIED => {
            if before_score < cfg.sql && score >= cfg.sql {
                Stage::Sql
            } else {
                Stage::Disqualified
            }
        }
        Stage::Disqualified => Stage::Disqualified,
        s => advance(cfg, s, score),
    };
    lead.score = round(score);
    lead.scored_at = Some(now);
    lead.stage = after;
    let crossed_sql = after == Stage::Sql && before != Stage::Sql;
    let requalified = crossed_sql && before == Stage::Disqualified;
    if requalified {
        lead.requalified += 1;
    }
    Change {
        before,
        after,
        score: lead.score,
        crossed_sql,
        requalified,
    }
}

/// The stage `score` earns from `stage` (forward only; disqualified stays).
pub fn advance(cfg: &ScoringConfig, stage: Stage, score: f64) -> Stage {
    if stage == Stage::Disqualified {
        return stage;
    }
    let earned = if score >= cfg.sql {
        Stage::Sql
    } else if score >= cfg.mql {
        Stage::Mql
    } else {
        Stage::Lead
    };
    if earned.rank() > stage.rank() {
        earned
    } else {
        stage
    }
}

/// The event-rule hits `event` earns (at its time, never in the future).
pub fn hits_for(cfg: &ScoringConfig, event: &Event, now: DateTime<Utc>) -> Vec<ScoreHit> {
    let t = event.event_type.as_str();
    cfg.rules
        .iter()
        .filter(|r| r.event.as_deref() == Some(t))
        .filter(|r| {
            r.field.as_deref().is_none_or(|f| {
                let v = event
                    .data
                    .get(f)
                    .cloned()
                    .or_else(|| field_value(&event.contact, f));
                condition_holds(r, v.as_ref())
            })
        })
        .map(|r| ScoreHit {
            rule: r.name.clone(),
            points: r.points,
            at: event.occurred_at.min(now),
        })
        .collect()
}

fn compute(
    cfg: &ScoringConfig,
    contact: &Contact,
    hits: &[ScoreHit],
    now: DateTime<Utc>,
) -> (f64, Vec<Contribution>) {
    let mut contributions = Vec::new();
    let mut fields: Option<serde_json::Map<String, Value>> = None;
    for rule in &cfg.rules {
        let points = if rule.event.is_some() {
            let decay = rule.half_life.unwrap_or(cfg.half_life);
            hits.iter()
                .filter(|h| h.rule == rule.name)
                .map(|h| h.points * factor(decay, h.at, now))
                .sum()
        } else {
            let field = rule.field.as_deref().unwrap_or_default();
            let value = fields
                .get_or_insert_with(|| contact.data.to_flat_map())
                .get(field);
            if !condition_holds(rule, value) {
                continue;
            }
            let since = contact
                .provenance
                .get(field)
                .map(|p| p.at)
                .unwrap_or(contact.created_at);
            rule.points * factor(rule.half_life.unwrap_or(Decay::Off), since, now)
        };
        let points = cap(points, rule.max);
        if points.abs() >= 0.005 {
            contributions.push(Contribution {
                rule: rule.name.clone(),
                points: round(points),
            });
        }
    }
    let score = contributions.iter().map(|c| c.points).sum::<f64>();
    (round(score), contributions)
}

fn cap(points: f64, max: Option<f64>) -> f64 {
    match max {
        Some(m) => points.clamp(-m, m),
        None => points,
    }
}

/// How much of a contribution earned at `at` is left at `now`.
fn factor(decay: Decay, at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    match decay {
        Decay::Off => 1.0,
        Decay::HalfLife(h) => {
            let age = (now - at).num_milliseconds().max(0) as f64;
            0.5f64.powf(age / h.as_millis().max(1) as f64)
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A contact field by name (standard or custom).
fn field_value(data: &ContactData, field: &str) -> Option<Value> {
    data.to_flat_map().remove(field)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace([',', '_'], "").parse().ok(),
        _ => None,
    }
}

/// Every condition the rule sets holds for `value` (a rule with none: always).
fn condition_holds(rule: &ScoreRule, value: Option<&Value>) -> bool {
    let value = value.filter(|v| !v.is_null() && text(v).is_none_or(|t| !t.is_empty()));
    if let Some(want) = rule.present
        && want != value.is_some()
    {
        return false;
    }
    let t = value.and_then(text);
    if let Some(e) = &rule.equals
        && t.as_deref() != Some(e.trim().to_lowercase().as_str())
    {
        return false;
    }
    if !rule.contains.is_empty()
        && !t
            .as_deref()
            .is_some_and(|t| rule.contains.iter().any(|n| t.contains(&n.to_lowercase())))
    {
        return false;
    }
    if !rule.one_of.is_empty()
        && !t.as_deref().is_some_and(|t| {
            rule.one_of
                .iter()
                .any(|n| n.trim().to_lowercase().as_str() == t)
        })
    {
        return false;
    }
    let n = value.and_then(number);
    if let Some(min) = rule.gte
        && !n.is_some_and(|n| n >= min)
    {
        return false;
    }
    if let Some(max) = rule.lte
        && !n.is_some_and(|n| n <= max)
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use leadrelay_model::{EmailAddress, EventType, FieldProvenance, Origin};

    fn rules() -> ScoringConfig {
        let cfg: ScoringConfig = toml::from_str(
            r#"
            mql = 30
            sql = 75
            half_life = "10d"
            [[rules]]
            name = "senior"
            field = "title"
            contains = ["vp", "director"]
            points = 20
            [[rules]]
            name = "big"
            field = "company_size"
            gte = 200
            points = 15
            [[rules]]
            name = "country"
            field = "country"
            in = ["US", "de"]
            points = 10
            [[rules]]
            name = "visits"
            event = "page.visited"
            points = 5
            max = 15
            [[rules]]
            name = "pricing"
            event = "page.visited"
            field = "url"
            contains = ["/pricing"]
            points = 10
            [[rules]]
            name = "meeting"
            event = "meeting.booked"
            points = 40
            half_life = "off"
            [[rules]]
            name = "bounce"
            event = "email.bounced"
            points = -25
            "#,
        )
        .unwrap();
        cfg
    }

    fn contact(now: DateTime<Utc>) -> Contact {
        let mut data = ContactData {
            email: Some(EmailAddress::parse("jane@acme.io").unwrap()),
            title: Some("VP Sales".into()),
            country: Some("us".into()),
            ..Default::default()
        };
        data.custom.insert("company_size".into(), "250".into());
        Contact {
            id: leadrelay_model::new_id(),
            data,
            provenance: Default::default(),
            consent: Default::default(),
            lead: Default::default(),
            created_at: now,
            updated_at: now,
        }
    }

    fn event(t: &str, at: DateTime<Utc>, url: Option<&str>) -> Event {
        let mut e = Event {
            id: leadrelay_model::new_id(),
            event_type: EventType::parse(t).unwrap(),
            origin: Origin::form("contact"),
            received_at: at,
            occurred_at: at,
            contact: Default::default(),
            contact_id: None,
            data: Default::default(),
            attribution: Default::default(),
            consent: vec![],
            ip_hash: None,
            raw: Default::default(),
            spam: false,
            idempotency_key: None,
            external_id: None,
            vendor_refs: vec![],
            changes: vec![],
            playbooks: vec![],
        };
        if let Some(u) = url {
            e.data.insert("url".into(), u.into());
        }
        e
    }

    fn points(r: &ScoreResult, rule: &str) -> Option<f64> {
        r.contributions
            .iter()
            .find(|c| c.rule == rule)
            .map(|c| c.points)
    }

    #[test]
    fn field_rules_each_condition_kind() {
        let now = Utc::now();
        let cfg = rules();
        let mut c = contact(now);
        let r = evaluate(&cfg, &c, &[], now);
        assert_eq!(points(&r, "senior"), Some(20.0));
        assert_eq!(points(&r, "big"), Some(15.0));
        assert_eq!(points(&r, "country"), Some(10.0), "case-insensitive in");
        assert_eq!(r.score, 45.0);
        assert_eq!(r.stage, Stage::Mql);
        c.data.title = Some("Engineer".into());
        c.data.custom.insert("company_size".into(), 199.into());
        c.data.country = Some("FR".into());
        let r = evaluate(&cfg, &c, &[], now);
        assert_eq!(r.score, 0.0);
        assert_eq!(r.stage, Stage::Lead);
        assert!(r.contributions.is_empty());
    }

    #[test]
    fn event_rules_cap_filter_and_decay() {
        let now = Utc::now();
        let cfg = rules();
        let mut c = contact(now);
        c.data = ContactData::default();
        let visits: Vec<Event> = (0..5).map(|_| event("page.visited", now, None)).collect();
        let r = evaluate(&cfg, &c, &visits, now);
        assert_eq!(points(&r, "visits"), Some(15.0), "capped at max");
        assert_eq!(points(&r, "pricing"), None);
        let r = evaluate(
            &cfg,
            &c,
            &[event("page.visited", now, Some("https://x.io/pricing"))],
            now,
        );
        assert_eq!(points(&r, "pricing"), Some(10.0));
        assert_eq!(r.score, 15.0);
        // One half-life later half the points are left; "off" keeps all.
        let old = now - Duration::days(10);
        let r = evaluate(
            &cfg,
            &c,
            &[
                event("page.visited", old, Some("/pricing")),
                event("meeting.booked", old, None),
            ],
            now,
        );
        assert_eq!(points(&r, "visits"), Some(2.5));
        assert_eq!(points(&r, "pricing"), Some(5.0));
        assert_eq!(points(&r, "meeting"), Some(40.0));
        let r = evaluate(&cfg, &c, &[event("email.bounced", now, None)], now);
        assert_eq!(r.score, -25.0, "negative rules subtract");
    }

    #[test]
    fn field_rule_with_half_life_decays_from_provenance() {
        let now = Utc::now();
        let mut cfg = rules();
        cfg.rules[0].half_life = Some(Decay::HalfLife(std::time::Duration::from_secs(86_400)));
        let mut c = contact(now);
        c.provenance.insert(
            "title".into(),
            FieldProvenance {
                source: "form:contact".into(),
                event_id: leadrelay_model::new_id(),
                at: now - Duration::days(2),
            },
        );
        let r = evaluate(&cfg, &c, &[], now);
        assert_eq!(points(&r, "senior"), Some(5.0));
    }

    #[test]
    fn apply_crosses_sql_once_and_requalifies_after_disqualification() {
        let now = Utc::now();
        let cfg = rules();
        let mut c = contact(now);
        let ch = apply(&cfg, &mut c, &event("form.submitted", now, None), now);
        assert_eq!((ch.before, ch.after), (Stage::Lead, Stage::Mql));
        assert!(!ch.crossed_sql);
        let ch = apply(&cfg, &mut c, &event("meeting.booked", now, None), now);
        assert_eq!(ch.after, Stage::Sql);
        assert!(ch.crossed_sql && !ch.requalified);
        assert_eq!(c.lead.score, 85.0);
        let ch = apply(&cfg, &mut c, &event("page.visited", now, None), now);
        assert!(!ch.crossed_sql, "already SQL");
        // Decay never demotes.
        let later = now + Duration::days(100);
        let ch = apply(&cfg, &mut c, &event("form.submitted", later, None), later);
        assert_eq!(ch.after, Stage::Sql);

        let ch = apply(&cfg, &mut c, &event(DISQUALIFIED, later, None), later);
        assert_eq!(ch.after, Stage::Disqualified);
        assert!(c.lead.hits.is_empty());
        assert_eq!(c.lead.score, 45.0, "field rules still count");
        let ch = apply(&cfg, &mut c, &event("page.visited", later, None), later);
        assert_eq!(ch.after, Stage::Disqualified, "50 < 75");
        let ch = apply(&cfg, &mut c, &event("meeting.booked", later, None), later);
        assert!(ch.crossed_sql && ch.requalified);
        assert_eq!(c.lead.requalified, 1);
    }

    #[test]
    fn hits_are_bounded_and_never_in_the_future() {
        let now = Utc::now();
        let mut cfg = rules();
        cfg.max_hits = 3;
        let mut c = contact(now);
        for _ in 0..10 {
            apply(
                &cfg,
                &mut c,
                &event("page.visited", now + Duration::hours(1), None),
                now,
            );
        }
        assert_eq!(c.lead.hits.len(), 3);
        assert!(c.lead.hits.iter().all(|h| h.at == now));
    }
}
