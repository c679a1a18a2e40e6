//! Request bodies: JSON, urlencoded and multipart (text parts only), parsed
//! into one list of named values. Anything else is a precise 400 or 415.

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// Most distinct fields accepted in one submission.
pub const MAX_FIELDS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    UrlEncoded,
    Multipart,
}

/// One submitted value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Text(String),
    /// A repeated key (checkbox groups) or a JSON array of scalars.
    List(Vec<String>),
    Number(serde_json::Number),
    Bool(bool),
    Null,
    /// A multipart file part (never accepted).
    File {
        filename: String,
    },
    /// A JSON object or nested array where a scalar was expected.
    Nested,
}

impl FieldValue {
    /// The value as text, if it is a single scalar (a list yields its last item).
    pub fn as_text(&self) -> Option<String> {
        match self {
            FieldValue::Text(s) => Some(s.clone()),
            FieldValue::List(v) => v.last().cloned(),
            FieldValue::Number(n) => Some(n.to_string()),
            FieldValue::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// The submission's fields, in order, each name once.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub fields: Vec<(String, FieldValue)>,
}

impl Submission {
    pub fn get(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn push(&mut self, name: String, value: FieldValue) -> Result<(), ApiError> {
        if let Some((_, existing)) = self.fields.iter_mut().find(|(k, _)| *k == name) {
            // Repeated keys (checkbox groups) become a list.
            let mut list = match std::mem::replace(existing, FieldValue::Null) {
                FieldValue::List(v) => v,
                FieldValue::Text(s) => vec![s],
                other => {
                    *existing = other;
                    return Ok(());
                }
            };
            if let FieldValue::Text(s) = value {
                list.push(s);
            }
            *existing = FieldValue::List(list);
            return Ok(());
        }
        if self.fields.len() >= MAX_FIELDS {
            return Err(ApiError::bad_request(format!(
                "too many fields (at most {MAX_FIELDS})"
            )));
        }
        self.fields.push((name, value));
        Ok(())
    }
}

/// Which parser a `Content-Type` calls for; 415 for anything else.
pub fn kind_of(content_type: Option<&str>) -> Result<(BodyKind, Option<String>), ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{what}: send application/json, application/x-www-form-urlencoded or multipart/form-data"
            ),
        )
    };
    let Some(ct) = content_type else {
        return Err(unsupported("missing Content-Type"));
    };
    let mime: mime::Mime = ct
        .parse()
        .map_err(|_| unsupported(&format!("unparseable Content-Type {ct:?}")))?;
    match (mime.type_(), mime.subtype()) {
        (mime::APPLICATION, mime::JSON) => Ok((BodyKind::Json, None)),
        (mime::APPLICATION, sub)
            if sub.as_str().ends_with("+json") || mime.suffix() == Some(mime::JSON) =>
        {
            Ok((BodyKind::Json, None))
        }
        (mime::APPLICATION, mime::WWW_FORM_URLENCODED) => Ok((BodyKind::UrlEncoded, None)),
        (mime::MULTIPART, mime::FORM_DATA) => {
            let boundary = mime
                .get_param(mime::BOUNDARY)
                .map(|b| b.as_str().to_string())
                .ok_or_else(|| ApiError::bad_request("multipart/form-data without a boundary"))?;
            Ok((BodyKind::Multipart, Some(boundary)))
        }
        _ => Err(unsupported(&format!(
            "Content-Type {}/{}",
            mime.type_(),
            mime.subtype()
        ))),
    }
}

/// Parses a body of `kind`.
pub async fn parse(
    kind: BodyKind,
    boundary: Option<String>,
    body: bytes::Bytes,
) -> Result<Submission, ApiError> {
    match kind {
        BodyKind::Json => parse_json(&body),
        BodyKind::UrlEncoded => parse_urlencoded(&body),
        BodyKind::Multipart => parse_multipart(boundary.unwrap_or_default(), body).await,
    }
}

fn parse_json(body: &[u8]) -> Result<Submission, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    let value = super::parse_json_limited(body, false, |e| {
        ApiError::bad_request(format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "the JSON body must be an object of field names to values",
        ));
    };
    let mut s = Submission::default();
    for (k, v) in map {
        let fv = match v {
            Value::String(t) => FieldValue::Text(t),
            Value::Number(n) => FieldValue::Number(n),
            Value::Bool(b) => FieldValue::Bool(b),
            Value::Null => FieldValue::Null,
            Value::Array(items) => {
                let mut list = Vec::new();
                let mut nested = false;
                for item in items {
                    match item {
                        Value::String(t) => list.push(t),
                        Value::Number(n) => list.push(n.to_string()),
                        Value::Bool(b) => list.push(b.to_string()),
                        Value::Null => {}
                        _ => nested = true,
                    }
                }
                if nested {
                    FieldValue::Nested
                } else {
                    FieldValue::List(list)
                }
            }
            Value::Object(_) => FieldValue::Nested,
        };
        s.push(k, fv)?;
    }
    Ok(s)
}

fn parse_urlencoded(body: &[u8]) -> Result<Submission, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(ApiError::bad_request("the form body is not valid UTF-8"));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("malformed form body: {e}")))?;
    let mut s = Submission::default();
    for (k, v) in pairs {
        s.push(k, FieldValue::Text(v))?;
    }
    Ok(s)
}

async fn parse_multipart(boundary: String, body: bytes::Bytes) -> Result<Submission, ApiError> {
    let stream = futures::stream::once(async move { Ok::<bytes::Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut s = Submission::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "malformed multipart body: {e}"
                )));
            }
        };
        let Some(name) = field.name().map(str::to_string) else {
            return Err(ApiError::bad_request("a multipart part has no name"));
        };
        if let Some(filename) = field.file_name().map(str::to_string) {
            s.push(name, FieldValue::File { filename })?;
            continue;
        }
        let text = field.text().await.map_err(|e| {
            ApiError::bad_request(format!("malformed multipart part {name:?}: {e}"))
        })?;
        s.push(name, FieldValue::Text(text))?;
    }
    Ok(s)
}

/// Rejects file parts, which forms never accept (leads carry no uploads).
pub fn reject_files(s: &Submission) -> Result<(), ApiError> {
    let files: Vec<FieldError> = s
        .fields
        .iter()
        .filter_map(|(k, v)| match v {
            FieldValue::File { filename } => Some(FieldError::new(
                k,
                "file_not_accepted",
                format!(
                    "file uploads are not accepted (got {:?}); send text fields only",
                    crate::redact::redact_text(filename)
                ),
            )),
            _ => None,
        })
        .collect();
    if files.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            kind_of(Some("application/json; charset=utf-8")).unwrap().0,
            BodyKind::Json
        );
        assert_eq!(
            kind_of(Some("application/x-www-form-urlencoded"))
                .unwrap()
                .0,
            BodyKind::UrlEncoded
        );
        let (k, b) = kind_of(Some("multipart/form-data; boundary=XyZ")).unwrap();
        assert_eq!((k, b.as_deref()), (BodyKind::Multipart, Some("XyZ")));
        for bad in [
            None,
            Some("text/plain"),
            Some("application/xml"),
            Some(";;;"),
        ] {
            assert_eq!(
                kind_of(bad).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad:?}"
            );
        }
        assert_eq!(
            kind_of(Some("multipart/form-data")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn json_shapes() {
        let s =
            parse_json(br#"{"email":"a@b.io","n":3,"ok":true,"tags":["a","b"],"x":null,"o":{}}"#)
                .unwrap();
        assert_eq!(s.get("email"), Some(&FieldValue::Text("a@b.io".into())));
        assert_eq!(
            s.get("tags"),
            Some(&FieldValue::List(vec!["a".into(), "b".into()]))
        );
        assert_eq!(s.get("o"), Some(&FieldValue::Nested));
        for bad in [&b""[..], b"[1,2]", b"{", b"\"x\"", b"{\"a\":1,}"] {
            assert_eq!(parse_json(bad).unwrap_err().status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn urlencoded_repeats_become_lists() {
        let s = parse_urlencoded(b"a=1&b=x+y&a=2").unwrap();
        assert_eq!(
            s.get("a"),
            Some(&FieldValue::List(vec!["1".into(), "2".into()]))
        );
        assert_eq!(s.get("b"), Some(&FieldValue::Text("x y".into())));
        assert!(parse_urlencoded(&[0xff, 0xfe]).is_err());
    }

    #[tokio::test]
    async fn multipart_text_and_files() {
        let body = "--B\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\na@b.io\r\n\
                    --B\r\nContent-Disposition: form-data; name=\"cv\"; filename=\"cv.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--B--\r\n";
        let s = parse_multipart("B".into(), bytes::Bytes::from(body))
            .await
            .unwrap();
        assert_eq!(s.get("email"), Some(&FieldValue::Text("a@b.io".into())));
        let err = reject_files(&s).unwrap_err();
        assert_eq!(err.fields[0].code, "file_not_accepted");
        assert!(
            parse_multipart("B".into(), bytes::Bytes::from_static(b"garbage"))
                .await
                .is_err()
        );
    }

    #[test]
    fn too_many_fields() {
        let body: String = (0..=MAX_FIELDS)
            .map(|i| format!("f{i}=x"))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(
            parse_urlencoded(body.as_bytes()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
