//! Wake-ups for delivery workers: a committed delivery pokes its
//! destination's worker instead of leaving it to the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct WakeHub {
    by_destination: Mutex<HashMap<String, Arc<Notify>>>,
}

impl WakeHub {
    /// The notifier a destination's worker waits on.
    pub fn notifier(&self, destination: &str) -> Arc<Notify> {
        let mut map = self
            .by_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Looked up first: the key is copied only on a destination's first
        // call, not on every wake (one per committed lead).
        if let Some(n) = map.get(destination) {
            return n.clone();
        }
        map.entry(destination.to_string()).or_default().clone()
    }

    /// Wakes the worker of `destination` (the wake is kept if it is busy).
    pub fn wake(&self, destination: &str) {
        self.notifier(destination).notify_one();
    }
}
