//! The `Store` contract, exercised directly. Runs against SQLite, and
//! against PostgreSQL with `LEADRELAY_TEST_BACKEND=postgres` (the test
//! command runs both).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadrelay::store::{
    Attempt, Completion, DeliveryFilter, DeliveryState, IdempotencyKey, IngestItem, IngestOutcome,
    NewFixable, OpenOptions, PurgePolicy, RemoteId, Store, StoreError, Transition,
};
use leadrelay_model::{ContactData, EmailAddress, Event, EventType, Origin, new_id};
use tempfile::TempDir;

use crate::support::TestDb;

struct Fixture {
    store: Arc<dyn Store>,
    _db: TestDb,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let store = leadrelay::store::open(&db.url, &OpenOptions::default())
        .await
        .unwrap();
    Fixture {
        store,
        _db: db,
        _dir: dir,
    }
}

fn event(email: Option<&str>) -> Event {
    let now = Utc::now();
    Event {
        id: new_id(),
        event_type: EventType::LeadCreated,
        origin: Origin::form("contact"),
        received_at: now,
        occurred_at: now,
        contact: ContactData {
            email: email.map(|e| EmailAddress::parse(e).unwrap()),
            ..Default::default()
        },
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
    }
}

fn item(e: Event, dests: &[&str]) -> IngestItem {
    IngestItem {
        event: e,
        destinations: dests.iter().map(|d| d.to_string()).collect(),
        idempotency: None,
    }
}

fn done(c: &leadrelay::store::ClaimedDelivery) -> Completion {
    Completion {
        delivery_id: c.delivery.id,
        lease_id: c.delivery.lease_id.unwrap(),
        attempt: None,
        transition: Transition::Delivered { remote_ids: vec![] },
        follow_up: None,
    }
}

#[tokio::test]
async fn claims_take_only_the_oldest_delivery_per_contact() {
    let f = fixture().await;
    let s = &f.store;
    for email in ["a@x.io", "a@x.io", "b@x.io", "a@x.io"] {
        s.ingest(vec![item(event(Some(email)), &["d"])])
            .await
            .unwrap();
    }
    let first = s.claim("d", 10, Duration::from_secs(60)).await.unwrap();
    let keys: Vec<&str> = first
        .iter()
        .map(|c| c.delivery.contact_key.as_str())
        .collect();
    assert_eq!(keys.len(), 2, "one per contact: {keys:?}");
    assert!(
        s.claim("d", 10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "the rest wait behind their contact's head"
    );
    s.complete(first.iter().map(done).collect()).await.unwrap();
    let second = s.claim("d", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.contact_key, "email:a@x.io");
    // The claimed event comes with its golden contact.
    assert!(second[0].contact.is_some());
}

#[tokio::test]
async fn expired_leases_are_claimed_again_and_stale_completions_ignored() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![item(event(Some("l@x.io")), &["d"])])
        .await
        .unwrap();
    let first = s.claim("d", 1, Duration::from_millis(1)).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = s.claim("d", 1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "an expired lease makes the delivery due again"
    );
    assert_eq!(again[0].delivery.id, first[0].delivery.id);
    // The first worker finishes late: its completion must not win.
    s.complete(vec![Completion {
        delivery_id: first[0].delivery.id,
        lease_id: first[0].delivery.lease_id.unwrap(),
        attempt: None,
        transition: Transition::Dead {
            status: Some(400),
            reason: "late".into(),
        },
        follow_up: None,
    }])
    .await
    .unwrap();
    assert_eq!(
        s.get_delivery(first[0].delivery.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        DeliveryState::InFlight
    );
    s.complete(vec![done(&again[0])]).await.unwrap();
    assert_eq!(
        s.get_delivery(first[0].delivery.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        DeliveryState::Delivered
    );
}

/// A claim's outcomes recorded in one call, as a backup batch records
/// them: sizes that need every multi-row statement size, attempts with and
/// without a status, a few under a lease that is no longer theirs. Every
/// attempt is kept; only deliveries still held under the completion's lease
/// change state.
#[tokio::test]
async fn a_batch_of_outcomes_keeps_every_attempt_and_honours_leases() {
    let f = fixture().await;
    let s = &f.store;
    let n = 64 + 16 + 4 + 2 + 64;
    let items = (0..n)
        .map(|i| item(event(Some(&format!("b{i}@x.io"))), &["d"]))
        .collect();
    s.ingest(items).await.unwrap();
    let claimed = s.claim("d", 1000, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), n);
    let stale = new_id();
    let completions: Vec<Completion> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let status = (i % 3 != 0).then_some(if i % 2 == 0 { 200 } else { 204 });
            Completion {
                delivery_id: c.delivery.id,
                // Every 10th finishes under a lease that is not its own.
                lease_id: if i % 10 == 9 {
                    stale
                } else {
                    c.delivery.lease_id.unwrap()
                },
                attempt: Some(Attempt {
                    id: new_id(),
                    delivery_id: c.delivery.id,
                    destination: "d".into(),
                    number: 1,
                    started_at: Utc::now(),
                    duration_ms: i as u64,
                    method: Some("APPEND".into()),
                    url: Some(format!("/backup/{i}")),
                    request_bytes: Some(100 + i as u64),
                    request_sha256: Some("ab".repeat(32)),
                    status,
                    response_excerpt: Some(format!("wrote line {i}")),
                    error_class: None,
                    outcome: "delivered".into(),
                    message: None,
                    next_attempt_at: None,
                    exchange: None,
                }),
                transition: Transition::Delivered { remote_ids: vec![] },
                follow_up: None,
            }
        })
        .collect();
    s.complete(completions).await.unwrap();
    for (i, c) in claimed.iter().enumerate() {
        let d = s.get_delivery(c.delivery.id).await.unwrap().unwrap();
        let attempts = s.attempts(c.delivery.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "delivery {i}: {attempts:?}");
        let a = &attempts[0];
        assert_eq!(a.duration_ms, i as u64);
        assert_eq!(a.url.as_deref(), Some(format!("/backup/{i}").as_str()));
        assert_eq!(a.request_bytes, Some(100 + i as u64));
        assert_eq!(
            a.response_excerpt.as_deref(),
            Some(format!("wrote line {i}").as_str())
        );
        if i % 10 == 9 {
            assert_eq!(d.state, DeliveryState::InFlight, "delivery {i}: {d:?}");
            assert_eq!(d.attempts, 0);
            continue;
        }
        let status = (i % 3 != 0).then_some(if i % 2 == 0 { 200 } else { 204 });
        assert_eq!(d.state, DeliveryState::Delivered, "delivery {i}: {d:?}");
        assert_eq!(d.attempts, 1, "delivery {i}");
        assert_eq!(d.last_status, status, "delivery {i}");
        assert!(d.lease_id.is_none() && d.finished_at.is_some(), "{d:?}");
    }
}

#[tokio::test]
async fn idempotency_keys_and_external_ids_store_once() {
    let f = fixture().await;
    let s = &f.store;
    let key = IdempotencyKey {
        scope: "form:contact".into(),
        key: "k1".into(),
        fingerprint: Some("same-body".into()),
    };
    let a = IngestItem {
        idempotency: Some(key.clone()),
        ..item(event(Some("i@x.io")), &["d"])
    };
    let b = IngestItem {
        idempotency: Some(key),
        ..item(event(Some("i@x.io")), &["d"])
    };
    let first = s.ingest(vec![a]).await.unwrap()[0];
    let second = s.ingest(vec![b]).await.unwrap()[0];
    assert!(matches!(first, IngestOutcome::Stored(_)));
    assert_eq!(second, IngestOutcome::Duplicate(first.event_id()));

    // The same vendor event id twice in one batch, and again later.
    let mut x1 = event(None);
    x1.origin = Origin::source("hubspot");
    x1.external_id = Some("evt-1".into());
    let mut x2 = x1.clone();
    x2.id = new_id();
    let out = s
        .ingest(vec![item(x1.clone(), &["d"]), item(x2, &["d"])])
        .await
        .unwrap();
    assert_eq!(out[1], IngestOutcome::Duplicate(out[0].event_id()));
    let mut x3 = x1.clone();
    x3.id = new_id();
    assert_eq!(
        s.ingest(vec![item(x3, &["d"])]).await.unwrap()[0],
        IngestOutcome::Duplicate(x1.id)
    );
    let deliveries = s
        .list_deliveries(&DeliveryFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 2, "no outbox rows for duplicates");
}

fn keyed(scope: &str, key: &str, fingerprint: Option<&str>, email: &str) -> IngestItem {
    IngestItem {
        idempotency: Some(IdempotencyKey {
            scope: scope.into(),
            key: key.into(),
            fingerprint: fingerprint.map(Into::into),
        }),
        ..item(event(Some(email)), &["d"])
    }
}

async fn events_stored(s: &Arc<dyn Store>) -> usize {
    s.list_events(&Default::default(), None, 500)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn idempotency_keys_are_per_client_and_a_reused_key_is_refused() {
    let f = fixture().await;
    let s = &f.store;
    let one = |k| s.ingest(vec![k]);
    // Two clients send the same key with different bodies: two events.
    let a = one(keyed("api:one", "shared-key-1", Some("fa"), "a@x.io"))
        .await
        .unwrap()[0];
    let b = one(keyed("api:two", "shared-key-1", Some("fb"), "b@x.io"))
        .await
        .unwrap()[0];
    assert!(matches!(a, IngestOutcome::Stored(_)), "{a:?}");
    assert!(matches!(b, IngestOutcome::Stored(_)), "{b:?}");
    assert_ne!(a.event_id(), b.event_id());
    // The same request again: the first event's id.
    let again = one(keyed("api:one", "shared-key-1", Some("fa"), "a@x.io"))
        .await
        .unwrap()[0];
    assert_eq!(again, IngestOutcome::Duplicate(a.event_id()));
    // The same client, the same key, another body: refused, not replayed.
    match one(keyed("api:one", "shared-key-1", Some("fc"), "c@x.io")).await {
        Err(StoreError::IdempotencyKeyReused(at)) => assert_eq!(at, vec![0]),
        other => panic!("expected a reused key, got {other:?}"),
    }
    assert_eq!(events_stored(s).await, 2);

    // In a batch, a reused key refuses the whole call: the fresh item
    // beside it is not stored either; every reused item is named.
    let batch = vec![
        keyed("api:one", "fresh", Some("f1"), "d@x.io"),
        keyed("api:one", "shared-key-1", Some("fd"), "e@x.io"),
        keyed("api:two", "shared-key-1", Some("fb"), "b@x.io"),
        keyed("api:one", "fresh", Some("f2"), "g@x.io"),
    ];
    match s.ingest(batch).await {
        Err(StoreError::IdempotencyKeyReused(at)) => assert_eq!(at, vec![1, 3]),
        other => panic!("expected reused keys, got {other:?}"),
    }
    assert_eq!(events_stored(s).await, 2, "nothing of the batch stored");

    // Keys without a fingerprint (leadrelay's own) are never compared.
    let t1 = one(keyed("pipeline", "timer-1", None, "h@x.io"))
        .await
        .unwrap()[0];
    let t2 = one(keyed("pipeline", "timer-1", None, "i@x.io"))
        .await
        .unwrap()[0];
    assert_eq!(t2, IngestOutcome::Duplicate(t1.event_id()));
}

#[tokio::test]
async fn a_reused_key_does_not_fail_concurrent_ingests() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![keyed("form:contact", "k", Some("first"), "k@x.io")])
        .await
        .unwrap();
    // Many callers at once share group commits (both backends batch
    // concurrent ingests into one transaction): the refused ones must not
    // take the others down with them.
    let calls = (0..40).map(|i| {
        let s = s.clone();
        async move {
            let item = if i % 2 == 0 {
                keyed("form:contact", "k", Some(&format!("other-{i}")), "k@x.io")
            } else {
                keyed(
                    "form:contact",
                    &format!("fresh-{i}"),
                    Some("x"),
                    &format!("n{i}@x.io"),
                )
            };
            (i, s.ingest(vec![item]).await)
        }
    });
    for (i, r) in futures::future::join_all(calls).await {
        if i % 2 == 0 {
            assert!(
                matches!(r, Err(StoreError::IdempotencyKeyReused(_))),
                "{i}: {r:?}"
            );
        } else {
            assert!(
                matches!(r, Ok(ref v) if matches!(v[0], IngestOutcome::Stored(_))),
                "{i}: {r:?}"
            );
        }
    }
    assert_eq!(events_stored(s).await, 21);
}

#[tokio::test]
async fn contacts_merge_across_events_in_one_batch() {
    let f = fixture().await;
    let s = &f.store;
    let mut a = event(Some("g@x.io"));
    a.contact.first_name = Some("Gil".into());
    let mut b = event(Some("g@x.io"));
    b.contact.company = Some("Acme".into());
    let out = s.ingest(vec![item(a, &[]), item(b, &[])]).await.unwrap();
    let c = s.find_contact_by_email("g@x.io").await.unwrap().unwrap();
    assert_eq!(c.data.first_name.as_deref(), Some("Gil"));
    assert_eq!(c.data.company.as_deref(), Some("Acme"));
    for o in out {
        assert_eq!(
            s.get_event(o.event_id()).await.unwrap().unwrap().contact_id,
            Some(c.id)
        );
    }
}

#[tokio::test]
async fn replay_chains_keep_history_and_overrides() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![item(event(Some("r@x.io")), &["d"])])
        .await
        .unwrap();
    let c = s.claim("d", 1, Duration::from_secs(60)).await.unwrap();
    s.complete(vec![Completion {
        delivery_id: c[0].delivery.id,
        lease_id: c[0].delivery.lease_id.unwrap(),
        attempt: None,
        transition: Transition::Dead {
            status: Some(422),
            reason: "bad".into(),
        },
        follow_up: None,
    }])
    .await
    .unwrap();
    let mut o = serde_json::Map::new();
    o.insert("first_name".into(), "A".into());
    let pairs = s.replay(vec![c[0].delivery.id], Some(o)).await.unwrap();
    assert_eq!(pairs.len(), 1);
    let new = s.get_delivery(pairs[0].1).await.unwrap().unwrap();
    assert_eq!(new.replay_of, Some(c[0].delivery.id));
    assert_eq!(new.overrides.unwrap()["first_name"], "A");
    assert!(
        s.replay(vec![c[0].delivery.id], None)
            .await
            .unwrap()
            .is_empty(),
        "a replayed dead letter is not replayed twice"
    );
    assert_eq!(
        s.discard(vec![pairs[0].1]).await.unwrap(),
        0,
        "only dead letters can be discarded"
    );
}

#[tokio::test]
async fn remote_ids_are_kept_per_destination_and_key() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![item(event(Some("rid@x.io")), &["crm"])])
        .await
        .unwrap();
    let c = s.claim("crm", 1, Duration::from_secs(60)).await.unwrap();
    let key = c[0].delivery.contact_key.clone();
    s.complete(vec![Completion {
        transition: Transition::Delivered {
            remote_ids: vec![RemoteId {
                object: "contact".into(),
                key: key.clone(),
                id: "123".into(),
            }],
        },
        ..done(&c[0])
    }])
    .await
    .unwrap();
    let ids = s
        .remote_ids("crm", std::slice::from_ref(&key))
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![RemoteId {
            object: "contact".into(),
            key: key.clone(),
            id: "123".into()
        }]
    );
    assert!(s.remote_ids("other", &[key]).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_company_learned_by_many_deliveries_of_a_batch_is_kept_once() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![
        item(event(Some("ann@acme.io")), &["crm"]),
        item(event(Some("bob@acme.io")), &["crm"]),
    ])
    .await
    .unwrap();
    let c = s.claim("crm", 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(c.len(), 2);
    let company = |id: &str| RemoteId {
        object: "company".into(),
        key: "domain:acme.io".into(),
        id: id.into(),
    };
    // Both people link to the same company; one completion batch.
    s.complete(
        c.iter()
            .map(|d| Completion {
                transition: Transition::Delivered {
                    remote_ids: vec![company("77")],
                },
                ..done(d)
            })
            .collect(),
    )
    .await
    .unwrap();
    let keys = ["domain:acme.io".to_string()];
    assert_eq!(
        s.remote_ids("crm", &keys).await.unwrap(),
        vec![company("77")]
    );
    // Ids learned outside a completion: the last of duplicates wins.
    s.save_remote_ids("crm", &[company("78"), company("79")])
        .await
        .unwrap();
    assert_eq!(
        s.remote_ids("crm", &keys).await.unwrap(),
        vec![company("79")]
    );
    s.save_remote_ids("crm", &[]).await.unwrap();
}

#[tokio::test]
async fn kv_compare_and_set_lets_exactly_one_writer_win() {
    let f = fixture().await;
    let s = &f.store;
    assert!(s.kv_compare_and_set("k", None, "a").await.unwrap());
    assert!(
        !s.kv_compare_and_set("k", None, "b").await.unwrap(),
        "already exists"
    );
    assert!(
        !s.kv_compare_and_set("k", Some("x"), "b").await.unwrap(),
        "wrong expectation"
    );
    assert!(s.kv_compare_and_set("k", Some("a"), "b").await.unwrap());
    assert_eq!(s.kv_get("k").await.unwrap().as_deref(), Some("b"));
    // Racing writers: one wins.
    let results = futures::future::join_all((0..8).map(|i| {
        let s = s.clone();
        async move {
            s.kv_compare_and_set("race", None, &i.to_string())
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(results.iter().filter(|w| **w).count(), 1);
}

#[tokio::test]
async fn shared_rate_budget_grants_one_slot_per_interval() {
    let f = fixture().await;
    let s = &f.store;
    let interval = Duration::from_secs(10);
    assert_eq!(
        s.rate_acquire("d", interval).await.unwrap(),
        None,
        "the first slot is free"
    );
    let wait = s
        .rate_acquire("d", interval)
        .await
        .unwrap()
        .expect("the next slot waits");
    assert!(
        wait > Duration::from_secs(8) && wait <= interval,
        "{wait:?}"
    );
    assert_eq!(
        s.rate_acquire("other", interval).await.unwrap(),
        None,
        "budgets are per destination"
    );
}

#[tokio::test]
async fn pauses_never_shrink_and_resume_clears_them() {
    let f = fixture().await;
    let s = &f.store;
    let long = Utc::now() + chrono::Duration::seconds(60);
    let short = Utc::now() + chrono::Duration::seconds(5);
    s.pause_destination("d", long, "daily limit").await.unwrap();
    s.pause_destination("d", short, "throttled").await.unwrap();
    let st = s.destination_state("d").await.unwrap();
    assert_eq!(
        st.paused_until.unwrap().timestamp_millis(),
        long.timestamp_millis()
    );
    s.resume_destination("d").await.unwrap();
    assert!(
        s.destination_state("d")
            .await
            .unwrap()
            .paused_until
            .is_none()
    );
    s.set_destination_disabled("d", true, Some("410"))
        .await
        .unwrap();
    assert!(s.destination_state("d").await.unwrap().disabled);
}

#[tokio::test]
async fn purge_drops_old_finished_data_and_keeps_dead_letters() {
    let f = fixture().await;
    let s = &f.store;
    s.ingest(vec![
        item(event(Some("p1@x.io")), &["d"]),
        item(event(Some("p2@x.io")), &["d"]),
    ])
    .await
    .unwrap();
    let c = s.claim("d", 2, Duration::from_secs(60)).await.unwrap();
    s.complete(vec![
        done(&c[0]),
        Completion {
            delivery_id: c[1].delivery.id,
            lease_id: c[1].delivery.lease_id.unwrap(),
            attempt: None,
            transition: Transition::Dead {
                status: None,
                reason: "x".into(),
            },
            follow_up: None,
        },
    ])
    .await
    .unwrap();
    let future = Utc::now() + chrono::Duration::seconds(5);
    let report = s
        .purge(&PurgePolicy {
            raw_payloads_before: future,
            attempts_before: future,
            finished_deliveries_before: future,
            idempotency_before: future,
        })
        .await
        .unwrap();
    assert_eq!(report.deliveries, 1, "{report:?}");
    let left = s
        .list_deliveries(&DeliveryFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, DeliveryState::Dead);
}

/// Nodes started at the same moment on a fresh database all come up: one
/// migrates, the others wait for it (on PostgreSQL, two sessions creating
/// the migrations table at once used to fail the loser with a catalog
/// conflict, so the second node of a fresh cluster would not start).
#[tokio::test]
async fn stores_opened_at_once_on_a_fresh_database_all_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(dir.path()).await;
    let opens = (0..6).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { leadrelay::store::open(&url, &OpenOptions::default()).await })
    });
    for opened in futures::future::join_all(opens).await {
        let store = opened
            .unwrap()
            .unwrap_or_else(|e| panic!("a node failed to start: {e}"));
        assert!(store.schema_version().await.unwrap() > 0);
        store.close().await;
    }
}

/// A SQLite writer stuck behind another process's lock fails each call at
/// the store's deadline (`storage.timeout`) as unavailable, rather than
/// holding the caller for as long as SQLite waits; the store works again
/// once the lock is gone. (SQLite whatever the backend: the lock is a file's.)
#[tokio::test]
async fn a_store_call_stuck_on_a_sqlite_lock_fails_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leadrelay.db");
    let options = OpenOptions {
        call_timeout: Duration::from_millis(300),
        ..OpenOptions::default()
    };
    let store = leadrelay::store::open(&format!("sqlite://{}", path.display()), &options)
        .await
        .unwrap();
    store.kv_set("k", "before").await.unwrap();

    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    match store.kv_set("k", "during").await {
        Err(leadrelay::store::StoreError::Unavailable(m)) => {
            assert!(m.contains("did not answer kv_set within"), "{m}")
        }
        other => panic!("expected unavailable at the deadline, got {other:?}"),
    }
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);

    crate::support::eventually("the store works again", Duration::from_secs(20), || async {
        store.kv_set("k", "after").await.ok()
    })
    .await;
    assert_eq!(store.kv_get("k").await.unwrap().as_deref(), Some("after"));
    store.close().await;
}

/// Claims every due delivery of `d` and dead-letters it.
async fn kill_all(s: &Arc<dyn Store>, d: &str) -> Vec<uuid::Uuid> {
    let c = s.claim(d, 100, Duration::from_secs(60)).await.unwrap();
    let ids = c.iter().map(|c| c.delivery.id).collect();
    s.complete(
        c.iter()
            .map(|c| Completion {
                delivery_id: c.delivery.id,
                lease_id: c.delivery.lease_id.unwrap(),
                attempt: None,
                transition: Transition::Dead {
                    status: Some(400),
                    reason: "missing".into(),
                },
                follow_up: None,
            })
            .collect(),
    )
    .await
    .unwrap();
    ids
}

fn fixable(id: uuid::Uuid, field: &str, at: chrono::DateTime<Utc>) -> NewFixable {
    NewFixable {
        delivery_id: id,
        destination: "d".into(),
        kind: "missing_property".into(),
        object: None,
        field: field.into(),
        value: None,
        message: format!("{field} does not exist"),
        next_retry_at: at,
    }
}

#[tokio::test]
async fn fixable_dead_letters_are_grouped_rescheduled_and_bounded() {
    let f = fixture().await;
    let s = &f.store;
    for i in 0..3 {
        s.ingest(vec![item(event(Some(&format!("f{i}@x.io"))), &["d"])])
            .await
            .unwrap();
    }
    // A delivery that is not dead gets no row.
    s.ingest(vec![item(event(Some("live@x.io")), &["live"])])
        .await
        .unwrap();
    let live = s.claim("live", 1, Duration::from_secs(60)).await.unwrap();
    let ids = kill_all(s, "d").await;
    assert_eq!(ids.len(), 3);
    let later = Utc::now() + chrono::Duration::hours(24);
    let mut rows: Vec<NewFixable> = ids[..2]
        .iter()
        .map(|id| fixable(*id, "colour", later))
        .collect();
    rows.push(fixable(ids[2], "size", later));
    let mut stray = fixable(live[0].delivery.id, "colour", later);
    stray.destination = "live".into();
    rows.push(stray);
    assert_eq!(s.record_fixable(rows.clone()).await.unwrap(), 3);
    assert_eq!(
        s.record_fixable(rows).await.unwrap(),
        0,
        "recorded once per delivery"
    );

    let causes = s.fixable_causes(2).await.unwrap();
    assert_eq!(causes.len(), 2, "{causes:?}");
    assert_eq!(causes[0].cause_key, "missing_property::colour");
    assert_eq!((causes[0].waiting, causes[0].exhausted), (2, 0));
    assert_eq!(causes[0].message, "colour does not exist");
    assert_eq!(
        causes[0].next_retry_at.map(|t| t.timestamp_millis()),
        Some(later.timestamp_millis())
    );
    assert!(s.due_fixable(Utc::now(), 2, 100).await.unwrap().is_empty());

    // The cause may be gone: only its rows come due.
    let now = Utc::now();
    assert_eq!(
        s.reschedule_fixable("d", Some("missing_property::colour"), now)
            .await
            .unwrap(),
        2
    );
    let due = s.due_fixable(now, 2, 100).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(
        due.iter()
            .all(|d| d.retries == 0 && d.cause_key.ends_with("colour"))
    );

    // Retried and refused again: the replay's row inherits the count.
    let pairs = s
        .replay(due.iter().map(|d| d.delivery_id).collect(), None)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 2);
    assert!(
        s.due_fixable(now, 2, 100).await.unwrap().is_empty(),
        "replayed rows are no longer due"
    );
    let again = kill_all(s, "d").await;
    assert_eq!(again.len(), 2);
    let past = Utc::now() - chrono::Duration::seconds(1);
    s.record_fixable(
        again
            .iter()
            .map(|id| fixable(*id, "colour", past))
            .collect(),
    )
    .await
    .unwrap();
    let due = s.due_fixable(Utc::now(), 2, 100).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.retries == 1));
    // With at most one automatic retry, they wait for a person.
    assert!(s.due_fixable(Utc::now(), 1, 100).await.unwrap().is_empty());
    let causes = s.fixable_causes(1).await.unwrap();
    assert_eq!((causes[0].waiting, causes[0].exhausted), (0, 2));
    assert_eq!(causes[0].next_retry_at, None);

    // Discarded dead letters leave their cause.
    s.discard(again).await.unwrap();
    let causes = s.fixable_causes(2).await.unwrap();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "size");
}

/// Report rollups: a batch lands whole with its cursor; a batch that
/// started from a cursor another pass already moved is refused and writes
/// nothing; reads filter by their time ranges.
#[tokio::test]
async fn rollup_batches_move_the_cursor_once_and_reports_read_ranges() {
    use leadrelay::store::{
        CampaignCost, CreditRow, DealRow, HandoffOutcome, HandoffRow, KpiCount, LeadRow,
        ROLLUP_CURSOR_KEY, ResponseRow, RollupBatch, StagePeriod, TouchRow,
    };
    let f = fixture().await;
    let s = &f.store;
    let e1 = s
        .ingest_one(item(event(Some("r1@example.com")), &[]))
        .await
        .unwrap();
    let e2 = s
        .ingest_one(item(event(Some("r2@example.com")), &[]))
        .await
        .unwrap();
    let until = leadrelay::store::uuid_v7_floor_id(Utc::now() + chrono::Duration::seconds(1));
    let evs = s.rollup_events(None, until, 10).await.unwrap();
    assert_eq!(evs.iter().map(|e| e.id).collect::<Vec<_>>(), [e1, e2]);
    assert_eq!(
        s.rollup_events(Some(e1), until, 10).await.unwrap()[0].id,
        e2
    );
    assert!(evs[0].contact_id.is_some());

    // Stored times have millisecond precision.
    let t = chrono::DateTime::from_timestamp_millis(
        (Utc::now() - chrono::Duration::days(10)).timestamp_millis(),
    )
    .unwrap();
    let contact = evs[0].contact_id.unwrap();
    let deal = DealRow {
        deal_id: "hubspot:1".into(),
        contact_id: Some(contact),
        stage: "won".into(),
        status: "won".into(),
        amount: Some(1000.0),
        currency: None,
        probability: Some(1.0),
        owner: Some("ana".into()),
        expected_close: None,
        created_at: t,
        closed_at: Some(t + chrono::Duration::days(2)),
        origin: Some("form:contact".into()),
        channel: Some("email".into()),
        source: Some("newsletter".into()),
        campaign: Some("spring".into()),
        periods: vec![StagePeriod {
            stage: "won".into(),
            entered_at: t,
            left_at: None,
        }],
        refs: vec![leadrelay_model::VendorRef {
            system: "hubspot".into(),
            object: "deal".into(),
            id: "1".into(),
        }],
    };
    let credit = CreditRow {
        deal_id: "hubspot:1".into(),
        model: "linear".into(),
        channel: "email".into(),
        source: "newsletter".into(),
        campaign: "spring".into(),
        credit: 1.0,
        revenue: 1000.0,
        closed_at: t + chrono::Duration::days(2),
    };
    let batch = RollupBatch {
        from: None,
        cursor: e2,
        touches: vec![TouchRow {
            event_id: e1,
            contact_id: contact,
            at: t,
            channel: "email".into(),
            source: "newsletter".into(),
            campaign: "spring".into(),
        }],
        leads: vec![LeadRow {
            contact_id: contact,
            first_at: t,
            origin: "form:contact".into(),
            channel: "email".into(),
            source: "newsletter".into(),
            campaign: "spring".into(),
        }],
        deals: vec![deal.clone()],
        credits: vec![("hubspot:1".into(), vec![credit.clone()])],
        responses: vec![ResponseRow {
            contact_id: contact,
            mql_at: t,
            responded_at: None,
        }],
        handoffs: vec![HandoffRow {
            event_id: e1,
            contact_id: contact,
            at: t,
            owner: true,
        }],
        counts: vec![KpiCount {
            kpi: "data_quality".into(),
            hour: t,
            num: 1,
            den: 2,
        }],
        refs: vec![("pipedrive:person:7".into(), contact)],
    };
    s.rollup_apply(batch.clone()).await.unwrap();
    assert_eq!(
        s.kv_get(ROLLUP_CURSOR_KEY).await.unwrap(),
        Some(e2.to_string())
    );
    // The same batch again started from a cursor that has moved: refused.
    let stale = RollupBatch {
        deals: vec![DealRow {
            stage: "lost".into(),
            ..deal.clone()
        }],
        ..batch.clone()
    };
    assert!(matches!(
        s.rollup_apply(stale).await,
        Err(StoreError::Conflict(_))
    ));
    let ctx = s
        .rollup_context(vec![contact], vec!["hubspot:1".into()], vec![contact])
        .await
        .unwrap();
    assert_eq!(s.rollup_touches(vec![contact]).await.unwrap().len(), 1);
    assert!(s.rollup_touches(vec![new_id()]).await.unwrap().is_empty());
    assert!(s.rollup_touches(Vec::new()).await.unwrap().is_empty());
    assert_eq!(ctx.leads.len(), 1);
    assert_eq!(ctx.deals, vec![deal.clone()]);
    assert_eq!(ctx.responses, batch.responses);

    // KPI rollups: counters add up per hour, responses are replaced whole,
    // a handoff without deliveries has none.
    let next = RollupBatch {
        from: Some(e2),
        cursor: new_id(),
        responses: vec![ResponseRow {
            responded_at: Some(t + chrono::Duration::hours(2)),
            ..batch.responses[0].clone()
        }],
        counts: vec![
            KpiCount {
                kpi: "data_quality".into(),
                hour: t,
                num: 2,
                den: 3,
            },
            KpiCount {
                kpi: "data_quality.valid".into(),
                hour: t + chrono::Duration::hours(1),
                num: 0,
                den: 1,
            },
        ],
        handoffs: batch.handoffs.clone(),
        ..Default::default()
    };
    s.rollup_apply(next).await.unwrap();
    let hour = chrono::Duration::hours(1);
    assert_eq!(
        s.report_kpi_counts(t, t + hour * 2).await.unwrap(),
        vec![
            ("data_quality".to_string(), 3, 5),
            ("data_quality.valid".to_string(), 0, 1)
        ]
    );
    assert_eq!(
        s.report_kpi_counts(t + hour, t + hour * 2).await.unwrap(),
        vec![("data_quality.valid".to_string(), 0, 1)]
    );
    let responses = s.report_responses(t, t + hour).await.unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].responded_at, Some(t + hour * 2));
    assert!(
        s.report_responses(t + hour, t + hour * 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.report_handoffs(t, t + hour).await.unwrap(),
        vec![HandoffOutcome {
            owner: true,
            deliveries: 0,
            delivered: 0,
            failed: 0
        }]
    );
    assert_eq!(
        s.report_ref_contacts(vec![
            "pipedrive:person:7".into(),
            "pipedrive:person:8".into()
        ])
        .await
        .unwrap(),
        vec![("pipedrive:person:7".to_string(), contact)]
    );
    // Heartbeats: idempotent per minute; the first one ever is known.
    let m = chrono::Duration::minutes(1);
    for at in [t, t, t + m * 2] {
        s.record_heartbeat(at).await.unwrap();
    }
    assert_eq!(s.heartbeats(t, t + m * 3).await.unwrap(), (2, Some(t)));
    assert_eq!(s.heartbeats(t + m, t + m * 2).await.unwrap(), (0, Some(t)));

    let now = Utc::now();
    let day = chrono::Duration::days(1);
    assert_eq!(
        s.report_deals(t - day, now).await.unwrap(),
        vec![deal.clone()]
    );
    // Closed before the range starts: not in it.
    assert!(s.report_deals(t + day * 3, now).await.unwrap().is_empty());
    assert_eq!(s.report_leads(t, t + day).await.unwrap().len(), 1);
    assert!(s.report_leads(t + day, now).await.unwrap().is_empty());
    assert_eq!(
        s.report_credits("linear", t, now).await.unwrap(),
        vec![credit]
    );
    assert!(
        s.report_credits("first_touch", t, now)
            .await
            .unwrap()
            .is_empty()
    );

    let cost = |campaign: &str, cost: f64| CampaignCost {
        campaign: campaign.into(),
        month: "2026-05".into(),
        channel: None,
        cost,
    };
    assert_eq!(
        s.set_campaign_costs(vec![cost("spring", 10.0), cost("fall", 5.0)])
            .await
            .unwrap(),
        2
    );
    s.set_campaign_costs(vec![cost("spring", 12.5)])
        .await
        .unwrap();
    assert_eq!(
        s.campaign_costs().await.unwrap(),
        vec![cost("fall", 5.0), cost("spring", 12.5)]
    );
}
