//! Owner routing: who gets a sales-qualified lead, and why.
//!
//! In order:
//! 1. **account-based** (`routing.account_based`, on by default): the owner
//!    most recently assigned a contact of the same company domain wins.
//! 2. **rules** (`[[routing.rules]]`, first match): territory (`country`,
//!    `region` lists) and score tiers (`score_min` ≤ score < `score_max`)
//!    pick a set of owners (`owners` and/or a `group`); without rules every
//!    owner is one round-robin group.
//! 3. within the set, **round-robin** or **weighted** (smooth weighted
//!    round-robin over `weight`) from the rule's ticket, skipping owners at
//!    `capacity` (open assigned leads) or outside their business hours /
//!    on a holiday — the next available owner takes it;
//! 4. nobody available, or no rule matched: the `fallback` owner or queue.
//!
//! The ticket is a per-rule counter in the store, incremented atomically
//! (`LeadStore::kv_increment`), so turns are fair across concurrent leads,
//! restarts and nodes. [`decide`] is pure over a [`RoutingView`] (for
//! `leadrelay simulate`); [`assign`] loads the view and takes the ticket.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use leadrelay_model::Contact;
use serde::Serialize;

use super::config::{
    Method, OwnerConfig, RoutingConfig, RoutingRule, parse_hours, parse_offset, parse_weekday,
};
use crate::store::{Store, StoreResult};

/// What routing reads from the store.
#[derive(Debug, Clone, Default)]
pub struct RoutingView {
    /// The owner of the contact's account (same domain), if any.
    pub account_owner: Option<String>,
    /// Open assigned leads per owner.
    pub open_leads: HashMap<String, u64>,
    /// Tickets taken per counter key ([`counter_key`]).
    pub counters: HashMap<String, u64>,
}

/// The outcome: an owner (or queue) and the reason, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// An owner's name, a queue name, or None (nobody, no fallback).
    pub owner: Option<String>,
    /// True when `owner` names a queue rather than one of the `[[owners]]`.
    pub queue: bool,
    pub reason: String,
}

/// The first step of a decision: a winner, a set of owners to take turns
/// in, or nobody.
enum Plan<'a> {
    Account(String),
    Turn(RuleRef<'a>),
    Nobody(String),
}

/// A matched rule (or the implicit all-owners rule).
struct RuleRef<'a> {
    name: &'a str,
    members: Vec<&'a OwnerConfig>,
    method: Method,
}

/// The store key of a rule's round-robin counter.
pub fn counter_key(rule: &str) -> String {
    format!("routing:turn:{rule}")
}

const ALL_OWNERS: &str = "all owners";

fn plan<'a>(
    owners: &'a [OwnerConfig],
    routing: &'a RoutingConfig,
    contact: &Contact,
    view: &RoutingView,
) -> Plan<'a> {
    if routing.account_based
        && let Some(a) = &view.account_owner
        && owners.iter().any(|o| &o.name == a && o.active)
    {
        return Plan::Account(a.clone());
    }
    if routing.rules.is_empty() {
        let members: Vec<&OwnerConfig> = owners.iter().filter(|o| o.active).collect();
        if members.is_empty() {
            return Plan::Nobody("no [[owners]] configured".into());
        }
        return Plan::Turn(RuleRef {
            name: ALL_OWNERS,
            members,
            method: Method::RoundRobin,
        });
    }
    for rule in &routing.rules {
        if !matches(rule, contact) {
            continue;
        }
        let mut members: Vec<&OwnerConfig> = Vec::new();
        let named = rule
            .owners
            .iter()
            .filter_map(|n| owners.iter().find(|o| &o.name == n));
        let grouped = owners
            .iter()
            .filter(|o| rule.group.as_ref().is_some_and(|g| o.groups.contains(g)));
        for o in named.chain(grouped) {
            if o.active && !members.iter().any(|m| m.name == o.name) {
                members.push(o);
            }
        }
        if members.is_empty() {
            return Plan::Nobody(format!(
                "rule {:?} matched but has no active owner",
                rule.name
            ));
        }
        return Plan::Turn(RuleRef {
            name: &rule.name,
            members,
            method: rule.method,
        });
    }
    Plan::Nobody("no routing rule matched".into())
}

fn eq_any(list: &[String], value: Option<&str>) -> bool {
    let Some(v) = value.map(|v| v.trim().to_lowercase()) else {
        return false;
    };
    list.iter().any(|x| x.trim().to_lowercase() == v)
}

fn matches(rule: &RoutingRule, contact: &Contact) -> bool {
    let d = &contact.data;
    (rule.country.is_empty() || eq_any(&rule.country, d.country.as_deref()))
        && (rule.region.is_empty() || eq_any(&rule.region, d.region.as_deref()))
        && rule.score_min.is_none_or(|m| contact.lead.score >= m)
        && rule.score_max.is_none_or(|m| contact.lead.score < m)
}

/// The order turns go in: members in order (round-robin), or each member
/// `weight` times, interleaved (smooth weighted round-robin).
fn turn_order<'a>(rule: &RuleRef<'a>) -> Vec<&'a OwnerConfig> {
    if rule.method == Method::RoundRobin {
        return rule.members.clone();
    }
    let total: i64 = rule.members.iter().map(|o| o.weight.max(1) as i64).sum();
    let mut current = vec![0i64; rule.members.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, o) in current.iter_mut().zip(&rule.members) {
            *c += o.weight.max(1) as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
            .unwrap_or((0, &0));
        current[best] -= total;
        order.push(rule.members[best]);
    }
    order
}

/// `now` on the owner's clock: their `time_zone`, else `utc_offset`.
fn local_time(owner: &OwnerConfig, now: DateTime<Utc>) -> chrono::NaiveDateTime {
    if let Some(tz) = owner
        .time_zone
        .as_deref()
        .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
    {
        return now.with_timezone(&tz).naive_local();
    }
    let offset = parse_offset(&owner.utc_offset).unwrap_or(0);
    now.naive_utc() + Duration::seconds(offset as i64)
}

/// Whether `owner` can take a lead at `now`; else why not.
pub fn availability(owner: &OwnerConfig, open: u64, now: DateTime<Utc>) -> Result<(), String> {
    if let Some(cap) = owner.capacity
        && open >= cap
    {
        return Err(format!("{} at capacity ({open}/{cap})", owner.name));
    }
    let Some((start, end)) = owner.hours.as_deref().and_then(parse_hours) else {
        return Ok(());
    };
    let local = local_time(owner, now);
    let day = local.date();
    if owner
        .holidays
        .iter()
        .any(|h| NaiveDate::parse_from_str(h, "%Y-%m-%d").is_ok_and(|d| d == day))
    {
        return Err(format!("{} on holiday ({day})", owner.name));
    }
    if !owner
        .days
        .iter()
        .filter_map(|d| parse_weekday(d))
        .any(|w| w == day.weekday())
    {
        return Err(format!("{} off on {}", owner.name, day.weekday()));
    }
    let t = local.time();
    if t < start || t >= end {
        return Err(format!(
            "{} outside business hours ({} local)",
            owner.name,
            t.format("%H:%M")
        ));
    }
    Ok(())
}

fn pick(
    rule: &RuleRef<'_>,
    ticket: u64,
    view: &RoutingView,
    now: DateTime<Utc>,
) -> Result<Decision, Vec<String>> {
    let order = turn_order(rule);
    let start = (ticket % order.len() as u64) as usize;
    let mut skipped = Vec::new();
    let mut tried = std::collections::HashSet::new();
    for step in 0..order.len() {
        let o = order[(start + step) % order.len()];
        if !tried.insert(o.name.as_str()) {
            continue;
        }
        let open = view.open_leads.get(&o.name).copied().unwrap_or(0);
        match availability(o, open, now) {
            Ok(()) => {
                let how = match rule.method {
                    Method::RoundRobin => "round-robin",
                    Method::Weighted => "weighted",
                };
                let mut reason = format!("{how} in rule {:?} (turn {ticket})", rule.name);
                if !skipped.is_empty() {
                    reason.push_str(&format!("; skipped: {}", skipped.join(", ")));
                }
                return Ok(Decision {
                    owner: Some(o.name.clone()),
                    queue: false,
                    reason,
                });
            }
            Err(why) => skipped.push(why),
        }
    }
    Err(skipped)
}

fn fallback(owners: &[OwnerConfig], routing: &RoutingConfig, why: String) -> Decision {
    match &routing.fallback {
        Some(f) => Decision {
            owner: Some(f.clone()),
            queue: !owners.iter().any(|o| &o.name == f),
            reason: format!("{why}; fallback {f:?}"),
        },
        None => Decision {
            owner: None,
            queue: false,
            reason: format!("{why}; no fallback configured"),
        },
    }
}

fn finish(
    owners: &[OwnerConfig],
    routing: &RoutingConfig,
    plan: Plan<'_>,
    ticket: u64,
    view: &RoutingView,
    now: DateTime<Utc>,
) -> Decision {
    match plan {
        Plan::Account(a) => Decision {
            owner: Some(a.clone()),
            queue: false,
            reason: format!("account owner: {a} already owns this company"),
        },
        Plan::Nobody(why) => fallback(owners, routing, why),
        Plan::Turn(rule) => match pick(&rule, ticket, view, now) {
            Ok(d) => d,
            Err(skipped) => fallback(
                owners,
                routing,
                format!(
                    "nobody available in rule {:?} ({})",
                    rule.name,
                    skipped.join(", ")
                ),
            ),
        },
    }
}

/// The decision for `contact` at `now` given `view`, taking the turn the
/// rule's counter stands at (pure: nothing is incremented).
pub fn decide(
    owners: &[OwnerConfig],
    routing: &RoutingConfig,
    contact: &Contact,
    view: &RoutingView,
    now: DateTime<Utc>,
) -> Decision {
    let p = plan(owners, routing, contact, view);
    let ticket = match &p {
        Plan::Turn(r) => view
            .counters
            .get(&counter_key(r.name))
            .copied()
            .unwrap_or(0),
        _ => 0,
    };
    finish(owners, routing, p, ticket, view, now)
}

/// Loads what routing needs for `contact` (account owner, open leads, the
/// counters of every rule).
pub async fn load_view(
    store: &dyn Store,
    routing: &RoutingConfig,
    contact: &Contact,
) -> StoreResult<RoutingView> {
    let account_owner = match (&contact.data.domain, routing.account_based) {
        (Some(d), true) => store.account_owner(d, contact.id).await?,
        _ => None,
    };
    let open_leads = store.open_leads().await?.into_iter().collect();
    let mut counters = HashMap::new();
    let names = routing
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .chain([ALL_OWNERS]);
    for n in names {
        let k = counter_key(n);
        if let Some(v) = store.kv_get(&k).await? {
            counters.insert(k, v.parse().unwrap_or(0));
        }
    }
    Ok(RoutingView {
        account_owner,
        open_leads,
        counters,
    })
}

/// Like [`load_view`], read without opening the store for writing (nothing
/// created, migrated or written): for `leadrelay simulate`.
pub async fn peek_view(
    url: &str,
    options: &crate::store::OpenOptions,
    routing: &RoutingConfig,
    contact: &Contact,
) -> StoreResult<RoutingView> {
    use crate::store::peek_rows;
    let text = |row: &Vec<Option<String>>, i: usize| row.get(i).cloned().flatten();
    let account_owner = match (&contact.data.domain, routing.account_based) {
        (Some(d), true) => peek_rows(
            url,
            options,
            "SELECT lo.owner, CAST(lo.contact_id AS TEXT) FROM lead_owners lo \
             JOIN contacts c ON c.id = lo.contact_id \
             WHERE lo.domain = $1 ORDER BY lo.assigned_at DESC LIMIT 2",
            vec![d.trim().to_lowercase()],
        )
        .await?
        .iter()
        .find(|r| text(r, 1) != Some(contact.id.to_string()))
        .and_then(|r| text(r, 0)),
        _ => None,
    };
    let open_leads = peek_rows(
        url,
        options,
        "SELECT lo.owner, CAST(COUNT(*) AS TEXT) FROM lead_owners lo \
         JOIN contacts c ON c.id = lo.contact_id WHERE lo.open = TRUE GROUP BY lo.owner",
        Vec::new(),
    )
    .await?
    .iter()
    .filter_map(|r| Some((text(r, 0)?, text(r, 1)?.parse().ok()?)))
    .collect();
    let counters = peek_rows(
        url,
        options,
        "SELECT key, value FROM kv WHERE key LIKE $1",
        vec![format!("{}%", counter_key(""))],
    )
    .await?
    .iter()
    .filter_map(|r| Some((text(r, 0)?, text(r, 1)?.parse().ok()?)))
    .collect();
    Ok(RoutingView {
        account_owner,
        open_leads,
        counters,
    })
}

/// Decides for real: like [`decide`], but takes a fresh turn from the
/// rule's counter (atomic, shared by all nodes).
pub async fn assign(
    store: &dyn Store,
    owners: &[OwnerConfig],
    routing: &RoutingConfig,
    contact: &Contact,
    now: DateTime<Utc>,
) -> StoreResult<Decision> {
    let account_owner = match (&contact.data.domain, routing.account_based) {
        (Some(d), true) => store.account_owner(d, contact.id).await?,
        _ => None,
    };
    let view = RoutingView {
        account_owner,
        open_leads: store.open_leads().await?.into_iter().collect(),
        counters: HashMap::new(),
    };
    let p = plan(owners, routing, contact, &view);
    let ticket = match &p {
        Plan::Turn(r) => store.kv_increment(&counter_key(r.name)).await? - 1,
        _ => 0,
    };
    Ok(finish(owners, routing, p, ticket, &view, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use leadrelay_model::ContactData;

    fn cfg(toml_text: &str) -> (Vec<OwnerConfig>, RoutingConfig) {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default)]
            owners: Vec<OwnerConfig>,
            #[serde(default)]
            routing: RoutingConfig,
        }
        let t: T = toml::from_str(toml_text).unwrap();
        (t.owners, t.routing)
    }

    fn contact(country: &str, region: Option<&str>, score: f64) -> Contact {
        let now = Utc::now();
        let mut c = Contact {
            id: leadrelay_model::new_id(),
            data: ContactData {
                country: Some(country.into()),
                region: region.map(String::from),
                domain: Some("acme.io".into()),
                ..Default::default()
            },
            provenance: Default::default(),
            consent: Default::default(),
            lead: Default::default(),
            created_at: now,
            updated_at: now,
        };
        c.lead.score = score;
        c
    }

    const TEAM: &str = r#"
        [[owners]]
        name = "ana"
        groups = ["emea"]
        [[owners]]
        name = "ben"
        groups = ["emea"]
        weight = 3
        [[owners]]
        name = "cho"
        groups = ["us", "enterprise"]
        capacity = 2
        [[owners]]
        name = "dan"
        groups = ["us"]
        time_zone = "America/New_York"
        hours = "09:00-17:00"
        holidays = ["2026-12-25"]
        [routing]
        fallback = "sales-queue"
        [[routing.rules]]
        name = "enterprise"
        score_min = 90
        group = "enterprise"
        [[routing.rules]]
        name = "emea"
        country = ["DE", "fr"]
        group = "emea"
        [[routing.rules]]
        name = "emea-weighted"
        country = ["ES"]
        group = "emea"
        method = "weighted"
        [[routing.rules]]
        name = "us-west"
        country = ["US"]
        region = ["CA", "WA"]
        owners = ["cho", "dan"]
    "#;

    fn tuesday_noon_ny() -> DateTime<Utc> {
        // 2026-11-24 is a Tuesday; 17:00 UTC = 12:00 at -05:00.
        Utc.with_ymd_and_hms(2026, 11, 24, 17, 0, 0).unwrap()
    }

    fn owner(d: &Decision) -> &str {
        d.owner.as_deref().unwrap_or("-")
    }

    #[test]
    fn territory_rule_round_robin_turns() {
        let (o, r) = cfg(TEAM);
        let c = contact("de", None, 80.0);
        let mut view = RoutingView::default();
        let mut got = Vec::new();
        for turn in 0..4 {
            view.counters.insert(counter_key("emea"), turn);
            let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
            assert!(
                d.reason.contains("round-robin in rule \"emea\""),
                "{}",
                d.reason
            );
            got.push(owner(&d).to_string());
        }
        assert_eq!(got, ["ana", "ben", "ana", "ben"]);
    }

    #[test]
    fn weighted_rule_gives_shares_by_weight() {
        let (o, r) = cfg(TEAM);
        let c = contact("ES", None, 80.0);
        let mut view = RoutingView::default();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for turn in 0..40 {
            view.counters.insert(counter_key("emea-weighted"), turn);
            let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
            *counts.entry(owner(&d).to_string()).or_default() += 1;
        }
        assert_eq!(counts["ana"], 10);
        assert_eq!(counts["ben"], 30);
    }

    #[test]
    fn score_tier_wins_over_territory_and_capacity_skips() {
        let (o, r) = cfg(TEAM);
        let c = contact("DE", None, 95.0);
        let mut view = RoutingView::default();
        let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
        assert_eq!(owner(&d), "cho");
        view.open_leads.insert("cho".into(), 2);
        let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
        assert_eq!(owner(&d), "sales-queue");
        assert!(d.queue);
        assert!(d.reason.contains("cho at capacity (2/2)"), "{}", d.reason);
    }

    #[test]
    fn business_hours_holidays_and_next_available() {
        let (o, r) = cfg(TEAM);
        let c = contact("US", Some("ca"), 50.0);
        let mut view = RoutingView::default();
        view.counters.insert(counter_key("us-west"), 1); // dan's turn
        let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
        assert_eq!(owner(&d), "dan");
        // 03:00 in New York: dan is outside hours, cho takes it.
        let night = Utc.with_ymd_and_hms(2026, 11, 24, 8, 0, 0).unwrap();
        let d = decide(&o, &r, &c, &view, night);
        assert_eq!(owner(&d), "cho");
        assert!(
            d.reason
                .contains("dan outside business hours (03:00 local)"),
            "{}",
            d.reason
        );
        let xmas = Utc.with_ymd_and_hms(2026, 12, 25, 17, 0, 0).unwrap();
        let d = decide(&o, &r, &c, &view, xmas);
        assert_eq!(owner(&d), "cho");
        assert!(d.reason.contains("dan on holiday"), "{}", d.reason);
        let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 17, 0, 0).unwrap();
        let d = decide(&o, &r, &c, &view, saturday);
        assert!(d.reason.contains("dan off on Sat"), "{}", d.reason);
        // Daylight saving: 08:30 EDT in July (12:30 UTC) is before hours,
        // 13:30 UTC is 09:30 local.
        let july = Utc.with_ymd_and_hms(2026, 7, 14, 12, 30, 0).unwrap();
        let d = decide(&o, &r, &c, &view, july);
        assert!(
            d.reason
                .contains("dan outside business hours (08:30 local)"),
            "{}",
            d.reason
        );
        let july = Utc.with_ymd_and_hms(2026, 7, 14, 13, 30, 0).unwrap();
        assert_eq!(owner(&decide(&o, &r, &c, &view, july)), "dan");
        // A fixed offset ignores daylight saving.
        let mut fixed = o.clone();
        fixed[3].time_zone = None;
        fixed[3].utc_offset = "-05:00".into();
        let d = decide(&fixed, &r, &c, &view, july);
        assert!(
            d.reason
                .contains("dan outside business hours (08:30 local)"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn account_owner_wins_and_unmatched_goes_to_fallback() {
        let (o, r) = cfg(TEAM);
        let c = contact("DE", None, 50.0);
        let view = RoutingView {
            account_owner: Some("dan".into()),
            ..Default::default()
        };
        let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
        assert_eq!(owner(&d), "dan");
        assert!(d.reason.starts_with("account owner"));
        let d = decide(
            &o,
            &r,
            &contact("BR", None, 10.0),
            &RoutingView::default(),
            tuesday_noon_ny(),
        );
        assert_eq!(owner(&d), "sales-queue");
        assert!(d.reason.contains("no routing rule matched"));
        // An account owner no longer in [[owners]] does not win.
        let view = RoutingView {
            account_owner: Some("gone".into()),
            ..Default::default()
        };
        let d = decide(&o, &r, &c, &view, tuesday_noon_ny());
        assert_ne!(owner(&d), "gone");
    }

    #[test]
    fn without_rules_all_owners_take_turns() {
        let (o, r) = cfg(r#"
            [[owners]]
            name = "a"
            [[owners]]
            name = "b"
            active = false
            [[owners]]
            name = "c"
            "#);
        let c = contact("DE", None, 80.0);
        let mut view = RoutingView::default();
        let mut got = Vec::new();
        for turn in 0..3 {
            view.counters.insert(counter_key(ALL_OWNERS), turn);
            got.push(owner(&decide(&o, &r, &c, &view, Utc::now())).to_string());
        }
        assert_eq!(got, ["a", "c", "a"]);
        let d = decide(&[], &r, &c, &view, Utc::now());
        assert_eq!(d.owner, None);
        assert!(d.reason.contains("no fallback"));
    }
}
