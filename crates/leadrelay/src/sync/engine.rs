//! The per-record decision, pure so it can be tested without a CRM: given
//! what the sync last knew about a record and what each system shows now,
//! which changes are echoes of leadrelay's own writes (dropped), which are
//! real, what the agreed value of each field becomes (ownership, conflict
//! strategy), and what must be written where.
//!
//! Values are compared in system `a`'s vocabulary ("canonical"): `b`'s
//! values go through the field's value map backwards.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::sync::{ConflictStrategy, FieldOwner, Side, SyncConfig, SyncFieldConfig};

/// How many recent writes per system and field are remembered for echo
/// recognition (a slow search index can show an older write late).
const LEDGER_DEPTH: usize = 8;
/// A write not seen back this long after it was made is given up on (a
/// crash between recording it and sending it): the next view decides.
const IN_FLIGHT_TTL: Duration = Duration::minutes(5);

/// A field value; `None` is empty.
pub type Val = Option<String>;

/// One remembered write: the value's hash and when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    pub hash: String,
    pub at: DateTime<Utc>,
}

/// What the sync knows about one field of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldState {
    /// The value last seen in each system (its own vocabulary), once seen.
    pub seen: [Option<Val>; 2],
    /// The value both systems should hold (canonical), once agreed.
    pub agreed: Option<Val>,
    /// The write ledger: leadrelay's recent writes to each system.
    pub ledger: [Vec<Written>; 2],
    /// An open review item holds the field: nothing is written until a
    /// person decides.
    pub review: Option<uuid::Uuid>,
}

/// What the sync knows about one record (by email), stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    /// The record's id in each system, once known.
    pub ids: [Option<String>; 2],
    pub fields: BTreeMap<String, FieldState>,
}

/// A record as one system shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: String,
    pub modified_at: DateTime<Utc>,
    /// By sync field name, in the system's vocabulary.
    pub values: BTreeMap<String, Val>,
    /// The system's change feed shows every completed write (Pipedrive's
    /// list); false when it may show an older state (HubSpot's search
    /// index lags writes).
    pub consistent: bool,
}

/// A conflict the `review` strategy hands to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub field: String,
    /// Canonical values and the modification times of each side.
    pub values: [Val; 2],
    pub times: [DateTime<Utc>; 2],
}

/// What one record's observation leads to.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Per system: sync field → value to write (that system's vocabulary).
    pub writes: [BTreeMap<String, Val>; 2],
    /// Echoes of leadrelay's writes recognised and dropped.
    pub echoes: usize,
    /// Real changes seen.
    pub changes: usize,
    /// Changes to a field the other side owns, undone.
    pub restores: usize,
    /// Concurrent changes settled by a strategy (not `review`).
    pub settled: usize,
    /// New conflicts for the review queue (the caller records the item's id
    /// in `FieldState::review`).
    pub conflicts: Vec<Conflict>,
    /// Values a field's transform refused for a system: not written (the
    /// write stays pending until the value or the transform changes).
    pub refused: Vec<String>,
}

/// The hash the write ledger keeps of a value.
pub fn value_hash(v: &Val) -> String {
    let mut h = Sha256::new();
    match v {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update(s.as_bytes());
        }
    }
    hex::encode(&h.finalize()[..12])
}

fn ix(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

/// `b`'s value in `a`'s vocabulary.
pub fn to_canonical(f: &SyncFieldConfig, side: Side, v: &Val) -> Val {
    match side {
        Side::A => v.clone(),
        Side::B => v.as_ref().map(|v| {
            f.map
                .iter()
                .find(|(_, to)| *to == v)
                .map(|(from, _)| from.clone())
                .unwrap_or_else(|| v.clone())
        }),
    }
}

/// A canonical value as it is written into `side`: through the value map
/// (into `b`), then the field's transforms for that side. An empty result
/// clears the field; a value a transform refuses is an error naming it.
pub fn from_canonical(f: &SyncFieldConfig, side: Side, v: &Val) -> Result<Val, String> {
    let mut out = match side {
        Side::A => v.clone(),
        Side::B => v
            .as_ref()
            .map(|v| f.map.get(v).cloned().unwrap_or_else(|| v.clone())),
    };
    for t in f.transforms(side).parsed() {
        let Some(text) = out else { break };
        let value = t.apply(&serde_json::Value::String(text))?;
        out = crate::mapping::as_text(&value).filter(|s| !s.is_empty());
    }
    Ok(out)
}

/// `a ∪ b` of `;`-separated values, `a`'s order first.
pub fn merge_values(a: &Val, b: &Val) -> Val {
    let mut out: Vec<&str> = Vec::new();
    for v in [a, b].into_iter().flatten() {
        for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if !out.contains(&part) {
                out.push(part);
            }
        }
    }
    (!out.is_empty()).then(|| out.join(";"))
}

/// The members of a set value (an association to several records):
/// `;`-separated record keys.
pub fn set_members(v: &Val) -> std::collections::BTreeSet<&str> {
    v.as_deref()
        .into_iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect()
}

/// A set value from its members: sorted, each once, `;`-separated; the
/// empty set is empty.
pub fn set_value<'a>(members: impl IntoIterator<Item = &'a str>) -> Val {
    let members: std::collections::BTreeSet<&str> = members.into_iter().collect();
    (!members.is_empty()).then(|| members.into_iter().collect::<Vec<_>>().join(";"))
}

/// Two concurrent changes of a set merged against what both agreed
/// before (`base`): every member either side added is in, every member
/// either side removed is out; without a base, the union.
pub fn merge_sets(base: Option<&Val>, a: &Val, b: &Val) -> Val {
    let (sa, sb) = (set_members(a), set_members(b));
    let base = base.map(set_members).unwrap_or_default();
    let removed = |side: &std::collections::BTreeSet<&str>| {
        base.iter()
            .filter(|m| !side.contains(*m))
            .copied()
            .collect::<std::collections::BTreeSet<&str>>()
    };
    let (ra, rb) = (removed(&sa), removed(&sb));
    set_value(
        sa.union(&sb)
            .copied()
            .filter(|m| !ra.contains(m) && !rb.contains(m)),
    )
}

/// Decides one record. `observed[i]` is system i's current view (None: not
/// in this round's poll). Updates `state` (seen values, agreed values,
/// ledger entries for the writes it asks for) and returns the decision.
pub fn decide(
    sync: &SyncConfig,
    state: &mut RecordState,
    observed: [Option<&Observed>; 2],
    now: DateTime<Utc>,
) -> Decision {
    let mut d = Decision::default();
    let skew = Duration::from_std(sync.clock_skew.get()).unwrap_or_default();
    for (i, o) in observed.iter().enumerate() {
        if let Some(o) = o {
            state.ids[i] = Some(o.id.clone());
        }
    }
    for (name, f) in &sync.fields {
        let fs = state.fields.entry(name.clone()).or_default();
        let mut changed: [Option<Val>; 2] = [None, None];
        for side in [Side::A, Side::B] {
            let i = ix(side);
            let Some(o) = observed[i] else { continue };
            let v = o.values.get(name).cloned().unwrap_or(None);
            let hash = value_hash(&v);
            // Writes this view cannot be waiting for any more: with a
            // consistent feed, all earlier writes; else those older than
            // the record's modification (someone changed it since).
            let superseded = |ledger: &mut Vec<Written>| {
                if o.consistent
                    || ledger
                        .last()
                        .is_some_and(|w| o.modified_at > w.at + skew || now - w.at > IN_FLIGHT_TTL)
                {
                    ledger.clear();
                }
            };
            let echo = if o.consistent {
                fs.ledger[i]
                    .last()
                    .is_some_and(|w| w.hash == hash)
                    .then(|| fs.ledger[i].len() - 1)
            } else {
                fs.ledger[i].iter().position(|w| w.hash == hash)
            };
            if let Some(pos) = echo {
                // Our own write coming back: remember it as seen, drop it
                // (and the older writes it supersedes).
                fs.ledger[i].drain(..=pos);
                superseded(&mut fs.ledger[i]);
                fs.seen[i] = Some(v);
                d.echoes += 1;
                continue;
            }
            if fs.seen[i].as_ref() == Some(&v) {
                superseded(&mut fs.ledger[i]);
                continue;
            }
            let first_sight = fs.seen[i].is_none();
            fs.seen[i] = Some(v.clone());
            fs.ledger[i].clear();
            if first_sight && fs.agreed.as_ref() == Some(&to_canonical(f, side, &v)) {
                continue;
            }
            changed[i] = Some(to_canonical(f, side, &v));
            d.changes += 1;
        }
        if fs.review.is_none() {
            let times = [0, 1].map(|i| observed[i].map(|o| o.modified_at).unwrap_or(now));
            settle(sync, f, name, fs, changed.clone(), times, skew, &mut d);
        }
        if fs.review.is_some() {
            continue;
        }
        let Some(agreed) = fs.agreed.clone() else {
            continue;
        };
        for side in [Side::A, Side::B] {
            let i = ix(side);
            // A system already holding the agreed value (in its own
            // vocabulary) keeps its own spelling: transforms shape values
            // carried from the other system.
            if fs.seen[i]
                .as_ref()
                .is_some_and(|s| to_canonical(f, side, s) == agreed)
            {
                continue;
            }
            let target = match from_canonical(f, side, &agreed) {
                Ok(t) => t,
                Err(m) => {
                    if may_write(sync, f, side) {
                        d.refused.push(format!(
                            "field {name} into {}: transform_{}: {m}",
                            side.as_str(),
                            side.as_str()
                        ));
                    }
                    continue;
                }
            };
            let up_to_date = fs.seen[i].as_ref() == Some(&target);
            // A record leadrelay has no id for yet is written by email
            // (an upsert), so a create that may have been cut short by a
            // crash is simply sent again.
            let in_flight = state.ids[i].is_some()
                && fs.ledger[i]
                    .last()
                    .is_some_and(|w| w.hash == value_hash(&target));
            // A record not seen yet in a system is created there only with
            // values (an empty field is not worth a record).
            let worth = fs.seen[i].is_some() || target.is_some();
            if up_to_date || in_flight || !worth || !may_write(sync, f, side) {
                continue;
            }
            if fs.seen[i].is_some()
                && changed[i].is_some()
                && f.owner(sync.direction) == owner_of(side.other())
            {
                d.restores += 1;
            }
            fs.ledger[i].push(Written {
                hash: value_hash(&target),
                at: now,
            });
            if fs.ledger[i].len() > LEDGER_DEPTH {
                fs.ledger[i].remove(0);
            }
            d.writes[i].insert(name.clone(), target);
        }
    }
    d
}

fn owner_of(side: Side) -> FieldOwner {
    match side {
        Side::A => FieldOwner::A,
        Side::B => FieldOwner::B,
    }
}

/// Whether the sync may write `f` into `side`: never into the side that
/// owns it alone… except to create or repair nothing: an owner's value is
/// its own.
fn may_write(sync: &SyncConfig, f: &SyncFieldConfig, side: Side) -> bool {
    f.owner(sync.direction) != owner_of(side)
}

/// The new agreed value from this round's changes.
#[allow(clippy::too_many_arguments)]
fn settle(
    sync: &SyncConfig,
    f: &SyncFieldConfig,
    name: &str,
    fs: &mut FieldState,
    changed: [Option<Val>; 2],
    times: [DateTime<Utc>; 2],
    skew: Duration,
    d: &mut Decision,
) {
    let owner = f.owner(sync.direction);
    // What each side may decide: its change, or on first sight its value.
    let candidate = |i: usize| -> Option<Val> {
        changed[i].clone().or_else(|| {
            (fs.agreed.is_none())
                .then(|| fs.seen[i].clone())
                .flatten()
                .map(|v| to_canonical(f, if i == 0 { Side::A } else { Side::B }, &v))
        })
    };
    match owner {
        FieldOwner::A | FieldOwner::B => {
            let i = if owner == FieldOwner::A { 0 } else { 1 };
            if let Some(v) = candidate(i) {
                fs.agreed = Some(v);
            }
        }
        FieldOwner::Both => match (candidate(0), candidate(1)) {
            (None, None) => {}
            (Some(v), None) | (None, Some(v)) => fs.agreed = Some(v),
            (Some(a), Some(b)) if a == b => fs.agreed = Some(a),
            (Some(a), Some(b)) => {
                // On first sight an empty side loses to a value.
                if fs.agreed.is_none() && (a.is_none() || b.is_none()) {
                    fs.agreed = Some(a.or(b));
                    return;
                }
                d.settled += 1;
                fs.agreed = Some(match f.conflict {
                    ConflictStrategy::Latest => {
                        if times[1] > times[0] + skew {
                            b
                        } else {
                            a
                        }
                    }
                    ConflictStrategy::SourceWins => match f.source.unwrap_or(Side::A) {
                        Side::A => a,
                        Side::B => b,
                    },
                    ConflictStrategy::FieldMerge if f.many() => {
                        merge_sets(fs.agreed.as_ref(), &a, &b)
                    }
                    ConflictStrategy::FieldMerge => merge_values(&a, &b),
                    ConflictStrategy::Review => {
                        d.settled -= 1;
                        d.conflicts.push(Conflict {
                            field: name.to_string(),
                            values: [a, b],
                            times,
                        });
                        // Held until decided; the placeholder id is
                        // replaced by the caller with the item's.
                        fs.review = Some(uuid::Uuid::nil());
                        return;
                    }
                });
            }
        },
    }
}

/// Applies a person's decision: the field's agreed value becomes `value`
/// (canonical) and it is released for writing to both systems.
pub fn apply_decision(state: &mut RecordState, field: &str, value: Val) {
    let fs = state.fields.entry(field.to_string()).or_default();
    fs.agreed = Some(value);
    fs.review = None;
}

#[cfg(test)]
mod tests;
