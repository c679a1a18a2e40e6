//! The SOAP API's `convertLead()` call on the partner endpoint
//! (`POST /services/Soap/u/{version}`): a Lead becomes an Account, a Contact
//! and (optionally) an Opportunity, and is marked converted.
//!
//! # Followed references
//! - SOAP API Developer Guide, "convertLead()" (`LeadConvert`: `leadId`,
//!   `convertedStatus` — a lead status whose `IsConverted` is true —,
//!   `accountId`, `contactId` — which must belong to `accountId` —,
//!   `doNotCreateOpportunity`, `opportunityName` — default: the lead's
//!   company —, `overwriteLeadSource`, `ownerId`, `sendNotificationEmail`),
//!   "LeadConvertResult" (`accountId`, `contactId`, `leadId`,
//!   `opportunityId`, `success`, `errors`, one per `leadConverts` in order);
//!   merging into existing records fills only their empty fields.
//! - The partner WSDL's envelope: `SessionHeader.sessionId` carries the
//!   session (an OAuth access token works), faults as
//!   `sf:INVALID_SESSION_ID` with HTTP 500.
//!
//! # What it simplifies
//! - Only `convertLead` is served; the lead's standard fields are mapped to
//!   the new records (no custom field mapping); a new opportunity starts in
//!   the first stage and closes today; `sendNotificationEmail` sends nothing.
//! - Modelled on the documented shapes, not quoted: the fault for more
//!   than 100 `leadConverts` and for an unknown operation, and the error of
//!   a `contactId` without an `accountId`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use serde_json::{Map, Value, json};

use super::rest::{count_request, insert_into, sf_time, token_user};
use super::schema::{OPPORTUNITY_STAGES, id18, looks_like_id};
use super::{SalesforceState, Store};

/// At most this many `leadConverts` per call.
pub(crate) const MAX_CONVERTS: usize = 100;

/// What a request's envelope holds: the session, the operation (the first
/// element in the body) and, for `convertLead`, each `leadConverts`' fields.
#[derive(Debug, Default)]
struct Envelope {
    session: Option<String>,
    operation: Option<String>,
    converts: Vec<BTreeMap<String, String>>,
}

fn parse(xml: &str) -> Result<Envelope, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut env = Envelope::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.last().map(String::as_str) == Some("Body") && env.operation.is_none() {
                    env.operation = Some(name.clone());
                }
                if name == "leadConverts" && path.len() == 3 {
                    env.converts.push(BTreeMap::new());
                }
                path.push(name);
                text.clear();
            }
            Ok(Event::Empty(e)) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.last().map(String::as_str) == Some("Body") && env.operation.is_none() {
                    env.operation = Some(name);
                }
            }
            Ok(Event::Text(t)) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Ok(Event::GeneralRef(r)) => {
                let c = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c,
                    None => match r.decode().map_err(|e| e.to_string())?.as_ref() {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => return Err(format!("unknown entity &{other};")),
                    },
                };
                text.push(c);
            }
            Ok(Event::End(_)) => {
                let name = path.pop().unwrap_or_default();
                let parent = path.last().map(String::as_str);
                if name == "sessionId" && parent == Some("SessionHeader") {
                    env.session = Some(text.trim().to_string());
                } else if parent == Some("leadConverts")
                    && let Some(c) = env.converts.last_mut()
                {
                    c.insert(name, text.trim().to_string());
                }
                text.clear();
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
    }
    Ok(env)
}

fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "text/xml;charset=UTF-8")],
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#),
    )
        .into_response()
}

/// A SOAP fault (HTTP 500), `sf:CODE` for API faults.
fn fault(code: &str, message: &str) -> Response {
    let (faultcode, exception) = match code.strip_prefix("soapenv:") {
        Some(_) => (code.to_string(), None),
        None => (format!("sf:{code}"), Some(code)),
    };
    let detail = exception
        .map(|c| {
            format!(
                "<detail><sf:UnexpectedErrorFault xsi:type=\"sf:UnexpectedErrorFault\"><sf:exceptionCode>{c}</sf:exceptionCode><sf:exceptionMessage>{}</sf:exceptionMessage></sf:UnexpectedErrorFault></detail>",
                escape(message)
            )
        })
        .unwrap_or_default();
    xml(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "<soapenv:Fault><faultcode>{faultcode}</faultcode><faultstring>{}</faultstring>{detail}</soapenv:Fault>",
            escape(&match exception {
                Some(c) => format!("{c}: {message}"),
                None => message.to_string(),
            })
        ),
    )
}

/// `POST /services/Soap/u/{version}`.
pub(crate) async fn handle(
    State(state): State<SalesforceState>,
    Path(version): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if super::rest::version(&state, &format!("v{version}")).is_none() {
        return fault(
            "UNSUPPORTED_API_VERSION",
            &format!("Invalid Api version specified on URL: {version}"),
        );
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("text/xml") {
        return fault(
            "soapenv:Client",
            "content-type of the request should be text/xml",
        );
    }
    if !headers.contains_key("soapaction") {
        return fault("soapenv:Client", "No SOAPAction header!");
    }
    let env = match parse(&body) {
        Ok(env) => env,
        Err(e) => {
            return fault(
                "soapenv:Client",
                &format!("Unable to parse the request: {e}"),
            );
        }
    };
    let Some(user) = env.session.as_deref().and_then(|t| token_user(&state, t)) else {
        return fault(
            "INVALID_SESSION_ID",
            "Invalid Session ID found in SessionHeader: Illegal Session",
        );
    };
    if count_request(&state).is_err() {
        return fault("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.");
    }
    if env.operation.as_deref() != Some("convertLead") {
        return fault(
            "soapenv:Client",
            &format!(
                "No operation available for request {{urn:partner.soap.sforce.com}}{}",
                env.operation.as_deref().unwrap_or("")
            ),
        );
    }
    if env.converts.len() > MAX_CONVERTS {
        return fault(
            "LIMIT_EXCEEDED",
            &format!("Cannot convert more than {MAX_CONVERTS} leads in one call"),
        );
    }
    let results: String = {
        let mut store = state.store();
        env.converts
            .iter()
            .map(|c| result_xml(c, convert(&state, &mut store, c, &user)))
            .collect()
    };
    xml(
        StatusCode::OK,
        format!("<convertLeadResponse>{results}</convertLeadResponse>"),
    )
}

/// The ids of a conversion.
struct Converted {
    account: String,
    contact: String,
    opportunity: Option<String>,
}

fn result_xml(c: &BTreeMap<String, String>, r: Result<Converted, (&str, String)>) -> String {
    let id = |tag: &str, v: Option<&str>| match v {
        Some(v) => format!("<{tag}>{}</{tag}>", escape(v)),
        None => format!("<{tag} xsi:nil=\"true\"/>"),
    };
    let lead = c
        .get("leadId")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    match r {
        Ok(done) => format!(
            "<result>{}{}{}{}<success>true</success></result>",
            id("accountId", Some(&done.account)),
            id("contactId", Some(&done.contact)),
            id("leadId", lead.map(id18).as_deref()),
            id("opportunityId", done.opportunity.as_deref()),
        ),
        Err((code, message)) => format!(
            "<result>{}{}<errors><message>{}</message><statusCode>{code}</statusCode></errors>{}{}<success>false</success></result>",
            id("accountId", None),
            id("contactId", None),
            escape(&message),
            id("leadId", lead),
            id("opportunityId", None),
        ),
    }
}

fn is_true(c: &BTreeMap<String, String>, key: &str) -> bool {
    c.get(key).is_some_and(|v| v.trim() == "true")
}

/// An existing record of `object` by id (15 or 18 characters).
fn existing<'a>(store: &'a Store, object: &str, id: &str) -> Option<&'a super::SalesforceRecord> {
    if !looks_like_id(id) {
        return None;
    }
    store.records.get(&id18(id)).filter(|r| r.object == object)
}

fn convert(
    state: &SalesforceState,
    store: &mut Store,
    c: &BTreeMap<String, String>,
    user: &str,
) -> Result<Converted, (&'static str, String)> {
    let get = |k: &str| c.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let bad_ref = |what: &str| {
        (
            "INVALID_CROSS_REFERENCE_KEY",
            format!("invalid cross reference id: {what}"),
        )
    };
    let lead_id = get("leadId").ok_or(("REQUIRED_FIELD_MISSING", "leadId is required".into()))?;
    let lead = existing(store, "Lead", lead_id)
        .cloned()
        .ok_or_else(|| bad_ref(lead_id))?;
    if lead.get("IsConverted") == Some(&Value::Bool(true)) {
        return Err((
            "CANNOT_UPDATE_CONVERTED_LEAD",
            "cannot reference converted lead".into(),
        ));
    }
    let status = get("convertedStatus").unwrap_or_default();
    if !state
        .inner
        .config
        .converted_lead_statuses
        .iter()
        .any(|s| s == status)
    {
        return Err((
            "INVALID_STATUS",
            format!("invalid convertedStatus: {status}"),
        ));
    }
    let account_id = match get("accountId") {
        Some(a) => Some(
            existing(store, "Account", a)
                .map(|r| r.id.clone())
                .ok_or_else(|| bad_ref(a))?,
        ),
        None => None,
    };
    let contact_id = match get("contactId") {
        Some(id) => {
            let Some(account) = &account_id else {
                return Err((
                    "REQUIRED_FIELD_MISSING",
                    "accountId is required when contactId is given".into(),
                ));
            };
            let contact = existing(store, "Contact", id).ok_or_else(|| bad_ref(id))?;
            if contact.text("AccountId") != Some(account.as_str()) {
                return Err(bad_ref(id));
            }
            Some(contact.id.clone())
        }
        None => None,
    };
    if let Some(owner) = get("ownerId")
        && !state
            .inner
            .config
            .users
            .iter()
            .any(|u| id18(&u.id) == id18(owner))
    {
        return Err(bad_ref(owner));
    }
    let owner = get("ownerId")
        .map(str::to_string)
        .or_else(|| lead.text("OwnerId").map(str::to_string))
        .unwrap_or_else(|| user.to_string());
    let from_lead = |pairs: &[(&str, &str)]| -> Map<String, Value> {
        pairs
            .iter()
            .filter_map(|(to, from)| {
                lead.get(from)
                    .filter(|v| !v.is_null() && v.as_str() != Some(""))
                    .map(|v| (to.to_string(), v.clone()))
            })
            .collect()
    };
    // Merging into an existing record fills only its empty fields.
    let fill = |store: &mut Store, id: &str, values: Map<String, Value>| {
        if let Some(r) = store.records.get_mut(id) {
            for (k, v) in values {
                if r.fields
                    .get(&k)
                    .is_none_or(|old| old.is_null() || old.as_str() == Some(""))
                {
                    r.fields.insert(k, v);
                }
            }
            let now = json!(sf_time(Utc::now()));
            r.fields.insert("LastModifiedDate".into(), now.clone());
            r.fields.insert("SystemModstamp".into(), now);
        }
    };
    let mut account_fields = from_lead(&[
        ("Name", "Company"),
        ("Website", "Website"),
        ("Phone", "Phone"),
        ("Industry", "Industry"),
        ("NumberOfEmployees", "NumberOfEmployees"),
        ("AnnualRevenue", "AnnualRevenue"),
        ("BillingStreet", "Street"),
        ("BillingCity", "City"),
        ("BillingState", "State"),
        ("BillingPostalCode", "PostalCode"),
        ("BillingCountry", "Country"),
    ]);
    let account = match account_id {
        Some(id) => {
            fill(store, &id, account_fields);
            id
        }
        None => {
            account_fields.insert("OwnerId".into(), json!(owner));
            insert_into(state, store, "Account", account_fields, user)
        }
    };
    let mut contact_fields = from_lead(&[
        ("FirstName", "FirstName"),
        ("LastName", "LastName"),
        ("Email", "Email"),
        ("Phone", "Phone"),
        ("MobilePhone", "MobilePhone"),
        ("Title", "Title"),
        ("LeadSource", "LeadSource"),
        ("HasOptedOutOfEmail", "HasOptedOutOfEmail"),
        ("MailingStreet", "Street"),
        ("MailingCity", "City"),
        ("MailingState", "State"),
        ("MailingPostalCode", "PostalCode"),
        ("MailingCountry", "Country"),
    ]);
    let contact = match contact_id {
        Some(id) => {
            if is_true(c, "overwriteLeadSource")
                && let Some(src) = lead.get("LeadSource").cloned()
                && let Some(r) = store.records.get_mut(&id)
            {
                r.fields.insert("LeadSource".into(), src);
            }
            fill(store, &id, contact_fields);
            id
        }
        None => {
            contact_fields.insert("AccountId".into(), json!(account));
            contact_fields.insert("OwnerId".into(), json!(owner));
            insert_into(state, store, "Contact", contact_fields, user)
        }
    };
    let opportunity = if is_true(c, "doNotCreateOpportunity") {
        None
    } else {
        let name = get("opportunityName")
            .map(str::to_string)
            .or_else(|| lead.text("Company").map(str::to_string))
            .unwrap_or_default();
        let mut fields = from_lead(&[("LeadSource", "LeadSource")]);
        fields.insert("Name".into(), json!(name));
        fields.insert("StageName".into(), json!(OPPORTUNITY_STAGES[0]));
        fields.insert(
            "CloseDate".into(),
            json!(Utc::now().date_naive().to_string()),
        );
        fields.insert("AccountId".into(), json!(account));
        fields.insert("OwnerId".into(), json!(owner));
        Some(insert_into(state, store, "Opportunity", fields, user))
    };
    // The lead's campaign memberships carry over to the contact.
    for m in store.records.values_mut() {
        if m.object == "CampaignMember" && m.text("LeadId") == Some(lead.id.as_str()) {
            m.fields.insert("ContactId".into(), json!(contact));
        }
    }
    let now = sf_time(Utc::now());
    if let Some(l) = store.records.get_mut(&lead.id) {
        for (k, v) in [
            ("IsConverted", json!(true)),
            ("Status", json!(status)),
            ("ConvertedAccountId", json!(account)),
            ("ConvertedContactId", json!(contact)),
            ("ConvertedOpportunityId", json!(opportunity)),
            ("ConvertedDate", json!(Utc::now().date_naive().to_string())),
            ("LastModifiedDate", json!(now)),
            ("SystemModstamp", json!(now)),
        ] {
            l.fields.insert(k.into(), v);
        }
    }
    Ok(Converted {
        account,
        contact,
        opportunity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::{FakeSalesforce, SalesforceConfig};

    fn envelope(session: &str, converts: &[&str]) -> String {
        let body: String = converts
            .iter()
            .map(|c| format!("<urn:leadConverts>{c}</urn:leadConverts>"))
            .collect();
        format!(
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Header><urn:SessionHeader><urn:sessionId>{session}</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body><urn:convertLead>{body}</urn:convertLead></soapenv:Body></soapenv:Envelope>"#
        )
    }

    async fn post(fake: &FakeSalesforce, body: String) -> (u16, String) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("{}/services/Soap/u/60.0", fake.base_url()))
            .header("content-type", "text/xml; charset=UTF-8")
            .header("SOAPAction", "\"\"")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn convert_lead_enforces_the_session_the_status_and_one_conversion() {
        let fake = FakeSalesforce::start(SalesforceConfig::default())
            .await
            .unwrap();
        let token = SalesforceConfig::DEFAULT_STATIC_TOKEN;
        let lead = fake.seed(
            "Lead",
            json!({"LastName": "Lee", "Company": "Acme", "Email": "kim@acme.io"}),
        );
        let ok = format!(
            "<urn:leadId>{lead}</urn:leadId><urn:convertedStatus>Closed - Converted</urn:convertedStatus>"
        );
        let (status, body) = post(&fake, envelope("nope", &[&ok])).await;
        assert_eq!(status, 500);
        assert!(
            body.contains("<faultcode>sf:INVALID_SESSION_ID</faultcode>"),
            "{body}"
        );

        let bad = format!(
            "<urn:leadId>{lead}</urn:leadId><urn:convertedStatus>Qualified</urn:convertedStatus>"
        );
        let (status, body) = post(&fake, envelope(token, &[&bad])).await;
        assert_eq!(status, 200);
        assert!(
            body.contains("<statusCode>INVALID_STATUS</statusCode>"),
            "{body}"
        );
        assert!(body.contains("<success>false</success>"), "{body}");

        let other = fake.seed("Account", json!({"Name": "Other"}));
        let stray = fake.seed("Contact", json!({"LastName": "X", "AccountId": other}));
        let wrong = format!("{ok}<urn:contactId>{stray}</urn:contactId>");
        let (_, body) = post(&fake, envelope(token, &[&wrong])).await;
        assert!(
            body.contains("REQUIRED_FIELD_MISSING"),
            "contactId without accountId: {body}"
        );

        let (status, body) = post(&fake, envelope(token, &[&ok])).await;
        assert_eq!(status, 200);
        assert!(body.contains("<success>true</success>"), "{body}");
        let converted = fake.record(&lead).unwrap();
        assert_eq!(converted.get("IsConverted"), Some(&json!(true)));
        let contact = converted.text("ConvertedContactId").unwrap().to_string();
        assert!(
            body.contains(&format!("<contactId>{contact}</contactId>")),
            "{body}"
        );
        assert_eq!(
            fake.record(&contact).unwrap().text("Email"),
            Some("kim@acme.io")
        );
        let opp = converted.text("ConvertedOpportunityId").unwrap();
        assert_eq!(fake.record(opp).unwrap().text("Name"), Some("Acme"));

        let (_, body) = post(&fake, envelope(token, &[&ok])).await;
        assert!(
            body.contains("<statusCode>CANNOT_UPDATE_CONVERTED_LEAD</statusCode>"),
            "{body}"
        );
        assert_eq!(fake.contacts().len(), 2, "no second conversion");

        let many: Vec<&str> = std::iter::repeat_n(ok.as_str(), MAX_CONVERTS + 1).collect();
        let (status, body) = post(&fake, envelope(token, &many)).await;
        assert_eq!(status, 500);
        assert!(body.contains("sf:LIMIT_EXCEEDED"), "{body}");
    }

    #[test]
    fn parses_a_convert_lead_envelope() {
        let env = parse(
            r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:urn="urn:partner.soap.sforce.com"><soapenv:Header><urn:SessionHeader><urn:sessionId>00D!abc</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body><urn:convertLead><urn:leadConverts><urn:convertedStatus>Closed &amp; Converted</urn:convertedStatus><urn:leadId>00Q000000000001</urn:leadId></urn:leadConverts><urn:leadConverts><urn:leadId>00Q000000000002</urn:leadId><urn:doNotCreateOpportunity>true</urn:doNotCreateOpportunity></urn:leadConverts></urn:convertLead></soapenv:Body></soapenv:Envelope>"#,
        )
        .unwrap();
        assert_eq!(env.session.as_deref(), Some("00D!abc"));
        assert_eq!(env.operation.as_deref(), Some("convertLead"));
        assert_eq!(env.converts.len(), 2);
        assert_eq!(env.converts[0]["convertedStatus"], "Closed & Converted");
        assert!(is_true(&env.converts[1], "doNotCreateOpportunity"));
    }
}
