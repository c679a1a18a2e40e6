//! Edits made as a person in HubSpot would make them (no API call, no rate
//! limit): they bump `lastmodifieddate` and reach the search index after
//! the configured delay, like API writes. Polling for changes is the CRM
//! search API (`lastmodifieddate` filters take epoch milliseconds or ISO
//! 8601).

use super::HubSpotState;
use super::objects;

impl HubSpotState {
    /// Sets properties of a record (an empty value clears); false if there
    /// is no such record.
    pub fn edit(&self, object_type: &str, id: &str, changes: &[(&str, &str)]) -> bool {
        let canonical = self
            .schema()
            .resolve(object_type)
            .unwrap_or_else(|| object_type.to_string());
        let changes = changes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let indexed_at = std::time::Instant::now() + self.inner.config.search_index_delay;
        let mut store = self.store();
        objects::update_record(&mut store, &canonical, id, changes, indexed_at).is_some()
    }
}
