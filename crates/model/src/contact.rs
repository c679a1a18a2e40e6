//! Contacts: the person an event is about, and the golden record kept per person.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{ConsentRecord, EmailAddress, PhoneE164};

/// The standard contact fields a form field or vendor field can fill.
pub const CONTACT_FIELDS: [&str; 12] = [
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "domain",
    "title",
    "website",
    "country",
    "region",
    "city",
    "full_name",
];

/// A person as one event describes them. Every field is optional: a vendor
/// webhook may identify a person by email alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneE164>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The company's web domain (`example.com`), the secondary dedup key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// State, province or region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Any other person-level fields (custom CRM properties and the like).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, Value>,
}

impl ContactData {
    pub fn is_empty(&self) -> bool {
        self == &ContactData::default()
    }

    /// "First Last", whichever parts are present.
    pub fn full_name(&self) -> Option<String> {
        let parts: Vec<&str> = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(" "))
        }
    }

    /// Sets a standard text field by name; false if `name` is not one (email
    /// and phone are typed and set directly).
    pub fn set_text(&mut self, name: &str, value: String) -> bool {
        let slot = match name {
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "company" => &mut self.company,
            "domain" => &mut self.domain,
            "title" => &mut self.title,
            "website" => &mut self.website,
            "country" => &mut self.country,
            "region" => &mut self.region,
            "city" => &mut self.city,
            "full_name" => {
                let (first, last) = split_full_name(&value);
                self.first_name = Some(first);
                if let Some(last) = last {
                    self.last_name = Some(last);
                }
                return true;
            }
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    /// Every present field as a flat JSON map (standard names, then custom ones).
    pub fn to_flat_map(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        if let Ok(Value::Object(m)) = serde_json::to_value(self) {
            for (k, v) in m {
                if k == "custom" {
                    if let Value::Object(c) = v {
                        for (ck, cv) in c {
                            out.entry(ck).or_insert(cv);
                        }
                    }
                } else {
                    out.insert(k, v);
                }
            }
        }
        out
    }

    /// Fills the company domain from the website or a non-free-mail email, if absent.
    pub fn derive_domain(&mut self) {
        if self.domain.is_some() {
            return;
        }
        if let Some(w) = &self.website {
            let host = w
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host
                .split(['/', '?', '#'])
                .next()
                .unwrap_or("")
                .trim_start_matches("www.");
            if host.contains('.') {
                self.domain = Some(host.to_lowercase());
                return;
            }
        }
        if let Some(e) = &self.email {
            let d = e.domain();
            if !FREE_MAIL_DOMAINS.contains(&d) {
                self.domain = Some(d.to_string());
            }
        }
    }
}

/// Consumer mail providers: their domain says nothing about a company.
const FREE_MAIL_DOMAINS: [&str; 16] = [
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yandex.ru",
    "mail.ru",
];

/// Splits "Jane van Doe" into ("Jane", Some("van Doe")).
pub fn split_full_name(full: &str) -> (String, Option<String>) {
    let full = full.trim();
    match full.split_once(char::is_whitespace) {
        Some((first, rest)) => (first.to_string(), Some(rest.trim().to_string())),
        None => (full.to_string(), None),
    }
}

/// Where a golden-record field's current value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProvenance {
    /// `form:contact`, `source:hubspot`, `api:admin` …
    pub source: String,
    pub event_id: Uuid,
    pub at: DateTime<Utc>,
}

/// The golden record: one per person, merged from every event about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: Uuid,
    pub data: ContactData,
    /// Per field name, where its current value came from.
    #[serde(default)]
    pub provenance: BTreeMap<String, FieldProvenance>,
    /// The latest consent answer per purpose.
    #[serde(default)]
    pub consent: BTreeMap<String, ConsentRecord>,
    /// Lead score, lifecycle stage, owner and handoff state.
    #[serde(default, skip_serializing_if = "crate::LeadState::is_empty")]
    pub lead: crate::LeadState,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_name_and_split() {
        let mut c = ContactData::default();
        assert!(c.set_text("full_name", "Jane van Doe".into()));
        assert_eq!(c.first_name.as_deref(), Some("Jane"));
        assert_eq!(c.last_name.as_deref(), Some("van Doe"));
        assert_eq!(c.full_name().as_deref(), Some("Jane van Doe"));
        assert!(!c.set_text("email", "x".into()));
    }

    #[test]
    fn domain_derivation_skips_free_mail() {
        let mut c = ContactData {
            email: Some(EmailAddress::parse("a@gmail.com").unwrap()),
            ..Default::default()
        };
        c.derive_domain();
        assert_eq!(c.domain, None);
        c.website = Some("https://www.Acme.io/about".into());
        c.derive_domain();
        assert_eq!(c.domain.as_deref(), Some("acme.io"));
        let mut c = ContactData {
            email: Some(EmailAddress::parse("a@acme.io").unwrap()),
            ..Default::default()
        };
        c.derive_domain();
        assert_eq!(c.domain.as_deref(), Some("acme.io"));
    }

    #[test]
    fn flat_map_includes_custom() {
        let mut c = ContactData {
            first_name: Some("Jane".into()),
            ..Default::default()
        };
        c.custom
            .insert("industry".into(), Value::String("SaaS".into()));
        let m = c.to_flat_map();
        assert_eq!(m["first_name"], "Jane");
        assert_eq!(m["industry"], "SaaS");
    }
}
