//! Tasks kept in sync between HubSpot (task engagements) and Salesforce
//! (Task): the seed's "Task ↔ Engagement". No match key: a task is linked
//! through the one the sync creates for it. Status and priority go through
//! value maps both ways, the due date through transforms (HubSpot's
//! `hs_timestamp` date-time ↔ Salesforce's `ActivityDate` date), and the
//! task's person through the contacts sync's links (HubSpot association ↔
//! `WhoId`).

use leadrelay::config;
use serde_json::json;

use crate::sync::{health, settle_rounds};
use crate::sync_objects::world;

const TASKS: &str = r#"
object = "task"

[syncs.crm.fields.subject]
a = "hs_task_subject"
b = "Subject"

[syncs.crm.fields.status]
a = "hs_task_status"
b = "Status"
map = { NOT_STARTED = "Not Started", IN_PROGRESS = "In Progress", WAITING = "Waiting on someone else", COMPLETED = "Completed", DEFERRED = "Deferred" }

[syncs.crm.fields.priority]
a = "hs_task_priority"
b = "Priority"
map = { HIGH = "High", MEDIUM = "Normal", LOW = "Low" }

[syncs.crm.fields.due]
a = "hs_timestamp"
b = "ActivityDate"
transform_b = "date"
transform_a = "datetime"

[syncs.crm.fields.who]
a = "associations.contacts"
b = "WhoId"
link = "people"

[syncs.people]
object = "contact"
a = "hubspot"
b = "salesforce"
poll_interval = "1h"

[syncs.people.fields.title]
a = "jobtitle"
b = "Title"
"#;

#[tokio::test]
async fn tasks_sync_both_ways_with_their_person_status_and_due_date() {
    let w = world(TASKS).await;
    let people = w.runner("people");

    let ada = w.hs.seed(
        "contacts",
        &[("email", "ada@example.com"), ("jobtitle", "CTO")],
    );
    let call = w.hs.seed(
        "tasks",
        &[
            ("hs_task_subject", "Call Ada"),
            ("hs_task_status", "NOT_STARTED"),
            ("hs_task_priority", "HIGH"),
            ("hs_timestamp", "2027-01-15T09:30:00Z"),
        ],
    );
    assert!(w.hs.associate_records(("tasks", &call), ("contacts", &ada)));
    let bob = w.sf.seed(
        "Lead",
        json!({"Email": "bob@example.com", "LastName": "Bob", "Company": "Beta", "Title": "VP"}),
    );
    let proposal = w.sf.seed(
        "Task",
        json!({"Subject": "Send proposal", "Status": "In Progress", "Priority": "Normal",
               "ActivityDate": "2027-02-01", "WhoId": bob}),
    );
    people.round().await;
    people.round().await;
    settle_rounds(&w.runner, &w.app, 5).await;

    let sf_task = |subject: &str| {
        let found: Vec<_> =
            w.sf.tasks()
                .into_iter()
                .filter(|t| t.text("Subject") == Some(subject))
                .collect();
        assert_eq!(found.len(), 1, "one {subject:?} task in Salesforce");
        found.into_iter().next().unwrap()
    };
    let hs_task = |subject: &str| {
        let found: Vec<_> =
            w.hs.tasks()
                .into_iter()
                .filter(|t| t.get("hs_task_subject") == Some(subject))
                .collect();
        assert_eq!(found.len(), 1, "one {subject:?} task in HubSpot");
        found.into_iter().next().unwrap()
    };
    let ada_lead =
        w.sf.leads()
            .into_iter()
            .find(|l| l.text("Email") == Some("ada@example.com"))
            .unwrap();
    let bob_contact =
        w.hs.contacts()
            .into_iter()
            .find(|c| c.get("email") == Some("bob@example.com"))
            .unwrap();

    // HubSpot's task in Salesforce: mapped, the date a date, Ada's Lead.
    let t = sf_task("Call Ada");
    assert_eq!(t.text("Status"), Some("Not Started"));
    assert_eq!(t.text("Priority"), Some("High"));
    assert_eq!(t.text("ActivityDate"), Some("2027-01-15"));
    assert_eq!(t.text("WhoId"), ada_lead.text("Id"));
    // Salesforce's task in HubSpot, associated with Bob's contact.
    let t = hs_task("Send proposal");
    assert_eq!(t.get("hs_task_status"), Some("IN_PROGRESS"));
    assert_eq!(t.get("hs_task_priority"), Some("MEDIUM"));
    assert_eq!(t.get("hs_timestamp"), Some("2027-02-01T00:00:00.000Z"));
    assert_eq!(
        w.hs.associated_ids("tasks", &t.id, "contacts"),
        vec![bob_contact.id.clone()]
    );
    // Each side keeps its own spelling of its own task.
    assert_eq!(
        hs_task("Call Ada").get("hs_timestamp"),
        Some("2027-01-15T09:30:00Z")
    );

    // Completed in Salesforce, rescheduled in HubSpot: both arrive, once.
    let call_sf = sf_task("Call Ada").text("Id").unwrap().to_string();
    assert!(w.sf.edit(&call_sf, json!({"Status": "Completed"})));
    let hs_proposal = hs_task("Send proposal").id;
    assert!(w.hs.edit(
        "tasks",
        &hs_proposal,
        &[("hs_timestamp", "2027-02-03T16:00:00Z")]
    ));
    settle_rounds(&w.runner, &w.app, 5).await;
    assert_eq!(hs_task("Call Ada").get("hs_task_status"), Some("COMPLETED"));
    assert_eq!(
        w.sf.records("Task")
            .into_iter()
            .find(|t| t.text("Id") == Some(proposal.as_str()))
            .unwrap()
            .text("ActivityDate"),
        Some("2027-02-03")
    );
    assert_eq!((w.sf.tasks().len(), w.hs.tasks().len()), (2, 2));
    let h = health(&w.app).await;
    assert_eq!((h.errors, h.pending), (0, 0), "{h:?}");
    // Two creates and two updates; nothing echoes back.
    assert_eq!((h.writes_a, h.writes_b), (2, 2), "{h:?}");
    for _ in 0..2 {
        let r = w.runner.round().await;
        assert_eq!((r.writes_a, r.writes_b), (2, 2), "ping-pong: {r:?}");
    }
}

#[tokio::test]
async fn task_syncs_are_checked() {
    let text = r#"
[destinations.hs]
connector = "hubspot"
[destinations.sf]
connector = "salesforce"
[syncs.tasks]
object = "task"
a = "hs"
b = "sf"
[syncs.tasks.fields.subject]
a = "hs_task_subject"
b = "Subject"
[syncs.tasks.fields.id]
a = "hs_object_id"
b = "Description"
[syncs.tasks.fields.stamp]
a = "hs_timestamp"
b = "SystemModstamp"
"#;
    let env = |_: &str| Some("x".to_string());
    let err = match config::load_str(text, "t.toml", &env) {
        Ok(_) => panic!("the bad task sync was accepted"),
        Err(e) => e.to_string(),
    };
    for needle in [
        "syncs.tasks.fields.id.a",
        "read-only HubSpot property",
        "syncs.tasks.fields.stamp.b",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // A task's own properties are writable, and no match key is needed.
    for fine in [
        "syncs.tasks.fields.subject",
        "syncs.tasks.fields.stamp.a",
        "syncs.tasks.match",
    ] {
        assert!(!err.contains(fine), "{fine} in {err}");
    }
}
