//! The fake org's sObjects and fields (standard ones plus configured custom
//! ones), and Salesforce record ids (15-character ids with the 3-character
//! case-safe suffix).

use serde_json::{Value, json};

/// The type of a field, as describe reports it and as writes are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum SalesforceFieldType {
    Id,
    /// Text with a maximum length.
    String(usize),
    TextArea(usize),
    Email,
    Phone,
    Url,
    /// A picklist; `restricted` rejects values not in the list.
    Picklist {
        values: Vec<String>,
        restricted: bool,
    },
    Boolean,
    Date,
    DateTime,
    Double,
    Currency,
    Percent,
    Int,
    /// A lookup to records of these objects.
    Reference(Vec<String>),
}

/// A field of an sObject.
#[derive(Debug, Clone)]
pub struct SalesforceFieldDef {
    pub name: String,
    pub label: String,
    pub field_type: SalesforceFieldType,
    /// Must have a value on create (and cannot be cleared).
    pub required: bool,
    pub external_id: bool,
    pub unique: bool,
    pub createable: bool,
    pub updateable: bool,
    /// Value set on create when none is given.
    pub default: Option<Value>,
}

impl SalesforceFieldDef {
    /// An optional, writable field.
    pub fn new(name: &str, label: &str, field_type: SalesforceFieldType) -> Self {
        Self {
            name: name.into(),
            label: label.into(),
            field_type,
            required: false,
            external_id: false,
            unique: false,
            createable: true,
            updateable: true,
            default: None,
        }
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// An external id (and unique) field, usable for upserts.
    pub fn external_id(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self
    }

    /// Set on create only (Salesforce's "Create" without "Update").
    pub fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }

    pub fn read_only(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }

    pub fn default_value(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }

    /// A restricted picklist.
    pub fn picklist(name: &str, label: &str, values: &[&str]) -> Self {
        Self::new(
            name,
            label,
            SalesforceFieldType::Picklist {
                values: values.iter().map(|v| v.to_string()).collect(),
                restricted: true,
            },
        )
    }

    /// An unrestricted picklist (any value is accepted).
    pub fn open_picklist(name: &str, label: &str, values: &[&str]) -> Self {
        Self::new(
            name,
            label,
            SalesforceFieldType::Picklist {
                values: values.iter().map(|v| v.to_string()).collect(),
                restricted: false,
            },
        )
    }

    pub fn text(name: &str, label: &str, len: usize) -> Self {
        Self::new(name, label, SalesforceFieldType::String(len))
    }

    pub fn reference(name: &str, label: &str, to: &[&str]) -> Self {
        Self::new(
            name,
            label,
            SalesforceFieldType::Reference(to.iter().map(|s| s.to_string()).collect()),
        )
    }
}

/// An sObject type.
#[derive(Debug, Clone)]
pub struct SalesforceObjectDef {
    pub name: String,
    pub label: String,
    /// The 3-character id prefix, e.g. `00Q` for leads.
    pub key_prefix: String,
    pub custom: bool,
    /// Its own fields; system fields (`Id`, `CreatedDate`, ...) are added by the fake.
    pub fields: Vec<SalesforceFieldDef>,
}

use SalesforceFieldDef as F;
use SalesforceFieldType as T;

pub(crate) const LEAD_STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];
pub(crate) const OPPORTUNITY_STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];
const LEAD_SOURCES: &[&str] = &[
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];
const INDUSTRIES: &[&str] = &[
    "Agriculture",
    "Banking",
    "Consulting",
    "Education",
    "Healthcare",
    "Technology",
    "Other",
];

fn address(prefix: &str) -> Vec<F> {
    ["Street", "City", "State", "PostalCode", "Country"]
        .iter()
        .map(|part| {
            let len = if *part == "Street" { 255 } else { 80 };
            F::new(
                &format!("{prefix}{part}"),
                format!("{prefix} {part}").trim(),
                if *part == "Street" {
                    T::TextArea(len)
                } else {
                    T::String(len)
                },
            )
        })
        .collect()
}

/// The standard objects the fake serves.
/// The default member statuses of a campaign.
pub const CAMPAIGN_MEMBER_STATUSES: &[&str] = &["Sent", "Responded"];

/// The standard values of `OpportunityContactRole.Role` (not a restricted
/// picklist: an org adds its own).
pub const CONTACT_ROLE_VALUES: &[&str] = &[
    "Business User",
    "Decision Maker",
    "Economic Buyer",
    "Economic Decision Maker",
    "Evaluator",
    "Executive Sponsor",
    "Influencer",
    "Technical Buyer",
    "Other",
];

pub fn standard_objects() -> Vec<SalesforceObjectDef> {
    let mut lead = vec![
        F::text("FirstName", "First Name", 40),
        F::text("LastName", "Last Name", 80).required(),
        F::text("Company", "Company", 255).required(),
        F::new("Email", "Email", T::Email),
        F::new("Phone", "Phone", T::Phone),
        F::new("MobilePhone", "Mobile Phone", T::Phone),
        F::text("Title", "Title", 128),
        F::new("Website", "Website", T::Url),
        F::open_picklist("LeadSource", "Lead Source", LEAD_SOURCES),
        F::picklist("Status", "Lead Status", LEAD_STATUSES)
            .default_value(json!("Open - Not Contacted")),
        F::open_picklist("Industry", "Industry", INDUSTRIES),
        F::picklist("Rating", "Rating", &["Hot", "Warm", "Cold"]),
        F::new("Description", "Description", T::TextArea(32000)),
        F::new("NumberOfEmployees", "Employees", T::Int),
        F::new("AnnualRevenue", "Annual Revenue", T::Currency),
        F::new("HasOptedOutOfEmail", "Email Opt Out", T::Boolean).default_value(json!(false)),
        F::new("IsConverted", "Converted", T::Boolean)
            .read_only()
            .default_value(json!(false)),
        F::reference("ConvertedAccountId", "Converted Account ID", &["Account"]).read_only(),
        F::reference("ConvertedContactId", "Converted Contact ID", &["Contact"]).read_only(),
        F::reference(
            "ConvertedOpportunityId",
            "Converted Opportunity ID",
            &["Opportunity"],
        )
        .read_only(),
        F::new("ConvertedDate", "Converted Date", T::Date).read_only(),
        F::text("Name", "Full Name", 121).read_only(),
    ];
    lead.extend(address(""));
    let mut contact = vec![
        F::text("FirstName", "First Name", 40),
        F::text("LastName", "Last Name", 80).required(),
        F::new("Email", "Email", T::Email),
        F::new("Phone", "Business Phone", T::Phone),
        F::new("MobilePhone", "Mobile Phone", T::Phone),
        F::text("Title", "Title", 128),
        F::text("Department", "Department", 80),
        F::reference("AccountId", "Account ID", &["Account"]),
        F::open_picklist("LeadSource", "Lead Source", LEAD_SOURCES),
        F::new("Birthdate", "Birthdate", T::Date),
        F::new("Description", "Contact Description", T::TextArea(32000)),
        F::new("HasOptedOutOfEmail", "Email Opt Out", T::Boolean).default_value(json!(false)),
        F::text("Name", "Full Name", 121).read_only(),
    ];
    contact.extend(address("Mailing"));
    let mut account = vec![
        F::text("Name", "Account Name", 255).required(),
        F::new("Website", "Website", T::Url),
        F::new("Phone", "Account Phone", T::Phone),
        F::open_picklist("Industry", "Industry", INDUSTRIES),
        F::open_picklist(
            "Type",
            "Account Type",
            &[
                "Prospect",
                "Customer - Direct",
                "Customer - Channel",
                "Partner",
                "Other",
            ],
        ),
        F::new("Description", "Account Description", T::TextArea(32000)),
        F::new("NumberOfEmployees", "Employees", T::Int),
        F::new("AnnualRevenue", "Annual Revenue", T::Currency),
    ];
    account.extend(address("Billing"));
    let opportunity = vec![
        F::text("Name", "Name", 120).required(),
        F::picklist("StageName", "Stage", OPPORTUNITY_STAGES).required(),
        F::new("CloseDate", "Close Date", T::Date).required(),
        F::new("Amount", "Amount", T::Currency),
        F::new("Probability", "Probability (%)", T::Percent),
        F::reference("AccountId", "Account ID", &["Account"]),
        F::open_picklist(
            "Type",
            "Opportunity Type",
            &["Existing Customer - Upgrade", "New Customer"],
        ),
        F::open_picklist("LeadSource", "Lead Source", LEAD_SOURCES),
        F::text("NextStep", "Next Step", 255),
        F::new("Description", "Description", T::TextArea(32000)),
    ];
    let task = vec![
        F::text("Subject", "Subject", 255),
        F::picklist(
            "Status",
            "Status",
            &[
                "Not Started",
                "In Progress",
                "Completed",
                "Waiting on someone else",
                "Deferred",
            ],
        )
        .default_value(json!("Not Started")),
        F::picklist("Priority", "Priority", &["High", "Normal", "Low"])
            .default_value(json!("Normal")),
        F::new("ActivityDate", "Due Date Only", T::Date),
        F::new("Description", "Description", T::TextArea(32000)),
        F::reference("WhoId", "Name ID", &["Lead", "Contact"]),
        F::reference("WhatId", "Related To ID", &["Account", "Opportunity"]),
        F::open_picklist("Type", "Type", &["Call", "Email", "Meeting", "Other"]),
        F::picklist(
            "TaskSubtype",
            "Task Subtype",
            &["Task", "Email", "Call", "ListEmail", "Cadence"],
        )
        .default_value(json!("Task")),
    ];
    let campaign = vec![
        F::text("Name", "Campaign Name", 80).required(),
        F::new("IsActive", "Active", T::Boolean).default_value(json!(false)),
        F::picklist(
            "Status",
            "Status",
            &["Planned", "In Progress", "Completed", "Aborted"],
        )
        .default_value(json!("Planned")),
        F::open_picklist(
            "Type",
            "Type",
            &[
                "Conference",
                "Webinar",
                "Trade Show",
                "Email",
                "Advertisement",
                "Other",
            ],
        ),
    ];
    // A person is a member of a campaign at most once (Salesforce answers
    // DUPLICATE_VALUE "Already a campaign member."); the status must be one
    // of the campaign's member statuses (the defaults: Sent, Responded).
    let campaign_member = vec![
        F::reference("CampaignId", "Campaign ID", &["Campaign"]).required(),
        F::reference("LeadId", "Lead ID", &["Lead"]),
        F::reference("ContactId", "Contact ID", &["Contact"]),
        // Restricted to the campaign's member statuses (checked per
        // campaign on every write, see `rest::member_status_check`).
        F::open_picklist("Status", "Status", CAMPAIGN_MEMBER_STATUSES).default_value(json!("Sent")),
        F::new("HasResponded", "Responded", T::Boolean)
            .read_only()
            .default_value(json!(false)),
    ];
    // A member status an admin added to one campaign (beside the
    // defaults, Sent and Responded).
    let member_status = vec![
        F::reference("CampaignId", "Campaign ID", &["Campaign"])
            .required()
            .create_only(),
        F::text("Label", "Member Status", 765).required(),
        F::new("HasResponded", "Responded", T::Boolean).default_value(json!(false)),
        F::new("IsDefault", "Is Default", T::Boolean).default_value(json!(false)),
        F::new("SortOrder", "Sort Order", T::Int),
    ];
    // The role a Contact (never a Lead) plays on an Opportunity: the
    // opportunity is set on create only; one primary per opportunity; the
    // same contact may hold several roles (allowed, not recommended).
    let contact_role = vec![
        F::reference("OpportunityId", "Opportunity ID", &["Opportunity"])
            .required()
            .create_only(),
        F::reference("ContactId", "Contact ID", &["Contact"]).required(),
        F::open_picklist("Role", "Role", CONTACT_ROLE_VALUES),
        F::new("IsPrimary", "Primary", T::Boolean).default_value(json!(false)),
    ];
    let obj = |name: &str, label: &str, prefix: &str, fields: Vec<F>| SalesforceObjectDef {
        name: name.into(),
        label: label.into(),
        key_prefix: prefix.into(),
        custom: false,
        fields,
    };
    vec![
        obj("Lead", "Lead", "00Q", lead),
        obj("Contact", "Contact", "003", contact),
        obj("Account", "Account", "001", account),
        obj("Opportunity", "Opportunity", "006", opportunity),
        obj("Task", "Task", "00T", task),
        obj("Campaign", "Campaign", "701", campaign),
        obj("CampaignMember", "Campaign Member", "00v", campaign_member),
        obj(
            "CampaignMemberStatus",
            "Campaign Member Status",
            "01Y",
            member_status,
        ),
        obj(
            "OpportunityContactRole",
            "Opportunity Contact Role",
            "00K",
            contact_role,
        ),
    ]
}

/// Customizable Campaign Influence (when the org has it enabled): the
/// models (read-only through the API: describe, query, retrieve) and the
/// influence records. A record names its campaign, opportunity and model on
/// create only (they cannot be changed); `Influence` (percent) can be
/// updated; `RevenueShare` is calculated.
pub fn campaign_influence_objects() -> Vec<SalesforceObjectDef> {
    let model = vec![
        F::text("DeveloperName", "Unique Name", 80).read_only(),
        F::text("MasterLabel", "Model Name", 80).read_only(),
        F::text("ModelDescription", "Model Description", 255).read_only(),
        F::new("IsActive", "Active", T::Boolean)
            .read_only()
            .default_value(json!(true)),
        F::new("IsDefaultModel", "Default Model", T::Boolean)
            .read_only()
            .default_value(json!(false)),
        F::new("IsModelLocked", "Locked", T::Boolean)
            .read_only()
            .default_value(json!(false)),
    ];
    let influence = vec![
        F::reference("CampaignId", "Campaign ID", &["Campaign"])
            .required()
            .create_only(),
        F::reference("OpportunityId", "Opportunity ID", &["Opportunity"])
            .required()
            .create_only(),
        F::reference("ModelId", "Model ID", &["CampaignInfluenceModel"])
            .required()
            .create_only(),
        F::reference("ContactId", "Contact ID", &["Contact"]).create_only(),
        F::reference(
            "CampaignMemberId",
            "Campaign Member ID",
            &["CampaignMember"],
        )
        .create_only(),
        F::new("Influence", "Influence (%)", T::Percent).default_value(json!(0)),
        F::new("RevenueShare", "Revenue Share", T::Currency).read_only(),
    ];
    vec![
        SalesforceObjectDef {
            name: "CampaignInfluenceModel".into(),
            label: "Campaign Influence Model".into(),
            key_prefix: "03V".into(),
            custom: false,
            fields: model,
        },
        SalesforceObjectDef {
            name: "CampaignInfluence".into(),
            label: "Campaign Influence".into(),
            key_prefix: "0Ci".into(),
            custom: false,
            fields: influence,
        },
    ]
}

/// System fields every object has.
pub(crate) fn system_fields() -> Vec<F> {
    vec![
        F::new("Id", "Record ID", T::Id).read_only(),
        F::new("IsDeleted", "Deleted", T::Boolean).read_only(),
        F::reference("OwnerId", "Owner ID", &["User"]),
        F::new("CreatedDate", "Created Date", T::DateTime).read_only(),
        F::reference("CreatedById", "Created By ID", &["User"]).read_only(),
        F::new("LastModifiedDate", "Last Modified Date", T::DateTime).read_only(),
        F::reference("LastModifiedById", "Last Modified By ID", &["User"]).read_only(),
        F::new("SystemModstamp", "System Modstamp", T::DateTime).read_only(),
    ]
}

fn type_name(t: &T) -> &'static str {
    match t {
        T::Id => "id",
        T::String(_) => "string",
        T::TextArea(_) => "textarea",
        T::Email => "email",
        T::Phone => "phone",
        T::Url => "url",
        T::Picklist { .. } => "picklist",
        T::Boolean => "boolean",
        T::Date => "date",
        T::DateTime => "datetime",
        T::Double => "double",
        T::Currency => "currency",
        T::Percent => "percent",
        T::Int => "int",
        T::Reference(_) => "reference",
    }
}

/// A field as `describe` reports it.
pub(crate) fn describe_field(f: &F) -> Value {
    let (length, picklist, restricted, reference) = match &f.field_type {
        T::String(n) | T::TextArea(n) => (*n, Vec::new(), false, Vec::new()),
        T::Email | T::Phone | T::Url => (
            if matches!(f.field_type, T::Phone) {
                40
            } else {
                255
            },
            Vec::new(),
            false,
            Vec::new(),
        ),
        T::Id | T::Reference(_) => (
            18,
            Vec::new(),
            false,
            match &f.field_type {
                T::Reference(to) => to.clone(),
                _ => Vec::new(),
            },
        ),
        T::Picklist { values, restricted } => (255, values.clone(), *restricted, Vec::new()),
        _ => (0, Vec::new(), false, Vec::new()),
    };
    let default = f
        .default
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_string);
    json!({
        "name": f.name,
        "label": f.label,
        "type": type_name(&f.field_type),
        "length": length,
        "nillable": !f.required && !matches!(f.field_type, T::Boolean | T::Id),
        "createable": f.createable,
        "updateable": f.updateable,
        "externalId": f.external_id,
        "unique": f.unique,
        "custom": f.name.ends_with("__c"),
        "defaultedOnCreate": f.default.is_some(),
        "restrictedPicklist": restricted,
        "picklistValues": picklist.iter().map(|v| json!({
            "active": true, "defaultValue": default.as_deref() == Some(v.as_str()), "label": v, "value": v,
        })).collect::<Vec<_>>(),
        "referenceTo": reference,
    })
}

const SUFFIX_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 3-character case-safe suffix of a 15-character id.
pub(crate) fn id_suffix(id15: &str) -> String {
    id15.as_bytes()
        .chunks(5)
        .map(|chunk| {
            let bits = chunk.iter().enumerate().fold(0usize, |acc, (i, c)| {
                acc | (usize::from(c.is_ascii_uppercase()) << i)
            });
            SUFFIX_CHARS[bits % 32] as char
        })
        .collect()
}

/// A new 18-character id with this key prefix.
pub(crate) fn new_id(prefix: &str, n: u64) -> String {
    let mut digits = Vec::new();
    let mut v = n;
    for _ in 0..7 {
        digits.push(BASE62[(v % 62) as usize] as char);
        v /= 62;
    }
    digits.reverse();
    let id15: String = format!("{prefix}5e000{}", digits.into_iter().collect::<String>())
        .chars()
        .take(15)
        .collect();
    let id15 = format!("{id15:0<15}");
    format!("{id15}{}", id_suffix(&id15))
}

/// Whether `s` looks like a record id (15 or 18 alphanumeric characters).
pub(crate) fn looks_like_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The 18-character form of a 15- or 18-character id.
pub(crate) fn id18(s: &str) -> String {
    if s.len() == 15 {
        format!("{s}{}", id_suffix(s))
    } else {
        s.to_string()
    }
}
