//! A backfill spends at most its share of each system's daily API quota:
//! the fake Salesforce org reports its quota (`Sforce-Limit-Info`), the
//! backfill counts its own requests per UTC day in the store, stops for
//! the day once the share is spent — also when started again, without a
//! request — and goes on under a larger share without duplicates.

use std::time::Duration;

use leadrelay::sync::BackfillEnd;
use leadrelay_fakes::salesforce::SalesforceConfig;

use crate::sync_objects::world_with;

fn contacts(share: f64) -> String {
    format!(
        r#"
object = "contact"
backfill_quota_share = {share}

[syncs.crm.fields.title]
a = "jobtitle"
b = "Title"
"#
    )
}

#[tokio::test]
async fn a_backfill_stops_at_its_share_of_the_daily_quota_and_goes_on_later() {
    const N: usize = 450;
    // 60 API requests a day; a tenth of them for the backfill.
    let org = SalesforceConfig {
        api_request_limit: 60,
        api_limit_window: Duration::from_secs(86_400),
        query_batch_size: 50,
        ..SalesforceConfig::default()
    };
    let w = world_with(&contacts(0.1), org).await;
    for i in 0..N {
        w.hs.seed(
            "contacts",
            &[
                ("email", &format!("person{i}@example.com")),
                ("jobtitle", &format!("Title {i}")),
            ],
        );
    }
    let rest = |w: &crate::sync_objects::World| {
        w.sf.requests()
            .entries()
            .iter()
            .filter(|r| r.path.contains("/services/data/"))
            .count()
    };
    let at_start = rest(&w);
    let (_, end) = w.runner.backfill(|_| {}).await;
    let BackfillEnd::QuotaSpent {
        system,
        spent,
        budget,
        ..
    } = end
    else {
        panic!("the backfill ran past its share: {end:?}");
    };
    assert_eq!((system.as_str(), budget), ("salesforce", 6));
    let sent = rest(&w) - at_start;
    assert!(spent >= budget && spent as usize >= sent, "{spent} {sent}");
    let partial = w.sf.leads().len();
    assert!(partial < N, "stopped part-way: {partial} leads");

    // Started again the same day (a new process): it stops at once,
    // without a request.
    let again = w.runner_with(&contacts(0.1), "crm");
    let (_, end) = again.backfill(|_| {}).await;
    assert!(matches!(end, BackfillEnd::QuotaSpent { .. }), "{end:?}");
    assert_eq!(
        rest(&w) - at_start,
        sent,
        "no request once the share is spent"
    );

    // A larger share: it goes on from its cursors and finishes, once each.
    let larger = w.runner_with(&contacts(0.9), "crm");
    let (h, end) = larger.backfill(|_| {}).await;
    assert_eq!(end, BackfillEnd::Done, "{h:?}");
    assert_eq!(h.last_error, None);
    let mut emails: Vec<String> =
        w.sf.leads()
            .iter()
            .filter_map(|l| l.text("Email").map(str::to_string))
            .collect();
    emails.sort();
    emails.dedup();
    assert_eq!((w.sf.leads().len(), emails.len()), (N, N));
    assert!(rest(&w) <= 60, "within the org's quota: {}", rest(&w));
}
