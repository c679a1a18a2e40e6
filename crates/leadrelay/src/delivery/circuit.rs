//! A circuit breaker per destination: after repeated transient failures it
//! opens, lets one probe through now and then (the wait doubles up to a
//! maximum), and closes again on the first success.

use std::time::{Duration, Instant};

use crate::config::CircuitConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    /// No sends until `probe_at`.
    Open {
        probe_at: Instant,
    },
    /// One probe is in flight.
    HalfOpen,
}

impl CircuitState {
    pub fn label(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// What the dispatcher may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send freely.
    Send,
    /// Send a single probe batch.
    Probe,
    /// Wait until the instant given.
    Wait(Instant),
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitConfig,
    state: CircuitState,
    consecutive_failures: u32,
    interval: Duration,
}

impl CircuitBreaker {
    pub fn new(config: CircuitConfig) -> Self {
        let interval = config.probe_interval.get();
        Self {
            config,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            interval,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            CircuitState::Closed => Permit::Send,
            CircuitState::HalfOpen => Permit::Wait(now + Duration::from_millis(200)),
            CircuitState::Open { probe_at } if now >= probe_at => {
                self.state = CircuitState::HalfOpen;
                Permit::Probe
            }
            CircuitState::Open { probe_at } => Permit::Wait(probe_at),
        }
    }

    /// Whether requests may go out now (closed), without the side effect of
    /// [`permit`](Self::permit), which turns a due open circuit half-open.
    pub fn is_closed(&self) -> bool {
        self.state == CircuitState::Closed
    }

    /// Records a success; returns true if the circuit just closed.
    pub fn on_success(&mut self) -> bool {
        let was_open = self.state != CircuitState::Closed;
        self.state = CircuitState::Closed;
        self.consecutive_failures = 0;
        self.interval = self.config.probe_interval.get();
        was_open
    }

    /// Records a transient failure; returns true if the circuit just opened.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures += 1;
        match self.state {
            CircuitState::HalfOpen => {
                self.interval = (self.interval * 2).min(self.config.max_probe_interval.get());
                self.state = CircuitState::Open {
                    probe_at: now + self.interval,
                };
                false
            }
            CircuitState::Closed
                if self.consecutive_failures >= self.config.failure_threshold.max(1) =>
            {
                self.state = CircuitState::Open {
                    probe_at: now + self.interval,
                };
                true
            }
            _ => false,
        }
    }

    /// A probe that ended without a verdict on the destination's health
    /// (e.g. a permanent 4xx): let the next batch probe again.
    pub fn on_neutral(&mut self, now: Instant) {
        if self.state == CircuitState::HalfOpen {
            self.state = CircuitState::Open { probe_at: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn cfg() -> CircuitConfig {
        CircuitConfig {
            failure_threshold: 3,
            probe_interval: HumanDuration::secs(10),
            max_probe_interval: HumanDuration::secs(40),
        }
    }

    #[test]
    fn opens_probes_and_recovers() {
        let mut cb = CircuitBreaker::new(cfg());
        let t0 = Instant::now();
        assert_eq!(cb.permit(t0), Permit::Send);
        assert!(!cb.on_failure(t0));
        assert!(!cb.on_failure(t0));
        assert!(cb.on_failure(t0), "third failure opens");
        assert_eq!(cb.permit(t0), Permit::Wait(t0 + Duration::from_secs(10)));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(cb.permit(t1), Permit::Probe);
        assert!(
            matches!(cb.permit(t1), Permit::Wait(_)),
            "one probe at a time"
        );
        cb.on_failure(t1);
        assert_eq!(
            cb.permit(t1),
            Permit::Wait(t1 + Duration::from_secs(20)),
            "interval doubles"
        );
        let t2 = t1 + Duration::from_secs(20);
        assert_eq!(cb.permit(t2), Permit::Probe);
        assert!(cb.on_success());
        assert_eq!(cb.permit(t2), Permit::Send);
    }

    #[test]
    fn probe_interval_is_capped() {
        let mut cb = CircuitBreaker::new(cfg());
        let mut t = Instant::now();
        for _ in 0..3 {
            cb.on_failure(t);
        }
        for _ in 0..10 {
            let Permit::Wait(at) = cb.permit(t) else {
                panic!()
            };
            assert!(at - t <= Duration::from_secs(40));
            t = at;
            assert_eq!(cb.permit(t), Permit::Probe);
            cb.on_failure(t);
        }
    }
}
