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
