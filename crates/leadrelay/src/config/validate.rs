//! Semantic checks of a parsed configuration. Every problem is collected
//! (not just the first) with the key path it belongs to.

use std::collections::BTreeSet;

use leadrelay_model::{CONTACT_FIELDS, ConsentPurpose, EventType, OriginKind, PhoneE164};

use super::load::Problem;
use super::{Config, FieldType, FormConfig};
use crate::delivery;
use crate::routing;

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

pub fn validate(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut p = Vec::new();
    for msg in config.reports.problems() {
        let (path, msg) = msg.split_once(' ').unwrap_or(("reports", &msg));
        p.push(Problem::error(path, msg.to_string()));
    }
    for (path, msg) in config.feedback.problems() {
        p.push(Problem::error(&path, msg));
    }
    if let Some(var) = &config.feedback.slack_signing_secret_env
        && env(var).is_none_or(|v| v.trim().is_empty())
    {
        p.push(Problem::error(
            "feedback.slack_signing_secret_env",
            format!("{var} is not set: the Slack rating buttons cannot be verified"),
        ));
    }

    if let Some(u) = &config.server.public_url
        && !is_http_url(u)
    {
        p.push(Problem::error(
            "server.public_url",
            "must be an http:// or https:// URL",
        ));
    }
    if config.server.max_body_bytes.bytes() < 1024 {
        p.push(Problem::error(
            "server.max_body_bytes",
            "must be at least 1KiB",
        ));
    }
    for (key, d) in [
        (
            "server.header_read_timeout",
            config.server.header_read_timeout,
        ),
        ("server.body_read_timeout", config.server.body_read_timeout),
        ("storage.timeout", config.storage.timeout),
        (
            "delivery.fixable.check_every",
            config.delivery.fixable.check_every,
        ),
        (
            "delivery.fixable.retry_every",
            config.delivery.fixable.retry_every,
        ),
    ] {
        if d.get() < std::time::Duration::from_millis(100) {
            p.push(Problem::error(key, "must be at least 100ms"));
        }
    }
    if config.delivery.fixable.max_retries > 1000 {
        p.push(Problem::error(
            "delivery.fixable.max_retries",
            "must be at most 1000",
        ));
    }
    if config.server.max_connections == 0 {
        p.push(Problem::error(
            "server.max_connections",
            "must be at least 1",
        ));
    }
    if config.storage.long_timeout < config.storage.timeout {
        p.push(Problem::error(
            "storage.long_timeout",
            "must be at least storage.timeout",
        ));
    }
    let url = config.storage.url.as_str();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        p.push(Problem::error(
            "storage.url",
            "expected sqlite://PATH or postgres://…",
        ));
    }
    if config.storage.group_commit_max == 0 {
        p.push(Problem::error(
            "storage.group_commit_max",
            "must be at least 1",
        ));
    }
    if !(0.0..=1.0).contains(&config.alerts.failure_rate) {
        p.push(Problem::error(
            "alerts.failure_rate",
            "must be between 0 and 1",
        ));
    }
    if config.privacy.ip_hash_key_env.trim().is_empty() {
        p.push(Problem::error(
            "privacy.ip_hash_key_env",
            "must name an environment variable",
        ));
    }
    if config.privacy.retention.interval.get() < std::time::Duration::from_millis(100) {
        p.push(Problem::error(
            "privacy.retention.interval",
            "must be at least 100ms",
        ));
    }
    if config
        .privacy
        .retention
        .contacts
        .is_some_and(|d| d.get() < std::time::Duration::from_secs(1))
    {
        p.push(Problem::error(
            "privacy.retention.contacts",
            "must be at least 1s, or \"off\"",
        ));
    }

    for (name, form) in &config.forms {
        validate_form(name, form, &mut p);
    }

    for (name, source) in &config.sources {
        if !is_slug(name) {
            p.push(Problem::error(
                format!("sources.{name}"),
                "source names use a-z, 0-9, '_' and '-'",
            ));
        }
        if let Err(problems) = crate::sources::build_source(name, source, env) {
            p.extend(problems);
        }
        if let Some(m) = source.max_body_bytes {
            if m.bytes() < 1024 {
                p.push(Problem::error(
                    format!("sources.{name}.max_body_bytes"),
                    "must be at least 1KiB",
                ));
            } else if m.bytes() as usize > leadrelay_sources::MAX_BODY_BYTES {
                p.push(Problem::error(
                    format!("sources.{name}.max_body_bytes"),
                    "must be at most 10MiB (the largest body a source parses)",
                ));
            }
        }
        if source.kind == "hubspot" && config.server.public_url.is_none() {
            p.push(Problem::warning(
                format!("sources.{name}"),
                "HubSpot signs the exact URL it calls: set server.public_url to the public URL vendors use",
            ));
        }
        let routed = config
            .routes
            .iter()
            .any(|r| r.forms.is_empty() && (r.sources.is_empty() || r.sources.contains(name)));
        if !routed {
            p.push(Problem::warning(
                format!("sources.{name}"),
                "no route takes events from this source (they are stored, never delivered)",
            ));
        }
    }

    let enabled = delivery::enabled_destinations(config, env);
    for (name, d) in &config.destinations {
        if !is_slug(name) {
            p.push(Problem::error(
                format!("destinations.{name}"),
                "destination names use a-z, 0-9, '_' and '-'",
            ));
        }
        if !enabled.contains(name) {
            let why = match d.enabled {
                super::Enabled::Off => "enabled = false".to_string(),
                _ => {
                    let vars = crate::connectors::referenced_env_vars(&d.settings);
                    format!(
                        "enabled = \"auto\" and not all of {} are set",
                        vars.join(", ")
                    )
                }
            };
            p.push(Problem::warning(
                format!("destinations.{name}"),
                format!("switched off ({why})"),
            ));
        }
    }
    if let Err(problems) = delivery::build_destinations(config, env) {
        p.extend(problems);
    }
    p.extend(delivery::check_switched_off(config, env));

    let mut route_names = BTreeSet::new();
    let mut routed = BTreeSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if !route_names.insert(r.name.as_str()) {
            p.push(Problem::error(
                format!("{path}.name"),
                format!("duplicate route name {:?}", r.name),
            ));
        }
        if r.destinations.is_empty() {
            p.push(Problem::error(
                format!("{path}.destinations"),
                "a route needs at least one destination",
            ));
        }
        if let Some(name) = &r.playbook
            && !crate::routing::valid_playbook_name(name)
        {
            p.push(Problem::error(
                format!("{path}.playbook"),
                format!(
                    "{name:?} is not a playbook name: 1 to 64 lowercase letters, digits and '-'"
                ),
            ));
        }
        for (j, d) in r.destinations.iter().enumerate() {
            if !config.destinations.contains_key(d) {
                p.push(Problem::error(
                    format!("{path}.destinations[{j}]"),
                    format!("no destination named {d:?}"),
                ));
            }
            routed.insert(d.as_str());
        }
        for (j, f) in r.forms.iter().enumerate() {
            if !config.forms.contains_key(f) {
                p.push(Problem::error(
                    format!("{path}.forms[{j}]"),
                    format!("no form named {f:?}"),
                ));
            }
        }
        for (j, s) in r.sources.iter().enumerate() {
            if !config.sources.contains_key(s)
                && !crate::connectors::hubspot::read::reads(config, s)
            {
                p.push(Problem::error(
                    format!("{path}.sources[{j}]"),
                    format!("no source named {s:?}"),
                ));
            }
        }
    }
    if let Err(problems) = routing::RouteTable::compile(&config.routes, enabled.clone()) {
        for (path, msg) in problems {
            p.push(Problem::error(path, msg));
        }
    }
    validate_contacts(config, &mut p);
    super::sync::validate_syncs(config, &mut p);
    for (j, n) in config.reports.writeback.destinations.iter().enumerate() {
        if !config.destinations.contains_key(n) {
            p.push(Problem::error(
                format!("reports.writeback.destinations[{j}]"),
                format!("no destination named {n:?}"),
            ));
        }
    }
    for (j, n) in config.alerts.notify.iter().enumerate() {
        if !config.destinations.contains_key(n) {
            p.push(Problem::error(
                format!("alerts.notify[{j}]"),
                format!("no destination named {n:?}"),
            ));
        }
    }
    let mut copy_lists: Vec<(String, &Vec<String>)> = vec![(
        "delivery.dead_letter_copies".to_string(),
        &config.delivery.dead_letter_copies,
    )];
    for (name, d) in &config.destinations {
        if let Some(list) = &d.dead_letter_copies {
            copy_lists.push((format!("destinations.{name}.dead_letter_copies"), list));
        }
    }
    let mut copy_targets = BTreeSet::new();
    for (path, list) in copy_lists {
        for (j, n) in list.iter().enumerate() {
            if !config.destinations.contains_key(n) {
                p.push(Problem::error(
                    format!("{path}[{j}]"),
                    format!("no destination named {n:?}"),
                ));
            } else if !enabled.contains(n) {
                p.push(Problem::warning(
                    format!("{path}[{j}]"),
                    format!("{n:?} is switched off: dead letters are not copied there"),
                ));
            }
            copy_targets.insert(n.as_str());
        }
    }
    for name in config.destinations.keys() {
        if !routed.contains(name.as_str())
            && !config.alerts.notify.contains(name)
            && !copy_targets.contains(name.as_str())
        {
            p.push(Problem::warning(
                format!("destinations.{name}"),
                "no route sends anything here",
            ));
        }
    }
    p.extend(crate::pipeline::validate(config));
    p
}

/// `[contacts.fields]`: field names, strategies and source patterns; a
/// pattern naming a form or source that does not exist is a warning (it
/// can never match).
fn validate_contacts(config: &Config, p: &mut Vec<Problem>) {
    if let Err(problems) = crate::contacts::MergeRules::compile(&config.contacts) {
        for (path, msg) in problems {
            p.push(Problem::error(path, msg));
        }
    }
    for (field, rule) in &config.contacts.fields {
        for (i, s) in rule.sources.iter().enumerate() {
            let Ok(pattern) = crate::contacts::SourcePattern::parse(s) else {
                continue;
            };
            let missing = match pattern.named() {
                Some((OriginKind::Form, n)) => (!config.forms.contains_key(n)).then_some("form"),
                Some((OriginKind::Source, n)) => {
                    (!config.sources.contains_key(n)).then_some("source")
                }
                _ => None,
            };
            if let Some(kind) = missing {
                p.push(Problem::warning(
                    format!("contacts.fields.{field}.sources[{i}]"),
                    format!("no {kind} named in {s:?} is configured: this pattern matches nothing"),
                ));
            }
        }
    }
}

fn validate_form(name: &str, form: &FormConfig, p: &mut Vec<Problem>) {
    let base = format!("forms.{name}");
    if !is_slug(name) {
        p.push(Problem::error(
            &base,
            "form names use a-z, 0-9, '_' and '-'",
        ));
    }
    if form.fields.is_empty() {
        p.push(Problem::error(
            format!("{base}.fields"),
            "a form needs at least one field",
        ));
    }
    if let Err(e) = EventType::parse(&form.event_type) {
        p.push(Problem::error(format!("{base}.event_type"), e.to_string()));
    }
    if let Some(r) = &form.default_region
        && let Err(e) = PhoneE164::check_region(r)
    {
        p.push(Problem::error(
            format!("{base}.default_region"),
            e.to_string(),
        ));
    }
    let mut contact_targets = BTreeSet::new();
    for (fname, f) in &form.fields {
        let fp = format!("{base}.fields.{fname}");
        if fname.is_empty()
            || fname.len() > 64
            || !fname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            p.push(Problem::error(
                &fp,
                "field names use letters, digits, '_' and '-' (at most 64)",
            ));
        }
        if f.field_type == FieldType::Picklist && f.options.is_empty() {
            p.push(Problem::error(
                format!("{fp}.options"),
                "a picklist needs options",
            ));
        }
        if f.field_type != FieldType::Picklist && !f.options.is_empty() {
            p.push(Problem::error(
                format!("{fp}.options"),
                "only picklists have options",
            ));
        }
        if f.default_region.is_some() && f.field_type != FieldType::Phone {
            p.push(Problem::error(
                format!("{fp}.default_region"),
                "only phone fields have a default region",
            ));
        }
        if let Some(r) = &f.default_region
            && let Err(e) = PhoneE164::check_region(r)
        {
            p.push(Problem::error(
                format!("{fp}.default_region"),
                e.to_string(),
            ));
        }
        if f.max_length == Some(0) {
            p.push(Problem::error(
                format!("{fp}.max_length"),
                "must be at least 1",
            ));
        }
        if let (Some(lo), Some(hi)) = (f.min, f.max)
            && lo > hi
        {
            p.push(Problem::error(
                format!("{fp}.min"),
                "min is greater than max",
            ));
        }
        if (f.min.is_some() || f.max.is_some()) && f.field_type != FieldType::Number {
            p.push(Problem::error(
                format!("{fp}.min"),
                "only number fields have min/max",
            ));
        }
        if let Some(target) = &f.contact {
            if !CONTACT_FIELDS.contains(&target.as_str()) {
                p.push(Problem::error(
                    format!("{fp}.contact"),
                    format!(
                        "unknown contact field {target:?} (known: {})",
                        CONTACT_FIELDS.join(", ")
                    ),
                ));
            }
            let expected = match target.as_str() {
                "email" => Some(FieldType::Email),
                "phone" => Some(FieldType::Phone),
                _ => None,
            };
            if expected.is_some_and(|t| t != f.field_type) {
                p.push(Problem::error(
                    format!("{fp}.contact"),
                    format!("contact.{target} must come from a field of type {target}"),
                ));
            }
            if !contact_targets.insert(target.clone()) {
                p.push(Problem::error(
                    format!("{fp}.contact"),
                    format!("two fields fill contact.{target}"),
                ));
            }
        }
    }
    if let Some(h) = &form.honeypot
        && form.fields.contains_key(h)
    {
        p.push(Problem::error(
            format!("{base}.honeypot"),
            "the honeypot must not be a declared field",
        ));
    }
    for (purpose, c) in &form.consent {
        let cp = format!("{base}.consent.{purpose}");
        if let Err(e) = ConsentPurpose::parse(purpose) {
            p.push(Problem::error(&cp, e.to_string()));
        }
        if c.version.trim().is_empty() {
            p.push(Problem::error(
                format!("{cp}.version"),
                "the consent text version must not be empty",
            ));
        }
        if form.fields.contains_key(&c.field) {
            p.push(Problem::error(
                format!("{cp}.field"),
                "consent checkboxes are declared here, not under fields",
            ));
        }
    }
    for (i, o) in form.allowed_origins.iter().enumerate() {
        let ok = o == "*"
            || url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !o.ends_with('/')
            });
        if !ok {
            p.push(Problem::error(
                format!("{base}.allowed_origins[{i}]"),
                format!(
                    "{o:?} is not an origin: write scheme://host[:port] without a path, or \"*\""
                ),
            ));
        }
    }
    if let Some(r) = &form.redirect_url
        && !is_http_url(r)
    {
        p.push(Problem::error(
            format!("{base}.redirect_url"),
            "must be an http:// or https:// URL",
        ));
    }
    if let Some(m) = form.max_body_bytes
        && m.bytes() < 1024
    {
        p.push(Problem::error(
            format!("{base}.max_body_bytes"),
            "must be at least 1KiB",
        ));
    }
}
