//! The enrollment flow of the sequence tools that keep one person record
//! and its sequence memberships (Apollo contacts and their
//! `contact_campaign_statuses`, Salesloft people and cadence memberships):
//! find the person by email, create them only when the tool has nobody,
//! read their memberships, apply the `already_enrolled` policy, add them.
//! A connector implements [`PersonTool`] (its requests and answers) and
//! gets [`enroll`] and [`exit`].

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Map, Value};

use super::{AlreadyEnrolled, Policy, Verdict};
use crate::connectors::{AttemptReport, DeliveryJob, ErrorClass, JobResult, Outcome};
use crate::store::RemoteId;

/// A person record of the tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: String,
    pub memberships: Vec<Membership>,
}

/// One membership of a person in a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    /// The membership's own id (Salesloft's cadence membership id; the
    /// status id for Apollo).
    pub id: String,
    pub sequence: String,
    /// Active or paused: the sequence is not over for them.
    pub live: bool,
}

impl Person {
    /// Whether the person is active or paused in `sequence`.
    pub fn live_in(&self, sequence: &str) -> bool {
        self.memberships
            .iter()
            .any(|m| m.live && m.sequence == sequence)
    }

    fn live_elsewhere(&self, sequence: &str) -> Vec<Membership> {
        self.memberships
            .iter()
            .filter(|m| m.live && m.sequence != sequence)
            .cloned()
            .collect()
    }
}

/// A tool's requests. Each records the attempt report of its last request
/// in `report`.
#[async_trait]
pub trait PersonTool: Send + Sync {
    /// The tool's name for logs and reasons (`apollo`).
    fn tool(&self) -> &'static str;
    /// The sequence this destination enrolls in.
    fn sequence(&self) -> &str;
    /// The object a person's id is kept under (for privacy erase).
    fn object(&self) -> String;
    /// The person's fields as the tool takes them (mapping errors name the field).
    fn fields(&self, job: &DeliveryJob) -> Result<Map<String, Value>, String>;
    /// Every person record with this email address (exact match).
    async fn find(&self, email: &str, report: &mut AttemptReport) -> Result<Vec<Person>, Outcome>;
    /// Creates the person (never a second one: the tool's duplicate rule
    /// answers the existing record).
    async fn create(
        &self,
        email: &str,
        fields: Map<String, Value>,
        report: &mut AttemptReport,
    ) -> Result<Person, Outcome>;
    /// Adds the person to [`Self::sequence`]: the tool's verdict.
    async fn add(&self, person: &Person, report: &mut AttemptReport) -> Result<Verdict, Outcome>;
    /// Takes the person out of these memberships.
    async fn remove(
        &self,
        person: &Person,
        memberships: &[Membership],
        report: &mut AttemptReport,
    ) -> Result<(), Outcome>;
}

fn result(outcome: Outcome, report: AttemptReport) -> JobResult {
    JobResult { outcome, report }
}

/// The person's id, kept as the enrollment's remote id.
pub fn remote_ids(tool: &dyn PersonTool, job: &DeliveryJob, person: &Person) -> Vec<RemoteId> {
    vec![RemoteId {
        object: tool.object(),
        key: job.delivery.contact_key.clone(),
        id: person.id.clone(),
    }]
}

/// Of several records for one address (made in the app), the one already
/// in the sequence, else the first.
fn pick(people: Vec<Person>, sequence: &str) -> Option<Person> {
    let i = people.iter().position(|p| p.live_in(sequence)).unwrap_or(0);
    people.into_iter().nth(i)
}

/// Find-or-create, the `already_enrolled` policy, then add.
pub async fn enroll(tool: &dyn PersonTool, policy: &Policy, job: &DeliveryJob) -> JobResult {
    let now = Utc::now();
    let mut report = AttemptReport::default();
    let fields = match tool.fields(job) {
        Ok(f) => f,
        Err(m) => return result(Outcome::permanent(ErrorClass::Mapping, m), report),
    };
    let Some(email) = super::job_email(job).map(|e| e.to_lowercase()) else {
        let m = "no email address to enroll";
        return result(Outcome::permanent(ErrorClass::Mapping, m), report);
    };
    let found = match tool.find(&email, &mut report).await {
        Ok(people) => pick(people, tool.sequence()),
        Err(o) => return result(o, report),
    };
    let person = match found {
        Some(p) => p,
        None => match tool.create(&email, fields, &mut report).await {
            Ok(p) => p,
            Err(o) => return result(o, report),
        },
    };
    if person.live_in(tool.sequence()) {
        let remote_ids = remote_ids(tool, job, &person);
        let outcome = policy.outcome(Verdict::AlreadyMember { remote_ids }, now);
        return result(outcome, report);
    }
    let others = person.live_elsewhere(tool.sequence());
    if !others.is_empty() {
        if policy.already_enrolled != AlreadyEnrolled::Move {
            let sequence = others
                .iter()
                .map(|m| format!("{} {}", tool.tool(), m.sequence))
                .collect::<Vec<_>>()
                .join(", ");
            let outcome = policy.outcome(Verdict::ActiveElsewhere { sequence }, now);
            return result(outcome, report);
        }
        if let Err(o) = tool.remove(&person, &others, &mut report).await {
            return result(o, report);
        }
        tracing::info!(
            tool = tool.tool(),
            from = ?others.iter().map(|m| &m.sequence).collect::<Vec<_>>(),
            "already_enrolled = move: taken out of the other sequences"
        );
    }
    let verdict = match tool.add(&person, &mut report).await {
        Ok(Verdict::Enrolled { .. }) => Verdict::Enrolled {
            remote_ids: remote_ids(tool, job, &person),
        },
        Ok(v) => v,
        Err(o) => Verdict::Failed(o),
    };
    result(policy.outcome(verdict, now), report)
}

/// A person tool's `deliver`: each job is a privacy erase (`erase`), an
/// exit or an enrollment.
pub async fn deliver<E, F>(
    tool: &dyn PersonTool,
    policy: &Policy,
    jobs: &[DeliveryJob],
    erase: E,
) -> Vec<JobResult>
where
    E: Fn(Result<Vec<crate::connectors::crm::EraseTarget>, String>) -> F,
    F: std::future::Future<Output = JobResult>,
{
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(match policy.work(job) {
            super::Work::Erase(targets) => erase(targets).await,
            super::Work::Exit => exit(tool, job).await,
            super::Work::Enroll => enroll(tool, policy, job).await,
        });
    }
    out
}

/// `exit_sequences`: every record of the person leaves every live
/// sequence of the tool; nobody, or nothing live, is done as well.
pub async fn exit(tool: &dyn PersonTool, job: &DeliveryJob) -> JobResult {
    let mut report = AttemptReport::default();
    let Some(email) = super::job_email(job).map(|e| e.to_lowercase()) else {
        let m = "no email address to exit";
        return result(Outcome::permanent(ErrorClass::Mapping, m), report);
    };
    let people = match tool.find(&email, &mut report).await {
        Ok(p) => p,
        Err(o) => return result(o, report),
    };
    let mut left = Vec::new();
    for person in people {
        let live: Vec<Membership> = person
            .memberships
            .iter()
            .filter(|m| m.live)
            .cloned()
            .collect();
        if live.is_empty() {
            continue;
        }
        if let Err(o) = tool.remove(&person, &live, &mut report).await {
            return result(o, report);
        }
        left.extend(live.into_iter().map(|m| m.sequence));
    }
    result(super::exited(tool.tool(), &left), report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(sequence: &str, live: bool) -> Membership {
        Membership {
            id: format!("m-{sequence}"),
            sequence: sequence.into(),
            live,
        }
    }

    #[test]
    fn the_record_already_in_the_sequence_is_picked() {
        let a = Person {
            id: "a".into(),
            memberships: vec![m("s1", false)],
        };
        let b = Person {
            id: "b".into(),
            memberships: vec![m("s1", true), m("s2", true)],
        };
        assert_eq!(pick(vec![a.clone(), b.clone()], "s1").unwrap().id, "b");
        assert_eq!(pick(vec![a.clone(), b.clone()], "s3").unwrap().id, "a");
        assert!(pick(Vec::new(), "s1").is_none());
        assert_eq!(b.live_elsewhere("s1"), [m("s2", true)]);
        assert!(a.live_elsewhere("s2").is_empty());
    }
}
