//! Redaction of personal data from text that leaves our control or lands in
//! logs: vendor response excerpts, error messages.
//!
//! Emails keep their first letter and domain (`j***@example.com`); runs of
//! 7+ digits (phone numbers, with separators) and IPv4 addresses are masked.
//! Dates (`2026-12-06`, `06.12.2026`) and digits that are part of a word or
//! identifier (`v2-4155552671x`, UUIDs) are not phone numbers and stay.
//! Raw request bodies are decoded by their content type before masking, so
//! `email=omar%40example.com` is masked like `omar@example.com`.

use serde_json::Value;

/// Masks emails, phone-like digit runs and IPv4 addresses in `text`.
pub fn redact_text(text: &str) -> String {
    let masked = mask_emails(text);
    mask_digit_runs(&masked)
}

/// Masks every string (and object key) in a JSON value.
pub fn redact_json(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_text(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_json).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (redact_text(&k), redact_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Masks a raw request body of `content_type`, decoding it first: a
/// urlencoded body pair by pair (and encoded again), a JSON body value by
/// value (escapes such as `\u0040` decoded). Anything else, multipart
/// included (its text parts are plain), is masked as text.
pub fn redact_payload(content_type: &str, body: &str) -> String {
    let essence = content_type
        .parse::<mime::Mime>()
        .map(|m| m.essence_str().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/x-www-form-urlencoded" {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(body.trim().as_bytes()) {
            out.append_pair(&redact_text(&k), &redact_text(&v));
        }
        return out.finish();
    }
    let json = essence == "application/json" || essence.ends_with("+json");
    if json && let Ok(v) = serde_json::from_str::<Value>(body) {
        return redact_json(v).to_string();
    }
    redact_text(body)
}

/// Redacts and cuts `text` to at most `max` bytes (on a char boundary).
pub fn excerpt(text: &str, max: usize) -> String {
    let red = redact_text(text);
    if red.len() <= max {
        return red;
    }
    let mut end = max;
    while !red.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &red[..end])
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-'".contains(c)
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

fn mask_emails(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            // Walk back over the local part already copied to `out`.
            let mut start = i;
            while start > 0 && is_local_char(chars[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain_char(chars[end]) {
                end += 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let domain = domain.trim_end_matches('.');
            if start < i && domain.contains('.') {
                let local_len = i - start;
                for _ in 0..local_len {
                    out.pop();
                }
                out.push(chars[start]);
                out.push_str("***@");
                out.push_str(domain);
                i += 1 + domain.chars().count();
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Letters, digits and `_`: a digit run touching one is part of a word or
/// an identifier, not a phone number.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn two_digits(chars: &[char], i: usize) -> Option<u32> {
    let a = chars.get(i)?.to_digit(10)?;
    let b = chars.get(i + 1)?.to_digit(10)?;
    Some(a * 10 + b)
}

fn four_digits(chars: &[char], i: usize) -> Option<u32> {
    Some(two_digits(chars, i)? * 100 + two_digits(chars, i + 2)?)
}

/// The length of a calendar date starting at `i` (`2026-12-06`,
/// `06.12.2026`, `06-12-2026`), if one does and no digit follows it.
fn date_at(chars: &[char], i: usize) -> Option<usize> {
    let ok = |month: u32, day: u32| (1..=12).contains(&month) && (1..=31).contains(&day);
    let iso = four_digits(chars, i).is_some()
        && chars.get(i + 4) == Some(&'-')
        && chars.get(i + 7) == Some(&'-')
        && two_digits(chars, i + 5)
            .zip(two_digits(chars, i + 8))
            .is_some_and(|(m, d)| ok(m, d));
    let day_first = |sep: char| {
        two_digits(chars, i).is_some()
            && chars.get(i + 2) == Some(&sep)
            && chars.get(i + 5) == Some(&sep)
            && four_digits(chars, i + 6).is_some()
            && two_digits(chars, i)
                .zip(two_digits(chars, i + 3))
                .is_some_and(|(d, m)| ok(m, d))
    };
    let date = iso || day_first('.') || day_first('-');
    (date && !chars.get(i + 10).is_some_and(|c| c.is_ascii_digit())).then_some(10)
}

fn mask_digit_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            // A date is not a phone number (file names carry them too).
            if let Some(n) = date_at(&chars, i) {
                out.extend(&chars[i..i + n]);
                i += n;
                continue;
            }
            // A run of digits with phone/IP separators.
            let mut end = i;
            let mut digits = 0;
            let mut dots = 0;
            while end < chars.len()
                && (chars[end].is_ascii_digit() || " -().+".contains(chars[end]))
            {
                if chars[end].is_ascii_digit() {
                    digits += 1;
                }
                if chars[end] == '.' {
                    dots += 1;
                }
                end += 1;
            }
            // Trailing separators are not part of the number.
            while end > i && !chars[end - 1].is_ascii_digit() {
                if chars[end - 1] == '.' {
                    dots -= 1;
                }
                end -= 1;
            }
            let end = end.max(i + 1);
            // Digits glued to a letter belong to a word or an identifier.
            let glued = (i > 0 && is_word_char(chars[i - 1]))
                || chars.get(end).is_some_and(|c| is_word_char(*c));
            let is_ipv4 = dots == 3 && (4..=12).contains(&digits);
            if !glued && (digits >= 7 || is_ipv4) {
                out.push_str(if is_ipv4 { "[ip]" } else { "[number]" });
                i = end;
                continue;
            }
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A URL with its password replaced by `***` (a storage URL such as
/// `postgres://app:secret@db/leads` printed by the CLI). Text that is not a
/// URL comes back unchanged.
pub fn url_without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            url_without_password("postgres://app:s3cret@db.internal:5432/leads"),
            "postgres://app:***@db.internal:5432/leads"
        );
        assert_eq!(
            url_without_password("sqlite://./leadrelay.db"),
            "sqlite://./leadrelay.db"
        );
    }

    #[test]
    fn masks_emails_phones_and_ips() {
        let s = "Contact jane.doe@example.com already exists (phone +1 415-555-2671, ip 203.0.113.7), id 12345";
        let r = redact_text(s);
        assert!(!r.contains("jane.doe"), "{r}");
        assert!(r.contains("j***@example.com"), "{r}");
        assert!(!r.contains("555-2671"), "{r}");
        assert!(!r.contains("203.0.113.7"), "{r}");
        assert!(r.contains("id 12345"), "short numbers stay: {r}");
    }

    #[test]
    fn dates_file_names_and_identifiers_stay() {
        for keep in [
            "wrote leads-2026-12-06.jsonl",
            "{\"received_at\":\"2026-12-06T04:41:17.739Z\"}",
            "due 2026-12-06 04:41:17 UTC",
            "Datum 06.12.2026",
            "id 01a249a8-04ac-74d3-85e2-049779486439",
            "build v2-4155552671x",
        ] {
            assert_eq!(redact_text(keep), keep);
        }
        // Phones still go, also next to a date.
        let r = redact_text("2026-12-06: call +1 415-555-2671 or (415) 555.2671");
        assert!(r.starts_with("2026-12-06: call [number] or "), "{r}");
        assert!(!r.contains("555") && !r.contains("2671"), "{r}");
        assert_eq!(redact_text("tel:4155552671"), "tel:[number]");
        assert_eq!(redact_text("phone=+14155552671&x"), "phone=[number]&x");
    }

    #[test]
    fn urlencoded_payloads_are_decoded_before_masking() {
        let body = "email=omar%40example.com&phone=%2B1+415+555+2671&first_name=Omar&company=Acme+%26+Co&consent=on";
        let r = redact_payload("application/x-www-form-urlencoded", body);
        assert!(!r.contains("omar"), "{r}");
        assert!(!r.contains("555"), "{r}");
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(r.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("email"), "o***@example.com");
        assert_eq!(get("phone"), "[number]");
        assert_eq!(get("first_name"), "Omar");
        assert_eq!(get("company"), "Acme & Co");
        // Parameters and case do not hide the type.
        let r = redact_payload("Application/X-WWW-Form-URLEncoded; charset=UTF-8", body);
        assert!(!r.contains("omar"), "{r}");
    }

    #[test]
    fn json_payloads_are_decoded_before_masking() {
        let body = r#"{"email":"jane\u0040example.com","notes":["call +1 415 555 2671"],"day":"2026-12-06"}"#;
        let r = redact_payload("application/json; charset=utf-8", body);
        assert!(!r.contains("jane"), "{r}");
        assert!(!r.contains("2671"), "{r}");
        assert!(
            r.contains("j***@example.com") && r.contains("2026-12-06"),
            "{r}"
        );
        // Not JSON after all: masked as text.
        assert_eq!(
            redact_payload("application/json", "{bad jane@example.com"),
            "{bad j***@example.com"
        );
        // Multipart text parts are plain text.
        let mp =
            "--B\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nkim@example.com\r\n--B--";
        assert!(!redact_payload("multipart/form-data; boundary=B", mp).contains("kim@"));
    }

    #[test]
    fn leaves_plain_text_alone() {
        assert_eq!(
            redact_text("status 500: upstream @ capacity"),
            "status 500: upstream @ capacity"
        );
    }

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        let s = "é".repeat(100);
        let e = excerpt(&s, 11);
        assert!(e.ends_with('…'));
        assert!(e.len() <= 14);
    }
}
