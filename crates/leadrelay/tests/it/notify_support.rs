//! Shared by the notifier and backup tests: a base configuration with a
//! contact form (crm and sms consent), the "failed" Google sheet that
//! receives dead-letter copies, a real SMTP server (aiosmtpd), and helpers.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use leadrelay::store::{Delivery, DeliveryState};
use leadrelay_fakes::google::{
    DEFAULT_SPREADSHEET_ID, FakeGoogle, GoogleConfig, SheetSeed, SpreadsheetSeed,
};
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;

use crate::support::{TestApp, eventually};

pub const WAIT: Duration = Duration::from_secs(30);
pub const PUBLIC_URL: &str = "https://leads.example.com";

/// A configuration with the `contact` and `demo` forms, fast retries,
/// dead letters copied to `copies`, plus `rest` (destinations, routes).
pub fn config(copies: &[&str], rest: &str) -> String {
    let copies: Vec<String> = copies.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"
[server]
public_url = "{PUBLIC_URL}"

[forms.contact]
[forms.contact.fields.email]
type = "email"
[forms.contact.fields.first_name]
type = "text"
[forms.contact.fields.last_name]
type = "text"
[forms.contact.fields.phone]
type = "phone"
default_region = "US"
[forms.contact.fields.company]
type = "text"
[forms.contact.fields.message]
type = "text"
[forms.contact.consent.crm]
field = "consent"
version = "v1"
[forms.contact.consent.sms]
field = "sms_consent"
version = "v1"

[forms.demo]
[forms.demo.fields.email]
type = "email"
[forms.demo.fields.first_name]
type = "text"
[forms.demo.consent.crm]
field = "consent"
version = "v1"

[delivery]
poll_interval = "100ms"
dead_letter_copies = [{copies}]
[delivery.retry]
base = "50ms"
cap = "200ms"

{rest}
"#,
        copies = copies.join(", ")
    )
}

/// A fake Google with one spreadsheet holding the tabs `Leads` and `Failed`.
pub fn google_config() -> GoogleConfig {
    GoogleConfig {
        spreadsheets: vec![SpreadsheetSeed {
            id: DEFAULT_SPREADSHEET_ID.to_string(),
            title: "leadrelay backup".to_string(),
            sheets: vec![SheetSeed::new("Leads"), SheetSeed::new("Failed")],
            shared_with: None,
        }],
        ..Default::default()
    }
}

/// The env var the test sheets destinations read the service-account key from.
pub const GOOGLE_KEY_ENV: &str = "TEST_GOOGLE_SERVICE_ACCOUNT";

/// A `sheets` destination named `name` writing to tab `tab` of the fake.
pub fn sheets_destination(name: &str, google: &FakeGoogle, tab: &str, extra: &str) -> String {
    format!(
        r#"
[destinations.{name}]
connector = "sheets"
spreadsheet_id = "{DEFAULT_SPREADSHEET_ID}"
sheet = "{tab}"
service_account_env = "{GOOGLE_KEY_ENV}"
base_url = "{base}"
allow_private_networks = true
legal_basis = "legitimate_interest"
quota_pause = "1s"
{extra}
"#,
        base = google.base_url()
    )
}

/// The "failed" sheet: dead-letter copies in the `Failed` tab.
pub fn failed_sheet(google: &FakeGoogle) -> String {
    sheets_destination(
        "failed_sheet",
        google,
        "Failed",
        "columns = \"dead_letters\"",
    )
}

/// Posts to the contact form; returns the event id.
pub async fn post(app: &TestApp, form: &str, body: &Value) -> Uuid {
    let resp = app.post_json(&format!("/v1/forms/{form}"), body).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until the event's delivery to `destination` is finished.
pub async fn settled(app: &TestApp, event: Uuid, destination: &str) -> Delivery {
    eventually(
        &format!("the delivery to {destination} settles"),
        WAIT,
        || async {
            let d = app
                .store
                .deliveries_for_event(event)
                .await
                .unwrap()
                .into_iter()
                .find(|d| d.destination == destination)?;
            (!d.state.is_active()).then_some(d)
        },
    )
    .await
}

/// Waits for the failed sheet to hold `n` data rows (below its header).
pub async fn failed_rows(google: &FakeGoogle, n: usize) -> Vec<Vec<String>> {
    eventually("dead-letter copies in the Failed tab", WAIT, || async {
        let rows = google.rows(DEFAULT_SPREADSHEET_ID, "Failed")?;
        (rows.len() > n).then_some(rows)
    })
    .await
}

/// The value in `row` under `header` (row 0 of `rows` is the header row).
pub fn cell<'a>(rows: &'a [Vec<String>], row: usize, header: &str) -> &'a str {
    let i = rows[0]
        .iter()
        .position(|h| h == header)
        .unwrap_or_else(|| panic!("no column {header:?} in {:?}", rows[0]));
    rows[row].get(i).map(String::as_str).unwrap_or("")
}

/// Asserts a dead letter reached the failed sheet with its reason.
pub async fn assert_copied_to_failed_sheet(google: &FakeGoogle, dead: &Delivery, email: &str) {
    assert_eq!(dead.state, DeliveryState::Dead);
    let rows = failed_rows(google, 1).await;
    let row = (1..rows.len())
        .find(|&r| cell(&rows, r, "Failed delivery ID") == dead.id.to_string())
        .unwrap_or_else(|| panic!("no row for {} in {rows:?}", dead.id));
    assert_eq!(cell(&rows, row, "Destination"), dead.destination);
    assert_eq!(cell(&rows, row, "Email"), email);
    assert_eq!(
        cell(&rows, row, "Reason"),
        dead.reason.as_deref().unwrap_or(""),
        "the copy carries the reason"
    );
}

/// A real SMTP server: `tests/smtp_server.py` on aiosmtpd, in its own process.
pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    _child: tokio::process::Child,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let python = std::env::var("LEADRELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let has_aiosmtpd = std::process::Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_aiosmtpd,
            "the email tests need a real SMTP server: {python} cannot import aiosmtpd. \
             Run scripts/test (it installs aiosmtpd into target/test-venv and sets \
             LEADRELAY_TEST_PYTHON), or point LEADRELAY_TEST_PYTHON at a Python that has it."
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "smtp_server.py"]
            .iter()
            .collect();
        let child = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the SMTP server");
        let port_file = dir.path().join("port");
        let port = eventually("the SMTP server listens", WAIT, || async {
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
        })
        .await;
        SmtpServer {
            port,
            dir,
            _child: child,
        }
    }

    /// Answers the next `times` DATA commands with `reply` (e.g. "451 4.7.1 Try later").
    pub fn fail_next(&self, reply: &str, times: usize) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("faults"))
            .expect("faults file");
        for _ in 0..times {
            writeln!(f, "{reply}").expect("write fault");
        }
    }

    /// Refuses `address` at RCPT TO with 550 from now on.
    pub fn refuse(&self, address: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("refuse"))
            .expect("refuse file");
        writeln!(f, "{address}").expect("write refusal");
    }

    /// Every message accepted, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut found: Vec<(u32, Value)> = std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        let n: u32 = name
                            .strip_prefix("msg-")?
                            .strip_suffix(".json")?
                            .parse()
                            .ok()?;
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((n, serde_json::from_str(&text).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by_key(|(n, _)| *n);
        found.into_iter().map(|(_, v)| v).collect()
    }

    /// Waits for `n` messages.
    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        eventually(&format!("{n} email(s)"), WAIT, || async {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

/// A failing webhook destination `hook` fed by the contact form, with issue
/// alerts (no debounce) to `notify`.
pub fn issue_alert_config(receiver: &crate::support::Receiver, notify: &str, rest: &str) -> String {
    format!(
        r#"{rest}
[destinations.hook]
connector = "webhook"
url = "{url}"
allow_private_networks = true
purposes = ["crm"]

[[routes]]
name = "hook"
destinations = ["hook"]

[alerts]
notify = ["{notify}"]
issue_debounce = "0s"
check_interval = "100ms"
dead_letters = 1000
min_attempts = 1000
"#,
        url = receiver.url()
    )
}
