//! Lead conversion (Lead mode): when a delivery's event qualifies the lead
//! (`lead_conversion.events`, optionally only at `lead_conversion.stages`),
//! the written Lead is converted into a Contact, an Account and (optionally)
//! an Opportunity with the SOAP API's `convertLead()` — the REST API has no
//! conversion call.
//!
//! Salesforce itself remembers a conversion (`Lead.IsConverted` and the
//! `Converted…Id` fields), so the step reads the Lead first: a lead already
//! converted — by an earlier attempt that died before keeping the ids (a
//! `kill -9`, a lost answer), or by a person in Salesforce — is not
//! converted again, its records are taken over. A conversion racing another
//! (`CANNOT_UPDATE_CONVERTED_LEAD`) reads the Lead again the same way.
//! Before converting, an Account named as the lead's company (and on it a
//! Contact with the lead's email) is looked up and merged into, so a
//! company that is already a customer does not get a second Account.
//!
//! The Contact's id is kept under the person's key: later deliveries for the
//! person (Lead mode) log their tasks on the Contact (`WhoId`) and leave the
//! converted Lead alone, which Salesforce no longer lets anyone update.

use serde::Deserialize;
use serde_json::Value;

use super::api::soql_quote;
use super::{PersonObject, Run, Salesforce, Stop, account_key, stop};
use crate::connectors::crm;
use crate::connectors::{ErrorClass, Outcome};
use crate::mapping;
use leadrelay_sources::xml;

/// The error code of a write to (or a conversion of) a converted lead.
pub(super) const CONVERTED: &str = "CANNOT_UPDATE_CONVERTED_LEAD";

fn default_events() -> Vec<String> {
    vec![crate::pipeline::handoff::QUALIFIED.to_string()]
}
fn default_converted_status() -> String {
    "Closed - Converted".into()
}
fn yes() -> bool {
    true
}

/// `[destinations.NAME.lead_conversion]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConversionSettings {
    /// Event types that convert the lead (default: `lead.qualified`, the
    /// pipeline's MQL → SQL handoff).
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Only when the event names one of these stages (its `data.stage`,
    /// `lifecycle_stage`, `lead_status` or `status`; case-insensitive),
    /// e.g. `["SQL", "salesqualifiedlead"]`. Empty: any.
    #[serde(default)]
    pub stages: Vec<String>,
    /// The converted Lead's `Status`: a lead status whose `IsConverted` is
    /// true in the org.
    #[serde(default = "default_converted_status")]
    pub converted_status: String,
    /// Create an Opportunity too.
    #[serde(default = "yes")]
    pub opportunity: bool,
    /// The Opportunity's name (Salesforce's default: the lead's company).
    #[serde(default)]
    pub opportunity_name: Option<String>,
    /// Merge into an existing Account named as the lead's company (and a
    /// Contact on it with the lead's email) instead of creating new ones.
    #[serde(default = "yes")]
    pub merge_existing: bool,
    /// Salesforce emails the new owner about the conversion.
    #[serde(default)]
    pub send_notification_email: bool,
}

/// The stage an event names, for `stages`.
fn event_stage(run: &Run<'_>) -> Option<String> {
    [
        "stage",
        "lifecycle_stage",
        "lifecyclestage",
        "lead_status",
        "status",
    ]
    .iter()
    .filter_map(|k| run.job.event.data.get(*k))
    .filter_map(mapping::as_text)
    .map(|s| s.trim().to_string())
    .find(|s| !s.is_empty())
    .or_else(|| crm::event_stage(&run.job.event))
}

/// The ids of a converted lead.
struct ConvertedIds {
    account: String,
    contact: String,
    opportunity: Option<String>,
}

fn text_of(v: &Value, field: &str) -> Option<String> {
    v[field]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn escape(s: &str) -> String {
    crate::http::html::escape(s)
}

impl Salesforce {
    /// Whether this delivery's event converts the lead.
    fn converts(&self, run: &Run<'_>) -> bool {
        let Some(c) = &self.s.lead_conversion else {
            return false;
        };
        if self.s.person_object != PersonObject::Lead
            || !c
                .events
                .iter()
                .any(|e| e == run.job.event.event_type.as_str())
        {
            return false;
        }
        c.stages.is_empty()
            || event_stage(run)
                .is_some_and(|st| c.stages.iter().any(|s| s.eq_ignore_ascii_case(&st)))
    }

    /// Converts the person's Lead when the event asks for it (see the
    /// module's documentation).
    pub(super) async fn convert_lead(&self, run: &mut Run<'_>) -> Result<(), Stop> {
        if !self.converts(run) {
            return Ok(());
        }
        let key = run.job.delivery.contact_key.clone();
        if self.known(run.job, &key, "contact").is_some() {
            // Converted before (or the person is a Contact already).
            return Ok(());
        }
        let Some(lead) = self.known(run.job, &key, "lead") else {
            return Ok(());
        };
        for attempt in 0..2 {
            let row = self.read_lead(run, &lead).await?;
            if row["IsConverted"] == Value::Bool(true) {
                return Ok(self.take_converted(run, &row)?);
            }
            if attempt == 1 {
                break;
            }
            // None: converted meanwhile; read it again.
            if let Some(ids) = self.convert(run, &lead, &row).await? {
                self.keep_converted(run, &row, &ids);
                return Ok(());
            }
        }
        Err(Outcome::retry(
            ErrorClass::Vendor,
            format!("Salesforce said Lead {lead} was converted, but it reads as not converted"),
        )
        .into())
    }

    async fn read_lead(&self, run: &mut Run<'_>, lead: &str) -> Result<Value, Stop> {
        let soql = format!(
            "SELECT Id, IsConverted, ConvertedAccountId, ConvertedContactId, ConvertedOpportunityId, Company, Email FROM Lead WHERE Id = {}",
            soql_quote(lead)
        );
        let (res, report) = self.rest.query(&soql).await;
        run.report = report.clone();
        let rows = res.map_err(|f| stop(f, report))?;
        rows.into_iter().next().ok_or_else(|| {
            // Deleted or merged in Salesforce: forget it; the next attempt
            // finds the person again.
            self.cache.forget(&run.job.delivery.contact_key, "lead");
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                format!("Salesforce has no Lead {lead} (deleted or merged)"),
            ))
        })
    }

    /// The person's Lead was converted in Salesforce (a write answered
    /// `CANNOT_UPDATE_CONVERTED_LEAD`): its records are kept as the person's;
    /// returns the Contact the delivery writes to instead.
    pub(super) async fn converted_contact(
        &self,
        run: &mut Run<'_>,
        lead: &str,
    ) -> Result<String, Stop> {
        let row = self.read_lead(run, lead).await?;
        self.take_converted(run, &row)?;
        let key = run.job.delivery.contact_key.clone();
        self.known(run.job, &key, "contact").ok_or_else(|| {
            Stop::from(Outcome::retry(
                ErrorClass::Vendor,
                format!("Salesforce's converted Lead {lead} names no Contact"),
            ))
        })
    }

    /// A lead Salesforce already converted: its records are kept as the
    /// person's.
    fn take_converted(&self, run: &mut Run<'_>, row: &Value) -> Result<(), Outcome> {
        let (Some(account), Some(contact)) = (
            text_of(row, "ConvertedAccountId"),
            text_of(row, "ConvertedContactId"),
        ) else {
            return Err(Outcome::permanent(
                ErrorClass::Vendor,
                "Salesforce reports the Lead converted without its Account and Contact",
            ));
        };
        let ids = ConvertedIds {
            account,
            contact,
            opportunity: text_of(row, "ConvertedOpportunityId"),
        };
        self.keep_converted(run, row, &ids);
        Ok(())
    }

    fn keep_converted(&self, run: &mut Run<'_>, row: &Value, ids: &ConvertedIds) {
        let key = run.job.delivery.contact_key.clone();
        self.learn(run, "contact", &key, &ids.contact);
        if let Some(o) = &ids.opportunity {
            self.learn(run, "opportunity", &key, o);
        }
        if let Some(company) = text_of(row, "Company") {
            self.learn(run, "account", &account_key(&company), &ids.account);
        }
        mapping::set(&mut run.ctx, "ids", "account", ids.account.clone());
        mapping::set(&mut run.ctx, "ids", "contact", ids.contact.clone());
    }

    /// The existing Account (and Contact on it) to merge the lead into.
    async fn merge_targets(
        &self,
        run: &mut Run<'_>,
        row: &Value,
    ) -> Result<(Option<String>, Option<String>), Stop> {
        let Some(company) = text_of(row, "Company") else {
            return Ok((None, None));
        };
        let account = match self.known(run.job, &account_key(&company), "account") {
            Some(id) => Some(id),
            None => {
                let soql = format!(
                    "SELECT Id FROM Account WHERE Name = {} ORDER BY CreatedDate ASC LIMIT 1",
                    soql_quote(&company)
                );
                let (res, report) = self.rest.query(&soql).await;
                run.report = report.clone();
                let rows = res.map_err(|f| stop(f, report))?;
                rows.first().and_then(|r| text_of(r, "Id"))
            }
        };
        let (Some(account), Some(email)) = (account, text_of(row, "Email")) else {
            return Ok((None, None));
        };
        let soql = format!(
            "SELECT Id FROM Contact WHERE AccountId = {} AND Email = {} ORDER BY CreatedDate ASC LIMIT 1",
            soql_quote(&account),
            soql_quote(&email)
        );
        let (res, report) = self.rest.query(&soql).await;
        run.report = report.clone();
        let rows = res.map_err(|f| stop(f, report))?;
        Ok((Some(account), rows.first().and_then(|r| text_of(r, "Id"))))
    }

    /// One `convertLead()` call. `Ok(None)`: the lead was converted
    /// meanwhile; any other refusal is the delivery's outcome.
    async fn convert(
        &self,
        run: &mut Run<'_>,
        lead: &str,
        row: &Value,
    ) -> Result<Option<ConvertedIds>, Stop> {
        let Some(c) = self.s.lead_conversion.clone() else {
            return Err(
                Outcome::permanent(ErrorClass::Mapping, "no lead_conversion settings").into(),
            );
        };
        let (account, contact) = if c.merge_existing {
            self.merge_targets(run, row).await?
        } else {
            (None, None)
        };
        let mut fields = vec![format!("<urn:leadId>{}</urn:leadId>", escape(lead))];
        fields.push(format!(
            "<urn:convertedStatus>{}</urn:convertedStatus>",
            escape(&c.converted_status)
        ));
        if let Some(a) = &account {
            fields.push(format!("<urn:accountId>{}</urn:accountId>", escape(a)));
        }
        if let Some(ct) = &contact {
            fields.push(format!("<urn:contactId>{}</urn:contactId>", escape(ct)));
        }
        fields.push(format!(
            "<urn:doNotCreateOpportunity>{}</urn:doNotCreateOpportunity>",
            !c.opportunity
        ));
        if c.opportunity
            && let Some(name) = c
                .opportunity_name
                .as_deref()
                .filter(|n| !n.trim().is_empty())
        {
            fields.push(format!(
                "<urn:opportunityName>{}</urn:opportunityName>",
                escape(name.trim())
            ));
        }
        if let Some(owner) = mapping::lookup(&run.ctx, "crm.owner_id").and_then(mapping::as_text) {
            fields.push(format!("<urn:ownerId>{}</urn:ownerId>", escape(&owner)));
        }
        fields.push("<urn:overwriteLeadSource>false</urn:overwriteLeadSource>".into());
        fields.push(format!(
            "<urn:sendNotificationEmail>{}</urn:sendNotificationEmail>",
            c.send_notification_email
        ));
        let body = format!(
            "<urn:convertLead><urn:leadConverts>{}</urn:leadConverts></urn:convertLead>",
            fields.concat()
        );
        let (res, report) = self.rest.soap(&body).await;
        run.report = report.clone();
        let answer = res.map_err(|f| stop(f, report.clone()))?;
        let result = answer
            .child("convertLeadResponse")
            .and_then(|r| r.child("result"))
            .ok_or_else(|| Stop {
                outcome: Outcome::retry(
                    ErrorClass::Vendor,
                    "Salesforce's convertLead answer has no result",
                ),
                report: Some(report.clone()),
            })?;
        if result.child_text("success") == Some("true") {
            let id = |name: &str| {
                result
                    .child_text(name)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            let (Some(account), Some(contact)) = (id("accountId"), id("contactId")) else {
                return Err(Stop {
                    outcome: Outcome::retry(
                        ErrorClass::Vendor,
                        "Salesforce converted the lead but named no Account or Contact",
                    ),
                    report: Some(report),
                });
            };
            return Ok(Some(ConvertedIds {
                account,
                contact,
                opportunity: id("opportunityId"),
            }));
        }
        let errors: Vec<(String, String)> = result
            .children_named("errors")
            .map(|e: &xml::Element| {
                (
                    e.child_text("statusCode").unwrap_or_default().to_string(),
                    crate::redact::redact_text(e.child_text("message").unwrap_or_default()),
                )
            })
            .collect();
        if errors.iter().any(|(c, _)| c == CONVERTED) {
            return Ok(None);
        }
        let text = errors
            .iter()
            .map(|(c, m)| format!("{c}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        let retry = errors
            .iter()
            .any(|(c, _)| c == "UNABLE_TO_LOCK_ROW" || c == "SERVER_UNAVAILABLE");
        let message = format!("Salesforce refused to convert Lead {lead}: {text}");
        Err(Stop {
            outcome: if retry {
                Outcome::retry(ErrorClass::Vendor, message)
            } else {
                Outcome::permanent(ErrorClass::Vendor, message)
            },
            report: Some(report),
        })
    }
}
