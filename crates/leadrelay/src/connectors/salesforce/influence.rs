//! Attribution written back to Salesforce (`attribution.updated`, see
//! [`crate::reports::writeback`]): the fields of `attribution.lead` /
//! `attribution.contact` go on the person's write, those of
//! `attribution.opportunity` on the Opportunity the event names (its
//! `salesforce` / `opportunity` vendor reference) — never on another one.
//!
//! With `[destinations.NAME.attribution.campaign_influence] model_id = …`
//! (a Customizable Campaign Influence model of the org), each campaign the
//! writeback's model credits — the touch's `utm_campaign` naming a Campaign
//! (`SELECT Id FROM Campaign WHERE Name = …`; active or not) — gets a
//! `CampaignInfluence` record on the Opportunity (`CampaignId`,
//! `OpportunityId`, `ModelId`, the person's `ContactId` when they are a
//! Contact, `Influence` = the credit in percent). The model's records of the
//! opportunity are read first (`SELECT … FROM CampaignInfluence WHERE
//! OpportunityId = … AND ModelId = …`): one that exists for the campaign
//! (and contact) is updated, so a retry or a second writeback never adds a
//! second record. Campaigns Salesforce does not have are left out.
//!
//! With `[destinations.NAME.attribution.campaign_members] status = …`, the
//! person also becomes a member of each credited campaign they are not a
//! member of yet (the kept member id, else `SELECT Id FROM CampaignMember
//! WHERE CampaignId = … AND LeadId|ContactId = …`); an existing membership
//! keeps its status.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use super::api::soql_quote;
use super::{PersonObject, Run, Salesforce, Stop, ids_equal, is_record_id, stop};
use crate::config::Problem;
use crate::connectors::crm::{self, AttributionFields};
use crate::connectors::{DeliveryJob, ErrorClass, Outcome};

/// The `attribution` entry that configures Campaign Influence (not an
/// object's fields).
pub(super) const SECTION: &str = "campaign_influence";
/// The one that configures Campaign Members.
pub(super) const MEMBERS: &str = "campaign_members";

/// `[destinations.NAME.attribution.campaign_members]`: the `Status` of the
/// memberships attribution adds.
pub(super) fn parse_members(
    section: Option<BTreeMap<String, String>>,
) -> Result<Option<String>, Vec<Problem>> {
    let Some(section) = section else {
        return Ok(None);
    };
    let path = format!("attribution.{MEMBERS}");
    let mut problems: Vec<Problem> = section
        .keys()
        .filter(|k| *k != "status")
        .map(|k| {
            Problem::error(
                format!("{path}.{k}"),
                "not a setting of campaign_members (status)",
            )
        })
        .collect();
    let status = section.get("status").map(|s| s.trim().to_string());
    if status.as_deref().is_none_or(str::is_empty) {
        problems.push(Problem::error(
            format!("{path}.status"),
            "the member Status to give (one of the campaigns' member statuses, e.g. \"Responded\")",
        ));
    }
    if problems.is_empty() {
        Ok(status)
    } else {
        Err(problems)
    }
}

/// `[destinations.NAME.attribution.campaign_influence]`
#[derive(Debug, Clone)]
pub(super) struct InfluenceSettings {
    /// The `CampaignInfluenceModel` the records belong to.
    pub model_id: String,
}

impl InfluenceSettings {
    /// Parses the section (its keys are strings, as `attribution`'s are).
    pub(super) fn parse(
        section: Option<BTreeMap<String, String>>,
    ) -> Result<Option<Self>, Vec<Problem>> {
        let Some(section) = section else {
            return Ok(None);
        };
        let path = format!("attribution.{SECTION}");
        let mut problems = Vec::new();
        for k in section.keys().filter(|k| *k != "model_id") {
            problems.push(Problem::error(
                format!("{path}.{k}"),
                "not a setting of campaign_influence (model_id)",
            ));
        }
        let model_id = section.get("model_id").map(|m| m.trim().to_string());
        match &model_id {
            Some(m) if is_record_id(m) => {}
            Some(m) => problems.push(Problem::error(
                format!("{path}.model_id"),
                format!(
                    "{m:?} is not a Salesforce record id: the Id of a CampaignInfluenceModel (SELECT Id, MasterLabel FROM CampaignInfluenceModel)"
                ),
            )),
            None => problems.push(Problem::error(
                format!("{path}.model_id"),
                "the Id of the CampaignInfluenceModel the records belong to (a custom model, not Primary Campaign Source)",
            )),
        }
        if problems.is_empty() {
            Ok(model_id.map(|model_id| InfluenceSettings { model_id }))
        } else {
            Err(problems)
        }
    }
}

/// The Opportunity an attribution writeback is about: its Salesforce
/// vendor reference.
pub(super) fn opportunity_of(job: &DeliveryJob) -> Option<&str> {
    if !AttributionFields::applies(&job.event) {
        return None;
    }
    job.event
        .vendor_refs
        .iter()
        .find(|r| r.system == "salesforce" && r.object.eq_ignore_ascii_case("opportunity"))
        .map(|r| r.id.as_str())
}

/// The writeback model's credit per campaign (summed over channels and
/// sources), campaigns without a name left out, largest first.
pub(super) fn campaign_credits(data: &serde_json::Map<String, Value>) -> Vec<(String, f64)> {
    let model = data.get("attribution_model").and_then(Value::as_str);
    let mut by: Vec<(String, f64)> = Vec::new();
    for c in data
        .get("credits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if c["model"].as_str() != model || model.is_none() {
            continue;
        }
        let Some(name) = c["campaign"]
            .as_str()
            .map(str::trim)
            .filter(|n| !n.is_empty() && *n != "(none)")
        else {
            continue;
        };
        let credit = c["credit"].as_f64().unwrap_or(0.0);
        match by.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += credit,
            None => by.push((name.to_string(), credit)),
        }
    }
    by.retain(|(_, c)| *c > 0.0);
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    by
}

/// A credit (0–1) as Salesforce's percent, two decimals.
fn percent(credit: f64) -> f64 {
    (credit.clamp(0.0, 1.0) * 10_000.0).round() / 100.0
}

impl Salesforce {
    /// An attribution writeback's campaigns: Campaign Members and the
    /// opportunity's Campaign Influence records (see the module's
    /// documentation).
    pub(super) async fn attribution_campaigns(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        if !AttributionFields::applies(&run.job.event)
            || (self.influence.is_none() && self.attribution_members.is_none())
        {
            return Ok(());
        }
        let opportunity = opportunity_of(run.job).filter(|_| self.influence.is_some());
        if let Some(o) = opportunity
            && !is_record_id(o)
        {
            return Err(Outcome::permanent(
                ErrorClass::Mapping,
                format!("{o:?} is not a Salesforce Opportunity id"),
            )
            .into());
        }
        if opportunity.is_none() && self.attribution_members.is_none() {
            return Ok(());
        }
        let credits = campaign_credits(&run.job.event.data);
        // Resolved campaigns; two names of one campaign add up.
        let mut wanted: Vec<(String, f64)> = Vec::new();
        for (name, credit) in credits {
            let Some(id) = self.campaign_id(run, &name, false).await? else {
                continue;
            };
            match wanted.iter_mut().find(|(c, _)| ids_equal(c, &id)) {
                Some((_, sum)) => *sum += credit,
                None => wanted.push((id, credit)),
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        if let Some(status) = &self.attribution_members {
            for (campaign, _) in &wanted {
                self.attribution_member(run, campaign, status).await?;
            }
        }
        let (Some(settings), Some(opportunity)) = (&self.influence, opportunity) else {
            return Ok(());
        };
        let key = run.job.delivery.contact_key.clone();
        // ContactId takes Contacts only: the person in Contact mode, or the
        // Contact a Lead became.
        let contact = self.known(run.job, &key, PersonObject::Contact.key());
        let soql = format!(
            "SELECT Id, CampaignId, ContactId, Influence FROM CampaignInfluence WHERE OpportunityId = {} AND ModelId = {}",
            soql_quote(opportunity),
            soql_quote(&settings.model_id)
        );
        let (res, report) = self.rest.query(&soql).await;
        run.report = report.clone();
        let existing = res.map_err(|f| stop(f, report))?;
        for (campaign, credit) in wanted {
            let influence = percent(credit);
            let same = existing.iter().find(|r| {
                r["CampaignId"]
                    .as_str()
                    .is_some_and(|c| ids_equal(c, &campaign))
                    && match (&contact, r["ContactId"].as_str()) {
                        (Some(mine), Some(theirs)) => ids_equal(mine, theirs),
                        (None, None) => true,
                        _ => false,
                    }
            });
            let (res, report) = match same {
                Some(r) => {
                    if r["Influence"]
                        .as_f64()
                        .is_some_and(|i| (i - influence).abs() < 0.005)
                    {
                        continue;
                    }
                    let id = r["Id"].as_str().unwrap_or_default();
                    let path = format!("/sobjects/CampaignInfluence/{}", crm::path_segment(id));
                    self.rest
                        .call(
                            Method::PATCH,
                            &path,
                            &[],
                            Some(&json!({"Influence": influence})),
                        )
                        .await
                }
                None => {
                    let mut body = json!({
                        "CampaignId": campaign,
                        "OpportunityId": opportunity,
                        "ModelId": settings.model_id,
                        "Influence": influence,
                    });
                    if let Some(c) = &contact {
                        body["ContactId"] = json!(c);
                    }
                    self.rest
                        .call(
                            Method::POST,
                            "/sobjects/CampaignInfluence",
                            &[],
                            Some(&body),
                        )
                        .await
                }
            };
            run.report = report.clone();
            res.map_err(|f| stop(f, report))?;
        }
        Ok(())
    }
}

impl Salesforce {
    /// Makes the person a member of `campaign` unless they are one already
    /// (an existing membership keeps its status).
    async fn attribution_member(
        &self,
        run: &mut Run<'_>,
        campaign: &str,
        status: &str,
    ) -> Result<(), Stop> {
        let key = run.job.delivery.contact_key.clone();
        // A converted Lead's memberships go on its Contact.
        let (field, person) = match self.known(run.job, &key, PersonObject::Contact.key()) {
            Some(c) => ("ContactId", c),
            None => match self.known(run.job, &key, PersonObject::Lead.key()) {
                Some(l) if self.s.person_object == PersonObject::Lead => ("LeadId", l),
                _ => return Ok(()),
            },
        };
        let slot = format!("campaign_member:{campaign}");
        if self.known(run.job, &key, &slot).is_some() {
            return Ok(());
        }
        let soql = format!(
            "SELECT Id FROM CampaignMember WHERE CampaignId = {} AND {field} = {} LIMIT 1",
            soql_quote(campaign),
            soql_quote(&person)
        );
        let (res, report) = self.rest.query(&soql).await;
        run.report = report.clone();
        let rows = res.map_err(|f| stop(f, report))?;
        if let Some(id) = rows.first().and_then(|r| r["Id"].as_str()) {
            let id = id.to_string();
            self.learn(run, &slot, &key, &id);
            return Ok(());
        }
        let body = json!({"CampaignId": campaign, field: person, "Status": status});
        let (res, report) = self
            .rest
            .call(Method::POST, "/sobjects/CampaignMember", &[], Some(&body))
            .await;
        run.report = report.clone();
        match res {
            Ok(v) => {
                if let Some(id) = v["id"].as_str() {
                    let id = id.to_string();
                    self.learn(run, &slot, &key, &id);
                }
                Ok(())
            }
            // A member created meanwhile: they are one.
            Err(f) if f.errors.iter().any(|e| e.code == "DUPLICATE_VALUE") => Ok(()),
            Err(f) => Err(stop(f, report)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_add_up_per_campaign_of_the_writeback_model_only() {
        let data = json!({
            "attribution_model": "w_shaped",
            "credits": [
                {"model": "w_shaped", "campaign": "spring", "credit": 0.4},
                {"model": "w_shaped", "campaign": "nurture", "credit": 0.35},
                {"model": "w_shaped", "campaign": "spring", "credit": 0.25},
                {"model": "w_shaped", "campaign": "(none)", "credit": 0.0},
                {"model": "linear", "campaign": "other", "credit": 1.0},
            ],
        });
        let got = campaign_credits(data.as_object().unwrap());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "spring");
        assert!((got[0].1 - 0.65).abs() < 1e-9);
        assert_eq!(got[1].0, "nurture");
        assert_eq!(percent(got[0].1), 65.0);
        assert_eq!(percent(1.0 / 3.0), 33.33);
    }

    #[test]
    fn the_section_needs_a_model_id_and_nothing_else() {
        let parse = |pairs: &[(&str, &str)]| {
            InfluenceSettings::parse(Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ))
        };
        assert!(InfluenceSettings::parse(None).unwrap().is_none());
        assert_eq!(
            parse(&[("model_id", "03V5e000000abcdEAA")])
                .unwrap()
                .unwrap()
                .model_id,
            "03V5e000000abcdEAA"
        );
        let errs = parse(&[("model_id", "first touch"), ("model", "x")]).unwrap_err();
        let paths: Vec<String> = errs.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(errs.len(), 2, "{paths:?}");
        assert!(
            paths
                .iter()
                .any(|p| p.contains("campaign_influence.model_id"))
        );
        assert!(paths.iter().any(|p| p.contains("campaign_influence.model")));
        assert_eq!(parse(&[]).unwrap_err().len(), 1);
    }
}
