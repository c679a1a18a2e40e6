//! `[scoring]`, `[[owners]]`, `[routing]` and `[handoff]`: the sales
//! pipeline's configuration, and its semantic checks (`leadrelay check`).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{NaiveDate, NaiveTime, Weekday};
use leadrelay_model::EventType;
use serde::{Deserialize, Deserializer};

use crate::config::{HumanDuration, Problem};

/// A decay setting: a half-life (`"30d"`) or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decay {
    Off,
    HalfLife(Duration),
}

impl<'de> Deserialize<'de> for Decay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t == "off" || t == "none" {
            return Ok(Decay::Off);
        }
        match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() => Ok(Decay::HalfLife(d)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid half-life {s:?}: write a duration such as \"30d\", or \"off\""
            ))),
        }
    }
}

/// `[scoring]`. Scoring (and with it the handoff) is on when at least one
/// rule is configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ScoringConfig {
    /// Score at which a lead becomes a marketing-qualified lead.
    pub mql: f64,
    /// Score at which a lead becomes sales-qualified (the handoff trigger).
    pub sql: f64,
    /// Default half-life of event-rule points (`"off"`: no decay). Field
    /// rules do not decay unless they set their own `half_life`.
    pub half_life: Decay,
    /// Event-rule points kept per contact (oldest dropped first).
    pub max_hits: usize,
    pub rules: Vec<ScoreRule>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            mql: 40.0,
            sql: 75.0,
            half_life: Decay::HalfLife(Duration::from_secs(30 * 86_400)),
            max_hits: 200,
            rules: Vec::new(),
        }
    }
}

impl ScoringConfig {
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }
}

/// `[[scoring.rules]]`: a field rule (`field` + a condition, over the
/// contact) or an event rule (`event`, optionally with a condition on a
/// field of the event's data).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ScoreRule {
    pub name: String,
    /// Points given (negative to subtract).
    pub points: f64,
    /// An event type (`page.visited`, `reply.received`, `meeting.booked` …);
    /// absent: a field rule.
    pub event: Option<String>,
    /// The field tested: a contact field (field rules) or an event data
    /// field, then contact field (event rules).
    pub field: Option<String>,
    /// Equal to (case-insensitive).
    pub equals: Option<String>,
    /// Contains any of these (case-insensitive).
    pub contains: Vec<String>,
    /// One of these (case-insensitive).
    #[serde(rename = "in")]
    pub one_of: Vec<String>,
    /// A number at least this.
    pub gte: Option<f64>,
    /// A number at most this.
    pub lte: Option<f64>,
    /// Present (true) or absent (false).
    pub present: Option<bool>,
    /// Most points this rule gives in total (after decay).
    pub max: Option<f64>,
    /// This rule's half-life, overriding `scoring.half_life`.
    pub half_life: Option<Decay>,
}

impl ScoreRule {
    pub fn has_condition(&self) -> bool {
        self.equals.is_some()
            || !self.contains.is_empty()
            || !self.one_of.is_empty()
            || self.gte.is_some()
            || self.lte.is_some()
            || self.present.is_some()
    }
}

/// `[[owners]]`: a person leads can be assigned to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct OwnerConfig {
    pub name: String,
    pub email: Option<String>,
    pub slack_id: Option<String>,
    pub hubspot_owner_id: Option<String>,
    pub pipedrive_user_id: Option<String>,
    pub salesforce_user_id: Option<String>,
    /// Share in weighted groups.
    pub weight: u32,
    /// Most open (assigned SQL) leads at once.
    pub capacity: Option<u64>,
    /// Groups (teams) this owner belongs to.
    pub groups: Vec<String>,
    /// The owner's IANA time zone, e.g. `"America/New_York"` (daylight
    /// saving included); wins over `utc_offset`.
    pub time_zone: Option<String>,
    /// A fixed UTC offset, e.g. `"-05:00"`, when no `time_zone` is given.
    pub utc_offset: String,
    /// Business hours, e.g. `"09:00-17:00"`; absent: always available.
    pub hours: Option<String>,
    /// Working days for `hours`.
    pub days: Vec<String>,
    /// Days off, `YYYY-MM-DD` in the owner's time.
    pub holidays: Vec<String>,
    /// The owner an SLA breach escalates to.
    pub manager: Option<String>,
    /// False: never assigned new leads.
    pub active: bool,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            email: None,
            slack_id: None,
            hubspot_owner_id: None,
            pipedrive_user_id: None,
            salesforce_user_id: None,
            weight: 1,
            capacity: None,
            groups: Vec::new(),
            time_zone: None,
            utc_offset: "+00:00".into(),
            hours: None,
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            holidays: Vec::new(),
            manager: None,
            active: true,
        }
    }
}

/// `[routing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RoutingConfig {
    /// An existing account's owner (same company domain) wins.
    pub account_based: bool,
    /// Evaluated in order; the first whose conditions hold picks the group.
    pub rules: Vec<RoutingRule>,
    /// Owner (or queue name) when no rule applies or nobody is available.
    pub fallback: Option<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            account_based: true,
            rules: Vec::new(),
            fallback: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    RoundRobin,
    Weighted,
}

/// `[[routing.rules]]`: conditions (all must hold; none: always) and the
/// owners they route to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoutingRule {
    pub name: String,
    /// Territory: the contact's country is one of these (case-insensitive).
    pub country: Vec<String>,
    /// Territory: the contact's state/province/region is one of these.
    pub region: Vec<String>,
    /// Score tier: score at least this.
    pub score_min: Option<f64>,
    /// Score tier: score below this.
    pub score_max: Option<f64>,
    /// The owners, by name …
    pub owners: Vec<String>,
    /// … and/or every owner in this group.
    pub group: Option<String>,
    pub method: Method,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requalify {
    /// A full handoff again (new owner decision, task, SLA timer).
    Reenroll,
    /// Stage goes back to SQL silently.
    Skip,
    /// Only the current owner is told (`lead.requalified`).
    #[default]
    Notify,
}

/// `[handoff]`: what happens when a contact crosses into SQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HandoffConfig {
    /// Time the owner has to accept or log an activity.
    pub sla: HumanDuration,
    /// Due time of the follow-up task (`data.task_due_at` of `lead.qualified`).
    pub task_due: HumanDuration,
    /// Events that count as the owner's activity (and stop the SLA timer).
    pub activity_events: Vec<String>,
    /// On an SLA breach, also reassign the lead to the owner's manager.
    pub reassign_on_breach: bool,
    /// A disqualified contact that qualifies again.
    pub requalify: Requalify,
    /// Lifecycle stage name sent with `lead.qualified` (`data.lifecycle_stage`).
    pub lifecycle_stage: String,
    /// How often each node looks for due timers.
    pub poll_interval: HumanDuration,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            sla: HumanDuration::secs(4 * 3600),
            task_due: HumanDuration::secs(24 * 3600),
            activity_events: [
                "activity.logged",
                "meeting.booked",
                "reply.received",
                "lead.accepted",
            ]
            .map(String::from)
            .to_vec(),
            reassign_on_breach: false,
            requalify: Requalify::Notify,
            lifecycle_stage: "salesqualifiedlead".into(),
            poll_interval: HumanDuration::secs(1),
        }
    }
}

pub fn parse_weekday(s: &str) -> Option<Weekday> {
    s.trim().parse().ok()
}

/// `"+02:00"` / `"-05:30"` / `"Z"` → seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s == "Z" || s == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// `"09:00-17:00"` → (start, end), start before end.
pub fn parse_hours(s: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = s.split_once('-')?;
    let a = NaiveTime::parse_from_str(a.trim(), "%H:%M").ok()?;
    let b = NaiveTime::parse_from_str(b.trim(), "%H:%M").ok()?;
    (a < b).then_some((a, b))
}

/// Every problem of the pipeline sections.
pub fn validate(
    scoring: &ScoringConfig,
    owners: &[OwnerConfig],
    routing: &RoutingConfig,
    handoff: &HandoffConfig,
) -> Vec<Problem> {
    let mut p = Vec::new();
    validate_scoring(scoring, &mut p);
    validate_owners(owners, &mut p);
    validate_routing(routing, owners, &mut p);
    for (i, e) in handoff.activity_events.iter().enumerate() {
        if EventType::parse(e).is_err() {
            p.push(Problem::error(
                format!("handoff.activity_events[{i}]"),
                format!("{e:?} is not an event type"),
            ));
        }
    }
    if handoff.sla.get().is_zero() {
        p.push(Problem::error("handoff.sla", "must be longer than 0s"));
    }
    if handoff.poll_interval.get().is_zero() {
        p.push(Problem::error(
            "handoff.poll_interval",
            "must be longer than 0s",
        ));
    }
    p
}

fn validate_scoring(s: &ScoringConfig, p: &mut Vec<Problem>) {
    if !(s.mql.is_finite() && s.sql.is_finite() && s.mql > 0.0 && s.mql <= s.sql) {
        p.push(Problem::error(
            "scoring.mql",
            format!(
                "thresholds must be positive with mql ≤ sql (mql {}, sql {})",
                s.mql, s.sql
            ),
        ));
    }
    if s.max_hits == 0 {
        p.push(Problem::error("scoring.max_hits", "must be at least 1"));
    }
    let mut names = BTreeSet::new();
    for (i, r) in s.rules.iter().enumerate() {
        let at = format!("scoring.rules[{i}]");
        if r.name.trim().is_empty() {
            p.push(Problem::error(
                format!("{at}.name"),
                "every rule needs a name",
            ));
        } else if !names.insert(r.name.as_str()) {
            p.push(Problem::error(
                format!("{at}.name"),
                format!("rule name {:?} is used twice", r.name),
            ));
        }
        if !r.points.is_finite() || r.points == 0.0 {
            p.push(Problem::error(
                format!("{at}.points"),
                "must be a non-zero number",
            ));
        }
        match (&r.event, &r.field) {
            (Some(e), _) if EventType::parse(e).is_err() => p.push(Problem::error(
                format!("{at}.event"),
                format!("{e:?} is not an event type"),
            )),
            (None, None) => p.push(Problem::error(
                at.clone(),
                "a rule needs `event` (an event rule) or `field` (a field rule)",
            )),
            _ => {}
        }
        if r.field.is_some() && !r.has_condition() {
            p.push(Problem::error(
                format!("{at}.field"),
                "a field needs a condition: equals, contains, in, gte, lte or present",
            ));
        }
        if r.field.is_none() && r.has_condition() {
            p.push(Problem::error(
                at.clone(),
                "a condition needs the `field` it tests",
            ));
        }
        if let Some(m) = r.max
            && !(m.is_finite() && m > 0.0)
        {
            p.push(Problem::error(format!("{at}.max"), "must be positive"));
        }
    }
}

fn validate_owners(owners: &[OwnerConfig], p: &mut Vec<Problem>) {
    let mut names = BTreeSet::new();
    for (i, o) in owners.iter().enumerate() {
        let at = format!("owners[{i}]");
        if o.name.trim().is_empty() {
            p.push(Problem::error(
                format!("{at}.name"),
                "every owner needs a name",
            ));
        } else if !names.insert(o.name.as_str()) {
            p.push(Problem::error(
                format!("{at}.name"),
                format!("owner {:?} is listed twice", o.name),
            ));
        }
        if let Some(tz) = &o.time_zone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            p.push(Problem::error(
                format!("{at}.time_zone"),
                format!("{tz:?} is not an IANA time zone such as \"Europe/Berlin\""),
            ));
        }
        if parse_offset(&o.utc_offset).is_none() {
            p.push(Problem::error(
                format!("{at}.utc_offset"),
                format!("{:?} is not a UTC offset such as \"+01:00\"", o.utc_offset),
            ));
        }
        if let Some(h) = &o.hours
            && parse_hours(h).is_none()
        {
            p.push(Problem::error(
                format!("{at}.hours"),
                format!("{h:?} is not business hours such as \"09:00-17:00\""),
            ));
        }
        for d in &o.days {
            if parse_weekday(d).is_none() {
                p.push(Problem::error(
                    format!("{at}.days"),
                    format!("{d:?} is not a weekday (mon … sun)"),
                ));
            }
        }
        for h in &o.holidays {
            if NaiveDate::parse_from_str(h, "%Y-%m-%d").is_err() {
                p.push(Problem::error(
                    format!("{at}.holidays"),
                    format!("{h:?} is not a date YYYY-MM-DD"),
                ));
            }
        }
        if o.weight == 0 {
            p.push(Problem::error(format!("{at}.weight"), "must be at least 1"));
        }
    }
    for (i, o) in owners.iter().enumerate() {
        if let Some(m) = &o.manager
            && !names.contains(m.as_str())
        {
            p.push(Problem::error(
                format!("owners[{i}].manager"),
                format!("{m:?} is not one of the [[owners]]"),
            ));
        }
    }
}

fn validate_routing(r: &RoutingConfig, owners: &[OwnerConfig], p: &mut Vec<Problem>) {
    let known = |n: &str| owners.iter().any(|o| o.name == n);
    for (i, rule) in r.rules.iter().enumerate() {
        let at = format!("routing.rules[{i}]");
        if rule.name.trim().is_empty() {
            p.push(Problem::error(
                format!("{at}.name"),
                "every rule needs a name",
            ));
        }
        for o in &rule.owners {
            if !known(o) {
                p.push(Problem::error(
                    format!("{at}.owners"),
                    format!("{o:?} is not one of the [[owners]]"),
                ));
            }
        }
        if let Some(g) = &rule.group
            && !owners.iter().any(|o| o.groups.contains(g))
        {
            p.push(Problem::error(
                format!("{at}.group"),
                format!("no owner is in group {g:?}"),
            ));
        }
        if rule.owners.is_empty() && rule.group.is_none() {
            p.push(Problem::error(
                at.clone(),
                "a rule needs `owners` or a `group` to route to",
            ));
        }
    }
    if r.fallback.as_deref().is_some_and(|f| f.trim().is_empty()) {
        p.push(Problem::error(
            "routing.fallback",
            "must name an owner or a queue",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn errors(text: &str) -> Vec<String> {
        match load_str(text, "t.toml", &|_| None) {
            Ok(_) => vec![],
            Err(e) => e
                .problems
                .iter()
                .filter(|p| p.is_error())
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn a_full_pipeline_configuration_loads() {
        let loaded = load_str(
            r#"
            [scoring]
            mql = 40
            sql = 80
            half_life = "14d"
            [[scoring.rules]]
            name = "title"
            field = "title"
            contains = ["vp", "head of"]
            points = 20
            [[scoring.rules]]
            name = "pricing"
            event = "page.visited"
            field = "url"
            contains = ["/pricing"]
            points = 10
            max = 30
            half_life = "off"
            [[owners]]
            name = "ana"
            hubspot_owner_id = "123"
            utc_offset = "+01:00"
            hours = "09:00-17:30"
            days = ["mon", "tue"]
            holidays = ["2026-12-24"]
            capacity = 25
            manager = "maria"
            [[owners]]
            name = "maria"
            groups = ["managers"]
            [routing]
            fallback = "unassigned"
            [[routing.rules]]
            name = "dach"
            country = ["DE", "AT", "CH"]
            owners = ["ana"]
            method = "weighted"
            [handoff]
            sla = "2h"
            requalify = "skip"
            "#,
            "t.toml",
            &|_| None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = loaded.config;
        assert!(c.scoring.enabled());
        assert_eq!(c.scoring.sql, 80.0);
        assert_eq!(c.owners[0].capacity, Some(25));
        assert_eq!(c.handoff.sla.get().as_secs(), 7200);
        assert_eq!(c.handoff.requalify, super::Requalify::Skip);
    }

    fn warnings(text: &str) -> Vec<String> {
        load_str(text, "t.toml", &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    /// The book's page stays true: its TOML snippets, together, load
    /// without errors or warnings (the docs check runs each one alone).
    #[test]
    fn the_documented_examples_are_valid() {
        let section = include_str!("../../../../docs/src/reference/configuration/pipeline.md");
        let mut text = String::from(
            "[destinations.hubspot]\nconnector = \"hubspot\"\ntoken_env = \"HUBSPOT_ACCESS_TOKEN\"\npurposes = [\"crm\"]\n",
        );
        for block in section.split("```toml\n").skip(1) {
            text.push_str(block.split("```").next().unwrap_or_default());
        }
        let env = |k: &str| (k.ends_with("_TOKEN")).then(|| "x".to_string());
        let loaded = load_str(&text, "pipeline.md", &env).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config.scoring.rules.len(), 5);
        assert_eq!(loaded.config.owners.len(), 4);
        assert_eq!(loaded.config.routing.rules.len(), 3);
    }

    #[test]
    fn a_pipeline_that_tells_nobody_is_warned_about() {
        let rule = "[[scoring.rules]]\nname = \"m\"\nevent = \"meeting.booked\"\npoints = 80\n";
        let w = warnings(rule);
        assert!(
            w.iter()
                .any(|w| w.starts_with("routes: no route delivers lead.qualified")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("routes: no route delivers lead.sla_breached")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("owners: no active [[owners]]")),
            "{w:?}"
        );
        let routed = format!(
            "{rule}[routing]\nfallback = \"queue\"\n[destinations.f]\nconnector = \"file\"\npath = \"/tmp/x\"\nlegal_basis = \"legitimate_interest\"\n[[routes]]\nname = \"r\"\nevents = [\"lead.*\"]\ndestinations = [\"f\"]\n"
        );
        let w = warnings(&routed);
        assert!(
            !w.iter()
                .any(|w| w.contains("lead.qualified") || w.contains("owners")),
            "{w:?}"
        );
        let w = warnings("[[owners]]\nname = \"ana\"\n");
        assert!(
            w.iter()
                .any(|w| w.starts_with("scoring.rules: no scoring rules")),
            "{w:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let e = errors(
            r#"
            [scoring]
            mql = 90
            sql = 75
            [[scoring.rules]]
            name = "a"
            points = 5
            [[scoring.rules]]
            name = "a"
            event = "Not A Type"
            points = 0
            [[scoring.rules]]
            name = "b"
            field = "title"
            points = 5
            [[owners]]
            name = "ana"
            time_zone = "Mars/Olympus"
            utc_offset = "CET"
            hours = "17:00-09:00"
            days = ["someday"]
            holidays = ["24.12.2026"]
            manager = "nobody"
            weight = 0
            [[routing.rules]]
            name = "r"
            owners = ["ghost"]
            group = "nogroup"
            [handoff]
            activity_events = ["BAD"]
            "#,
        );
        for want in [
            "scoring.mql: thresholds must be positive with mql ≤ sql",
            "scoring.rules[0]: a rule needs `event`",
            "scoring.rules[1].name: rule name \"a\" is used twice",
            "scoring.rules[1].points: must be a non-zero number",
            "scoring.rules[1].event: \"Not A Type\" is not an event type",
            "scoring.rules[2].field: a field needs a condition",
            "owners[0].time_zone: \"Mars/Olympus\" is not an IANA time zone",
            "owners[0].utc_offset:",
            "owners[0].hours:",
            "owners[0].days:",
            "owners[0].holidays:",
            "owners[0].manager: \"nobody\" is not one of the [[owners]]",
            "owners[0].weight:",
            "routing.rules[0].owners: \"ghost\" is not one of the [[owners]]",
            "routing.rules[0].group: no owner is in group \"nogroup\"",
            "handoff.activity_events[0]:",
        ] {
            assert!(
                e.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {e:#?}"
            );
        }
        assert!(
            errors("[scoring]\nhalf_life = \"soon\"\n")
                .iter()
                .any(|p| p.contains("invalid half-life")),
        );
        assert!(
            errors("[handoff]\nrequalify = \"maybe\"\n")
                .iter()
                .any(|p| p.contains("maybe")),
        );
        assert!(
            errors("[[scoring.rules]]\nname = \"x\"\nevent = \"a.b\"\npoints = 1\nbogus = 2\n")
                .iter()
                .any(|p| p.contains("bogus"))
        );
    }
}
