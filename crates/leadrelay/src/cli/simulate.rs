//! `leadrelay simulate`: prints what leadrelay would do with one event —
//! without storing or sending anything (see [`crate::simulate`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use chrono::Utc;
use clap::Args;
use serde_json::Value;

use super::output::{errln, out, outln};
use super::{StorageArgs, load_config, process_env};
use crate::contacts;
use crate::simulate::{self, ConsentDecision, Input, SimError, Simulation, StoredContact};
use crate::store::{self, OpenOptions};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// An event file (JSON): {"type", "form" | "source", "occurred_at",
    /// "contact": {…}, "data": {…}, "attribution": {…}, "consent": {"crm": true}}.
    #[arg(required_unless_present = "form", conflicts_with = "form")]
    pub file: Option<PathBuf>,
    /// Simulate a submission of this form (validated like POST /v1/forms/FORM).
    #[arg(long, requires = "data")]
    pub form: Option<String>,
    /// The form submission as a JSON object, e.g. '{"email": "jane@acme.io"}'.
    #[arg(long, requires = "form")]
    pub data: Option<String>,
    /// Do not read the person's golden contact from the configured store.
    #[arg(long)]
    pub no_store: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print the simulation as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn simulate(config_path: Option<&PathBuf>, args: SimulateArgs) -> ExitCode {
    let Ok(loaded) = load_config(config_path) else {
        return ExitCode::FAILURE;
    };
    let mut config = loaded.config;
    if let Some(u) = args.storage.storage_url.clone() {
        config.storage.url = u;
    }
    let now = Utc::now();
    let routes = match simulate::routes(&config, &process_env) {
        Ok(r) => r,
        Err(e) => return fail(e, args.json),
    };
    let input_bytes;
    let input = match (&args.file, &args.form, &args.data) {
        (Some(path), _, _) => {
            input_bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => {
                    errln!("cannot read {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            Input::Event(&input_bytes)
        }
        (None, Some(form), Some(data)) => Input::Form {
            form,
            data: Bytes::from(data.clone().into_bytes()),
        },
        _ => {
            errln!("give an event file, or --form NAME --data '{{…}}'");
            return ExitCode::FAILURE;
        }
    };
    let event = match simulate::build_event(&config, &routes, input, now).await {
        Ok(e) => e,
        Err(e) => return fail(e, args.json),
    };
    let stored = if args.no_store {
        StoredContact::NotRead("--no-store".into())
    } else {
        read_contact(&config, &event).await
    };
    let mut sim = match simulate::simulate(&config, &process_env, &routes, event, stored, now) {
        Ok(s) => s,
        Err(e) => return fail(e, args.json),
    };
    let view = match (&sim.contact.merged, args.no_store) {
        (_, true) => Err("--no-store".to_string()),
        (Some(c), false) => {
            let options = OpenOptions {
                tls_verify: config.storage.tls_verify,
                ..Default::default()
            };
            crate::pipeline::owners::peek_view(&config.storage.url, &options, &config.routing, c)
                .await
                .map_err(|e| format!("the store could not be read: {e}"))
        }
        (None, false) => Err("no contact".to_string()),
    };
    simulate::fill_pipeline(&config, &mut sim, view, now);
    if args.json {
        match serde_json::to_string_pretty(&sim) {
            Ok(s) => outln!("{s}"),
            Err(e) => {
                errln!("cannot serialise the simulation: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        out!("{}", render(&sim, &config.storage.url));
    }
    if sim.has_mapping_errors() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// The person's stored golden contact, read without writing anything.
async fn read_contact(
    config: &crate::config::Config,
    event: &leadrelay_model::Event,
) -> StoredContact {
    let options = OpenOptions {
        tls_verify: config.storage.tls_verify,
        ..Default::default()
    };
    let url = &config.storage.url;
    let unreadable = |e| StoredContact::NotRead(format!("the store could not be read: {e}"));
    if let Some(email) = &event.contact.email {
        return match store::peek_contact(url, &options, email.as_str()).await {
            Ok(Some(c)) => StoredContact::Found(Box::new(c)),
            Ok(None) => StoredContact::NotFound,
            Err(e) => unreadable(e),
        };
    }
    // No email: the secondary match, as ingest would run it.
    let Some(key) = contacts::secondary_key(&event.contact) else {
        return StoredContact::NotFound;
    };
    let mut candidates = match store::peek_contacts_by_domain(url, &options, &key.domain).await {
        Ok(c) => c,
        Err(e) => return unreadable(e),
    };
    match contacts::secondary_match(&key, &event.contact, &candidates) {
        contacts::SecondaryMatch::Unique(i) => {
            StoredContact::Found(Box::new(candidates.swap_remove(i)))
        }
        contacts::SecondaryMatch::Ambiguous(ids) => StoredContact::Ambiguous(ids),
        contacts::SecondaryMatch::None => StoredContact::NotFound,
    }
}

fn fail(e: SimError, json: bool) -> ExitCode {
    match e {
        SimError::Rejected(api) => {
            let body = api.body();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "rejected": {"status": api.status.as_u16(), "body": body}
                    }))
                    .unwrap_or_default()
                );
            } else {
                outln!("rejected: the API would answer HTTP {}", api.status);
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            }
        }
        SimError::Config(m) => errln!("the configuration cannot be simulated:\n{m}"),
    }
    ExitCode::FAILURE
}

/// The human report.
pub fn render(sim: &Simulation, storage_url: &str) -> String {
    let mut out = String::new();
    let e = &sim.event;
    let _ = writeln!(
        out,
        "event: {} from {}:{}{}",
        e.event_type.as_str(),
        e.origin.kind.as_str(),
        e.origin.name,
        if e.spam {
            " (spam: honeypot filled; stored, never delivered)"
        } else {
            ""
        }
    );
    section(&mut out, "contact", &Value::Object(e.contact.to_flat_map()));
    section(&mut out, "data", &Value::Object(e.data.clone()));
    if let Ok(v) = serde_json::to_value(&e.attribution) {
        section(&mut out, "attribution", &v);
    }
    for c in &e.consent {
        let _ = writeln!(
            out,
            "  consent: {} {}",
            c.purpose.as_str(),
            if c.granted { "granted" } else { "not granted" }
        );
    }

    let _ = writeln!(out, "\ngolden contact:");
    let c = &sim.contact;
    match (&c.merged, c.existing) {
        (None, _) => {
            let _ = writeln!(
                out,
                "  none: the event has no email and matches no single stored contact"
            );
        }
        (Some(m), true) => {
            let shown = crate::redact::url_without_password(storage_url);
            let _ = writeln!(out, "  updates stored contact {} ({shown})", m.id);
        }
        (Some(_), false) => {
            let _ = writeln!(out, "  a new contact would be created");
        }
    }
    if let Some(note) = &c.note {
        let _ = writeln!(out, "  (stored contact {note})");
    }
    if let Some(m) = &c.merged {
        for (field, value) in m.data.to_flat_map() {
            let from = m
                .provenance
                .get(&field)
                .map(|p| format!("  [{}]", p.source))
                .unwrap_or_default();
            let _ = writeln!(out, "  {field}: {}{from}", text(&value));
        }
    }

    let _ = writeln!(out, "\nroutes:");
    if sim.routes.is_empty() {
        let _ = writeln!(out, "  none matched");
    }
    for r in &sim.routes {
        let mark = if r.matched { "match   " } else { "no match" };
        let to = if r.matched && !r.destinations.is_empty() {
            format!(" -> {}", r.destinations.join(", "))
        } else {
            String::new()
        };
        let playbook = r
            .playbook
            .as_deref()
            .map(|p| format!(" [playbook {p}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {mark} {}{playbook}: {}{to}", r.route, r.reason);
    }
    if !sim.event.playbooks.is_empty() {
        let _ = writeln!(
            out,
            "\nplaybooks acting on this event: {}",
            sim.event.playbooks.join(", ")
        );
    }

    let _ = writeln!(out, "\ndestinations:");
    if sim.destinations.is_empty() {
        let _ = writeln!(out, "  none: no delivery would be created");
    }
    for d in &sim.destinations {
        let _ = writeln!(
            out,
            "  {} ({}) via {}",
            d.name,
            d.connector,
            d.routes.join(", ")
        );
        let consent = match &d.consent {
            ConsentDecision::Allowed { purposes } => {
                format!("allowed (granted: {})", purposes.join(", "))
            }
            ConsentDecision::LegitimateInterest => "allowed (legitimate interest)".into(),
            ConsentDecision::NoPersonalData => "allowed (no personal data)".into(),
            ConsentDecision::Skipped { missing, reason } if missing.is_empty() => {
                format!("skipped: {reason}")
            }
            ConsentDecision::Skipped { missing, .. } => {
                format!("skipped: consent missing for {}", missing.join(", "))
            }
        };
        let _ = writeln!(out, "    consent: {consent}");
        if let Some(s) = &d.skipped {
            let _ = writeln!(out, "    skipped by the connector: {s}");
        }
        if let Some(m) = &d.mapping_error {
            let _ = writeln!(
                out,
                "    mapping error: {m} (the delivery would be dead-lettered)"
            );
        }
        if let Some(p) = &d.payload {
            let pretty = serde_json::to_string_pretty(p).unwrap_or_default();
            let _ = writeln!(out, "    payload:");
            for line in pretty.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
        if !d.preview_available {
            let _ = writeln!(
                out,
                "    payload: not shown (this connector builds it while talking to the vendor)"
            );
        }
    }

    let _ = writeln!(out);
    match &sim.score {
        Some(s) if s.get("score").is_some() => {
            let parts: Vec<String> = s["contributions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{} {:+}",
                        text(&c["rule"]),
                        c["points"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "scoring: {:.0} (stage {}, was {}){}",
                // + 0.0: a score of -0.0 prints as 0.
                s["score"].as_f64().unwrap_or(0.0) + 0.0,
                text(&s["stage"]),
                text(&s["stage_before"]),
                if s["handoff"] == Value::Bool(true) {
                    " — crosses into sql: the handoff would start"
                } else {
                    ""
                }
            );
            if !parts.is_empty() {
                let _ = writeln!(out, "  from: {}", parts.join(", "));
            }
        }
        Some(s) => {
            let _ = writeln!(out, "scoring: {}", text(&s["note"]));
        }
        None => {
            let _ = writeln!(out, "scoring: not configured");
        }
    }
    match &sim.owner {
        Some(o) => {
            let who = match &o["owner"] {
                Value::Null => "nobody".to_string(),
                v if o["queue"] == Value::Bool(true) => format!("queue {}", text(v)),
                v => text(v),
            };
            let _ = writeln!(out, "owner routing: {who} — {}", text(&o["reason"]));
            if let Some(note) = o.get("note").filter(|n| !n.is_null()) {
                let _ = writeln!(out, "  note: {}", text(note));
            }
        }
        None => {
            let _ = writeln!(out, "owner routing: not configured");
        }
    }
    let _ = writeln!(out, "\nnothing was stored or sent");
    out
}

fn section(out: &mut String, name: &str, v: &Value) {
    let Some(map) = v.as_object() else { return };
    for (k, v) in map {
        let _ = writeln!(out, "  {name}.{k}: {}", text(v));
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
