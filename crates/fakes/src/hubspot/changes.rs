//! Edits made as a person in HubSpot would make them (no API call, no rate
//! limit): they bump `lastmodifieddate` and reach the search index after
//! the configured delay, like API writes. Polling for changes is the CRM
//! search API (`lastmodifieddate` filters take epoch milliseconds or ISO
//! 8601). Association changes move no modification date (as in HubSpot):
//! a client reads them separately (v4 batch read).

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

    /// Associates two records (the default association both ways) as a
    /// person would in HubSpot; no modification date moves. False when
    /// either record or the association type does not exist.
    pub fn associate_records(&self, from: (&str, &str), to: (&str, &str)) -> bool {
        let schema = self.schema();
        let (Some(f), Some(t)) = (schema.resolve(from.0), schema.resolve(to.0)) else {
            return false;
        };
        let Some(forward) = schema.default_assoc(&f, &t) else {
            return false;
        };
        let mut store = self.store();
        if store.get(&f, from.1).is_none() || store.get(&t, to.1).is_none() {
            return false;
        }
        objects::store_association(
            self,
            &mut store,
            (&f, from.1),
            (&t, to.1),
            forward.type_id,
            forward.category,
        );
        true
    }

    /// Removes every association between two records, as a person would.
    pub fn dissociate_records(&self, from: (&str, &str), to: (&str, &str)) {
        let schema = self.schema();
        let (Some(f), Some(t)) = (schema.resolve(from.0), schema.resolve(to.0)) else {
            return;
        };
        self.store().dissociate((&f, from.1), (&t, to.1));
    }
}
