//! Hand-computed journeys for every model, the lookback edge included.

use chrono::TimeZone;

use super::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn touch(days_before: i64, channel: &str, campaign: &str) -> Touchpoint {
    Touchpoint {
        at: t0() - Duration::days(days_before),
        channel: channel.into(),
        source: channel.into(),
        campaign: campaign.into(),
    }
}

/// A at -100 d (outside), B at exactly -90 d (the edge: inside), C at -60 d
/// (lead created), D at -30 d, E at the close itself; opportunity created
/// at -5 d (after D); F a day after the close (never counts).
fn journey() -> Journey {
    let mut f = touch(0, "referral", "f");
    f.at = t0() + Duration::days(1);
    Journey {
        touches: vec![
            f,
            touch(30, "email", "d"),
            touch(100, "display", "a"),
            touch(0, "paid_social", "e"),
            touch(90, "paid_search", "b"),
            touch(60, "organic_search", "c"),
        ],
        lead_created_at: Some(t0() - Duration::days(60)),
        opportunity_created_at: Some(t0() - Duration::days(5)),
    }
}

fn window() -> Window {
    Window {
        lookback: Duration::days(90),
        half_life: Duration::days(30),
    }
}

fn w(model: Model) -> Vec<f64> {
    let j = journey();
    let touches = in_window(&j, t0(), window());
    weights(model, &touches, &j, t0(), window())
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, e) in got.iter().zip(want) {
        assert!((g - e).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[test]
fn the_window_keeps_the_lookback_edge_and_drops_older_and_later_touches() {
    let j = journey();
    let campaigns: Vec<String> = in_window(&j, t0(), window())
        .into_iter()
        .map(|t| t.campaign)
        .collect();
    assert_eq!(campaigns, ["b", "c", "d", "e"]);
    // One millisecond past the edge is out.
    let mut j = journey();
    j.touches.retain(|t| t.campaign == "b");
    j.touches[0].at -= Duration::milliseconds(1);
    assert!(in_window(&j, t0(), window()).is_empty());
    assert!(attribute(&j, t0(), 100.0, window()).is_empty());
}

#[test]
fn first_and_last_touch() {
    assert_close(&w(Model::FirstTouch), &[1.0, 0.0, 0.0, 0.0]);
    assert_close(&w(Model::LastTouch), &[0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn linear_splits_evenly() {
    assert_close(&w(Model::Linear), &[0.25; 4]);
}

#[test]
fn u_shaped_credits_first_touch_and_lead_creation() {
    // First touch B and the lead-creation touch C 40 % each; D and E share 20 %.
    assert_close(&w(Model::UShaped), &[0.4, 0.4, 0.1, 0.1]);
}

#[test]
fn w_shaped_credits_first_lead_and_opportunity_touches() {
    // Opportunity created at -5 d: the last touch before it is D.
    assert_close(&w(Model::WShaped), &[0.3, 0.3, 0.3, 0.1]);
}

#[test]
fn time_decay_halves_per_half_life() {
    // Ages 90, 60, 30, 0 days with a 30-day half-life: 1/8, 1/4, 1/2, 1 → /1.875.
    assert_close(
        &w(Model::TimeDecay),
        &[1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0, 8.0 / 15.0],
    );
}

#[test]
fn positional_models_with_few_touches() {
    let at = t0();
    let one = Journey {
        touches: vec![touch(3, "email", "x")],
        lead_created_at: Some(at - Duration::days(3)),
        opportunity_created_at: None,
    };
    for m in Model::ALL {
        let t = in_window(&one, at, window());
        assert_close(&weights(m, &t, &one, at, window()), &[1.0]);
    }
    // Two touches, the lead created at the second: 50/50.
    let two = Journey {
        touches: vec![touch(10, "email", "x"), touch(3, "paid_search", "y")],
        lead_created_at: Some(at - Duration::days(3)),
        opportunity_created_at: None,
    };
    let t = in_window(&two, at, window());
    assert_close(
        &weights(Model::UShaped, &t, &two, at, window()),
        &[0.5, 0.5],
    );
    // The lead created at the first touch: it holds both 40 % shares.
    let early = Journey {
        lead_created_at: Some(at - Duration::days(10)),
        ..two.clone()
    };
    assert_close(
        &weights(Model::UShaped, &t, &early, at, window()),
        &[0.8, 0.2],
    );
    // W-shaped, no opportunity date: the last touch stands for it; the
    // 10 % for other touches goes to the two keys evenly.
    assert_close(
        &weights(Model::WShaped, &t, &early, at, window()),
        &[0.65, 0.35],
    );
}

#[test]
fn attribute_merges_by_campaign_and_splits_revenue() {
    let mut j = journey();
    // Two touches of the same campaign merge into one credit.
    j.touches.push(touch(20, "email", "d"));
    let credits = attribute(&j, t0(), 1000.0, window());
    let linear: Vec<&Credit> = credits
        .iter()
        .filter(|c| c.model == Model::Linear)
        .collect();
    assert_eq!(linear.len(), 4);
    let d = linear.iter().find(|c| c.campaign == "d").unwrap();
    assert!((d.credit - 0.4).abs() < 1e-9);
    assert!((d.revenue - 400.0).abs() < 1e-9);
    for m in Model::ALL {
        let sum: f64 = credits
            .iter()
            .filter(|c| c.model == m)
            .map(|c| c.revenue)
            .sum();
        assert!((sum - 1000.0).abs() < 1e-6, "{m:?} {sum}");
    }
}

#[test]
fn channels() {
    let a = |pairs: &[(&str, &str)]| {
        let mut a = Attribution::default();
        for (k, v) in pairs {
            match *k {
                "referrer" => a.referrer = Some(v.to_string()),
                "landing_page" => a.landing_page = Some(v.to_string()),
                k => assert!(a.set_param(k, v.to_string())),
            }
        }
        a
    };
    assert_eq!(channel_of(&a(&[("gclid", "x")])), "paid_search");
    assert_eq!(channel_of(&a(&[("fbclid", "x")])), "paid_social");
    assert_eq!(
        channel_of(&a(&[("utm_source", "linkedin"), ("utm_medium", "cpc")])),
        "paid_social"
    );
    assert_eq!(
        channel_of(&a(&[("utm_source", "google"), ("utm_medium", "CPC")])),
        "paid_search"
    );
    assert_eq!(channel_of(&a(&[("utm_medium", "email")])), "email");
    assert_eq!(channel_of(&a(&[("utm_medium", "podcast")])), "other");
    assert_eq!(
        channel_of(&a(&[("referrer", "https://www.google.com/search?q=x")])),
        "organic_search"
    );
    assert_eq!(
        channel_of(&a(&[("referrer", "https://t.co/abc")])),
        "social"
    );
    assert_eq!(
        channel_of(&a(&[("referrer", "https://blog.example.org/post")])),
        "referral"
    );
    assert_eq!(
        channel_of(&a(&[("landing_page", "https://us.example/pricing")])),
        "direct"
    );
    assert!(!has_signal(&Attribution::default()));
    let t = touchpoint(&a(&[("referrer", "https://www.bing.com/")]), t0());
    assert_eq!(
        (t.channel.as_str(), t.source.as_str(), t.campaign.as_str()),
        ("organic_search", "bing.com", "(none)")
    );
}
