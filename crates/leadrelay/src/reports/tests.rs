//! Report arithmetic on hand-made rollups, CSV output and the cost import.

use chrono::TimeZone;

use super::*;

fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, day, hour, 0, 0).unwrap()
}

fn deal(id: &str, stages: &[(&str, DateTime<Utc>)], status: &str, amount: f64) -> DealRow {
    let periods: Vec<StagePeriod> = stages
        .iter()
        .enumerate()
        .map(|(i, (s, at))| StagePeriod {
            stage: s.to_string(),
            entered_at: *at,
            left_at: stages.get(i + 1).map(|n| n.1),
        })
        .collect();
    DealRow {
        deal_id: id.into(),
        contact_id: None,
        stage: stages.last().unwrap().0.into(),
        status: status.into(),
        amount: Some(amount),
        currency: None,
        probability: None,
        owner: None,
        expected_close: None,
        created_at: stages[0].1,
        closed_at: (status != "open").then(|| stages.last().unwrap().1),
        origin: None,
        channel: Some("email".into()),
        source: None,
        campaign: None,
        periods,
        refs: Vec::new(),
    }
}

#[test]
fn outliers_use_the_tukey_fence_of_finished_stays() {
    // Finished stays of 1, 2, 3, 4 and 10 hours: q1 2, q3 4, fence 7 h.
    // The 10-hour one is an outlier, and so is a stay still open after 9.
    let mut deals: Vec<DealRow> = (1..=4)
        .map(|h| {
            deal(
                &format!("d{h}"),
                &[("demo", t(1, 0)), ("won", t(1, h))],
                "won",
                1.0,
            )
        })
        .collect();
    deals.push(deal(
        "long",
        &[("demo", t(2, 0)), ("lost", t(2, 10))],
        "lost",
        1.0,
    ));
    deals.push(deal("open", &[("demo", t(3, 0))], "open", 1.0));
    let data = Data {
        since: t(1, 0),
        until: t(20, 0),
        deals,
    };
    let table = outliers(&data, t(3, 9));
    let ids: Vec<&str> = table.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(ids, ["long", "open"]);
    assert_eq!(table.rows[0][3], json!(7.0));
}

#[test]
fn csv_quotes_and_defuses_formulas() {
    let mut table = Table::new("funnel", t(1, 0), t(2, 0), &["step", "count"]);
    table.rows.push(vec![json!("a,\"b\""), json!(2)]);
    table.rows.push(vec![json!("=HYPERLINK(1)"), Value::Null]);
    table.rows.push(vec![json!("-3"), json!(-1.5)]);
    assert_eq!(
        table.to_csv(),
        "step,count\r\n\"a,\"\"b\"\"\",2\r\n'=HYPERLINK(1),\r\n-3,-1.5\r\n"
    );
}

#[test]
fn cost_csv_import() {
    let ok = parse_costs(
        "\u{feff}Month,Campaign,Cost,Channel\n2026-05,\"spring, EU\",12.5,\n2026-06,x,0,email\n",
    )
    .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].campaign, "spring, EU");
    assert_eq!(ok[0].channel, None);
    assert_eq!(ok[1].channel.as_deref(), Some("email"));
    let err = parse_costs("campaign,month,cost\n,2026-05,1\nx,2026-05,-1\n").unwrap_err();
    assert_eq!(
        err.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["line 2: campaign", "line 3: cost"]
    );
    assert!(parse_costs("name,month\n").is_err());
    assert!(parse_costs("").is_err());
}

#[test]
fn months_cover_the_range() {
    assert_eq!(
        months(t(30, 0), Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()),
        ["2026-04", "2026-05"]
    );
}

#[test]
fn data_quality_checks_presence_and_validity_of_each_required_field() {
    use super::kpi::quality;
    let req = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let c = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let fields = req(&["email", "first_name", "company", "custom.tier"]);
    let full = c(
        json!({"email": "a@example.com", "first_name": "Ann", "company": "Acme",
                        "custom": {"tier": "gold"}}),
    );
    assert_eq!(quality(&full, &fields), (true, true));
    // Missing, empty and whitespace-only all count as missing.
    for missing in [
        json!({"email": "a@example.com", "first_name": "Ann", "company": "Acme"}),
        json!({"email": "a@example.com", "first_name": "  ", "company": "Acme", "custom": {"tier": "x"}}),
        json!({"email": "a@example.com", "first_name": "Ann", "company": null, "custom": {"tier": "x"}}),
    ] {
        assert_eq!(
            quality(&c(missing.clone()), &fields),
            (false, true),
            "{missing}"
        );
    }
    // Present but not valid: placeholders, a name that is an email, a bad
    // email, a phone that is not one, a domain without a dot.
    for (f, v) in [
        ("first_name", "n/a"),
        ("first_name", "ann@example.com"),
        ("first_name", "1234"),
        ("email", "not-an-email"),
        ("phone", "12"),
        ("website", "localhost"),
        ("company", "TBD"),
    ] {
        let mut doc = full.clone();
        doc.insert(f.into(), json!(v));
        let fields = req(&[f]);
        assert_eq!(quality(&doc, &fields), (true, false), "{f} = {v}");
    }
    for (f, v) in [
        ("phone", "+14155552671"),
        ("website", "https://acme.example/about"),
        ("domain", "acme.example"),
        ("country", "DE"),
    ] {
        let mut doc = full.clone();
        doc.insert(f.into(), json!(v));
        assert_eq!(quality(&doc, &req(&[f])), (true, true), "{f} = {v}");
    }
    // full_name is first and/or last name.
    let named = c(json!({"last_name": "Lovelace"}));
    assert_eq!(quality(&named, &req(&["full_name"])), (true, true));
    assert_eq!(quality(&c(json!({})), &req(&["full_name"])), (false, true));
}

#[test]
fn kpi_settings_are_checked() {
    let mut cfg = super::kpi::KpiConfig {
        required_fields: vec!["email".into(), "colour".into(), "custom.".into()],
        data_quality: 95.0,
        lead_response_hours: 0.0,
        ..Default::default()
    };
    cfg.check_interval = crate::config::HumanDuration::secs(0);
    let p = cfg.problems();
    assert_eq!(p.len(), 5, "{p:?}");
    assert!(p[0].starts_with("reports.kpis.data_quality = 95"), "{p:?}");
    assert!(
        p[1].starts_with("reports.kpis.lead_response_hours = 0"),
        "{p:?}"
    );
    assert!(p[2].contains("check_interval"), "{p:?}");
    assert!(p[3].contains("unknown field \"colour\""), "{p:?}");
    assert!(p[4].contains("unknown field \"custom.\""), "{p:?}");
    assert!(super::kpi::KpiConfig::default().problems().is_empty());
}
