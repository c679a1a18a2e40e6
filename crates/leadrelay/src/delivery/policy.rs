//! What happens next after an attempt: the shared scheduling policy
//! (exponential backoff with full jitter, `Retry-After`, giving up by age or
//! attempt count). Connectors only classify; this decides.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::RetryConfig;
use crate::connectors::Outcome;
use crate::store::{Delivery, Transition};

/// How long a throttled delivery waits when the destination gave no Retry-After.
pub const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(30);

/// The backoff before retry number `failures` (1 = after the first
/// failure): uniformly random in [0, min(cap, base·2^(failures-1))], never
/// below a quarter of `base`, so the first steps are about 1, 2, 4, 8 s.
pub fn backoff(policy: &RetryConfig, failures: u32) -> Duration {
    let base = policy.base.get();
    let cap = policy.cap.get();
    let exp = failures.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exp).min(cap);
    let jittered = ceiling.mul_f64(rand::random_range(0.0..=1.0));
    jittered.max(base / 4).min(cap)
}

/// The label stored in the attempt log for an outcome's transition.
pub fn attempt_outcome(t: &Transition) -> &'static str {
    match t {
        Transition::Delivered { .. } => "delivered",
        Transition::Scheduled { failed: true, .. } => "retry",
        Transition::Scheduled {
            failed: false,
            error,
            ..
        } if error.starts_with(crate::connectors::enroll::OVERFLOW) => "overflow",
        Transition::Scheduled { failed: false, .. } => "throttled",
        Transition::Dead { .. } => "dead",
        Transition::Skipped { .. } => "skipped",
        Transition::Released => "released",
    }
}

/// Decides the delivery's next state from a connector's verdict.
pub fn transition(
    policy: &RetryConfig,
    delivery: &Delivery,
    outcome: &Outcome,
    status: Option<u16>,
    now: DateTime<Utc>,
) -> Transition {
    let deadline = delivery.created_at
        + chrono::Duration::from_std(policy.max_age.get()).unwrap_or(chrono::Duration::MAX);
    match outcome {
        Outcome::Delivered { remote_ids } => Transition::Delivered {
            remote_ids: remote_ids.clone(),
        },
        Outcome::Retry {
            message,
            retry_after,
            ..
        } => {
            let failures = delivery.failures + 1;
            let wait = backoff(policy, failures).max(retry_after.unwrap_or_default());
            let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
            if policy.max_attempts.is_some_and(|max| failures >= max) {
                return Transition::Dead {
                    status,
                    reason: format!(
                        "gave up after {failures} failed attempts; last error: {message}"
                    ),
                };
            }
            if at > deadline {
                return Transition::Dead {
                    status,
                    reason: format!(
                        "gave up: the next retry would be past the maximum age of {}; last error: {message}",
                        humantime::format_duration(policy.max_age.get())
                    ),
                };
            }
            Transition::Scheduled {
                at,
                failed: true,
                status,
                error: message.clone(),
            }
        }
        Outcome::Throttled {
            message,
            retry_after,
        } => {
            let wait = retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT);
            let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
            if at > deadline {
                return Transition::Dead {
                    status,
                    reason: format!(
                        "gave up: throttled past the maximum age; last answer: {message}"
                    ),
                };
            }
            Transition::Scheduled {
                at,
                failed: false,
                status,
                error: message.clone(),
            }
        }
        Outcome::Permanent { message, .. } => Transition::Dead {
            status,
            reason: message.clone(),
        },
        Outcome::CredentialsRejected { message } => Transition::Dead {
            status,
            reason: format!("credentials rejected: {message}"),
        },
        Outcome::Gone { message } => Transition::Dead {
            status,
            reason: format!("destination gone (disabled): {message}"),
        },
        // The overflow queue: no deadline applies (never dead-lettered for
        // capacity), and it is not a failure.
        Outcome::Deferred { until, reason } => Transition::Scheduled {
            at: (*until).max(now),
            failed: false,
            status,
            error: format!("{}{reason}", crate::connectors::enroll::OVERFLOW),
        },
        Outcome::Skipped { reason } => Transition::Skipped {
            reason: reason.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;
    use crate::connectors::ErrorClass;
    use crate::store::DeliveryState;

    fn delivery(age_secs: i64, failures: u32) -> Delivery {
        let now = Utc::now();
        Delivery {
            id: leadrelay_model::new_id(),
            event_id: leadrelay_model::new_id(),
            destination: "d".into(),
            contact_key: "email:a@b.io".into(),
            state: DeliveryState::InFlight,
            attempts: failures,
            failures,
            created_at: now - chrono::Duration::seconds(age_secs),
            updated_at: now,
            next_attempt_at: None,
            lease_id: None,
            last_status: None,
            last_error: None,
            reason: None,
            finished_at: None,
            replay_of: None,
            replayed_by: None,
            overrides: None,
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryConfig::default();
        for failures in 1..=4u32 {
            let ceiling = Duration::from_secs(1 << (failures - 1));
            for _ in 0..200 {
                let d = backoff(&p, failures);
                assert!(
                    d <= ceiling && d >= Duration::from_millis(250),
                    "{failures}: {d:?}"
                );
            }
        }
        for _ in 0..100 {
            assert!(backoff(&p, 40) <= Duration::from_secs(3600));
        }
        // Full jitter spreads values: not all retries land on the ceiling.
        let spread: std::collections::BTreeSet<u128> =
            (0..50).map(|_| backoff(&p, 4).as_millis()).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryConfig::default();
        let now = Utc::now();
        let out = Outcome::Retry {
            class: ErrorClass::Http5xx,
            message: "503".into(),
            retry_after: Some(Duration::from_secs(120)),
        };
        match transition(&p, &delivery(0, 0), &out, Some(503), now) {
            Transition::Scheduled {
                at, failed: true, ..
            } => assert!(at >= now + chrono::Duration::seconds(120)),
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn gives_up_by_age_and_by_attempts() {
        let mut p = RetryConfig {
            max_age: HumanDuration::secs(60),
            ..Default::default()
        };
        let out = Outcome::retry(ErrorClass::Http5xx, "HTTP 500");
        let now = Utc::now();
        assert!(matches!(
            transition(&p, &delivery(3600, 0), &out, Some(500), now),
            Transition::Dead { .. }
        ));
        p.max_age = HumanDuration::secs(86_400);
        p.max_attempts = Some(3);
        assert!(matches!(
            transition(&p, &delivery(0, 1), &out, Some(500), now),
            Transition::Scheduled { .. }
        ));
        match transition(&p, &delivery(0, 2), &out, Some(500), now) {
            Transition::Dead { reason, .. } => {
                assert!(reason.contains("3 failed attempts"), "{reason}")
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn throttling_does_not_count_as_failure() {
        let p = RetryConfig::default();
        let out = Outcome::Throttled {
            message: "429".into(),
            retry_after: None,
        };
        match transition(&p, &delivery(0, 0), &out, Some(429), Utc::now()) {
            Transition::Scheduled { failed: false, .. } => {}
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn permanent_outcomes_dead_letter_with_reason() {
        let p = RetryConfig::default();
        let now = Utc::now();
        let cases = [
            (
                Outcome::permanent(ErrorClass::Http4xx, "HTTP 400: bad"),
                "HTTP 400: bad",
            ),
            (
                Outcome::CredentialsRejected {
                    message: "HTTP 401".into(),
                },
                "credentials rejected",
            ),
            (
                Outcome::Gone {
                    message: "HTTP 410".into(),
                },
                "destination gone",
            ),
        ];
        for (out, want) in cases {
            match transition(&p, &delivery(0, 0), &out, None, now) {
                Transition::Dead { reason, .. } => assert!(reason.contains(want), "{reason}"),
                t => panic!("{t:?}"),
            }
        }
    }
}
