//! The few HTML pages public endpoints answer browsers with (no JavaScript).

use crate::error::ApiError;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}}\
         li{{margin:.25rem 0}}a{{color:#0b5cad}}</style></head><body>{body}</body></html>",
        t = escape(title)
    )
}

/// The built-in thank-you page.
pub fn thanks(title: &str) -> String {
    page(
        "Thank you",
        &format!(
            "<h1>Thank you</h1><p>Your submission to {} was received. We will be in touch.</p>",
            escape(title)
        ),
    )
}

/// An error page listing every problem, for browser form posts.
pub fn error(err: &ApiError) -> String {
    let items: String = err
        .fields
        .iter()
        .map(|f| {
            format!(
                "<li><strong>{}</strong>: {}</li>",
                escape(&f.field),
                escape(&f.message)
            )
        })
        .collect();
    let list = if items.is_empty() {
        String::new()
    } else {
        format!("<ul>{items}</ul>")
    };
    page(
        "Please check your submission",
        &format!(
            "<h1>Please check your submission</h1><p>{}</p>{list}<p>Use your browser's back button to correct the form and send it again.</p>",
            escape(&err.message)
        ),
    )
}
