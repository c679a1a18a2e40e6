//! `[syncs.NAME]`: bidirectional (or one-way) record sync between two CRM
//! destinations, field by field, with an owner and a conflict strategy per
//! field. Plain settings and their checks; the behaviour is `crate::sync`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Config, HumanDuration, Problem};

/// Source kinds whose webhooks are CRM change notifications.
pub const CHANGE_SOURCE_KINDS: [&str; 3] = ["hubspot", "pipedrive", "salesforce_outbound_message"];

/// Connectors a sync can read changes from and write to.
pub const SYNC_CONNECTORS: [&str; 3] = ["hubspot", "pipedrive", "salesforce"];

/// The name that makes a side of a contact sync leadrelay's own golden
/// record (`a = "leadrelay"`); no destination a sync could mean may take it.
pub const GOLDEN: &str = "leadrelay";

/// The prefix of a golden-record consent field (`consent.PURPOSE`).
pub const CONSENT_PREFIX: &str = "consent.";

/// The system `dest` names in a sync: `leadrelay` (the golden record) or a
/// destination's connector.
fn connector_of<'a>(config: &'a Config, dest: &str) -> Option<&'a str> {
    if dest == GOLDEN {
        return Some(GOLDEN);
    }
    config.destinations.get(dest).map(|d| d.connector.as_str())
}

/// `[syncs.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// The object kept in sync: `contact` (HubSpot contacts, Pipedrive
    /// persons, Salesforce Leads or Contacts as the destination's
    /// `person_object` says), matched between the systems by email;
    /// `company` (HubSpot companies, Pipedrive organizations, Salesforce
    /// Accounts); `deal` (HubSpot deals, Pipedrive deals, Salesforce
    /// Opportunities); or `custom` (a HubSpot custom object, a Salesforce
    /// custom object `X__c`: name them in `object_a` / `object_b`).
    /// Companies, deals and custom objects are matched by `match` on first
    /// sight, then by the stored link of both ids. `task`: HubSpot tasks ↔
    /// Salesforce Tasks, `match` optional (without it a task is linked
    /// through the one the sync creates for it).
    pub object: SyncObject,
    /// The vendor object of system `a` for `object = "custom"` (a HubSpot
    /// custom object's name or type id such as `p_projects` or `2-123`; a
    /// Salesforce custom object such as `Project__c`). Only for `custom`.
    #[serde(default)]
    pub object_a: Option<String>,
    /// The same for system `b`.
    #[serde(default)]
    pub object_b: Option<String>,
    /// How records of a `company`, `deal` or `custom` sync are first
    /// matched across the systems: a field of each (a company domain, a
    /// leadrelay key field) whose values, compared without case, scheme,
    /// `www.` or trailing `/`, name the same record. Once matched (or
    /// created by the sync) the two ids are linked for good, so a later
    /// change of the key does not split them. A record with no key value
    /// is linked only through the record the sync creates for it.
    /// Contacts are always matched by email.
    #[serde(default, rename = "match")]
    pub match_key: Option<MatchKey>,
    /// The first system: the name of a CRM destination (`hubspot`,
    /// `pipedrive`, `salesforce`), or `leadrelay` for leadrelay's own golden
    /// record (contacts only: the merged record forms, webhooks and the API
    /// build, with its field names `phone`, `first_name`, `consent.PURPOSE`
    /// …).
    pub a: String,
    /// The second system: another CRM destination.
    pub b: String,
    /// `both` (default), `a_to_b` or `b_to_a`.
    #[serde(default)]
    pub direction: SyncDirection,
    /// How often each system is asked for records changed since the last
    /// poll (its durable cursor).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Modification times this close together count as simultaneous under
    /// the `latest` strategy (vendor clocks and second-precision timestamps):
    /// the tie goes to system `a`.
    #[serde(default = "default_clock_skew")]
    pub clock_skew: HumanDuration,
    /// Change webhooks that start a round at once: names of `[sources.X]`
    /// of kind `hubspot`, `pipedrive` or `salesforce_outbound_message`
    /// (the CRMs' change notifications, verified as those sources verify
    /// them). Each webhook leadrelay accepts from one of them wakes the
    /// sync, whose round then polls from its cursors and finds the change;
    /// the `poll_interval` stays as the safety net for missed webhooks.
    #[serde(default)]
    pub change_sources: Vec<String>,
    /// How often fields that no change feed shows are read for every
    /// record the sync has linked: HubSpot associations
    /// (`associations.TYPE` fields) move no modification time, so polling
    /// by time never sees them change. `0s`: every round.
    #[serde(default = "default_sweep_interval")]
    pub sweep_interval: HumanDuration,
    /// The share of each destination's `rate_limit` the sync may use for
    /// its polls and writes (0 < share ≤ 1; deliveries keep the rest).
    #[serde(default = "default_rate_share")]
    pub rate_share: f64,
    /// The share of each system's daily API quota a backfill may spend in
    /// a day (0 < share ≤ 1): its own requests are counted against this
    /// share of the quota the vendor reports (HubSpot, Salesforce; for
    /// Pipedrive, of what was left when the backfill's day began), and the
    /// backfill waits for the next UTC day when it is spent.
    #[serde(default = "default_backfill_quota_share")]
    pub backfill_quota_share: f64,
    /// An origin marker: a field of system `a` (a HubSpot property, a
    /// Pipedrive `custom_fields.KEY`, a Salesforce custom field) that every
    /// sync write into `a` also sets, to `leadrelay sync NAME at TIME`, so
    /// people and other tools see which changes leadrelay made. The field
    /// must exist in the CRM; it is written, never synced.
    #[serde(default)]
    pub origin_a: Option<String>,
    /// The same for system `b`.
    #[serde(default)]
    pub origin_b: Option<String>,
    /// The fields kept in sync, by a name of your choice.
    pub fields: BTreeMap<String, SyncFieldConfig>,
}

impl SyncConfig {
    /// What `side` reads and writes.
    pub fn spec(&self, side: Side) -> ObjectSpec {
        ObjectSpec {
            object: self.object,
            vendor_object: match side {
                Side::A => self.object_a.clone(),
                Side::B => self.object_b.clone(),
            },
            match_field: self.match_key.as_ref().map(|m| m.side(side).to_string()),
            contact_role: self
                .fields
                .values()
                .find(|f| f.side(side) == CONTACT_ROLES)
                .and_then(|f| f.role.clone()),
        }
    }

    /// The origin marker field of `side`, if any.
    pub fn origin(&self, side: Side) -> Option<&str> {
        match side {
            Side::A => self.origin_a.as_deref(),
            Side::B => self.origin_b.as_deref(),
        }
    }
}

/// `match = { a = "FIELD", b = "FIELD" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchKey {
    /// The key field in system `a`.
    pub a: String,
    /// The key field in system `b`.
    pub b: String,
}

impl MatchKey {
    pub fn side(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// The objects a sync handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncObject {
    Contact,
    Company,
    Deal,
    Custom,
    /// HubSpot tasks (engagements) ↔ Salesforce Tasks.
    Task,
}

impl SyncObject {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncObject::Contact => "contact",
            SyncObject::Company => "company",
            SyncObject::Deal => "deal",
            SyncObject::Custom => "custom",
            SyncObject::Task => "task",
        }
    }
}

/// What one system of a sync reads and writes: the object, the vendor's
/// name for it (custom objects) and the field that matches records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    pub object: SyncObject,
    /// `object_a` / `object_b` (custom objects).
    pub vendor_object: Option<String>,
    /// The match key field (None for contacts: the email).
    pub match_field: Option<String>,
    /// The `role` of the field that syncs `OpportunityContactRole` (None:
    /// every contact role counts).
    pub contact_role: Option<String>,
}

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    #[default]
    Both,
    AToB,
    BToA,
}

/// One side of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

/// Who may change a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOwner {
    /// Only system `a`: its changes reach `b`; a change made in `b` is
    /// undone (the owner's value is written back).
    A,
    /// Only system `b`.
    B,
    /// Either system; concurrent changes are settled by `conflict`.
    Both,
}

/// How concurrent changes of a field owned by both sides are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictStrategy {
    /// The value with the later vendor modification time (within
    /// `clock_skew`: system `a`'s).
    #[default]
    Latest,
    /// The side named by `source` wins.
    SourceWins,
    /// Both values kept: a `;`-separated union (multi-select fields,
    /// tags); the merged value is written to both sides.
    FieldMerge,
    /// Nothing is written; a review item shows both values with their
    /// sources and times until a person accepts one side or edits.
    Review,
}

impl ConflictStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStrategy::Latest => "latest",
            ConflictStrategy::SourceWins => "source_wins",
            ConflictStrategy::FieldMerge => "field_merge",
            ConflictStrategy::Review => "review",
        }
    }
}

/// `[syncs.NAME.fields.FIELD]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFieldConfig {
    /// The field in system `a` (HubSpot: a property name; Pipedrive: a
    /// standard field of the object — a person's `name`, `phone`,
    /// `marketing_status`, an organization's `name`, `address`, a deal's
    /// `title`, `value`, `currency`, `status`, `stage_id`,
    /// `expected_close_date` … — or `custom_fields.KEY`; Salesforce: a
    /// field API name; the golden record, `leadrelay`: `phone`,
    /// `first_name`, … as `contact.*` in mappings, a custom field, or
    /// `consent.PURPOSE`, which only the golden side may own).
    pub a: String,
    /// The field in system `b`.
    pub b: String,
    /// `a`, `b` or `both`; defaults from `direction` (`both` → `both`,
    /// `a_to_b` → `a`, `b_to_a` → `b`).
    #[serde(default)]
    pub owner: Option<FieldOwner>,
    /// For fields owned by both: `latest` (default), `source_wins`,
    /// `field_merge` or `review`.
    #[serde(default)]
    pub conflict: ConflictStrategy,
    /// The side that wins under `source_wins`.
    #[serde(default)]
    pub source: Option<Side>,
    /// Value map from `a`'s values to `b`'s (e.g. lifecycle stage → lead
    /// status); the reverse direction is derived, so values must map one
    /// to one. Values not listed pass unchanged.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// An association: the field holds the id of a record that another
    /// sync (named here, between the same two systems) keeps in sync — a
    /// deal's or a contact's company (`a = "associations.companies"` in
    /// HubSpot, `b = "AccountId"` in Salesforce). Ids are translated
    /// through that sync's links, so each system gets its own record's
    /// id; a record not linked yet is written once it is.
    #[serde(default)]
    pub link: Option<String>,
    /// For `b = "OpportunityContactRole"` (a deal's contacts in
    /// Salesforce): the contact role this field keeps, e.g. `"Decision
    /// Maker"`. Only roles with this `Role` are read, created (with it) and
    /// deleted; without it every contact role of the opportunity counts and
    /// the roles the sync creates have no `Role`.
    #[serde(default)]
    pub role: Option<String>,
    /// Transforms applied to every value the sync writes into system `a`
    /// (one name or a list, as in a destination's mapping: `trim`,
    /// `lower`, `e164:DE`, `truncate:80`, `date` …), after the value map.
    /// Values are still compared as each system holds them, so a value
    /// changed by the transform is written once and its echo recognised.
    #[serde(default)]
    pub transform_a: Transforms,
    /// The same for values written into system `b`.
    #[serde(default)]
    pub transform_b: Transforms,
}

/// One transform name or a list of them (`"e164:US"`, `["trim", "upper"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrList")]
pub struct Transforms(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrList {
    One(String),
    List(Vec<String>),
}

impl From<OneOrList> for Transforms {
    fn from(v: OneOrList) -> Self {
        match v {
            OneOrList::One(s) => Transforms(vec![s]),
            OneOrList::List(l) => Transforms(l),
        }
    }
}

impl Transforms {
    /// The parsed transforms (names `leadrelay check` has refused are left
    /// out).
    pub fn parsed(&self) -> Vec<crate::mapping::Transform> {
        self.0
            .iter()
            .filter_map(|t| crate::mapping::Transform::parse(t).ok())
            .collect()
    }
}

/// The Salesforce object that holds an Opportunity's contacts: one
/// `OpportunityContactRole` record per contact (and role).
pub const CONTACT_ROLES: &str = "OpportunityContactRole";

/// Whether a vendor field can hold several associated records: a HubSpot
/// association (`associations.TYPE`) or a Salesforce Opportunity's contact
/// roles.
pub fn holds_several(vendor: &str) -> bool {
    vendor.starts_with("associations.") || vendor == CONTACT_ROLES
}

impl SyncFieldConfig {
    /// The transforms of values written into `side`.
    pub fn transforms(&self, side: Side) -> &Transforms {
        match side {
            Side::A => &self.transform_a,
            Side::B => &self.transform_b,
        }
    }

    /// The vendor field of `side`.
    pub fn side(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// An association whose both sides can hold several records: its value
    /// is a set of records (compared without order), not one record.
    pub fn many(&self) -> bool {
        self.link.is_some() && holds_several(&self.a) && holds_several(&self.b)
    }

    /// The owner, with the direction's default.
    pub fn owner(&self, direction: SyncDirection) -> FieldOwner {
        self.owner.unwrap_or(match direction {
            SyncDirection::Both => FieldOwner::Both,
            SyncDirection::AToB => FieldOwner::A,
            SyncDirection::BToA => FieldOwner::B,
        })
    }
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_sweep_interval() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_clock_skew() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_backfill_quota_share() -> f64 {
    0.25
}
fn default_rate_share() -> f64 {
    0.5
}

/// Problems with `[syncs]`, each with its path.
pub fn validate_syncs(config: &Config, p: &mut Vec<Problem>) {
    for (name, s) in &config.syncs {
        let at = |k: &str| format!("syncs.{name}.{k}");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            p.push(Problem::error(
                format!("syncs.{name}"),
                "a sync name uses letters, digits, '_' and '-' only",
            ));
        }
        for (key, dest) in [("a", &s.a), ("b", &s.b)] {
            if dest == GOLDEN {
                if config.destinations.contains_key(GOLDEN) {
                    p.push(Problem::error(
                        format!("destinations.{GOLDEN}"),
                        format!(
                            "the name {GOLDEN:?} is reserved for the golden record in syncs (syncs.{name}.{key}): rename the destination"
                        ),
                    ));
                }
                continue;
            }
            match config.destinations.get(dest) {
                None => p.push(Problem::error(
                    at(key),
                    format!("no destination named {dest:?} is configured"),
                )),
                Some(d) if !SYNC_CONNECTORS.contains(&d.connector.as_str()) => {
                    p.push(Problem::error(
                        at(key),
                        format!(
                            "destination {dest:?} uses the {} connector; a sync needs one of {}",
                            d.connector,
                            SYNC_CONNECTORS.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        check_object(config, name, s, p);
        for (n, source) in s.change_sources.iter().enumerate() {
            match config.sources.get(source) {
                None => p.push(Problem::error(
                    at(&format!("change_sources[{n}]")),
                    format!("no source named {source:?} is configured"),
                )),
                Some(c) if !CHANGE_SOURCE_KINDS.contains(&c.kind.as_str()) => {
                    p.push(Problem::error(
                        at(&format!("change_sources[{n}]")),
                        format!(
                            "source {source:?} is a {} source; change webhooks come from {}",
                            c.kind,
                            CHANGE_SOURCE_KINDS.join(", ")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        if s.a == s.b {
            p.push(Problem::error(
                at("b"),
                "must name another destination than a",
            ));
        }
        if s.poll_interval.get() < std::time::Duration::from_millis(100) {
            p.push(Problem::error(
                at("poll_interval"),
                "must be at least 100ms",
            ));
        }
        for (key, share) in [
            ("rate_share", s.rate_share),
            ("backfill_quota_share", s.backfill_quota_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                p.push(Problem::error(at(key), "must be more than 0 and at most 1"));
            }
        }
        if s.fields.is_empty() {
            p.push(Problem::error(
                at("fields"),
                "name at least one field to sync",
            ));
        }
        let mut seen: [BTreeSet<&str>; 2] = [BTreeSet::new(), BTreeSet::new()];
        for (i, (key, origin)) in [("origin_a", &s.origin_a), ("origin_b", &s.origin_b)]
            .into_iter()
            .enumerate()
        {
            let Some(origin) = origin else { continue };
            let connector = connector_of(config, if i == 0 { &s.a } else { &s.b });
            if connector == Some(GOLDEN) {
                p.push(Problem::error(
                    at(key),
                    "the golden record keeps each field's source itself: no origin marker",
                ));
            } else if let Err(m) = check_vendor_field(connector, origin, s.object) {
                p.push(Problem::error(at(key), m));
            }
            seen[i].insert(origin.as_str());
        }
        for (fname, f) in &s.fields {
            let fat = |k: &str| format!("syncs.{name}.fields.{fname}.{k}");
            for (i, (key, vendor)) in [("a", &f.a), ("b", &f.b)].into_iter().enumerate() {
                let connector = connector_of(config, if i == 0 { &s.a } else { &s.b });
                let association = vendor.strip_prefix("associations.");
                if vendor == CONTACT_ROLES {
                    check_contact_roles(config, s, f, connector, &fat(key), p);
                    if !seen[i].insert(vendor.as_str()) {
                        p.push(Problem::error(
                            fat(key),
                            "the contact roles are already synced by another field of this sync",
                        ));
                    }
                    continue;
                }
                match (association, connector, &f.link) {
                    (Some(t), Some("hubspot"), Some(_))
                        if !t.is_empty()
                            && t.chars().all(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                            }) => {}
                    (Some(_), Some("hubspot"), Some(_)) => p.push(Problem::error(
                        fat(key),
                        "write associations.TYPE with HubSpot's object type (companies, contacts, deals, p_NAME)",
                    )),
                    (Some(_), Some("hubspot"), None) => p.push(Problem::error(
                        fat(key),
                        "an association names the sync of the associated records in link",
                    )),
                    _ => {
                        if let Err(m) = check_vendor_field(connector, vendor, s.object)
                            .and_then(|()| check_pipedrive_link(config, connector, vendor, f))
                        {
                            p.push(Problem::error(fat(key), m));
                        }
                    }
                }
                if !seen[i].insert(vendor.as_str()) {
                    p.push(Problem::error(
                        fat(key),
                        format!("{vendor:?} is already synced by another field of this sync (or is its origin marker)"),
                    ));
                }
            }
            let owner = f.owner(s.direction);
            check_consent_owner(name, s, fname, f, owner, p);
            check_golden_rule(config, name, s, fname, f, owner, p);
            if f.link.is_some() && (s.a == GOLDEN || s.b == GOLDEN) {
                p.push(Problem::error(
                    fat("link"),
                    "the golden record is a contact sync's side: it holds no associations",
                ));
            }
            let against = match (s.direction, owner) {
                (SyncDirection::AToB, FieldOwner::B | FieldOwner::Both) => Some("a_to_b"),
                (SyncDirection::BToA, FieldOwner::A | FieldOwner::Both) => Some("b_to_a"),
                _ => None,
            };
            if let Some(d) = against {
                p.push(Problem::error(
                    fat("owner"),
                    format!(
                        "the sync's direction is {d}: the field cannot be owned by the other side"
                    ),
                ));
            }
            if f.conflict == ConflictStrategy::SourceWins && f.source.is_none() {
                p.push(Problem::error(
                    fat("source"),
                    "source_wins needs source = \"a\" or \"b\"",
                ));
            }
            if f.source.is_some() && f.conflict != ConflictStrategy::SourceWins {
                p.push(Problem::error(
                    fat("source"),
                    "only used with conflict = \"source_wins\"",
                ));
            }
            if owner != FieldOwner::Both && f.conflict != ConflictStrategy::Latest {
                p.push(Problem::warning(
                    fat("conflict"),
                    "the field has one owner, so it never conflicts: this strategy is not used",
                ));
            }
            if let Some(other) = &f.link {
                match config.syncs.get(other) {
                    None => p.push(Problem::error(
                        fat("link"),
                        format!("no sync named {other:?}"),
                    )),
                    Some(o) if other == name || o.object == SyncObject::Contact && s.object == SyncObject::Contact => {
                        p.push(Problem::error(
                            fat("link"),
                            "an association links to a sync of another object",
                        ))
                    }
                    Some(o) if (&o.a, &o.b) != (&s.a, &s.b) => p.push(Problem::error(
                        fat("link"),
                        format!(
                            "sync {other:?} is between {} and {}: an association's sync must have the same a and b",
                            o.a, o.b
                        ),
                    )),
                    Some(_) => {}
                }
                if !f.map.is_empty() {
                    p.push(Problem::error(
                        fat("map"),
                        "an association's values are record ids: no value map",
                    ));
                }
                if f.conflict == ConflictStrategy::FieldMerge && !f.many() {
                    p.push(Problem::error(
                        fat("conflict"),
                        "this association holds one record (one side cannot hold several): field_merge cannot merge two",
                    ));
                }
            }
            for side in [Side::A, Side::B] {
                let key = format!("transform_{}", side.as_str());
                let ts = f.transforms(side);
                if f.link.is_some() && !ts.0.is_empty() {
                    p.push(Problem::error(
                        fat(&key),
                        "an association's values are record ids: no transform",
                    ));
                }
                for (n, t) in ts.0.iter().enumerate() {
                    if let Err(m) = crate::mapping::Transform::parse(t) {
                        let at = if ts.0.len() == 1 {
                            fat(&key)
                        } else {
                            format!("syncs.{name}.fields.{fname}.{key}[{n}]")
                        };
                        p.push(Problem::error(at, m));
                    }
                }
            }
            if f.role.is_some() && f.a != CONTACT_ROLES && f.b != CONTACT_ROLES {
                p.push(Problem::error(
                    fat("role"),
                    format!("only used with a = or b = \"{CONTACT_ROLES}\" (a Salesforce deal's contacts)"),
                ));
            }
            let mut back: BTreeMap<&str, &str> = BTreeMap::new();
            for (from, to) in &f.map {
                if let Some(prev) = back.insert(to.as_str(), from.as_str()) {
                    p.push(Problem::error(
                        format!("syncs.{name}.fields.{fname}.map.{from}"),
                        format!("{prev:?} and {from:?} both map to {to:?}: the way back would be ambiguous"),
                    ));
                }
            }
        }
    }
}

/// `OpportunityContactRole` as a field: a Salesforce deal's contacts,
/// linked through a contact sync whose Salesforce records are Contacts
/// (a contact role names a Contact, never a Lead), against a field of the
/// other system that holds several records.
fn check_contact_roles(
    config: &Config,
    s: &SyncConfig,
    f: &SyncFieldConfig,
    connector: Option<&str>,
    at: &str,
    p: &mut Vec<Problem>,
) {
    let mut fail = |m: String| p.push(Problem::error(at, m));
    if connector != Some("salesforce") {
        fail(format!(
            "{CONTACT_ROLES} is a Salesforce object: name it on the Salesforce side"
        ));
        return;
    }
    if s.object != SyncObject::Deal {
        fail(format!(
            "{CONTACT_ROLES} holds an Opportunity's contacts: only in an object = \"deal\" sync"
        ));
    }
    let other = if f.a == CONTACT_ROLES { &f.b } else { &f.a };
    if !holds_several(other) || other == CONTACT_ROLES {
        fail(format!(
            "the contact roles hold several contacts: the other side must hold several too (HubSpot: associations.contacts), not {other:?}"
        ));
    }
    let Some(link) = &f.link else {
        fail("name the contact sync whose links translate the contacts in link".into());
        return;
    };
    let Some(linked) = config.syncs.get(link) else {
        return; // reported at link
    };
    if linked.object != SyncObject::Contact {
        fail(format!(
            "a contact role names a Contact: link must name a contact sync, and {link:?} syncs {}s",
            linked.object.as_str()
        ));
        return;
    }
    let dest = if f.a == CONTACT_ROLES { &s.a } else { &s.b };
    let person = config
        .destinations
        .get(dest)
        .and_then(|d| d.settings.get("person_object"))
        .and_then(|v| v.as_str())
        .unwrap_or("Lead");
    if person != "Contact" {
        fail(format!(
            "a contact role names a Contact, never a Lead: destination {dest:?} syncs {person}s (set person_object = \"Contact\")"
        ));
    }
    if let Some(role) = &f.role
        && (role.trim().is_empty() || role.chars().count() > 255)
    {
        p.push(Problem::error(
            at.rsplit_once('.')
                .map_or(at.to_string(), |(head, _)| format!("{head}.role")),
            "a Role picklist value: 1 to 255 characters",
        ));
    }
}

/// A Pipedrive id field (`org_id`, `person_id`) is synced only through
/// `link` to a sync of the record it names (a raw id means nothing in the
/// other CRM); `link` on another Pipedrive field is refused.
fn check_pipedrive_link(
    config: &Config,
    connector: Option<&str>,
    field: &str,
    f: &SyncFieldConfig,
) -> Result<(), String> {
    if connector != Some("pipedrive") {
        return Ok(());
    }
    let association = PIPEDRIVE_ASSOCIATIONS.iter().find(|(n, _)| *n == field);
    match (association, &f.link) {
        (Some((_, object)), None) => Err(format!(
            "{field:?} holds a Pipedrive record id: name the {} sync that links those records in link",
            object.as_str()
        )),
        (Some((_, object)), Some(other)) => match config.syncs.get(other) {
            Some(o) if o.object != *object => Err(format!(
                "{field:?} holds a Pipedrive {}: link names a {} sync, not a {} one",
                pipedrive_object(*object).0,
                object.as_str(),
                o.object.as_str()
            )),
            // A missing sync is reported on `link`.
            _ => Ok(()),
        },
        (None, Some(_)) => Err(format!(
            "{field:?} is not a Pipedrive association: an association is {}",
            PIPEDRIVE_ASSOCIATIONS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        (None, None) => Ok(()),
    }
}

/// The object settings: `object_a`/`object_b` only (and both) for custom
/// objects, each system able to hold the object, `match` for every object
/// but contacts.
fn check_object(config: &Config, name: &str, s: &SyncConfig, p: &mut Vec<Problem>) {
    let at = |k: &str| format!("syncs.{name}.{k}");
    for (side, key) in [(Side::A, "object_a"), (Side::B, "object_b")] {
        let dest = if side == Side::A { &s.a } else { &s.b };
        let connector = connector_of(config, dest);
        if connector == Some(GOLDEN) && s.object != SyncObject::Contact {
            p.push(Problem::error(
                at(side.as_str()),
                format!(
                    "the golden record holds contacts: a {} sync needs HubSpot or Salesforce on both sides",
                    s.object.as_str()
                ),
            ));
            continue;
        }
        let vendor = s.spec(side).vendor_object;
        match (s.object, vendor) {
            (SyncObject::Custom, None) => p.push(Problem::error(
                at(key),
                "a custom object sync names the vendor object of each system",
            )),
            (SyncObject::Custom, Some(v)) => {
                if let Err(m) = check_custom_object(connector, &v) {
                    p.push(Problem::error(at(key), m));
                }
            }
            (_, Some(_)) => p.push(Problem::error(
                at(key),
                "only used with object = \"custom\"",
            )),
            (_, None) => {}
        }
        if s.object == SyncObject::Task && connector == Some("pipedrive") {
            p.push(Problem::error(
                at(side.as_str()),
                "tasks sync between HubSpot and Salesforce: Pipedrive activities are not synced yet",
            ));
        }
    }
    match (&s.match_key, s.object) {
        (Some(_), SyncObject::Contact) => p.push(Problem::error(
            at("match"),
            "contacts are matched by email: remove match",
        )),
        (None, SyncObject::Company | SyncObject::Deal | SyncObject::Custom) => {
            p.push(Problem::error(
                at("match"),
                format!(
                    "name the field of each system that matches a {} on first sight, e.g. match = {{ a = \"domain\", b = \"Website\" }}",
                    s.object.as_str()
                ),
            ))
        }
        (Some(m), _) => {
            for (side, vendor) in [(Side::A, &m.a), (Side::B, &m.b)] {
                let dest = if side == Side::A { &s.a } else { &s.b };
                let connector = connector_of(config, dest);
                let checked = check_vendor_field(connector, vendor, s.object)
                    .and_then(|()| check_pipedrive_match(connector, vendor, s.object));
                if let Err(e) = checked {
                    p.push(Problem::error(format!("syncs.{name}.match.{}", side.as_str()), e));
                }
            }
        }
        (None, SyncObject::Contact | SyncObject::Task) => {}
    }
}

/// Whether `object` names a custom object of `connector`.
fn check_custom_object(connector: Option<&str>, object: &str) -> Result<(), String> {
    match connector {
        Some("hubspot") => {
            let type_id = object.split_once('-').is_some_and(|(a, b)| {
                a == "2" && !b.is_empty() && b.chars().all(|c| c.is_ascii_digit())
            });
            let name = object.starts_with("p_")
                || object
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if type_id || (name && !object.is_empty()) {
                Ok(())
            } else {
                Err(format!(
                    "{object:?} is not a HubSpot custom object name or type id (e.g. p_projects, 2-123456)"
                ))
            }
        }
        Some("salesforce") => {
            let ok = object.ends_with("__c")
                && object.len() > 3
                && object
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && object
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{object:?} is not a Salesforce custom object API name (e.g. Project__c)"
                ))
            }
        }
        _ => Err("only HubSpot and Salesforce have custom objects".into()),
    }
}

/// Whether `field` can be read and written on a `connector` record.
fn check_vendor_field(
    connector: Option<&str>,
    field: &str,
    object: SyncObject,
) -> Result<(), String> {
    if field.trim().is_empty() {
        return Err("name the vendor field".into());
    }
    match connector {
        Some(GOLDEN) => check_golden_field(field),
        Some("hubspot") => {
            if field == "email" && object == SyncObject::Contact {
                return Err("email matches the records and cannot be synced as a field".into());
            }
            // A task's own properties (`hs_task_subject`, `hs_timestamp` …)
            // are written like any other; other `hs_` ones are HubSpot's.
            let task_property = object == SyncObject::Task
                && (field.starts_with("hs_task_") || field == "hs_timestamp");
            if (field.starts_with("hs_") && !task_property)
                || ["lastmodifieddate", "createdate"].contains(&field)
            {
                return Err(format!("{field:?} is a read-only HubSpot property"));
            }
            if !field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "{field:?} is not a HubSpot property name (lower-case letters, digits, '_')"
                ));
            }
            Ok(())
        }
        Some("pipedrive") => match field.strip_prefix("custom_fields.") {
            Some(key) if !key.is_empty() && !key.contains('.') => Ok(()),
            Some(_) => Err("write custom_fields.KEY with the field's key".into()),
            None if pipedrive_fields(object).contains(&field) => Ok(()),
            None => {
                let (noun, _) = pipedrive_object(object);
                Err(format!(
                    "{field:?}: a Pipedrive {noun} field the sync handles is {} or custom_fields.KEY",
                    pipedrive_fields(object).join(", ")
                ))
            }
        },
        Some("salesforce") => {
            if !field
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "{field:?} is not a Salesforce field API name (e.g. Title, Lead_Status__c)"
                ));
            }
            let person = object == SyncObject::Contact;
            if person && field.eq_ignore_ascii_case("Email") {
                return Err("Email matches the records and cannot be synced as a field".into());
            }
            // `Name` is compound (read-only) on Leads and Contacts, a plain
            // required field on Accounts, Opportunities and custom objects.
            if SALESFORCE_READ_ONLY.iter().any(|r| {
                r.eq_ignore_ascii_case(field) && (person || !r.eq_ignore_ascii_case("Name"))
            }) {
                return Err(format!("{field:?} is a read-only Salesforce field"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether `field` names a field of the golden contact: a standard one
/// (`phone`, `first_name`, …, as `contact.*` in mappings), `consent.PURPOSE`,
/// or a custom field.
fn check_golden_field(field: &str) -> Result<(), String> {
    if field == "email" {
        return Err("email matches the records and cannot be synced as a field".into());
    }
    if field == "full_name" {
        return Err("the golden record keeps first_name and last_name: sync those".into());
    }
    if let Some(purpose) = field.strip_prefix(CONSENT_PREFIX) {
        return leadrelay_model::ConsentPurpose::parse(purpose)
            .map(|_| ())
            .map_err(|_| {
                format!(
                    "{purpose:?} is not a consent purpose (lower-case letters, digits, '_', e.g. consent.marketing_email)"
                )
            });
    }
    let custom = field
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if crate::contacts::rule_fields().any(|f| f == field) || custom {
        Ok(())
    } else {
        Err(format!(
            "{field:?} is not a golden contact field: {}, consent.PURPOSE or a custom field name (a-z, 0-9, '_')",
            crate::contacts::rule_fields()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Consent is leadrelay's (forms and unsubscribes record it, with the text
/// the person saw): a golden-record consent field flows only from
/// leadrelay to the CRM, so the golden side must own it alone.
fn check_consent_owner(
    name: &str,
    s: &SyncConfig,
    fname: &str,
    f: &SyncFieldConfig,
    owner: FieldOwner,
    p: &mut Vec<Problem>,
) {
    for side in [Side::A, Side::B] {
        let (dest, vendor) = match side {
            Side::A => (&s.a, &f.a),
            Side::B => (&s.b, &f.b),
        };
        if dest != GOLDEN || !vendor.starts_with(CONSENT_PREFIX) {
            continue;
        }
        let golden_owner = match side {
            Side::A => FieldOwner::A,
            Side::B => FieldOwner::B,
        };
        if owner != golden_owner {
            p.push(Problem::error(
                format!("syncs.{name}.fields.{fname}.owner"),
                format!(
                    "{vendor} is consent: it is synced only from leadrelay to the CRM, never written from the CRM; set owner = \"{}\"",
                    side.as_str()
                ),
            ));
        }
    }
}

/// A golden field the CRM may change, under a `[contacts.fields]` rule
/// other than "latest from any source": the rule may keep the golden value
/// against the sync's, and each such write is then reported as an error.
fn check_golden_rule(
    config: &Config,
    name: &str,
    s: &SyncConfig,
    fname: &str,
    f: &SyncFieldConfig,
    owner: FieldOwner,
    p: &mut Vec<Problem>,
) {
    let (field, golden_owner) = match (s.a == GOLDEN, s.b == GOLDEN) {
        (true, _) => (&f.a, FieldOwner::A),
        (_, true) => (&f.b, FieldOwner::B),
        _ => return,
    };
    let Some(rule) = config.contacts.fields.get(field) else {
        return;
    };
    let strict = !rule.sources.is_empty()
        || rule
            .strategy
            .is_some_and(|st| st != crate::contacts::Strategy::Latest);
    if strict && owner != golden_owner {
        p.push(Problem::warning(
            format!("syncs.{name}.fields.{fname}.owner"),
            format!(
                "contacts.fields.{field} has a rule that may keep the golden value against the sync's (its writes are then reported as errors); own the field on the leadrelay side"
            ),
        ));
    }
}

/// Pipedrive's standard fields a sync reads and writes, per object (API
/// v2 names; `phone` is a person's primary phone, `address` an
/// organization's full address). Ids of other records (`org_id`,
/// `person_id`) are synced with `link`. Read-only fields (`id`,
/// `add_time`, `update_time`, a person's `emails`) are not among them.
pub fn pipedrive_fields(object: SyncObject) -> &'static [&'static str] {
    match object {
        SyncObject::Contact => &["name", "phone", "marketing_status", "org_id", "owner_id"],
        SyncObject::Company => &["name", "address", "owner_id"],
        SyncObject::Deal => &[
            "title",
            "value",
            "currency",
            "status",
            "stage_id",
            "pipeline_id",
            "expected_close_date",
            "probability",
            "lost_reason",
            "org_id",
            "person_id",
            "owner_id",
        ],
        SyncObject::Custom | SyncObject::Task => &[],
    }
}

/// Pipedrive fields holding another record's id, and the object of the
/// sync whose links translate them.
pub const PIPEDRIVE_ASSOCIATIONS: [(&str, SyncObject); 2] = [
    ("org_id", SyncObject::Company),
    ("person_id", SyncObject::Contact),
];

/// A sync object's Pipedrive name and the fields its search finds records
/// by (besides `custom_fields.KEY`).
fn pipedrive_object(object: SyncObject) -> (&'static str, &'static [&'static str]) {
    match object {
        SyncObject::Contact => ("person", &[]),
        SyncObject::Company => ("organization", &["name", "address"]),
        SyncObject::Deal => ("deal", &["title"]),
        SyncObject::Custom => ("custom object", &[]),
        SyncObject::Task => ("activity", &[]),
    }
}

/// Whether Pipedrive's search can find a record by `field` (the `match`
/// key): organizations by `name`, `address` or a custom field, deals by
/// `title` or a custom field.
fn check_pipedrive_match(
    connector: Option<&str>,
    field: &str,
    object: SyncObject,
) -> Result<(), String> {
    if connector != Some("pipedrive") || field.starts_with("custom_fields.") {
        return Ok(());
    }
    let (noun, searchable) = pipedrive_object(object);
    if searchable.contains(&field) {
        return Ok(());
    }
    Err(format!(
        "Pipedrive's {noun} search finds records by {} or custom_fields.KEY, not by {field:?}",
        searchable.join(", ")
    ))
}

/// Salesforce person fields nobody writes (system fields, the compound
/// `Name`, conversion state).
const SALESFORCE_READ_ONLY: [&str; 14] = [
    "Id",
    "Name",
    "IsDeleted",
    "IsConverted",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "LastActivityDate",
    "LastViewedDate",
    "LastReferencedDate",
    "MasterRecordId",
    "PhotoUrl",
];
