//! Multi-touch attribution: which marketing touches of a person get how much
//! credit (and revenue) for a deal. Pure functions over a journey; the
//! rollup worker stores their result per closed deal.
//!
//! A *journey* is a person's touchpoints in time order plus two milestones:
//! when they became a lead and when their opportunity (deal) was created.
//! Only touches within the lookback window before the conversion count:
//! `conversion - lookback <= at <= conversion` (both edges included).

use chrono::{DateTime, Duration, Utc};
use leadrelay_model::Attribution;
use serde::{Deserialize, Serialize};

/// One marketing touch of a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touchpoint {
    pub at: DateTime<Utc>,
    /// `paid_search`, `paid_social`, `email`, `organic_search`, `social`,
    /// `referral`, `display`, `affiliate`, `other` or `direct` (see [`channel_of`]).
    pub channel: String,
    /// `utm_source`, else the referrer's host, else `(direct)`.
    pub source: String,
    /// `utm_campaign`, else `(none)`.
    pub campaign: String,
}

/// The attribution models.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    FirstTouch,
    LastTouch,
    Linear,
    /// 40 % first touch, 40 % lead creation, 20 % the touches between.
    UShaped,
    /// 30 % first touch, 30 % lead creation, 30 % opportunity creation,
    /// 10 % the other touches.
    WShaped,
    /// Credit halves every `half_life` before the conversion.
    TimeDecay,
}

impl Model {
    pub const ALL: [Model; 6] = [
        Model::FirstTouch,
        Model::LastTouch,
        Model::Linear,
        Model::UShaped,
        Model::WShaped,
        Model::TimeDecay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first_touch",
            Model::LastTouch => "last_touch",
            Model::Linear => "linear",
            Model::UShaped => "u_shaped",
            Model::WShaped => "w_shaped",
            Model::TimeDecay => "time_decay",
        }
    }

    pub fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A person's journey to one conversion.
#[derive(Debug, Clone, Default)]
pub struct Journey {
    /// Every known touch, any order.
    pub touches: Vec<Touchpoint>,
    /// When the person became a lead (their first lead event).
    pub lead_created_at: Option<DateTime<Utc>>,
    /// When the deal was created.
    pub opportunity_created_at: Option<DateTime<Utc>>,
}

/// Settings shared by every model.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// How far back before the conversion a touch still counts.
    pub lookback: Duration,
    /// Time decay: credit halves for every `half_life` a touch is older.
    pub half_life: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            lookback: Duration::days(90),
            half_life: Duration::days(7),
        }
    }
}

/// The touches that count toward a conversion at `at`, oldest first.
pub fn in_window(journey: &Journey, at: DateTime<Utc>, window: Window) -> Vec<Touchpoint> {
    let from = at - window.lookback;
    let mut t: Vec<Touchpoint> = journey
        .touches
        .iter()
        .filter(|t| t.at >= from && t.at <= at)
        .cloned()
        .collect();
    t.sort_by_key(|t| t.at);
    t
}

/// Credit per touch (same order as `touches`, which must be oldest first and
/// already windowed), summing to 1 — or empty when there is no touch.
pub fn weights(
    model: Model,
    touches: &[Touchpoint],
    journey: &Journey,
    at: DateTime<Utc>,
    window: Window,
) -> Vec<f64> {
    let n = touches.len();
    if n == 0 {
        return Vec::new();
    }
    // The touch that led to a milestone: the last one at or before it (the
    // first touch when the milestone precedes every touch; the last when
    // the milestone is unknown).
    let led_to = |milestone: Option<DateTime<Utc>>| match milestone {
        Some(m) => touches.iter().rposition(|t| t.at <= m).unwrap_or(0),
        None => n - 1,
    };
    let mut w = vec![0.0; n];
    match model {
        Model::FirstTouch => w[0] = 1.0,
        Model::LastTouch => w[n - 1] = 1.0,
        Model::Linear => w.iter_mut().for_each(|x| *x = 1.0 / n as f64),
        Model::UShaped => {
            let keys = [0, led_to(journey.lead_created_at)];
            positional(&mut w, &keys, 0.4);
        }
        Model::WShaped => {
            let keys = [
                0,
                led_to(journey.lead_created_at),
                led_to(journey.opportunity_created_at),
            ];
            positional(&mut w, &keys, 0.3);
        }
        Model::TimeDecay => {
            let half = window.half_life.num_milliseconds().max(1) as f64;
            for (x, t) in w.iter_mut().zip(touches) {
                let age = (at - t.at).num_milliseconds().max(0) as f64;
                *x = 0.5f64.powf(age / half);
            }
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|x| *x /= sum);
        }
    }
    w
}

/// Gives each key position `share` (a touch that is several keys gets each
/// share), and the remainder to the other touches evenly — or, when every
/// touch is a key, to the keys evenly.
fn positional(w: &mut [f64], keys: &[usize], share: f64) {
    for &k in keys {
        w[k] += share;
    }
    let rest = 1.0 - share * keys.len() as f64;
    let others: Vec<usize> = (0..w.len()).filter(|i| !keys.contains(i)).collect();
    if others.is_empty() {
        let mut distinct = keys.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for &k in &distinct {
            w[k] += rest / distinct.len() as f64;
        }
    } else {
        for i in &others {
            w[*i] += rest / others.len() as f64;
        }
    }
}

/// Credit of one (channel, source, campaign) under one model for one conversion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credit {
    pub model: Model,
    pub channel: String,
    pub source: String,
    pub campaign: String,
    /// Share of the conversion, 0..=1.
    pub credit: f64,
    /// `credit` × the deal's amount.
    pub revenue: f64,
}

/// Every model's credits for a conversion at `at` worth `amount`, merged by
/// (channel, source, campaign). Empty when no touch is in the window.
pub fn attribute(journey: &Journey, at: DateTime<Utc>, amount: f64, window: Window) -> Vec<Credit> {
    let touches = in_window(journey, at, window);
    let mut out: Vec<Credit> = Vec::new();
    for model in Model::ALL {
        let w = weights(model, &touches, journey, at, window);
        for (t, x) in touches.iter().zip(w) {
            if x == 0.0 {
                continue;
            }
            match out.iter_mut().find(|c| {
                c.model == model
                    && c.channel == t.channel
                    && c.source == t.source
                    && c.campaign == t.campaign
            }) {
                Some(c) => {
                    c.credit += x;
                    c.revenue += x * amount;
                }
                None => out.push(Credit {
                    model,
                    channel: t.channel.clone(),
                    source: t.source.clone(),
                    campaign: t.campaign.clone(),
                    credit: x,
                    revenue: x * amount,
                }),
            }
        }
    }
    out
}

/// The channel of a touch: click ids and `utm_medium` first, then the referrer.
pub fn channel_of(a: &Attribution) -> &'static str {
    let medium = a.utm_medium.as_deref().unwrap_or("").to_ascii_lowercase();
    let source = a.utm_source.as_deref().unwrap_or("").to_ascii_lowercase();
    let social_source = [
        "facebook",
        "instagram",
        "linkedin",
        "twitter",
        "x",
        "tiktok",
    ]
    .iter()
    .any(|s| source == *s || source.starts_with(&format!("{s}.")));
    if a.gclid.is_some() || a.msclkid.is_some() {
        return "paid_search";
    }
    if a.fbclid.is_some() || a.ttclid.is_some() || a.li_fat_id.is_some() {
        return "paid_social";
    }
    match medium.as_str() {
        "cpc" | "ppc" | "paidsearch" | "paid_search" | "sem" => {
            return if social_source {
                "paid_social"
            } else {
                "paid_search"
            };
        }
        "paid_social" | "paidsocial" | "social_paid" => return "paid_social",
        "email" | "e-mail" | "newsletter" => return "email",
        "social" | "social-network" | "social_media" | "sm" => return "social",
        "display" | "banner" | "cpm" => return "display",
        "affiliate" | "partner" => return "affiliate",
        "referral" => return "referral",
        "organic" => return "organic_search",
        "" => {}
        _ => return "other",
    }
    if !source.is_empty() || a.utm_campaign.is_some() {
        return if social_source { "social" } else { "other" };
    }
    let Some(host) = a.referrer.as_deref().and_then(referrer_host) else {
        return "direct";
    };
    let search = [
        "google.",
        "bing.",
        "duckduckgo.",
        "yahoo.",
        "ecosia.",
        "baidu.",
    ];
    let social = [
        "facebook.",
        "instagram.",
        "linkedin.",
        "t.co",
        "twitter.",
        "x.com",
        "reddit.",
        "youtube.",
    ];
    let host_has = |list: &[&str]| {
        list.iter().any(|s| {
            host.starts_with(s)
                || host.contains(&format!(".{s}"))
                || host == s.trim_end_matches('.')
        })
    };
    if host_has(&search) {
        "organic_search"
    } else if host_has(&social) {
        "social"
    } else {
        "referral"
    }
}

fn referrer_host(r: &str) -> Option<String> {
    url::Url::parse(r).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_start_matches("www.").to_string())
    })
}

/// Whether an event's attribution holds any marketing signal (UTMs, click
/// ids, referrer, landing page).
pub fn has_signal(a: &Attribution) -> bool {
    leadrelay_model::UTM_FIELDS
        .iter()
        .chain(leadrelay_model::CLICK_ID_FIELDS.iter())
        .any(|f| a.param(f).is_some())
        || a.referrer.is_some()
        || a.landing_page.is_some()
}

/// The touchpoint an event's attribution makes.
pub fn touchpoint(a: &Attribution, at: DateTime<Utc>) -> Touchpoint {
    let channel = channel_of(a).to_string();
    let source = a
        .utm_source
        .clone()
        .or_else(|| a.referrer.as_deref().and_then(referrer_host))
        .unwrap_or_else(|| "(direct)".into());
    Touchpoint {
        at,
        channel,
        source,
        campaign: a.utm_campaign.clone().unwrap_or_else(|| "(none)".into()),
    }
}

#[cfg(test)]
mod tests;
