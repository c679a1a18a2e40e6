//! Campaign members: a form submission makes the lead (or contact) a
//! member of a Sales Cloud campaign, with a status.
//!
//! The campaign is the form's in `campaign_members.forms` (a Campaign id,
//! or a name; the key is a leadrelay form's name, or for a form submission
//! a source read — a HubSpot destination's `read.forms`, Typeform — the
//! vendor's form id or the form's name), else — with `campaign_members.utm_campaign = true` — the
//! active Campaign whose `Name` is the lead's `utm_campaign` (none: no
//! membership, the delivery is not failed for it). The member is found
//! before it is written — the kept id, else `SELECT Id FROM CampaignMember
//! WHERE CampaignId = … AND LeadId = …` — and its `Status` updated; only a
//! person who is not a member yet gets a new `CampaignMember`. A create that
//! races another (`DUPLICATE_VALUE`, "Already a campaign member") reads the
//! member again and updates it. So a retry never adds a second membership.
//!
//! HubSpot list memberships (`list.joined` / `list.left`, read by a HubSpot
//! destination's `read` block) follow `campaign_members.lists`: a join makes
//! the person a member of the list's campaign as above; a leave deletes the
//! member (Salesforce keeps no history of a deleted member) or, with
//! `left_status`, sets that status instead. A leave never creates a lead:
//! a person or member Salesforce does not have leaves nothing to do.
//!
//! HubSpot marketing event participations (`marketing_event.*` events, read
//! by `read.marketing_events`) follow `campaign_members.marketing_events`:
//! the person becomes a member of the event's campaign with the status
//! `marketing_event_statuses` names for the attendance state (else
//! `status`), and a later state updates the member's status.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::api::soql_quote;
use super::{PersonObject, Run, Salesforce, Stop, is_record_id, stop};
use crate::connectors::crm::{self, EventKind};
use crate::connectors::{ErrorClass, Outcome};
use crate::mapping;

fn default_member_status() -> String {
    "Responded".into()
}

/// `[destinations.NAME.campaign_members]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CampaignSettings {
    /// The member's `Status` (one of the campaign's member statuses).
    #[serde(default = "default_member_status")]
    pub status: String,
    /// The campaign of each form: a Campaign id (`701…`) or its name.
    #[serde(default)]
    pub forms: BTreeMap<String, String>,
    /// Forms without one: the campaign named by the lead's `utm_campaign`.
    #[serde(default)]
    pub utm_campaign: bool,
    /// The campaign of each HubSpot list (list id → Campaign id or name):
    /// a contact added to the list joins the campaign, one taken out of it
    /// leaves (`list.joined` / `list.left` events).
    #[serde(default)]
    pub lists: BTreeMap<String, String>,
    /// The member's `Status` when the person leaves the list (one of the
    /// campaign's member statuses); unset: the member is deleted.
    #[serde(default)]
    pub left_status: Option<String>,
    /// The campaign of each HubSpot marketing event (`marketingEventId` →
    /// Campaign id or name): a contact's participation read by a HubSpot
    /// destination (`marketing_event.*` events) makes them a member.
    #[serde(default)]
    pub marketing_events: BTreeMap<String, String>,
    /// The member's `Status` per attendance state (`REGISTERED`,
    /// `ATTENDED`, `CANCELLED`, `NO_SHOW`); a state not named: `status`.
    #[serde(default)]
    pub marketing_event_statuses: BTreeMap<String, String>,
}

/// Whether `job`'s event is a HubSpot list leave.
pub(super) fn is_list_left(event_type: &leadrelay_model::EventType) -> bool {
    event_type.as_str() == crate::connectors::hubspot::read::LIST_LEFT
}

/// A `data` value of the delivery's event, as trimmed text (`list_id` of a
/// `list.joined` / `list.left` event, a read form's `form_id` …).
fn data_text(run: &Run<'_>, key: &str) -> Option<String> {
    run.job
        .event
        .data
        .get(key)
        .and_then(mapping::as_text)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

impl Salesforce {
    /// The campaign a delivery's lead joins: (how it is named, whether the
    /// name comes from the configuration, the member's status).
    fn campaign_of(&self, run: &Run<'_>) -> Option<(String, bool, String)> {
        let c = self.s.campaign_members.as_ref()?;
        let event_type = run.job.event.event_type.as_str();
        if event_type == crate::connectors::hubspot::read::LIST_JOINED {
            return data_text(run, "list_id")
                .and_then(|l| c.lists.get(&l).cloned())
                .map(|campaign| (campaign, true, c.status.clone()));
        }
        if event_type.starts_with(crate::connectors::hubspot::read::MARKETING_EVENT_PREFIX) {
            let campaign = data_text(run, "marketing_event_id")
                .and_then(|id| c.marketing_events.get(&id).cloned())?;
            let status = data_text(run, "state")
                .and_then(|s| {
                    c.marketing_event_statuses
                        .get(&s.to_ascii_uppercase())
                        .cloned()
                })
                .unwrap_or_else(|| c.status.clone());
            return Some((campaign, true, status));
        }
        if EventKind::of(&run.job.event.event_type) != EventKind::NewLead {
            return None;
        }
        // A leadrelay form by its name; a form submission a source read
        // (HubSpot, Typeform) by the vendor's form id, then its name.
        let form = mapping::lookup(&run.ctx, "event.form")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let vendor_form = ["form_id", "form_name"]
            .iter()
            .filter_map(|k| data_text(run, k));
        if let Some(campaign) = form
            .into_iter()
            .chain(vendor_form)
            .find_map(|f| c.forms.get(&f))
        {
            return Some((campaign.clone(), true, c.status.clone()));
        }
        if c.utm_campaign {
            return mapping::lookup(&run.ctx, "attribution.utm_campaign")
                .and_then(mapping::as_text)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|s| (s, false, c.status.clone()));
        }
        None
    }

    /// The campaign's id: the configured id, the kept one, or the (active,
    /// with `active_only`) Campaign of that name.
    pub(super) async fn campaign_id(
        &self,
        run: &mut Run<'_>,
        named: &str,
        active_only: bool,
    ) -> Result<Option<String>, Stop> {
        if is_record_id(named) && named.starts_with("701") {
            return Ok(Some(named.to_string()));
        }
        let (key, filter) = if active_only {
            (
                format!("campaign:{}", named.to_lowercase()),
                " AND IsActive = true",
            )
        } else {
            (format!("campaign_any:{}", named.to_lowercase()), "")
        };
        if let Some(id) = self.cache.get(&key, "campaign") {
            return Ok(Some(id));
        }
        let soql = format!(
            "SELECT Id FROM Campaign WHERE Name = {}{filter} ORDER BY CreatedDate LIMIT 1",
            soql_quote(named)
        );
        let (res, report) = self.rest.query(&soql).await;
        let rows = res.map_err(|f| stop(f, report.clone()))?;
        run.report = report;
        let id = rows
            .first()
            .and_then(|r| r["Id"].as_str())
            .map(str::to_string);
        if let Some(id) = &id {
            self.cache.put(&key, "campaign", id);
        }
        Ok(id)
    }

    /// Makes the written person a member of the delivery's campaign (see
    /// the module's documentation).
    pub(super) async fn campaign_member(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let Some((named, configured, status)) = self.campaign_of(run) else {
            return Ok(());
        };
        let Some(campaign) = self.campaign_id(run, &named, true).await? else {
            if configured {
                return Err(Outcome::permanent(
                    ErrorClass::Http4xx,
                    format!("Salesforce INVALID_FIELD: no active campaign named {named:?} (fields CampaignId)"),
                )
                .into());
            }
            return Ok(());
        };
        let job = run.job;
        let key = job.delivery.contact_key.clone();
        let object = self.s.person_object;
        // A converted lead's memberships go on its Contact.
        if object == PersonObject::Lead
            && let Some(id) = self.known(job, &key, "contact")
        {
            return self.member(run, &campaign, "ContactId", &id, &status).await;
        }
        let Some(person) = self.known(job, &key, object.key()) else {
            // In Lead mode the person may be a Contact (a duplicate rule
            // found them): the membership goes on the Contact.
            return match self.known(job, &key, "contact") {
                Some(id) => self.member(run, &campaign, "ContactId", &id, &status).await,
                None => Ok(()),
            };
        };
        let field = match object {
            PersonObject::Lead => "LeadId",
            PersonObject::Contact => "ContactId",
        };
        self.member(run, &campaign, field, &person, &status).await
    }

    async fn member(
        &self,
        run: &mut Run<'_>,
        campaign: &str,
        field: &str,
        person: &str,
        status: &str,
    ) -> Result<(), Stop> {
        let key = run.job.delivery.contact_key.clone();
        let slot = format!("campaign_member:{campaign}");
        for attempt in 0..2 {
            let existing = match self.known(run.job, &key, &slot) {
                Some(id) if attempt == 0 => Some(id),
                _ => {
                    let soql = format!(
                        "SELECT Id FROM CampaignMember WHERE CampaignId = {} AND {field} = {} LIMIT 1",
                        soql_quote(campaign),
                        soql_quote(person)
                    );
                    let (res, report) = self.rest.query(&soql).await;
                    let rows = res.map_err(|f| stop(f, report.clone()))?;
                    run.report = report;
                    rows.first()
                        .and_then(|r| r["Id"].as_str())
                        .map(str::to_string)
                }
            };
            let (res, report) = match &existing {
                Some(id) => {
                    let path = format!("/sobjects/CampaignMember/{}", crm::path_segment(id));
                    self.rest
                        .call(Method::PATCH, &path, &[], Some(&json!({"Status": status})))
                        .await
                }
                None => {
                    let body = json!({"CampaignId": campaign, field: person, "Status": status});
                    self.rest
                        .call(Method::POST, "/sobjects/CampaignMember", &[], Some(&body))
                        .await
                }
            };
            run.report = report.clone();
            match res {
                Ok(v) => {
                    let id = existing.or_else(|| v["id"].as_str().map(str::to_string));
                    if let Some(id) = id {
                        self.learn(run, &slot, &key, &id);
                    }
                    return Ok(());
                }
                // A member created meanwhile (or kept, then deleted in
                // Salesforce): read it again.
                Err(f)
                    if attempt == 0
                        && (f.errors.iter().any(|e| e.code == "DUPLICATE_VALUE")
                            || f.status == Some(404)) =>
                {
                    self.cache.forget(&key, &slot);
                    continue;
                }
                Err(f) => return Err(stop(f, report)),
            }
        }
        Ok(())
    }

    /// A `list.left` event: the person leaves the list's campaign (see the
    /// module's documentation). Nothing else is written.
    pub(super) async fn leave_campaign(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        let Some(c) = self.s.campaign_members.as_ref() else {
            return Ok(());
        };
        let Some(named) = data_text(run, "list_id").and_then(|l| c.lists.get(&l).cloned()) else {
            return Ok(());
        };
        let Some(campaign) = self.campaign_id(run, &named, false).await? else {
            return Ok(());
        };
        let job = run.job;
        let key = job.delivery.contact_key.clone();
        let object = self.s.person_object;
        let person = match self.known(job, &key, "contact") {
            Some(id) if object == PersonObject::Lead => Some(("ContactId", id)),
            _ => match self.known(job, &key, object.key()) {
                Some(id) => Some((field_of(object), id)),
                None => self
                    .find_person(run)
                    .await?
                    .map(|id| (field_of(object), id)),
            },
        };
        let Some((field, person)) = person else {
            return Ok(());
        };
        let slot = format!("campaign_member:{campaign}");
        for attempt in 0..2 {
            let member = match self.known(job, &key, &slot) {
                Some(id) if attempt == 0 => Some(id),
                _ => {
                    let soql = format!(
                        "SELECT Id FROM CampaignMember WHERE CampaignId = {} AND {field} = {} LIMIT 1",
                        soql_quote(&campaign),
                        soql_quote(&person)
                    );
                    let (res, report) = self.rest.query(&soql).await;
                    let rows = res.map_err(|f| stop(f, report.clone()))?;
                    run.report = report;
                    rows.first()
                        .and_then(|r| r["Id"].as_str())
                        .map(str::to_string)
                }
            };
            let Some(member) = member else {
                return Ok(());
            };
            let path = format!("/sobjects/CampaignMember/{}", crm::path_segment(&member));
            let (res, report) = match &c.left_status {
                Some(status) => {
                    self.rest
                        .call(Method::PATCH, &path, &[], Some(&json!({"Status": status})))
                        .await
                }
                None => self.rest.call(Method::DELETE, &path, &[], None).await,
            };
            run.report = report.clone();
            match res {
                Ok(_) => {
                    if c.left_status.is_none() {
                        self.cache.forget(&key, &slot);
                    }
                    return Ok(());
                }
                // The kept member is gone already: look for another.
                Err(f) if attempt == 0 && f.status == Some(404) => {
                    self.cache.forget(&key, &slot);
                    continue;
                }
                Err(f) => return Err(stop(f, report)),
            }
        }
        Ok(())
    }
}

fn field_of(object: PersonObject) -> &'static str {
    match object {
        PersonObject::Lead => "LeadId",
        PersonObject::Contact => "ContactId",
    }
}
