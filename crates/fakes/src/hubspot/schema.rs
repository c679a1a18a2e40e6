//! The fake portal's schema: object types, their properties (standard ones
//! plus configured custom ones), deal pipelines and HubSpot-defined
//! association types.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    HubSpotConfig, HubSpotCustomObjectType, HubSpotPipeline, HubSpotProperty, PropertyKind,
};

/// The standard object types this fake serves, with their `objectTypeId`s.
pub(crate) const STANDARD_TYPES: &[(&str, &str)] = &[
    ("contacts", "0-1"),
    ("companies", "0-2"),
    ("deals", "0-3"),
    ("tasks", "0-27"),
    ("notes", "0-46"),
    ("meetings", "0-47"),
];

/// HubSpot-defined association types: (from, to, typeId, is the default unlabeled type).
/// From HubSpot's association type reference (the same ids as the official
/// client libraries' `AssociationType` helpers).
pub(crate) const HUBSPOT_DEFINED_ASSOCIATIONS: &[(&str, &str, u32, bool)] = &[
    ("contacts", "companies", 279, true),
    ("contacts", "companies", 1, false), // primary company
    ("companies", "contacts", 280, true),
    ("companies", "contacts", 2, false),
    ("deals", "contacts", 3, true),
    ("contacts", "deals", 4, true),
    ("deals", "companies", 341, true),
    ("deals", "companies", 5, false), // primary company
    ("companies", "deals", 342, true),
    ("companies", "deals", 6, false),
    ("companies", "companies", 450, true),
    ("companies", "companies", 13, false), // parent to child
    ("companies", "companies", 14, false), // child to parent
    ("contacts", "contacts", 449, true),
    ("deals", "deals", 451, true),
    ("contacts", "notes", 201, true),
    ("notes", "contacts", 202, true),
    ("companies", "notes", 189, true),
    ("notes", "companies", 190, true),
    ("deals", "notes", 213, true),
    ("notes", "deals", 214, true),
    ("contacts", "tasks", 203, true),
    ("tasks", "contacts", 204, true),
    ("companies", "tasks", 191, true),
    ("tasks", "companies", 192, true),
    ("deals", "tasks", 215, true),
    ("tasks", "deals", 216, true),
    ("contacts", "meetings", 199, true),
    ("meetings", "contacts", 200, true),
    ("companies", "meetings", 187, true),
    ("meetings", "companies", 188, true),
    ("deals", "meetings", 211, true),
    ("meetings", "deals", 212, true),
];

/// One association type the portal knows, in one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssocType<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub type_id: u32,
    pub category: &'static str,
    pub default: bool,
}

/// A property definition as the fake enforces it.
#[derive(Debug, Clone)]
pub(crate) struct PropertyDef {
    pub name: String,
    pub label: String,
    pub kind: PropertyKind,
    pub read_only: bool,
    pub unique: bool,
    pub hubspot_defined: bool,
}

/// Everything the fake needs to validate writes.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    pub portal_id: u64,
    /// Canonical object type name → its properties by name.
    pub properties: BTreeMap<String, BTreeMap<String, PropertyDef>>,
    pub custom_types: Vec<HubSpotCustomObjectType>,
    pub pipelines: Vec<HubSpotPipeline>,
    assoc: Vec<(String, String, u32, &'static str, bool)>,
}

fn std_prop(name: &str, label: &str, kind: PropertyKind) -> PropertyDef {
    PropertyDef {
        name: name.into(),
        label: label.into(),
        kind,
        read_only: false,
        unique: false,
        hubspot_defined: true,
    }
}

fn read_only(name: &str, label: &str, kind: PropertyKind) -> PropertyDef {
    PropertyDef {
        read_only: true,
        ..std_prop(name, label, kind)
    }
}

fn options(values: &[&str]) -> PropertyKind {
    PropertyKind::Enumeration(values.iter().map(|v| v.to_string()).collect())
}

/// Lifecycle stage internal values (the defaults of a new portal).
pub(crate) const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];

/// `hs_lead_status` default options.
pub(crate) const LEAD_STATUSES: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
];

/// Task picklists.
pub(crate) const TASK_STATUSES: &[&str] = &[
    "NOT_STARTED",
    "IN_PROGRESS",
    "WAITING",
    "COMPLETED",
    "DEFERRED",
];
/// `hs_meeting_outcome`'s default options (the meetings API guide).
pub(crate) const MEETING_OUTCOMES: &[&str] = &[
    "SCHEDULED",
    "COMPLETED",
    "RESCHEDULED",
    "NO_SHOW",
    "CANCELED",
];
pub(crate) const TASK_PRIORITIES: &[&str] = &["NONE", "LOW", "MEDIUM", "HIGH"];
pub(crate) const TASK_TYPES: &[&str] = &[
    "CALL",
    "EMAIL",
    "TODO",
    "LINKED_IN_CONNECT",
    "LINKED_IN_MESSAGE",
];

fn standard_properties(object_type: &str) -> Vec<PropertyDef> {
    use PropertyKind::*;
    let mut props = vec![
        read_only("hs_object_id", "Record ID", Number),
        read_only("hs_createdate", "Object create date/time", DateTime),
        read_only(
            "hs_lastmodifieddate",
            "Object last modified date/time",
            DateTime,
        ),
        std_prop("hubspot_owner_id", "Owner", Text),
    ];
    match object_type {
        "contacts" => props.extend([
            PropertyDef {
                unique: true,
                ..std_prop("email", "Email", Text)
            },
            std_prop("firstname", "First Name", Text),
            std_prop("lastname", "Last Name", Text),
            std_prop("phone", "Phone Number", Text),
            std_prop("mobilephone", "Mobile Phone Number", Text),
            std_prop("company", "Company Name", Text),
            std_prop("website", "Website URL", Text),
            std_prop("jobtitle", "Job Title", Text),
            std_prop("address", "Street Address", Text),
            std_prop("city", "City", Text),
            std_prop("state", "State/Region", Text),
            std_prop("zip", "Postal Code", Text),
            std_prop("country", "Country/Region", Text),
            std_prop("industry", "Industry", Text),
            std_prop("message", "Message", Text),
            std_prop("salutation", "Salutation", Text),
            std_prop("date_of_birth", "Date of birth", Text),
            std_prop("hs_language", "Preferred language", Text),
            std_prop("annualrevenue", "Annual Revenue", Text),
            std_prop("numemployees", "Number of Employees", Text),
            std_prop(
                "lifecyclestage",
                "Lifecycle Stage",
                options(LIFECYCLE_STAGES),
            ),
            std_prop("hs_lead_status", "Lead Status", options(LEAD_STATUSES)),
            read_only("createdate", "Create Date", DateTime),
            read_only("lastmodifieddate", "Last Modified Date", DateTime),
            read_only("hs_analytics_source", "Original Source", Text),
        ]),
        "companies" => props.extend([
            std_prop("name", "Company name", Text),
            std_prop("domain", "Company Domain Name", Text),
            std_prop("website", "Website URL", Text),
            std_prop("phone", "Phone Number", Text),
            std_prop("address", "Street Address", Text),
            std_prop("city", "City", Text),
            std_prop("state", "State/Region", Text),
            std_prop("zip", "Postal Code", Text),
            std_prop("country", "Country/Region", Text),
            std_prop("industry", "Industry", Text),
            std_prop("description", "Description", Text),
            std_prop("numberofemployees", "Number of Employees", Number),
            std_prop("annualrevenue", "Annual Revenue", Number),
            std_prop(
                "lifecyclestage",
                "Lifecycle Stage",
                options(LIFECYCLE_STAGES),
            ),
            read_only("createdate", "Create Date", DateTime),
        ]),
        "deals" => props.extend([
            std_prop("dealname", "Deal Name", Text),
            std_prop("amount", "Amount", Number),
            std_prop("pipeline", "Pipeline", Text),
            std_prop("dealstage", "Deal Stage", Text),
            std_prop("closedate", "Close Date", DateTime),
            std_prop(
                "dealtype",
                "Deal Type",
                options(&["newbusiness", "existingbusiness"]),
            ),
            std_prop("description", "Deal Description", Text),
            read_only("createdate", "Create Date", DateTime),
        ]),
        "notes" => props.extend([
            std_prop("hs_timestamp", "Activity date", DateTime),
            std_prop("hs_note_body", "Note body", Text),
            std_prop("hs_attachment_ids", "Attached file IDs", Text),
        ]),
        "tasks" => props.extend([
            std_prop("hs_timestamp", "Due date", DateTime),
            std_prop("hs_task_subject", "Task Title", Text),
            std_prop("hs_task_body", "Notes", Text),
            std_prop("hs_task_status", "Task Status", options(TASK_STATUSES)),
            std_prop("hs_task_priority", "Priority", options(TASK_PRIORITIES)),
            std_prop("hs_task_type", "Task Type", options(TASK_TYPES)),
            std_prop("hs_task_reminders", "Reminders", Text),
        ]),
        "meetings" => props.extend([
            std_prop("hs_timestamp", "Activity date", DateTime),
            std_prop("hs_meeting_title", "Meeting name", Text),
            std_prop("hs_meeting_body", "Meeting description", Text),
            std_prop("hs_internal_meeting_notes", "Internal notes", Text),
            std_prop("hs_meeting_external_url", "External URL", Text),
            std_prop("hs_meeting_location", "Location", Text),
            std_prop("hs_meeting_start_time", "Start time", DateTime),
            std_prop("hs_meeting_end_time", "End time", DateTime),
            std_prop(
                "hs_meeting_outcome",
                "Meeting outcome",
                options(MEETING_OUTCOMES),
            ),
            std_prop("hs_activity_type", "Call and meeting type", Text),
            std_prop("hs_attachment_ids", "Attached file IDs", Text),
        ]),
        _ => {}
    }
    props
}

impl Schema {
    pub(crate) fn new(config: &HubSpotConfig) -> Self {
        let mut properties: BTreeMap<String, BTreeMap<String, PropertyDef>> = BTreeMap::new();
        for (name, _) in STANDARD_TYPES {
            let map = properties.entry(name.to_string()).or_default();
            for p in standard_properties(name) {
                map.insert(p.name.clone(), p);
            }
        }
        let mut assoc: Vec<(String, String, u32, &'static str, bool)> =
            HUBSPOT_DEFINED_ASSOCIATIONS
                .iter()
                .map(|(f, t, id, d)| (f.to_string(), t.to_string(), *id, "HUBSPOT_DEFINED", *d))
                .collect();
        for custom in &config.custom_object_types {
            let map = properties.entry(custom.name.clone()).or_default();
            for p in standard_properties(&custom.name) {
                map.insert(p.name.clone(), p);
            }
            for p in &custom.properties {
                map.insert(p.name.clone(), custom_def(p));
            }
            for a in &custom.associations {
                assoc.push((
                    custom.name.clone(),
                    a.to_object_type.clone(),
                    a.type_id,
                    "USER_DEFINED",
                    true,
                ));
                assoc.push((
                    a.to_object_type.clone(),
                    custom.name.clone(),
                    a.inverse_type_id,
                    "USER_DEFINED",
                    true,
                ));
            }
        }
        for p in &config.custom_properties {
            let Some(canonical) = resolve_in(
                &config.custom_object_types,
                config.portal_id,
                &p.object_type,
                true,
            ) else {
                continue;
            };
            properties
                .entry(canonical)
                .or_default()
                .insert(p.name.clone(), custom_def(p));
        }
        Self {
            portal_id: config.portal_id,
            properties,
            custom_types: config.custom_object_types.clone(),
            pipelines: config.deal_pipelines.clone(),
            assoc,
        }
    }

    /// Resolves a path segment (`contacts`, `0-1`, `2-12345`, `p_projects`,
    /// `p12345678_projects`) to the canonical object type name.
    pub(crate) fn resolve(&self, segment: &str) -> Option<String> {
        resolve_in(&self.custom_types, self.portal_id, segment, false)
    }

    /// Adds (or replaces) a custom property of an object type; false when
    /// the type is unknown.
    pub(crate) fn add_property(&mut self, p: &HubSpotProperty) -> bool {
        let Some(canonical) = self.resolve(&p.object_type) else {
            return false;
        };
        self.properties
            .entry(canonical)
            .or_default()
            .insert(p.name.clone(), custom_def(p));
        true
    }

    pub(crate) fn property(&self, object_type: &str, name: &str) -> Option<&PropertyDef> {
        self.properties.get(object_type)?.get(name)
    }

    /// Required properties on create (beyond what the portal allows to be empty).
    pub(crate) fn required_on_create(&self, object_type: &str) -> Vec<String> {
        match object_type {
            "notes" | "tasks" | "meetings" => vec!["hs_timestamp".into()],
            other => self
                .custom_types
                .iter()
                .find(|c| c.name == other)
                .map(|c| c.required_properties.clone())
                .unwrap_or_default(),
        }
    }

    /// The association type `type_id` starting at `from`, if there is one.
    pub(crate) fn assoc_by_id(&self, from: &str, type_id: u32) -> Option<AssocType<'_>> {
        self.assoc
            .iter()
            .find(|(f, _, id, _, _)| f == from && *id == type_id)
            .map(|(f, t, id, c, d)| AssocType {
                from: f,
                to: t,
                type_id: *id,
                category: c,
                default: *d,
            })
    }

    /// The default (unlabeled) association type from `from` to `to`.
    pub(crate) fn default_assoc(&self, from: &str, to: &str) -> Option<AssocType<'_>> {
        self.assoc
            .iter()
            .find(|(f, t, _, _, d)| f == from && t == to && *d)
            .map(|(f, t, id, c, d)| AssocType {
                from: f,
                to: t,
                type_id: *id,
                category: c,
                default: *d,
            })
    }

    /// Default properties returned by reads when none are asked for.
    pub(crate) fn default_read_properties(&self, object_type: &str) -> Vec<String> {
        let names: &[&str] = match object_type {
            "contacts" => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            "companies" => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            "deals" => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
            "notes" => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
            "tasks" => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
            "meetings" => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
            _ => &["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
        };
        let mut out: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        if let Some(c) = self.custom_types.iter().find(|c| c.name == object_type) {
            out.push(c.primary_display_property.clone());
        }
        out
    }

    /// The property list JSON for `GET /crm/v3/properties/{objectType}`.
    pub(crate) fn property_json(&self, object_type: &str, def: &PropertyDef) -> Value {
        let (ty, field_type) = match &def.kind {
            PropertyKind::Text => ("string", "text"),
            PropertyKind::Number => ("number", "number"),
            PropertyKind::Date => ("date", "date"),
            PropertyKind::DateTime => ("datetime", "date"),
            PropertyKind::Bool => ("bool", "booleancheckbox"),
            PropertyKind::Enumeration(_) => ("enumeration", "select"),
        };
        let opts: Vec<Value> = match &def.kind {
            PropertyKind::Enumeration(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"label": v, "value": v, "displayOrder": i, "hidden": false}))
                .collect(),
            PropertyKind::Bool => vec![
                json!({"label": "Yes", "value": "true", "displayOrder": 0, "hidden": false}),
                json!({"label": "No", "value": "false", "displayOrder": 1, "hidden": false}),
            ],
            _ => Vec::new(),
        };
        let external_options =
            object_type == "deals" && (def.name == "dealstage" || def.name == "pipeline");
        json!({
            "name": def.name,
            "label": def.label,
            "type": ty,
            "fieldType": field_type,
            "description": "",
            "groupName": format!("{}information", object_type.trim_end_matches('s')),
            "options": opts,
            "displayOrder": -1,
            "calculated": false,
            "externalOptions": external_options,
            "hasUniqueValue": def.unique,
            "hidden": false,
            "hubspotDefined": def.hubspot_defined,
            "modificationMetadata": {"archivable": !def.hubspot_defined, "readOnlyDefinition": def.hubspot_defined, "readOnlyValue": def.read_only},
            "formField": !def.read_only,
            "createdAt": "2020-01-01T00:00:00Z",
            "updatedAt": "2020-01-01T00:00:00Z",
            "archived": false,
        })
    }

    pub(crate) fn pipeline(&self, id: &str) -> Option<&HubSpotPipeline> {
        self.pipelines.iter().find(|p| p.id == id)
    }
}

fn custom_def(p: &HubSpotProperty) -> PropertyDef {
    PropertyDef {
        name: p.name.clone(),
        label: p.label.clone(),
        kind: p.kind.clone(),
        read_only: p.read_only,
        unique: p.unique,
        hubspot_defined: false,
    }
}

/// `bare_name` also accepts a custom object's bare name (configuration only:
/// the API wants the `objectTypeId` or the fully qualified name).
fn resolve_in(
    custom: &[HubSpotCustomObjectType],
    portal_id: u64,
    segment: &str,
    bare_name: bool,
) -> Option<String> {
    let seg = segment.to_ascii_lowercase();
    for (name, id) in STANDARD_TYPES {
        if seg == *name || seg == *id {
            return Some(name.to_string());
        }
    }
    custom
        .iter()
        .find(|c| {
            seg == c.object_type_id
                || seg == format!("p_{}", c.name)
                || seg == format!("p{}_{}", portal_id, c.name)
                || (bare_name && seg == c.name)
        })
        .map(|c| c.name.clone())
}
