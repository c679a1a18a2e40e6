use super::*;
use chrono::TimeZone;

fn sync(fields: &str) -> SyncConfig {
    let text = format!(
        "object = \"contact\"\na = \"hubspot\"\nb = \"pipedrive\"\nclock_skew = \"2s\"\n{fields}"
    );
    toml::from_str(&text).expect("sync config")
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn obs(id: &str, at: i64, values: &[(&str, Option<&str>)]) -> Observed {
    Observed {
        id: id.into(),
        modified_at: t(at),
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
        consistent: false,
    }
}

fn s(v: &str) -> Val {
    Some(v.to_string())
}

const STAGE: &str = r#"
[fields.stage]
a = "lifecyclestage"
b = "custom_fields.stage"
map = { lead = "Lead", customer = "Customer" }
"#;

#[test]
fn a_change_reaches_the_other_side_once_and_its_echo_is_dropped() {
    let cfg = sync(STAGE);
    let mut st = RecordState::default();
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 0, &[("stage", Some("lead"))])),
            Some(&obs("9", 0, &[("stage", Some("Lead"))])),
        ],
        t(1),
    );
    assert_eq!(
        d.writes,
        [BTreeMap::new(), BTreeMap::new()],
        "already equal"
    );
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 10, &[("stage", Some("customer"))])), None],
        t(11),
    );
    assert_eq!(d.writes[1].get("stage"), Some(&s("Customer")), "mapped");
    assert!(d.writes[0].is_empty());
    // The same poll again writes nothing more (in flight).
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 10, &[("stage", Some("customer"))])), None],
        t(12),
    );
    assert!(d.writes[1].is_empty() && d.writes[0].is_empty());
    // The write comes back from b: an echo, not a change.
    let d = decide(
        &cfg,
        &mut st,
        [None, Some(&obs("9", 13, &[("stage", Some("Customer"))]))],
        t(14),
    );
    assert_eq!((d.echoes, d.changes), (1, 0));
    assert!(d.writes[0].is_empty() && d.writes[1].is_empty());
}

#[test]
fn an_owned_field_is_never_overwritten_by_the_other_side() {
    let cfg = sync(
        "[fields.owner]\na = \"hubspot_owner_id\"\nb = \"custom_fields.owner\"\nowner = \"a\"\n",
    );
    let mut st = RecordState::default();
    decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 0, &[("owner", Some("7"))])),
            Some(&obs("9", 0, &[("owner", Some("7"))])),
        ],
        t(1),
    );
    let d = decide(
        &cfg,
        &mut st,
        [None, Some(&obs("9", 5, &[("owner", Some("8"))]))],
        t(6),
    );
    assert!(d.writes[0].is_empty(), "a is never written");
    assert_eq!(d.writes[1].get("owner"), Some(&s("7")), "b is restored");
    assert_eq!(d.restores, 1);
}

#[test]
fn latest_wins_beyond_the_clock_skew_and_a_wins_within_it() {
    let cfg = sync("[fields.phone]\na = \"phone\"\nb = \"phone\"\n");
    for (tb, expect) in [(10, "b"), (1, "a"), (-10, "a")] {
        let mut st = RecordState::default();
        decide(
            &cfg,
            &mut st,
            [
                Some(&obs("1", -100, &[("phone", Some("0"))])),
                Some(&obs("9", -100, &[("phone", Some("0"))])),
            ],
            t(-99),
        );
        let d = decide(
            &cfg,
            &mut st,
            [
                Some(&obs("1", 0, &[("phone", Some("a"))])),
                Some(&obs("9", tb, &[("phone", Some("b"))])),
            ],
            t(20),
        );
        assert_eq!(d.settled, 1);
        let loser = if expect == "a" { 1 } else { 0 };
        assert_eq!(d.writes[loser].get("phone"), Some(&s(expect)), "b at {tb}");
        assert!(d.writes[1 - loser].is_empty());
    }
}

#[test]
fn source_wins_field_merge_and_review() {
    let cfg = sync(
        r#"
[fields.phone]
a = "phone"
b = "phone"
conflict = "source_wins"
source = "b"
[fields.tags]
a = "tags"
b = "custom_fields.tags"
conflict = "field_merge"
[fields.title]
a = "jobtitle"
b = "custom_fields.title"
conflict = "review"
"#,
    );
    let mut st = RecordState::default();
    let base = [("phone", s("0")), ("tags", s("x")), ("title", s("t"))];
    let base: Vec<(&str, Option<&str>)> = base.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 0, &base)), Some(&obs("9", 0, &base))],
        t(0),
    );
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs(
                "1",
                50,
                &[
                    ("phone", Some("a")),
                    ("tags", Some("x;y")),
                    ("title", Some("CEO")),
                ],
            )),
            Some(&obs(
                "9",
                10,
                &[
                    ("phone", Some("b")),
                    ("tags", Some("z")),
                    ("title", Some("CTO")),
                ],
            )),
        ],
        t(60),
    );
    assert_eq!(
        d.writes[0].get("phone"),
        Some(&s("b")),
        "source b wins though older"
    );
    assert_eq!(d.writes[0].get("tags"), Some(&s("x;y;z")));
    assert_eq!(d.writes[1].get("tags"), Some(&s("x;y;z")));
    assert!(!d.writes[0].contains_key("title") && !d.writes[1].contains_key("title"));
    assert_eq!(d.conflicts.len(), 1);
    assert_eq!(d.conflicts[0].values, [s("CEO"), s("CTO")]);
    // Decided: the edit goes to both sides.
    apply_decision(&mut st, "title", s("Founder"));
    let d = decide(&cfg, &mut st, [None, None], t(70));
    assert_eq!(d.writes[0].get("title"), Some(&s("Founder")));
    assert_eq!(d.writes[1].get("title"), Some(&s("Founder")));
}

#[test]
fn a_record_missing_on_one_side_is_written_there_and_a_late_stale_echo_is_dropped() {
    let cfg = sync("[fields.phone]\na = \"phone\"\nb = \"phone\"\n");
    let mut st = RecordState::default();
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 0, &[("phone", Some("1"))])), None],
        t(0),
    );
    assert_eq!(d.writes[1].get("phone"), Some(&s("1")));
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 5, &[("phone", Some("2"))])), None],
        t(5),
    );
    assert_eq!(d.writes[1].get("phone"), Some(&s("2")));
    // b's index shows the first write late, then the second.
    let d = decide(
        &cfg,
        &mut st,
        [None, Some(&obs("9", 6, &[("phone", Some("1"))]))],
        t(6),
    );
    assert_eq!((d.echoes, d.changes), (1, 0));
    assert!(d.writes[0].is_empty() && d.writes[1].is_empty());
    let d = decide(
        &cfg,
        &mut st,
        [None, Some(&obs("9", 7, &[("phone", Some("2"))]))],
        t(7),
    );
    assert_eq!((d.echoes, d.changes), (1, 0));
    assert!(d.writes[0].is_empty() && d.writes[1].is_empty());
}

#[test]
fn merge_values_keeps_order_and_drops_duplicates() {
    assert_eq!(merge_values(&s("a; b"), &s("b;c")), s("a;b;c"));
    assert_eq!(merge_values(&None, &None), None);
}

#[test]
fn a_revert_to_an_older_written_value_is_a_change_in_a_consistent_system() {
    let cfg = sync(
        "[fields.stage]\na = \"lifecyclestage\"\nb = \"custom_fields.stage\"\nowner = \"a\"\n",
    );
    let mut st = RecordState::default();
    let b = |at: i64, v: &str| Observed {
        consistent: true,
        ..obs("9", at, &[("stage", Some(v))])
    };
    decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 0, &[("stage", Some("x"))])),
            Some(&b(0, "x")),
        ],
        t(0),
    );
    // a changes twice before b's feed shows either write.
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 1, &[("stage", Some("c"))])), None],
        t(1),
    );
    assert_eq!(d.writes[1].get("stage"), Some(&s("c")));
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 2, &[("stage", Some("l"))])), None],
        t(2),
    );
    assert_eq!(d.writes[1].get("stage"), Some(&s("l")));
    // Someone sets b back to "c" after both writes: not an echo; undone.
    let d = decide(&cfg, &mut st, [None, Some(&b(3, "c"))], t(3));
    assert_eq!(d.echoes, 0);
    assert_eq!(d.writes[1].get("stage"), Some(&s("l")));
    assert_eq!(d.restores, 1);
}

const PHONE: &str = r#"
[fields.phone]
a = "phone"
b = "phone"
transform_b = "e164:DE"
transform_a = ["trim", "lower"]
"#;

#[test]
fn a_transform_shapes_the_value_written_and_its_echo_is_still_dropped() {
    let cfg = sync(PHONE);
    let mut st = RecordState::default();
    // First sight: a has a local number, b nothing yet.
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 0, &[("phone", Some("030 1234567"))])), None],
        t(1),
    );
    assert_eq!(d.writes[1].get("phone"), Some(&s("+49301234567")));
    assert!(d.writes[0].is_empty());
    // The write comes back in b's poll: an echo, and nothing goes to a
    // although a still holds the untransformed spelling.
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 0, &[("phone", Some("030 1234567"))])),
            Some(&obs("9", 2, &[("phone", Some("+49301234567"))])),
        ],
        t(3),
    );
    assert_eq!(d.echoes, 1);
    assert_eq!(d.writes, [BTreeMap::new(), BTreeMap::new()]);
    // A change in b reaches a through a's transforms, and b is not
    // written again (its value is already what the transform makes).
    let d = decide(
        &cfg,
        &mut st,
        [
            None,
            Some(&obs("9", 10, &[("phone", Some("+49405551234"))])),
        ],
        t(11),
    );
    assert_eq!(d.changes, 1);
    assert_eq!(d.writes[0].get("phone"), Some(&s("+49405551234")));
    assert!(d.writes[1].is_empty(), "{:?}", d.writes[1]);
}

#[test]
fn a_value_the_transform_refuses_is_not_written_and_is_reported() {
    let cfg = sync(PHONE);
    let mut st = RecordState::default();
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 0, &[("phone", Some("call me maybe"))])),
            None,
        ],
        t(1),
    );
    assert!(d.writes[1].is_empty());
    assert_eq!(d.refused.len(), 1);
    assert!(d.refused[0].contains("phone"), "{:?}", d.refused);
    assert!(d.refused[0].contains("transform_b"), "{:?}", d.refused);
    // Once the value is one the transform takes, it is written.
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 5, &[("phone", Some("+1 415 555 0100"))])),
            None,
        ],
        t(6),
    );
    assert!(d.refused.is_empty());
    assert_eq!(d.writes[1].get("phone"), Some(&s("+14155550100")));
}

#[test]
fn transforms_apply_after_the_value_map() {
    let cfg = sync(
        r#"
[fields.stage]
a = "lifecyclestage"
b = "custom_fields.stage"
map = { lead = "Lead Open" }
transform_b = "upper"
"#,
    );
    let mut st = RecordState::default();
    let d = decide(
        &cfg,
        &mut st,
        [Some(&obs("1", 0, &[("stage", Some("lead"))])), None],
        t(1),
    );
    assert_eq!(d.writes[1].get("stage"), Some(&s("LEAD OPEN")));
}

#[test]
fn a_set_of_associated_records_merges_additions_and_removals_of_both_sides() {
    let cfg = sync(
        r#"
[fields.contacts]
a = "associations.contacts"
b = "associations.contacts"
link = "people"
conflict = "field_merge"
"#,
    );
    assert!(cfg.fields["contacts"].many());
    let mut st = RecordState::default();
    let both = obs("1", 0, &[("contacts", Some("ada@x.test;bo@x.test"))]);
    decide(
        &cfg,
        &mut st,
        [
            Some(&both),
            Some(&obs("9", 0, &[("contacts", Some("ada@x.test;bo@x.test"))])),
        ],
        t(0),
    );
    // a removes Bo and adds Cy; b adds Di at the same time.
    let d = decide(
        &cfg,
        &mut st,
        [
            Some(&obs("1", 50, &[("contacts", Some("ada@x.test;cy@x.test"))])),
            Some(&obs(
                "9",
                40,
                &[("contacts", Some("ada@x.test;bo@x.test;di@x.test"))],
            )),
        ],
        t(60),
    );
    let merged = s("ada@x.test;cy@x.test;di@x.test");
    assert_eq!(d.writes[0].get("contacts"), Some(&merged));
    assert_eq!(d.writes[1].get("contacts"), Some(&merged));
    assert_eq!(d.settled, 1);
    // Without an agreed set before: the union.
    assert_eq!(merge_sets(None, &s("b;a"), &s("c;a")), s("a;b;c"));
    assert_eq!(merge_sets(Some(&s("a")), &None, &s("a")), None);
    assert_eq!(set_value(["b", "a", "b"]), s("a;b"));
}
