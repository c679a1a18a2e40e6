//! Redaction of personal data from text that leaves our control or lands in
//! logs: vendor response excerpts, error messages.
//!
//! Emails keep their first letter and domain (`j***@example.com`); runs of
//! 7+ digits (phone numbers, with separators) and IPv4 addresses are masked.

/// Masks emails, phone-like digit runs and IPv4 addresses in `text`.
pub fn redact_text(text: &str) -> String {
    let masked = mask_emails(text);
    mask_digit_runs(&masked)
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

fn mask_digit_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
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
            let is_ipv4 = dots == 3 && (4..=12).contains(&digits);
            if digits >= 7 || is_ipv4 {
                out.push_str(if is_ipv4 { "[ip]" } else { "[number]" });
                i = end;
                continue;
            }
            out.extend(&chars[i..end.max(i + 1)]);
            i = end.max(i + 1);
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
