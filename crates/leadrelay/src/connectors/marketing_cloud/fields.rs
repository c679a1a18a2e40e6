//! A data extension's columns, read through the SOAP API (`Retrieve` of
//! `DataExtensionField` filtered by `DataExtension.CustomerKey`, the way
//! Marketing Cloud documents reading a data extension's fields), and the
//! check of a row mapping against them.

use leadrelay_sources::xml;

use crate::mapping::{ObjectMapping, ValueKind};

/// One data extension column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `Text`, `Number`, `Date`, `Boolean`, `EmailAddress`, `Phone`,
    /// `Decimal`, `Locale`.
    pub field_type: String,
    pub max_length: Option<usize>,
    pub required: bool,
    pub primary_key: bool,
}

/// Text escaped for an XML element (the HTML escape serves XML too).
fn escape(s: &str) -> String {
    crate::http::html::escape(s)
}

/// The SOAP envelope retrieving the columns of the data extension `key`.
pub fn retrieve_envelope(token: &str, key: &str) -> String {
    let props = [
        "Name",
        "FieldType",
        "MaxLength",
        "IsRequired",
        "IsPrimaryKey",
    ]
    .iter()
    .map(|p| format!("<Properties>{p}</Properties>"))
    .collect::<String>();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><s:Header><fueloauth xmlns="http://exacttarget.com">{}</fueloauth></s:Header><s:Body><RetrieveRequestMsg xmlns="http://exacttarget.com/wsdl/partnerAPI"><RetrieveRequest><ObjectType>DataExtensionField</ObjectType>{props}<Filter xsi:type="SimpleFilterPart"><Property>DataExtension.CustomerKey</Property><SimpleOperator>equals</SimpleOperator><Value>{}</Value></Filter></RetrieveRequest></RetrieveRequestMsg></s:Body></s:Envelope>"#,
        escape(token),
        escape(key)
    )
}

/// The columns in a `RetrieveResponseMsg`, or why there are none
/// (`OverallStatus` other than `OK`, a SOAP fault, not XML).
pub fn parse_retrieve(xml: &str) -> Result<Vec<Column>, String> {
    let root = xml::parse(xml.as_bytes())
        .map_err(|e| format!("Marketing Cloud's SOAP answer is not XML: {e}"))?;
    let body = root
        .child("Body")
        .ok_or("Marketing Cloud's SOAP answer has no Body")?;
    if let Some(fault) = body.child("Fault") {
        return Err(format!(
            "Marketing Cloud SOAP fault: {}",
            fault
                .child_text("faultstring")
                .unwrap_or("(no faultstring)")
        ));
    }
    let msg = body
        .child("RetrieveResponseMsg")
        .ok_or("Marketing Cloud's SOAP answer has no RetrieveResponseMsg")?;
    match msg.child_text("OverallStatus") {
        Some("OK") | Some("MoreDataAvailable") => {}
        Some(s) => return Err(format!("Marketing Cloud's Retrieve answered {s}")),
        None => return Err("Marketing Cloud's SOAP answer has no OverallStatus".into()),
    }
    Ok(msg
        .children_named("Results")
        .filter_map(|r| {
            Some(Column {
                name: r.child_text("Name")?.to_string(),
                field_type: r.child_text("FieldType").unwrap_or("Text").to_string(),
                max_length: r.child_text("MaxLength").and_then(|n| n.parse().ok()),
                required: r.child_text("IsRequired") == Some("true"),
                primary_key: r.child_text("IsPrimaryKey") == Some("true"),
            })
        })
        .collect())
}

/// Why values of `kind` do not fit `column` (None: they fit, or cannot be
/// told apart before a lead arrives).
pub fn misfit(kind: ValueKind, column: &Column) -> Option<String> {
    use ValueKind as K;
    let ok = match (column.field_type.as_str(), kind) {
        (_, K::Unknown) => true,
        ("Text", K::Text { max: Some(m) }) => column.max_length.is_none_or(|n| m <= n),
        ("Text", K::Email) => {
            if let Some(n) = column.max_length.filter(|n| *n < 254) {
                return Some(format!(
                    "email addresses run up to 254 characters; the Text column {} holds {n} (widen it, or add transform \"truncate:{n}\")",
                    column.name
                ));
            }
            true
        }
        ("Text" | "Locale", _) => true,
        ("EmailAddress", K::Email) => true,
        ("Phone", K::Phone | K::Integer) => true,
        ("Number", K::Integer) => true,
        ("Decimal", K::Integer | K::Number) => true,
        ("Date", K::Date) => true,
        ("Boolean", K::Boolean) => true,
        ("EmailAddress" | "Phone" | "Number" | "Decimal" | "Date" | "Boolean", _) => false,
        // A type this check does not know: Marketing Cloud decides.
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match (column.field_type.as_str(), kind) {
        ("Text", K::Text { max: Some(m) }) => format!(
            "values of up to {m} characters; the Text column {} holds {}",
            column.name,
            column.max_length.unwrap_or_default()
        ),
        (t, k) => format!(
            "the mapping gives {}; the column {} is {t}{}",
            k.describe(),
            column.name,
            match t {
                "Number" => " (add transform \"integer\")",
                "Decimal" => " (add transform \"number\")",
                "Date" => " (add transform \"date\" or \"datetime\")",
                "Boolean" => " (add transform \"boolean\")",
                "Phone" => " (add transform \"e164\")",
                _ => "",
            }
        ),
    })
}

/// Every problem of a row mapping against the data extension's columns,
/// as `(field, reason)`; `primary_key` is the column leadrelay fills with
/// the contact key.
pub fn validate(
    row: Option<&ObjectMapping>,
    columns: &[Column],
    primary_key: &str,
    data_extension: &str,
) -> Vec<(String, String)> {
    let find = |name: &str| columns.iter().find(|c| c.name.eq_ignore_ascii_case(name));
    let mut problems = Vec::new();
    match find(primary_key) {
        None => problems.push((
            "primary_key".to_string(),
            format!("the data extension {data_extension} has no column {primary_key}"),
        )),
        Some(c) if !c.primary_key => problems.push((
            "primary_key".to_string(),
            format!(
                "{primary_key} is not a primary key of {data_extension} (its primary key: {})",
                columns
                    .iter()
                    .filter(|c| c.primary_key)
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Some(c) if !matches!(c.field_type.as_str(), "Text" | "EmailAddress") => problems.push((
            "primary_key".to_string(),
            format!(
                "the contact key is text (an email or a golden-record id); the column {} is {}",
                c.name, c.field_type
            ),
        )),
        Some(_) => {}
    }
    let mut mapped: Vec<&str> = vec![primary_key];
    for (field, rule) in row.map(|r| r.fields.as_slice()).unwrap_or_default() {
        mapped.push(field);
        let Some(column) = find(field) else {
            problems.push((
                format!("mapping.row.{field}"),
                format!("the data extension {data_extension} has no column {field}"),
            ));
            continue;
        };
        if let Some(why) = misfit(rule.value_kind(), column) {
            problems.push((format!("mapping.row.{field}"), why));
        }
    }
    for c in columns.iter().filter(|c| c.required && !c.primary_key) {
        if !mapped.iter().any(|m| m.eq_ignore_ascii_case(&c.name)) {
            problems.push((
                format!("mapping.row.{}", c.name),
                format!(
                    "the column {} of {data_extension} is required and not mapped",
                    c.name
                ),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_retrieve_answer_and_its_failures() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><RetrieveResponseMsg xmlns="http://exacttarget.com/wsdl/partnerAPI"><OverallStatus>OK</OverallStatus><RequestID>1</RequestID><Results xsi:type="DataExtensionField"><PartnerKey xsi:nil="true" /><Name>Email</Name><MaxLength>254</MaxLength><IsRequired>false</IsRequired><IsPrimaryKey>false</IsPrimaryKey><FieldType>EmailAddress</FieldType></Results><Results xsi:type="DataExtensionField"><Name>Contact &amp; Key</Name><MaxLength>50</MaxLength><IsRequired>true</IsRequired><IsPrimaryKey>true</IsPrimaryKey><FieldType>Text</FieldType></Results></RetrieveResponseMsg></soap:Body></soap:Envelope>"#;
        let cols = parse_retrieve(xml).unwrap();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0].field_type, "EmailAddress");
        assert_eq!(cols[1].name, "Contact & Key");
        assert!(cols[1].primary_key && cols[1].required);
        assert_eq!(cols[1].max_length, Some(50));
        let failed = xml.replace(">OK<", ">Error<");
        assert!(parse_retrieve(&failed).unwrap_err().contains("Error"));
        let fault = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>Login Failed</faultstring></soap:Fault></soap:Body></soap:Envelope>"#;
        assert!(parse_retrieve(fault).unwrap_err().contains("Login Failed"));
        assert!(parse_retrieve("<<<").is_err());
        assert!(retrieve_envelope("t<", "k&").contains("<Value>k&amp;</Value>"));
    }

    #[test]
    fn kinds_against_column_types() {
        let col = |t: &str, max: Option<usize>| Column {
            name: "C".into(),
            field_type: t.into(),
            max_length: max,
            required: false,
            primary_key: false,
        };
        use ValueKind as K;
        assert!(
            misfit(K::Email, &col("Number", None))
                .unwrap()
                .contains("is Number")
        );
        assert!(misfit(K::Integer, &col("Number", None)).is_none());
        assert!(misfit(K::Number, &col("Decimal", None)).is_none());
        assert!(misfit(K::Text { max: None }, &col("Date", None)).is_some());
        assert!(misfit(K::Date, &col("Date", None)).is_none());
        assert!(misfit(K::Boolean, &col("Boolean", None)).is_none());
        assert!(misfit(K::Text { max: None }, &col("EmailAddress", None)).is_some());
        assert!(
            misfit(K::Email, &col("Text", Some(100)))
                .unwrap()
                .contains("254")
        );
        assert!(misfit(K::Text { max: Some(120) }, &col("Text", Some(100))).is_some());
        assert!(misfit(K::Text { max: Some(80) }, &col("Text", Some(100))).is_none());
        assert!(misfit(K::Unknown, &col("Number", None)).is_none());
        assert!(misfit(K::Phone, &col("Phone", None)).is_none());
    }
}
