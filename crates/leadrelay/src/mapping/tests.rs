use serde_json::json;

use super::*;

const DEFAULTS: &str = r#"
[contact]
email = { from = "contact.email", required = true }
firstname = "contact.first_name"
jobtitle = "contact.title"

[note]
body = "activity.body"
"#;

fn user(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn ctx() -> Value {
    json!({
        "contact": {"email": "jane@acme.io", "first_name": "Jane", "company": "Acme", "phone": "+14155552671"},
        "data": {"tier": "A", "status": "open", "when": "2024-05-01", "seats": "12"},
        "event": {"type": "lead.created"},
        "activity": {}, "crm": {}, "ids": {},
    })
}

#[test]
fn defaults_overrides_removals_and_order() {
    let m = Mapping::compile(
        DEFAULTS,
        Some(&user(
            r#"
[contact]
jobtitle = false
firstname = { from = "contact.first_name", transform = "upper" }
lifecyclestage = { value = "lead" }
"custom_fields.abc" = "data.tier"
"#,
        )),
        &["contact", "note"],
    )
    .unwrap();
    let names: Vec<&str> = m.object("contact").unwrap().field_names().collect();
    assert_eq!(
        names,
        ["email", "firstname", "custom_fields.abc", "lifecyclestage"]
    );
    let out = m.apply("contact", &ctx()).unwrap();
    assert_eq!(
        Value::Object(out),
        json!({"email": "jane@acme.io", "firstname": "JANE", "lifecyclestage": "lead", "custom_fields": {"abc": "A"}})
    );
    // Empty values are left out, never sent as blanks.
    let out = m.apply("note", &ctx()).unwrap();
    assert!(out.is_empty());
}

#[test]
fn config_problems_name_their_paths() {
    let errs = Mapping::compile(
        DEFAULTS,
        Some(&user(
            r#"
[contcat]
x = "contact.email"
[contact]
a = "contakt.email"
b = { from = "contact.email", transform = "sparkle" }
c = "{{ contact.email "
d = { from = "contact.email", value = "x" }
e = { from = "data.x", picklist = ["a"], fallback = "b" }
f = { from = "data.x", colour = "red" }
"#,
        )),
        &["contact", "note"],
    )
    .unwrap_err();
    let rendered: Vec<String> = errs
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    let has = |prefix: &str| rendered.iter().any(|r| r.starts_with(prefix));
    assert!(has("mapping.contcat: unknown object"), "{rendered:?}");
    assert!(
        has("mapping.contact.a: \"contakt.email\" does not start"),
        "{rendered:?}"
    );
    assert!(
        has("mapping.contact.b.transform: unknown transform"),
        "{rendered:?}"
    );
    assert!(has("mapping.contact.c: template error"), "{rendered:?}");
    assert!(has("mapping.contact.d: give exactly one"), "{rendered:?}");
    assert!(
        has("mapping.contact.e.fallback: \"b\" is not in the picklist"),
        "{rendered:?}"
    );
    assert!(has("mapping.contact.f.colour: unknown key"), "{rendered:?}");
}

#[test]
fn required_fields_fail_with_the_field_name() {
    let m = Mapping::compile(DEFAULTS, None, &["contact", "note"]).unwrap();
    let mut c = ctx();
    c["contact"]["email"] = json!("  ");
    let e = m.apply("contact", &c).unwrap_err();
    assert_eq!(e.object, "contact");
    assert_eq!(e.field, "email");
    assert_eq!(
        e.to_string(),
        "mapping contact.email: required but empty (from contact.email)"
    );
}

#[test]
fn value_maps_translate_and_report_unknown_values() {
    let m = Mapping::compile(
        "",
        Some(&user(
            r#"
[contact]
tier = { from = "data.tier", map = { a = "gold", B = "silver" } }
status = { from = "data.status", picklist = ["NEW", "OPEN"] }
soft = { from = "data.status", map = { new = "NEW" }, fallback = "OTHER" }
keep = { from = "data.status", map = { new = "NEW" }, unmapped = "keep" }
drop = { from = "data.status", map = { new = "NEW" }, unmapped = "drop" }
"#,
        )),
        &["contact"],
    )
    .unwrap();
    let out = m.apply("contact", &ctx()).unwrap();
    assert_eq!(out["tier"], "gold", "case-insensitive key match");
    assert_eq!(out["status"], "OPEN", "picklist canonical casing");
    assert_eq!(out["soft"], "OTHER");
    assert_eq!(out["keep"], "open");
    assert!(!out.contains_key("drop"));

    let strict = Mapping::compile(
        "",
        Some(&user(
            "[contact]\nstrict = { from = \"data.status\", map = { new = \"NEW\" } }",
        )),
        &["contact"],
    )
    .unwrap();
    let e = strict.apply("contact", &ctx()).unwrap_err();
    assert!(
        e.to_string()
            .contains("value \"open\" is not in the value map (known: new)"),
        "{e}"
    );
}

#[test]
fn templates_constants_defaults_and_transforms() {
    let m = Mapping::compile(
        "",
        Some(&user(
            r#"
[contact]
dealname = "{{ contact.company }} – {{ event.type }}"
missing = "{{ contact.nothing.deeper }}"
seats = { from = "data.seats", transform = "integer" }
when = { from = "data.when", transform = "epoch_ms" }
source = { from = "data.nope", default = "web" }
amount = 100
flag = { value = false }
domain = { from = ["contact.domain", "contact.email"], transform = "domain" }
"#,
        )),
        &["contact"],
    )
    .unwrap();
    let out = m.apply("contact", &ctx()).unwrap();
    assert_eq!(out["dealname"], "Acme – lead.created");
    assert!(
        !out.contains_key("missing"),
        "chainable undefined renders empty"
    );
    assert_eq!(out["seats"], 12);
    assert_eq!(out["when"], json!(1_714_521_600_000i64));
    assert_eq!(out["source"], "web");
    assert_eq!(out["amount"], 100);
    assert_eq!(out["flag"], false);
    assert_eq!(out["domain"], "acme.io");
}

#[test]
fn transform_failures_are_mapping_errors() {
    let m = Mapping::compile(
        "",
        Some(&user(
            "[contact]\nwhen = { from = \"contact.first_name\", transform = \"date\" }",
        )),
        &["contact"],
    )
    .unwrap();
    let e = m.apply("contact", &ctx()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("mapping contact.when: Jane is not a date"),
        "{e}"
    );
}

#[test]
fn create_only_fields_and_create_defaults() {
    let m = Mapping::compile(
        "",
        Some(&user(
            r#"
[lead]
LastName = { from = "contact.last_name", create_default = "[not provided]" }
LeadSource = { value = "Web", on = "create" }
FirstName = "contact.first_name"
"#,
        )),
        &["lead"],
    )
    .unwrap();
    let created = m.apply("lead", &ctx()).unwrap();
    assert_eq!(created["LastName"], "[not provided]");
    assert_eq!(created["LeadSource"], "Web");
    let updated = m.apply_update("lead", &ctx()).unwrap();
    assert!(
        !updated.contains_key("LastName"),
        "no placeholder over a real name"
    );
    assert!(!updated.contains_key("LeadSource"));
    assert_eq!(updated["FirstName"], "Jane");
    let errs = Mapping::compile(
        "",
        Some(&user("[lead]\nX = { value = 1, on = \"later\" }")),
        &["lead"],
    )
    .unwrap_err();
    assert!(errs[0].path.ends_with("X.on"), "{errs:?}");
}
