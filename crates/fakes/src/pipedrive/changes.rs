//! Change intake: `GET /api/v2/persons` (API v2's list, with
//! `updated_since` / `updated_until` in RFC 3339, `sort_by` `id`,
//! `update_time` or `add_time`, `sort_direction`, `limit` up to 500 and
//! cursor paging through `additional_data.next_cursor`), and edits made as
//! a person in Pipedrive's UI would make them (bumping `update_time`).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::errors::{self, PdError};
use super::v2::{
    PdResult, apply_deal, apply_org, deal_json, finish, org_json, person_json, resolve_stage,
};
use super::webhooks::ChangeSource;
use super::{PipedriveContactPoint, PipedriveState};

fn params(query: Option<&str>) -> Result<Vec<(String, String)>, PdError> {
    serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|_| errors::bad_request("The query string is malformed"))
}

fn time(name: &str, v: &str) -> Result<DateTime<Utc>, PdError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            errors::schema(format!(
                "{name}: Parameter '{name}' must be a valid RFC3339 date"
            ))
        })
}

/// `GET /api/v2/persons`
pub(crate) async fn list_persons(
    State(state): State<PipedriveState>,
    RawQuery(query): RawQuery,
) -> Response {
    finish((|| -> PdResult {
        let mut since = None;
        let mut until = None;
        let mut sort_by = "id".to_string();
        let mut desc = false;
        let mut limit = 100usize;
        let mut cursor = 0usize;
        for (k, v) in params(query.as_deref())? {
            match k.as_str() {
                "updated_since" => since = Some(time(&k, &v)?),
                "updated_until" => until = Some(time(&k, &v)?),
                "sort_by" if ["id", "update_time", "add_time"].contains(&v.as_str()) => sort_by = v,
                "sort_by" => {
                    return Err(errors::schema(
                        "sort_by: Parameter 'sort_by' must be one of id, update_time, add_time",
                    ));
                }
                "sort_direction" if v == "asc" || v == "desc" => desc = v == "desc",
                "sort_direction" => {
                    return Err(errors::schema(
                        "sort_direction: Parameter 'sort_direction' must be one of asc, desc",
                    ));
                }
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=500).contains(&n) => limit = n,
                    _ => {
                        return Err(errors::schema(
                            "limit: Parameter 'limit' must be an integer from 1 to 500",
                        ));
                    }
                },
                "cursor" => {
                    cursor =
                        decode_cursor(&v).ok_or_else(|| errors::bad_request("Invalid cursor"))?;
                }
                "owner_id" | "org_id" | "filter_id" | "ids" | "include_fields"
                | "custom_fields" => {}
                other => {
                    return Err(errors::schema(format!(
                        "{other}: Parameter '{other}' is not allowed for this request"
                    )));
                }
            }
        }
        let store = state.store();
        let mut people: Vec<_> = store
            .persons
            .values()
            .filter(|p| since.is_none_or(|s| p.update_time >= s))
            .filter(|p| until.is_none_or(|u| p.update_time < u))
            .collect();
        people.sort_by(|a, b| {
            let o = match sort_by.as_str() {
                "update_time" => a.update_time.cmp(&b.update_time),
                "add_time" => a.add_time.cmp(&b.add_time),
                _ => std::cmp::Ordering::Equal,
            }
            .then(a.id.cmp(&b.id));
            if desc { o.reverse() } else { o }
        });
        let data: Vec<Value> = people
            .iter()
            .skip(cursor)
            .take(limit)
            .map(|p| person_json(p))
            .collect();
        let next = (cursor + limit < people.len()).then(|| encode_cursor(cursor + limit));
        Ok(errors::ok_with(
            StatusCode::OK,
            Value::Array(data),
            json!({"next_cursor": next}),
        ))
    })())
}

fn encode_cursor(offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("offset:{offset}"))
}

fn decode_cursor(c: &str) -> Option<usize> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(c).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("offset:")?
        .parse()
        .ok()
}

impl PipedriveState {
    /// Edits a person as someone in Pipedrive would (no API call, no rate
    /// limit): `name`, `phone` (the primary phone) or `custom_fields.KEY`;
    /// an empty value clears. Bumps `update_time`. False if there is no
    /// such person.
    pub fn edit_person(&self, id: u64, changes: &[(&str, &str)]) -> bool {
        let mut store = self.store();
        let Some(p) = store.persons.get_mut(&id) else {
            return false;
        };
        let before = person_json(p);
        for (field, value) in changes {
            match field.strip_prefix("custom_fields.") {
                Some(key) if value.is_empty() => {
                    p.custom_fields.insert(key.to_string(), Value::Null);
                }
                Some(key) => {
                    p.custom_fields.insert(key.to_string(), json!(value));
                }
                None if *field == "phone" => {
                    p.phones = if value.is_empty() {
                        Vec::new()
                    } else {
                        vec![PipedriveContactPoint {
                            value: value.to_string(),
                            primary: true,
                            label: "work".into(),
                        }]
                    };
                }
                None if *field == "name" => p.name = value.to_string(),
                None => {}
            }
        }
        p.update_time = Utc::now();
        let after = person_json(p);
        self.changed("person", id, Some(before), Some(after), ChangeSource::App);
        true
    }

    /// Edits an organization as someone in Pipedrive would (no API call,
    /// no validation beyond the body's shape): `changes` is a v2 PATCH body
    /// (`{"name": …, "address": {"value": …}, "custom_fields": {…}}`).
    /// Bumps `update_time`. False if there is no such organization.
    pub fn edit_organization(&self, id: u64, changes: Value) -> bool {
        let Value::Object(body) = changes else {
            return false;
        };
        let mut store = self.store();
        let Some(o) = store.organizations.get_mut(&id) else {
            return false;
        };
        let before = org_json(o);
        apply_org(o, &body);
        let after = org_json(o);
        self.changed(
            "organization",
            id,
            Some(before),
            Some(after),
            ChangeSource::App,
        );
        true
    }

    /// Edits a deal as someone in Pipedrive would: `changes` is a v2 PATCH
    /// body (`{"title": …, "stage_id": 3, "org_id": 12, "value": 500}`); a
    /// stage must exist. Bumps `update_time`. False if there is no such
    /// deal or stage.
    pub fn edit_deal(&self, id: u64, changes: Value) -> bool {
        let Value::Object(body) = changes else {
            return false;
        };
        let mut store = self.store();
        let Some(current) = store.deals.get(&id).map(|d| (d.pipeline_id, d.stage_id)) else {
            return false;
        };
        let Ok(stage) = resolve_stage(self, &body, Some(current)) else {
            return false;
        };
        match store.deals.get_mut(&id) {
            Some(d) => {
                let before = deal_json(d);
                apply_deal(d, &body, stage);
                let after = deal_json(d);
                self.changed("deal", id, Some(before), Some(after), ChangeSource::App);
                true
            }
            None => false,
        }
    }

    /// A person's custom fields.
    pub fn person_custom_fields(&self, id: u64) -> Option<Map<String, Value>> {
        self.store()
            .persons
            .get(&id)
            .map(|p| p.custom_fields.clone())
    }
}
