//! The `csv` backup end to end: a header row per file, RFC 4180 quoting,
//! formulas neutralised, the configured column order, rotation by size.

use leadrelay::store::DeliveryState;
use serde_json::json;

use crate::notify_support::{config, post, settled};
use crate::support::TestApp;

#[tokio::test]
async fn quoted_rows_in_a_stable_column_order_rotated_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"
[destinations.csv_backup]
connector = "csv"
path = "{path}"
rotate_bytes = "1KiB"
legal_basis = "legitimate_interest"
columns = [
    "contact.email",
    {{ header = "Name", value = "contact.full_name" }},
    {{ header = "Company", value = "contact.company" }},
    {{ header = "Message", value = "data.message" }},
    {{ header = "Source", value = "attribution.utm_source" }},
]

[[routes]]
name = "all"
destinations = ["csv_backup"]
"#,
        path = dir.path().display()
    );
    let app = TestApp::spawn(&config(&[], &rest)).await;
    let id = post(
        &app,
        "contact",
        &json!({"email": "q@example.com", "first_name": "Quinn", "last_name": "O'Hara",
            "company": "Acme, Inc.", "message": "Line one\nsaid \"hi\"",
            "consent": "yes", "utm_source": "-2+3+cmd|' /C calc'!A0"}),
    )
    .await;
    assert_eq!(
        settled(&app, id, "csv_backup").await.state,
        DeliveryState::Delivered
    );
    let day = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let first = dir.path().join(format!("leads-{day}.csv"));
    let text = std::fs::read_to_string(&first).unwrap();
    assert_eq!(
        text,
        "contact.email,Name,Company,Message,Source\r\n\
         q@example.com,Quinn O'Hara,\"Acme, Inc.\",\"Line one\nsaid \"\"hi\"\"\",\"'-2+3+cmd|' /C calc'!A0\"\r\n"
    );

    // More rows than fit in 1 KiB: a second file, with its own header.
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            post(
                &app,
                "contact",
                &json!({"email": format!("r{i}@example.com"), "first_name": "R",
                    "message": "x".repeat(60), "consent": "yes"}),
            )
            .await,
        );
    }
    for id in ids {
        assert_eq!(
            settled(&app, id, "csv_backup").await.state,
            DeliveryState::Delivered
        );
    }
    let second = dir.path().join(format!("leads-{day}.1.csv"));
    let text2 = std::fs::read_to_string(&second).expect("rotated file");
    assert!(text2.starts_with("contact.email,Name,Company,Message,Source\r\n"));
    let mut rows = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        // `.leads.csv.lock`: the series lock appenders and erasures share.
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024, "{path:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("contact.email,"),
            "every file has the header"
        );
        rows += text.matches("@example.com").count();
    }
    assert_eq!(rows, 13, "every lead written once");
}
