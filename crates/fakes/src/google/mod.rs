//! Fake Google: the OAuth 2.0 token endpoint for service accounts and the Sheets API v4
//! methods leadrelay uses for backups.
//!
//! # Followed references
//! - "Using OAuth 2.0 for Server to Server Applications" (developers.google.com/identity/
//!   protocols/oauth2/service-account): the RS256 JWT assertion (`iss` = service-account
//!   email, `scope`, `aud` = token URI, `iat`, `exp` at most one hour after `iat`), the
//!   `urn:ietf:params:oauth:grant-type:jwt-bearer` grant, the answer
//!   `{"access_token","expires_in":3599,"token_type":"Bearer"}` and the error answers
//!   `invalid_grant` ("Invalid JWT Signature.", "Invalid grant: account not found", "Invalid
//!   JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check
//!   your iat and exp values in the JWT claim."), `invalid_scope` ("Invalid OAuth scope or ID
//!   token audience provided."), `unsupported_grant_type`, `unauthorized_client`.
//! - Sheets API v4 reference: `spreadsheets.get`, `spreadsheets.batchUpdate` (`addSheet`,
//!   `deleteSheet`), `spreadsheets.values.get`, `.update`, `.append` (`valueInputOption`
//!   RAW/USER_ENTERED required, `insertDataOption` OVERWRITE/INSERT_ROWS, the
//!   `AppendValuesResponse`/`UpdateValuesResponse` shapes with `updatedRange`, `updatedRows`,
//!   `updatedColumns`, `updatedCells`, `tableRange`), `.clear`; A1 notation; "Usage limits"
//!   (60 read and 60 write requests per minute per user; 429 `RESOURCE_EXHAUSTED` "Quota
//!   exceeded for quota metric 'Write requests' and limit 'Write requests per minute per user'
//!   of service 'sheets.googleapis.com' for consumer 'project_number:…'." with an `ErrorInfo`
//!   detail `RATE_LIMIT_EXCEEDED`); Google's error body `{"error":{"code","message","status"}}`.
//!
//! # What it enforces
//! - Token endpoint: grant type, the assertion's RS256 signature against the configured
//!   service account's public key, known `iss`, `aud` equal to this server's `/token` URL or a
//!   configured audience (Google's real token URIs by default), `iat`/`exp` (≤ 3600 s apart, not
//!   expired, `iat` at most 5 minutes ahead), Google-looking scopes, no `sub` (no delegation).
//!   Tokens expire after `token_lifetime` (or at once with [`GoogleState::expire_tokens`]).
//! - Sheets: `Authorization: Bearer` (missing → 401 `CREDENTIALS_MISSING`, unknown → 401,
//!   expired → 401 `ACCESS_TOKEN_EXPIRED`, all `UNAUTHENTICATED`); scopes (`spreadsheets` or
//!   `drive`/`drive.file` to write, also the `.readonly` ones to read; else 403
//!   `ACCESS_TOKEN_SCOPE_INSUFFICIENT`); per-user read and write quotas per rolling minute;
//!   unknown spreadsheet → 404 `NOT_FOUND` "Requested entity was not found."; spreadsheet not
//!   shared with the account → 403 `PERMISSION_DENIED` "The caller does not have permission";
//!   unknown tab or bad A1 → 400 `INVALID_ARGUMENT` "Unable to parse range: …"; ranges past the
//!   grid → 400 "Range (…) exceeds grid limits. Max rows: …, max columns: …"; missing
//!   `valueInputOption` → 400 "'valueInputOption' is required but not specified"; bad enum
//!   values, non-scalar cells, cells over 50 000 characters, data larger than a bounded update
//!   range, malformed JSON, duplicate sheet titles on `addSheet`.
//!
//! # What it simplifies
//! - Formulas are stored, not computed: every render option returns the formula text.
//!   `USER_ENTERED` turns numbers, `TRUE`/`FALSE`, `'`-prefixed text and `=` formulas into
//!   their types but does not parse dates, currencies or percentages.
//! - `append` finds the table as the first run of non-empty rows (within the range's
//!   columns) at or below the range's first row, and writes after it starting at the range's
//!   first column.
//! - `fields` masks are ignored (responses are a superset); batchUpdate implements `addSheet`
//!   and `deleteSheet` and answers other known requests with 501 `UNIMPLEMENTED`; per-project
//!   quotas, named ranges, `values:batchGet`/`batchUpdate` and spreadsheet creation are absent.
//! - The wording of the audience and sheet-id conflict errors is unverified.

mod a1;
mod sheets;
mod token;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{FakeServer, Faults, RequestLog, RollingWindow};

pub use a1::column_letters;
pub use token::JWT_BEARER_GRANT;

/// Full access to spreadsheets.
pub const SCOPE_SPREADSHEETS: &str = "https://www.googleapis.com/auth/spreadsheets";
pub const SCOPE_SPREADSHEETS_READONLY: &str =
    "https://www.googleapis.com/auth/spreadsheets.readonly";
pub const SCOPE_DRIVE: &str = "https://www.googleapis.com/auth/drive";
pub const SCOPE_DRIVE_FILE: &str = "https://www.googleapis.com/auth/drive.file";
pub const SCOPE_DRIVE_READONLY: &str = "https://www.googleapis.com/auth/drive.readonly";

/// A throwaway RSA private key for tests (PKCS#8 PEM). Never a credential: see
/// `crates/fakes/testdata/README.md`.
pub const TEST_PRIVATE_KEY_PEM: &str =
    include_str!("../../testdata/google-test-service-account.key.pem");
/// The public half of [`TEST_PRIVATE_KEY_PEM`].
pub const TEST_PUBLIC_KEY_PEM: &str =
    include_str!("../../testdata/google-test-service-account.pub.pem");
/// The test service account's email.
pub const TEST_CLIENT_EMAIL: &str = "leadrelay-test@leadrelay-fake.iam.gserviceaccount.com";
/// The spreadsheet the default config holds.
pub const DEFAULT_SPREADSHEET_ID: &str = "1FakeLeadrelayBackupSpreadsheet0000000000";

/// A service account the token endpoint knows.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    /// The public key (SPKI or PKCS#1 PEM) that verifies its assertions.
    pub public_key_pem: String,
}

/// A sheet (tab) to create at start.
#[derive(Debug, Clone)]
pub struct SheetSeed {
    pub title: String,
    /// Initial rows, stored as RAW values (strings, numbers, booleans; null = empty).
    pub rows: Vec<Vec<Value>>,
    pub row_count: usize,
    pub column_count: usize,
}

impl SheetSeed {
    /// An empty 1000 × 26 sheet, as Google creates them.
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_string(),
            rows: Vec::new(),
            row_count: 1000,
            column_count: 26,
        }
    }
}

/// A spreadsheet to create at start.
#[derive(Debug, Clone)]
pub struct SpreadsheetSeed {
    pub id: String,
    pub title: String,
    pub sheets: Vec<SheetSeed>,
    /// Accounts the spreadsheet is shared with; `None` = every known account.
    pub shared_with: Option<Vec<String>>,
}

/// What the fake Google holds. `Default` gives the test service account
/// ([`TEST_CLIENT_EMAIL`], [`TEST_PUBLIC_KEY_PEM`]), a one-hour token lifetime, one spreadsheet
/// ([`DEFAULT_SPREADSHEET_ID`]) with tabs `Sheet1` and `Leads`, and 60 reads and 60 writes per
/// minute per user.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    pub service_accounts: Vec<ServiceAccount>,
    /// Audiences accepted besides this server's own `/token` URL.
    pub token_audiences: Vec<String>,
    /// How long issued access tokens live (`expires_in` is one second less).
    pub token_lifetime: Duration,
    pub spreadsheets: Vec<SpreadsheetSeed>,
    /// The project number quota errors name.
    pub project_number: String,
    /// Read requests per user per `quota_window`.
    pub read_requests_per_window: usize,
    /// Write requests per user per `quota_window`.
    pub write_requests_per_window: usize,
    /// One minute at Google; shrink it in tests.
    pub quota_window: Duration,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        Self {
            service_accounts: vec![ServiceAccount {
                client_email: TEST_CLIENT_EMAIL.to_string(),
                public_key_pem: TEST_PUBLIC_KEY_PEM.to_string(),
            }],
            token_audiences: vec![
                "https://oauth2.googleapis.com/token".to_string(),
                "https://www.googleapis.com/oauth2/v4/token".to_string(),
            ],
            token_lifetime: Duration::from_secs(3600),
            spreadsheets: vec![SpreadsheetSeed {
                id: DEFAULT_SPREADSHEET_ID.to_string(),
                title: "leadrelay backup".to_string(),
                sheets: vec![SheetSeed::new("Sheet1"), SheetSeed::new("Leads")],
                shared_with: None,
            }],
            project_number: "100000000001".to_string(),
            read_requests_per_window: 60,
            write_requests_per_window: 60,
            quota_window: Duration::from_secs(60),
        }
    }
}

/// A service-account key file (the JSON Google Cloud hands out) for the test account, with
/// `token_uri` pointing at `base_url/token`.
pub fn test_service_account_json(base_url: &str) -> String {
    service_account_json(
        TEST_CLIENT_EMAIL,
        TEST_PRIVATE_KEY_PEM,
        &format!("{base_url}/token"),
    )
}

/// A service-account key file for any account and key.
pub fn service_account_json(client_email: &str, private_key_pem: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "leadrelay-fake",
        "private_key_id": "0000000000000000000000000000000000fake01",
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

#[derive(Debug, Clone)]
struct IssuedToken {
    email: String,
    scopes: Vec<String>,
    expires_at: Instant,
}

#[derive(Debug)]
struct Inner {
    config: GoogleConfig,
    spreadsheets: Mutex<HashMap<String, sheets::Spreadsheet>>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    read_windows: Mutex<HashMap<String, RollingWindow>>,
    write_windows: Mutex<HashMap<String, RollingWindow>>,
    faults: Faults,
    requests: RequestLog,
}

/// The fake's state, shared by the router and the test that inspects it.
#[derive(Debug, Clone)]
pub struct GoogleState {
    inner: Arc<Inner>,
}

impl GoogleState {
    pub fn new(config: GoogleConfig) -> Self {
        let spreadsheets = config
            .spreadsheets
            .iter()
            .map(|seed| (seed.id.clone(), sheets::Spreadsheet::from_seed(seed)))
            .collect();
        Self {
            inner: Arc::new(Inner {
                config,
                spreadsheets: Mutex::new(spreadsheets),
                tokens: Mutex::new(HashMap::new()),
                read_windows: Mutex::new(HashMap::new()),
                write_windows: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                requests: RequestLog::default(),
            }),
        }
    }

    fn spreadsheets(&self) -> MutexGuard<'_, HashMap<String, sheets::Spreadsheet>> {
        self.inner
            .spreadsheets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, IssuedToken>> {
        self.inner.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn requests(&self) -> &RequestLog {
        &self.inner.requests
    }

    /// Makes every access token issued so far expire now.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for t in self.tokens().values_mut() {
            t.expires_at = now;
        }
    }

    /// How many access tokens the token endpoint has issued.
    pub fn issued_tokens(&self) -> usize {
        self.tokens().len()
    }

    /// The tab titles of a spreadsheet, in order.
    pub fn sheet_titles(&self, spreadsheet_id: &str) -> Option<Vec<String>> {
        self.spreadsheets()
            .get(spreadsheet_id)
            .map(|s| s.sheets.iter().map(|t| t.title.clone()).collect())
    }

    /// A tab's rows as the UI shows them (formatted strings), trailing empties trimmed.
    pub fn rows(&self, spreadsheet_id: &str, sheet: &str) -> Option<Vec<Vec<String>>> {
        let all = self.spreadsheets();
        let tab = all
            .get(spreadsheet_id)?
            .sheets
            .iter()
            .find(|t| t.title == sheet)?;
        Some(tab.formatted_rows())
    }

    /// A tab's rows as typed JSON values (numbers, booleans, strings), trailing empties trimmed.
    pub fn values(&self, spreadsheet_id: &str, sheet: &str) -> Option<Vec<Vec<Value>>> {
        let all = self.spreadsheets();
        let tab = all
            .get(spreadsheet_id)?
            .sheets
            .iter()
            .find(|t| t.title == sheet)?;
        Some(tab.unformatted_rows())
    }

    /// A human-readable list of what the fake accepts, for `leadrelay fake google`.
    pub fn credentials_banner(&self, base_url: &str) -> String {
        let mut out = format!("fake Google listening on {base_url}\n");
        out.push_str(&format!(
            "  token URI: {base_url}/token\n  Sheets API base URL: {base_url}/v4\n"
        ));
        for a in &self.inner.config.service_accounts {
            out.push_str(&format!("  service account: {}\n", a.client_email));
        }
        if self
            .inner
            .config
            .service_accounts
            .iter()
            .any(|a| a.client_email == TEST_CLIENT_EMAIL)
        {
            out.push_str(
                "  test service-account key file (throwaway test key, not a credential):\n",
            );
            out.push_str(&test_service_account_json(base_url));
            out.push('\n');
        }
        for (id, s) in self.spreadsheets().iter() {
            let tabs: Vec<&str> = s.sheets.iter().map(|t| t.title.as_str()).collect();
            out.push_str(&format!(
                "  spreadsheet {id} \"{}\" tabs: {}\n",
                s.title,
                tabs.join(", ")
            ));
        }
        out
    }
}

/// Applies injected faults and records every request in the log.
async fn observe(State(state): State<GoogleState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = state.inner.faults.around(next.run(req)).await;
    state
        .inner
        .requests
        .record(&method, &path, response.status().as_u16());
    response
}

/// The fake's routes, to serve on any listener.
pub fn router(state: GoogleState) -> Router {
    Router::new()
        .route("/token", post(token::token))
        .route("/v4/spreadsheets/{*rest}", any(sheets::dispatch))
        .fallback(sheets::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A running fake Google. Derefs to [`GoogleState`] for the accessors.
pub struct FakeGoogle {
    server: FakeServer,
    state: GoogleState,
}

impl FakeGoogle {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(config: GoogleConfig) -> std::io::Result<Self> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    pub async fn start_on(config: GoogleConfig, listen: &str) -> std::io::Result<Self> {
        let state = GoogleState::new(config);
        let server = FakeServer::start(router(state.clone()), listen).await?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The token endpoint (the real one is `https://oauth2.googleapis.com/token`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// The Sheets API base (the real one is `https://sheets.googleapis.com`).
    pub fn sheets_url(&self) -> String {
        self.base_url()
    }

    /// The test service account's key file, with `token_uri` pointing here.
    pub fn service_account_json(&self) -> String {
        test_service_account_json(&self.base_url())
    }

    pub fn state(&self) -> &GoogleState {
        &self.state
    }
}

impl std::ops::Deref for FakeGoogle {
    type Target = GoogleState;
    fn deref(&self) -> &GoogleState {
        &self.state
    }
}

/// Serves a fake Google on `listen` until the future is dropped, after printing what it
/// accepts (for `leadrelay fake google --listen ADDR`).
pub async fn serve(listen: &str, config: GoogleConfig) -> std::io::Result<()> {
    let state = GoogleState::new(config);
    let listener = TcpListener::bind(listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("{}", state.credentials_banner(&base));
    axum::serve(listener, router(state)).await
}
