//! Sheets API v4: the stored spreadsheets and the handlers under `/v4/spreadsheets/`.
//!
//! Paths are parsed by hand because the API puts custom verbs after a colon in the last segment
//! (`{id}:batchUpdate`, `{id}/values/{range}:append`) and ranges arrive percent-encoded.

// Handlers bail out with the finished vendor response; it is built once per request, so its
// size on the error path does not matter.
#![allow(clippy::result_large_err)]

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::a1::{self, Area};
use super::{
    GoogleState, SCOPE_DRIVE, SCOPE_DRIVE_FILE, SCOPE_DRIVE_READONLY, SCOPE_SPREADSHEETS,
    SCOPE_SPREADSHEETS_READONLY, SheetSeed, SpreadsheetSeed,
};

/// Longest text a cell may hold.
pub const MAX_CELL_CHARS: usize = 50_000;

const SERVICE: &str = "sheets.googleapis.com";
const MSG_MISSING_CREDENTIALS: &str = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const MSG_INVALID_CREDENTIALS: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// One cell's content.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Empty,
    Text(String),
    Number(f64),
    Bool(bool),
    /// A formula, kept as entered (`=SUM(A1:A3)`); never computed.
    Formula(String),
}

static EMPTY: Cell = Cell::Empty;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Render {
    Formatted,
    Unformatted,
    Formula,
}

fn format_number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

impl Cell {
    fn is_empty(&self) -> bool {
        matches!(self, Cell::Empty)
    }

    fn render(&self, how: Render) -> Value {
        match (self, how) {
            (Cell::Empty, _) => json!(""),
            (Cell::Text(s), _) | (Cell::Formula(s), _) => json!(s),
            (Cell::Number(n), Render::Formatted) => json!(format_number(*n)),
            (Cell::Number(n), _) => {
                if n.fract() == 0.0 && n.abs() < 9e15 {
                    json!(*n as i64)
                } else {
                    json!(n)
                }
            }
            (Cell::Bool(b), Render::Formatted) => json!(if *b { "TRUE" } else { "FALSE" }),
            (Cell::Bool(b), _) => json!(b),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Sheet {
    pub(super) sheet_id: i64,
    pub(super) title: String,
    row_count: usize,
    column_count: usize,
    /// Rows of cells; rows and columns past the stored ones are empty.
    cells: Vec<Vec<Cell>>,
}

impl Sheet {
    fn new(sheet_id: i64, title: &str, row_count: usize, column_count: usize) -> Self {
        Self {
            sheet_id,
            title: title.to_string(),
            row_count,
            column_count,
            cells: Vec::new(),
        }
    }

    fn get(&self, r: usize, c: usize) -> &Cell {
        self.cells
            .get(r)
            .and_then(|row| row.get(c))
            .unwrap_or(&EMPTY)
    }

    fn set(&mut self, r: usize, c: usize, cell: Cell) {
        if cell.is_empty() && self.get(r, c).is_empty() {
            return;
        }
        if self.cells.len() <= r {
            self.cells.resize_with(r + 1, Vec::new);
        }
        let row = &mut self.cells[r];
        if row.len() <= c {
            row.resize(c + 1, Cell::Empty);
        }
        row[c] = cell;
        self.row_count = self.row_count.max(r + 1);
        self.column_count = self.column_count.max(c + 1);
    }

    fn row_has_data(&self, r: usize, c0: usize, c1: usize) -> bool {
        self.cells.get(r).is_some_and(|row| {
            row.iter()
                .enumerate()
                .any(|(c, v)| c >= c0 && c <= c1 && !v.is_empty())
        })
    }

    fn insert_rows(&mut self, at: usize, n: usize) {
        if at < self.cells.len() {
            let tail = self.cells.split_off(at);
            self.cells.resize_with(at + n, Vec::new);
            self.cells.extend(tail);
        }
        self.row_count += n;
    }

    /// Writes rows of cells from (`r0`, `c0`); `None` leaves a cell unchanged.
    fn write_block(&mut self, r0: usize, c0: usize, rows: &[Vec<Option<Cell>>]) {
        for (i, row) in rows.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if let Some(cell) = cell {
                    self.set(r0 + i, c0 + j, cell.clone());
                }
            }
        }
        if !rows.is_empty() {
            self.row_count = self.row_count.max(r0 + rows.len());
        }
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        if width > 0 {
            self.column_count = self.column_count.max(c0 + width);
        }
    }

    /// Cells of a bounded rectangle, trimmed as the API trims them: trailing empty cells of each
    /// row and trailing empty rows dropped.
    fn render_area(
        &self,
        r0: usize,
        c0: usize,
        r1: usize,
        c1: usize,
        how: Render,
        columns: bool,
    ) -> Vec<Value> {
        let mut grid: Vec<Vec<Option<Value>>> = Vec::new();
        let last_row = r1.min(self.cells.len().saturating_sub(1));
        if !self.cells.is_empty() && r0 <= last_row {
            for r in r0..=last_row {
                grid.push(
                    (c0..=c1)
                        .map(|c| self.get(r, c))
                        .map(|v| (!v.is_empty()).then(|| v.render(how)))
                        .collect(),
                );
            }
        }
        if columns {
            let width = c1 - c0 + 1;
            grid = (0..width)
                .map(|j| {
                    grid.iter()
                        .map(|row| row.get(j).cloned().flatten())
                        .collect()
                })
                .collect();
        }
        let mut out: Vec<Vec<Value>> = grid
            .into_iter()
            .map(|mut row| {
                while row.last().is_some_and(Option::is_none) {
                    row.pop();
                }
                row.into_iter()
                    .map(|v| v.unwrap_or_else(|| json!("")))
                    .collect()
            })
            .collect();
        while out.last().is_some_and(Vec::is_empty) {
            out.pop();
        }
        out.into_iter().map(Value::Array).collect()
    }

    fn all_rows(&self, how: Render) -> Vec<Vec<Value>> {
        let width = self.cells.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Vec::new();
        }
        self.render_area(0, 0, self.cells.len() - 1, width - 1, how, false)
            .into_iter()
            .map(|row| match row {
                Value::Array(items) => items,
                _ => Vec::new(),
            })
            .collect()
    }

    pub(super) fn formatted_rows(&self) -> Vec<Vec<String>> {
        self.all_rows(Render::Formatted)
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect()
    }

    pub(super) fn unformatted_rows(&self) -> Vec<Vec<Value>> {
        self.all_rows(Render::Unformatted)
    }

    fn properties(&self, index: usize) -> Value {
        json!({
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct Spreadsheet {
    id: String,
    pub(super) title: String,
    pub(super) sheets: Vec<Sheet>,
    shared_with: Option<Vec<String>>,
    next_sheet_id: i64,
}

impl Spreadsheet {
    pub(super) fn from_seed(seed: &SpreadsheetSeed) -> Self {
        let sheets = seed
            .sheets
            .iter()
            .enumerate()
            .map(|(i, s)| seeded_sheet(i as i64, s))
            .collect();
        Self {
            id: seed.id.clone(),
            title: seed.title.clone(),
            sheets,
            shared_with: seed.shared_with.clone(),
            next_sheet_id: 1_000_000_001,
        }
    }

    fn find_sheet(&self, name: &str) -> Option<usize> {
        self.sheets
            .iter()
            .position(|s| s.title == name)
            .or_else(|| {
                self.sheets
                    .iter()
                    .position(|s| s.title.to_lowercase() == name.to_lowercase())
            })
    }

    fn json(&self) -> Value {
        json!({
            "spreadsheetId": self.id,
            "properties": {
                "title": self.title,
                "locale": "en_US",
                "autoRecalc": "ON_CHANGE",
                "timeZone": "Etc/GMT",
            },
            "sheets": self.sheets.iter().enumerate().map(|(i, s)| json!({"properties": s.properties(i)})).collect::<Vec<_>>(),
            "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{}/edit", self.id),
        })
    }
}

fn seeded_sheet(sheet_id: i64, seed: &SheetSeed) -> Sheet {
    let mut sheet = Sheet::new(sheet_id, &seed.title, seed.row_count, seed.column_count);
    let rows: Vec<Vec<Option<Cell>>> = seed
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| convert(v, InputOption::Raw).ok().flatten())
                .collect()
        })
        .collect();
    sheet.write_block(0, 0, &rows);
    sheet
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Google's error body: `{"error": {"code", "message", "status", "details"?}}`.
fn gerror(
    code: StatusCode,
    message: impl Into<String>,
    status: &str,
    details: Option<Value>,
) -> Response {
    let mut error = json!({"code": code.as_u16(), "message": message.into(), "status": status});
    if let (Some(d), Some(obj)) = (details, error.as_object_mut()) {
        obj.insert("details".into(), d);
    }
    (code, Json(json!({ "error": error }))).into_response()
}

fn invalid_argument(message: impl Into<String>) -> Response {
    gerror(StatusCode::BAD_REQUEST, message, "INVALID_ARGUMENT", None)
}

/// `Invalid value at 'field' (type.googleapis.com/google.apps.sheets.v4.Enum), "VALUE"`.
fn invalid_enum(field: &str, enum_type: &str, value: &str) -> Response {
    let description = format!(
        "Invalid value at '{field}' (type.googleapis.com/google.apps.sheets.v4.{enum_type}), \"{value}\""
    );
    gerror(
        StatusCode::BAD_REQUEST,
        format!(
            "Invalid value at '{field}' (type.googleapis.com/google.apps.sheets.v4.{enum_type}), \"{value}\""
        ),
        "INVALID_ARGUMENT",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }])),
    )
}

fn unauthenticated(message: &str, reason: &str, method: &str) -> Response {
    let mut resp = gerror(
        StatusCode::UNAUTHORIZED,
        message,
        "UNAUTHENTICATED",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"service": SERVICE, "method": method},
        }])),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    resp
}

fn unparseable_range(text: &str) -> Response {
    invalid_argument(format!("Unable to parse range: {text}"))
}

pub async fn not_found() -> Response {
    gerror(
        StatusCode::NOT_FOUND,
        "Method not found.",
        "NOT_FOUND",
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    GetSpreadsheet,
    BatchUpdate,
    GetValues,
    UpdateValues,
    AppendValues,
    ClearValues,
}

impl Op {
    fn is_write(self) -> bool {
        !matches!(self, Op::GetSpreadsheet | Op::GetValues)
    }

    fn method(self) -> Method {
        match self {
            Op::GetSpreadsheet | Op::GetValues => Method::GET,
            Op::UpdateValues => Method::PUT,
            Op::BatchUpdate | Op::AppendValues | Op::ClearValues => Method::POST,
        }
    }

    fn rpc_name(self) -> &'static str {
        match self {
            Op::GetSpreadsheet => "google.apps.sheets.v4.SpreadsheetsService.GetSpreadsheet",
            Op::BatchUpdate => "google.apps.sheets.v4.SpreadsheetsService.BatchUpdateSpreadsheet",
            Op::GetValues => "google.apps.sheets.v4.SpreadsheetsService.GetValues",
            Op::UpdateValues => "google.apps.sheets.v4.SpreadsheetsService.UpdateValues",
            Op::AppendValues => "google.apps.sheets.v4.SpreadsheetsService.AppendValues",
            Op::ClearValues => "google.apps.sheets.v4.SpreadsheetsService.ClearValues",
        }
    }
}

/// Percent-decodes a path piece; `None` if it is not valid UTF-8 afterwards.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Splits the path after `/v4/spreadsheets/` into (operation, spreadsheet id, range).
fn route(rest: &str) -> Option<(Op, String, Option<String>)> {
    if let Some((id, range)) = rest.split_once("/values/") {
        let id = percent_decode(id)?;
        if let Some(r) = range.strip_suffix(":append") {
            return Some((Op::AppendValues, id, Some(percent_decode(r)?)));
        }
        if let Some(r) = range.strip_suffix(":clear") {
            return Some((Op::ClearValues, id, Some(percent_decode(r)?)));
        }
        return Some((Op::GetValues, id, Some(percent_decode(range)?)));
    }
    if let Some(id) = rest.strip_suffix(":batchUpdate") {
        return Some((Op::BatchUpdate, percent_decode(id)?, None));
    }
    if rest.is_empty() || rest.contains('/') || rest.contains(':') {
        return None;
    }
    Some((Op::GetSpreadsheet, percent_decode(rest)?, None))
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Checks the bearer token and its scopes; returns the account email.
fn authorize(state: &GoogleState, headers: &HeaderMap, op: Op) -> Result<String, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(unauthenticated(
            MSG_MISSING_CREDENTIALS,
            "CREDENTIALS_MISSING",
            op.rpc_name(),
        ));
    };
    let issued = state.tokens().get(token).cloned();
    let Some(issued) = issued else {
        return Err(unauthenticated(
            MSG_INVALID_CREDENTIALS,
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            op.rpc_name(),
        ));
    };
    if Instant::now() >= issued.expires_at {
        return Err(unauthenticated(
            MSG_INVALID_CREDENTIALS,
            "ACCESS_TOKEN_EXPIRED",
            op.rpc_name(),
        ));
    }
    let write_scopes = [SCOPE_SPREADSHEETS, SCOPE_DRIVE, SCOPE_DRIVE_FILE];
    let read_scopes = [SCOPE_SPREADSHEETS_READONLY, SCOPE_DRIVE_READONLY];
    let allowed = issued.scopes.iter().any(|s| {
        write_scopes.contains(&s.as_str()) || (!op.is_write() && read_scopes.contains(&s.as_str()))
    });
    if !allowed {
        return Err(gerror(
            StatusCode::FORBIDDEN,
            "Request had insufficient authentication scopes.",
            "PERMISSION_DENIED",
            Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "domain": "googleapis.com",
                "metadata": {"service": SERVICE, "method": op.rpc_name()},
            }])),
        ));
    }
    Ok(issued.email)
}

/// Takes a slot of the account's per-minute read or write quota.
fn check_quota(state: &GoogleState, email: &str, write: bool) -> Result<(), Response> {
    let config = &state.inner.config;
    let (windows, limit, metric, limit_name, quota_limit, quota_metric) = if write {
        (
            &state.inner.write_windows,
            config.write_requests_per_window,
            "Write requests",
            "Write requests per minute per user",
            "WriteRequestsPerMinutePerUser",
            "sheets.googleapis.com/write_requests",
        )
    } else {
        (
            &state.inner.read_windows,
            config.read_requests_per_window,
            "Read requests",
            "Read requests per minute per user",
            "ReadRequestsPerMinutePerUser",
            "sheets.googleapis.com/read_requests",
        )
    };
    let mut map = windows.lock().unwrap_or_else(|p| p.into_inner());
    let window = map
        .entry(email.to_string())
        .or_insert_with(|| crate::common::RollingWindow::new(limit.max(1), config.quota_window));
    if window.hit().is_ok() {
        return Ok(());
    }
    let project = &config.project_number;
    Err(gerror(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "Quota exceeded for quota metric '{metric}' and limit '{limit_name}' of service '{SERVICE}' for consumer 'project_number:{project}'."
        ),
        "RESOURCE_EXHAUSTED",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "quota_limit": quota_limit,
                    "quota_metric": quota_metric,
                    "quota_limit_value": limit.to_string(),
                    "quota_location": "global",
                    "quota_unit": "1/min/{project}/{user}",
                    "consumer": format!("projects/{project}"),
                    "service": SERVICE,
                },
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Request a higher quota limit.",
                    "url": "https://cloud.google.com/docs/quotas/help/request_increase",
                }],
            }
        ])),
    ))
}

/// `ANY /v4/spreadsheets/{*rest}`.
pub async fn dispatch(
    State(state): State<GoogleState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri.path().strip_prefix("/v4/spreadsheets/").unwrap_or("");
    let Some((op, id, range)) = route(rest) else {
        return not_found().await;
    };
    // `values/{range}` is read with GET and written with PUT.
    let op = if op == Op::GetValues && method == Method::PUT {
        Op::UpdateValues
    } else {
        op
    };
    if method != op.method() {
        return not_found().await;
    }
    let email = match authorize(&state, &headers, op) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    if let Err(resp) = check_quota(&state, &email, op.is_write()) {
        return resp;
    }
    let params = query_params(&uri);
    let mut all = state.spreadsheets();
    let Some(spreadsheet) = all.get_mut(&id) else {
        return gerror(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            "NOT_FOUND",
            None,
        );
    };
    if let Some(shared) = &spreadsheet.shared_with
        && !shared.iter().any(|e| e == &email)
    {
        return gerror(
            StatusCode::FORBIDDEN,
            "The caller does not have permission",
            "PERMISSION_DENIED",
            None,
        );
    }
    let range = range.unwrap_or_default();
    let result = match op {
        Op::GetSpreadsheet => Ok(Json(spreadsheet.json()).into_response()),
        Op::BatchUpdate => batch_update(spreadsheet, &body),
        Op::GetValues => get_values(spreadsheet, &range, &params),
        Op::UpdateValues => update_values(spreadsheet, &range, &params, &body),
        Op::AppendValues => append_values(spreadsheet, &range, &params, &body),
        Op::ClearValues => clear_values(spreadsheet, &range),
    };
    result.unwrap_or_else(|e| e)
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Finds the sheet and area a range names.
fn resolve(spreadsheet: &Spreadsheet, text: &str) -> Result<(usize, Area), Response> {
    let parts = a1::split(text).ok_or_else(|| unparseable_range(text))?;
    match parts.sheet {
        Some(name) => {
            let index = spreadsheet
                .find_sheet(&name)
                .ok_or_else(|| unparseable_range(text))?;
            let area = a1::parse_area(&parts.area).ok_or_else(|| unparseable_range(text))?;
            Ok((index, area))
        }
        None => {
            if let Some(index) = spreadsheet.find_sheet(&parts.area) {
                return Ok((index, Area::WHOLE));
            }
            let area = a1::parse_area(&parts.area)
                .filter(|_| !parts.area.is_empty())
                .ok_or_else(|| unparseable_range(text))?;
            if spreadsheet.sheets.is_empty() {
                return Err(unparseable_range(text));
            }
            Ok((0, area))
        }
    }
}

/// Ranges must lie inside the grid.
fn check_grid(sheet: &Sheet, area: &Area) -> Result<(), Response> {
    let rows_ok = area.r0 < sheet.row_count && area.r1.is_none_or(|r| r < sheet.row_count);
    let cols_ok = area.c0 < sheet.column_count && area.c1.is_none_or(|c| c < sheet.column_count);
    if rows_ok && cols_ok {
        return Ok(());
    }
    Err(invalid_argument(format!(
        "Range ({}!{}) exceeds grid limits. Max rows: {}, max columns: {}",
        a1::always_quoted(&sheet.title),
        a1::format_area(area),
        sheet.row_count,
        sheet.column_count
    )))
}

/// The area with open ends closed at the grid's edge.
fn bounded(sheet: &Sheet, area: &Area) -> (usize, usize, usize, usize) {
    let r1 = area.r1.unwrap_or(sheet.row_count.saturating_sub(1));
    let c1 = area.c1.unwrap_or(sheet.column_count.saturating_sub(1));
    (area.r0, area.c0, r1, c1)
}

fn render_option(params: &[(String, String)], name: &str) -> Result<Render, Response> {
    match param(params, name) {
        None | Some("FORMATTED_VALUE") => Ok(Render::Formatted),
        Some("UNFORMATTED_VALUE") => Ok(Render::Unformatted),
        Some("FORMULA") => Ok(Render::Formula),
        Some(other) => Err(invalid_enum(
            if name == "valueRenderOption" {
                "value_render_option"
            } else {
                "response_value_render_option"
            },
            "ValueRenderOption",
            other,
        )),
    }
}

fn major_dimension(value: Option<&str>, field: &str) -> Result<bool, Response> {
    match value {
        None | Some("ROWS") | Some("DIMENSION_UNSPECIFIED") => Ok(false),
        Some("COLUMNS") => Ok(true),
        Some(other) => Err(invalid_enum(field, "Dimension", other)),
    }
}

fn get_values(
    spreadsheet: &Spreadsheet,
    range: &str,
    params: &[(String, String)],
) -> Result<Response, Response> {
    let columns = major_dimension(param(params, "majorDimension"), "major_dimension")?;
    let how = render_option(params, "valueRenderOption")?;
    let (index, area) = resolve(spreadsheet, range)?;
    let sheet = &spreadsheet.sheets[index];
    check_grid(sheet, &area)?;
    let (r0, c0, r1, c1) = bounded(sheet, &area);
    let values = sheet.render_area(r0, c0, r1, c1, how, columns);
    let mut body = Map::new();
    body.insert(
        "range".into(),
        json!(a1::format_range(&sheet.title, r0, c0, r1, c1)),
    );
    body.insert(
        "majorDimension".into(),
        json!(if columns { "COLUMNS" } else { "ROWS" }),
    );
    if !values.is_empty() {
        body.insert("values".into(), Value::Array(values));
    }
    Ok(Json(Value::Object(body)).into_response())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum InputOption {
    Raw,
    UserEntered,
}

fn input_option(params: &[(String, String)]) -> Result<InputOption, Response> {
    match param(params, "valueInputOption") {
        None | Some("") => Err(invalid_argument(
            "'valueInputOption' is required but not specified",
        )),
        Some("RAW") => Ok(InputOption::Raw),
        Some("USER_ENTERED") => Ok(InputOption::UserEntered),
        Some(other) => Err(invalid_enum(
            "value_input_option",
            "ValueInputOption",
            other,
        )),
    }
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// What a typed-in string becomes with `USER_ENTERED`.
fn user_entered(s: &str) -> Cell {
    if s.is_empty() {
        return Cell::Empty;
    }
    if let Some(text) = s.strip_prefix('\'') {
        return Cell::Text(text.to_string());
    }
    if s.starts_with('=') {
        return Cell::Formula(s.to_string());
    }
    let t = s.trim();
    if t.eq_ignore_ascii_case("true") {
        return Cell::Bool(true);
    }
    if t.eq_ignore_ascii_case("false") {
        return Cell::Bool(false);
    }
    if looks_numeric(t)
        && let Ok(n) = t.parse::<f64>()
    {
        return Cell::Number(n);
    }
    Cell::Text(s.to_string())
}

/// One input value: `Ok(None)` for null (leave the cell as it is).
fn convert(value: &Value, option: InputOption) -> Result<Option<Cell>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(Cell::Bool(*b))),
        Value::Number(n) => Ok(Some(n.as_f64().map(Cell::Number).unwrap_or(Cell::Empty))),
        Value::String(s) => {
            if s.chars().count() > MAX_CELL_CHARS {
                return Err("too_long");
            }
            Ok(Some(match option {
                InputOption::Raw if s.is_empty() => Cell::Empty,
                InputOption::Raw => Cell::Text(s.clone()),
                InputOption::UserEntered => user_entered(s),
            }))
        }
        Value::Array(_) => Err("list_value"),
        Value::Object(_) => Err("struct_value"),
    }
}

/// A parsed `ValueRange` request body, as rows of cells.
struct ValueRangeIn {
    rows: Vec<Vec<Option<Cell>>>,
}

fn parse_value_range(body: &[u8], option: InputOption) -> Result<ValueRangeIn, Response> {
    let value: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|_| invalid_argument("Invalid JSON payload received. Unexpected token."))?
    };
    let Value::Object(obj) = value else {
        return Err(invalid_argument(
            "Invalid JSON payload received. Expected an object.",
        ));
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "range" | "majorDimension" | "values") {
            return Err(invalid_argument(format!(
                "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
            )));
        }
    }
    let columns = major_dimension(
        obj.get("majorDimension").and_then(Value::as_str),
        "data.major_dimension",
    )?;
    let raw_rows: Vec<Value> = match obj.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows.clone(),
        Some(other) => {
            return Err(invalid_argument(format!(
                "Invalid value at 'data.values' (type.googleapis.com/google.protobuf.ListValue), {other}"
            )));
        }
    };
    let mut rows = Vec::with_capacity(raw_rows.len());
    for (i, raw) in raw_rows.iter().enumerate() {
        let Value::Array(items) = raw else {
            return Err(invalid_argument(format!(
                "Invalid value at 'data.values[{i}]' (type.googleapis.com/google.protobuf.ListValue), {raw}"
            )));
        };
        let mut row = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            match convert(item, option) {
                Ok(cell) => row.push(cell),
                Err("too_long") => {
                    return Err(invalid_argument(format!(
                        "Your input contains more than the maximum of {MAX_CELL_CHARS} characters in a single cell."
                    )));
                }
                Err(kind) => {
                    return Err(invalid_argument(format!(
                        "Invalid values[{i}][{j}]: {kind} {item}"
                    )));
                }
            }
        }
        rows.push(row);
    }
    if columns {
        let height = rows.iter().map(Vec::len).max().unwrap_or(0);
        rows = (0..height)
            .map(|r| {
                rows.iter()
                    .map(|col| col.get(r).cloned().flatten())
                    .collect()
            })
            .collect();
    }
    Ok(ValueRangeIn { rows })
}

fn include_values(params: &[(String, String)]) -> bool {
    param(params, "includeValuesInResponse") == Some("true")
}

/// The `UpdateValuesResponse` for a block written at (`r0`, `c0`).
fn update_response(
    spreadsheet_id: &str,
    sheet: &Sheet,
    r0: usize,
    c0: usize,
    rows: &[Vec<Option<Cell>>],
    updated_data: Option<Render>,
) -> Value {
    let height = rows.len();
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut body = Map::new();
    body.insert("spreadsheetId".into(), json!(spreadsheet_id));
    if height == 0 || width == 0 {
        body.insert(
            "updatedRange".into(),
            json!(a1::format_range(&sheet.title, r0, c0, r0, c0)),
        );
        return Value::Object(body);
    }
    let (r1, c1) = (r0 + height - 1, c0 + width - 1);
    let range = a1::format_range(&sheet.title, r0, c0, r1, c1);
    let cells: usize = rows
        .iter()
        .map(|r| r.iter().filter(|c| c.is_some()).count())
        .sum();
    body.insert("updatedRange".into(), json!(range));
    body.insert("updatedRows".into(), json!(height));
    body.insert("updatedColumns".into(), json!(width));
    body.insert("updatedCells".into(), json!(cells));
    if let Some(how) = updated_data {
        let mut data = Map::new();
        data.insert("range".into(), json!(range));
        data.insert("majorDimension".into(), json!("ROWS"));
        let values = sheet.render_area(r0, c0, r1, c1, how, false);
        if !values.is_empty() {
            data.insert("values".into(), Value::Array(values));
        }
        body.insert("updatedData".into(), Value::Object(data));
    }
    Value::Object(body)
}

fn update_values(
    spreadsheet: &mut Spreadsheet,
    range: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<Response, Response> {
    let option = input_option(params)?;
    let how = render_option(params, "responseValueRenderOption")?;
    let (index, area) = resolve(spreadsheet, range)?;
    check_grid(&spreadsheet.sheets[index], &area)?;
    let input = parse_value_range(body, option)?;
    let rows = input.rows;
    // A single cell is an anchor: the data may extend past it (Google's behaviour).
    let single_cell = area.r1 == Some(area.r0) && area.c1 == Some(area.c0);
    let limit = if single_cell {
        Area {
            r1: None,
            c1: None,
            ..area
        }
    } else {
        area
    };
    if let Some(r1) = limit.r1
        && rows.len() > r1 - area.r0 + 1
    {
        return Err(invalid_argument(format!(
            "Requested writing within range [{range}], but tried writing to row [{}]",
            r1 + 2
        )));
    }
    if let Some(c1) = limit.c1
        && rows.iter().any(|r| r.len() > c1 - area.c0 + 1)
    {
        return Err(invalid_argument(format!(
            "Requested writing within range [{range}], but tried writing to column [{}]",
            a1::column_letters(c1 + 1)
        )));
    }
    let sheet = &mut spreadsheet.sheets[index];
    sheet.write_block(area.r0, area.c0, &rows);
    let response = update_response(
        &spreadsheet.id,
        &spreadsheet.sheets[index],
        area.r0,
        area.c0,
        &rows,
        include_values(params).then_some(how),
    );
    Ok(Json(response).into_response())
}

fn append_values(
    spreadsheet: &mut Spreadsheet,
    range: &str,
    params: &[(String, String)],
    body: &[u8],
) -> Result<Response, Response> {
    let option = input_option(params)?;
    let insert_rows = match param(params, "insertDataOption") {
        None | Some("OVERWRITE") => false,
        Some("INSERT_ROWS") => true,
        Some(other) => {
            return Err(invalid_enum(
                "insert_data_option",
                "InsertDataOption",
                other,
            ));
        }
    };
    let how = render_option(params, "responseValueRenderOption")?;
    let (index, area) = resolve(spreadsheet, range)?;
    check_grid(&spreadsheet.sheets[index], &area)?;
    // A single cell anchors the search: the table may extend below and beside it.
    let area = if area.r1 == Some(area.r0) && area.c1 == Some(area.c0) {
        Area {
            r1: None,
            c1: None,
            ..area
        }
    } else {
        area
    };
    let input = parse_value_range(body, option)?;
    let rows = input.rows;
    let sheet = &mut spreadsheet.sheets[index];

    // The table: the first run of non-empty rows at or below the range's first row.
    let (_, c0, r1, c1) = bounded(sheet, &area);
    let last_stored = sheet.cells.len();
    let mut table: Option<(usize, usize)> = None;
    let mut r = area.r0;
    while r <= r1 && r < last_stored {
        if sheet.row_has_data(r, c0, c1) {
            let start = r;
            let mut end = r;
            while end < r1 && end + 1 < last_stored && sheet.row_has_data(end + 1, c0, c1) {
                end += 1;
            }
            table = Some((start, end));
            break;
        }
        r += 1;
    }
    let mut body = Map::new();
    body.insert("spreadsheetId".into(), json!(spreadsheet.id));
    let (write_row, write_col) = match table {
        Some((start, end)) => {
            let mut tc0 = usize::MAX;
            let mut tc1 = 0;
            for row in start..=end {
                for (c, cell) in sheet.cells[row].iter().enumerate() {
                    if c >= c0 && c <= c1 && !cell.is_empty() {
                        tc0 = tc0.min(c);
                        tc1 = tc1.max(c);
                    }
                }
            }
            body.insert(
                "tableRange".into(),
                json!(a1::format_range(&sheet.title, start, tc0, end, tc1)),
            );
            (end + 1, tc0)
        }
        None => (area.r0, area.c0),
    };
    if insert_rows && !rows.is_empty() {
        sheet.insert_rows(write_row, rows.len());
    }
    sheet.write_block(write_row, write_col, &rows);
    let updates = update_response(
        &spreadsheet.id,
        sheet,
        write_row,
        write_col,
        &rows,
        include_values(params).then_some(how),
    );
    body.insert("updates".into(), updates);
    Ok(Json(Value::Object(body)).into_response())
}

fn clear_values(spreadsheet: &mut Spreadsheet, range: &str) -> Result<Response, Response> {
    let (index, area) = resolve(spreadsheet, range)?;
    check_grid(&spreadsheet.sheets[index], &area)?;
    let sheet = &mut spreadsheet.sheets[index];
    let (r0, c0, r1, c1) = bounded(sheet, &area);
    for r in r0..=r1.min(sheet.cells.len().saturating_sub(1)) {
        if let Some(row) = sheet.cells.get_mut(r) {
            for c in c0..=c1.min(row.len().saturating_sub(1)) {
                if let Some(cell) = row.get_mut(c) {
                    *cell = Cell::Empty;
                }
            }
        }
    }
    Ok(Json(json!({
        "spreadsheetId": spreadsheet.id,
        "clearedRange": a1::format_range(&sheet.title, r0, c0, r1, c1),
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// batchUpdate
// ---------------------------------------------------------------------------------------------

/// Request kinds of `spreadsheets.batchUpdate` the fake knows by name but does not implement.
const OTHER_REQUEST_KINDS: &[&str] = &[
    "updateSpreadsheetProperties",
    "updateSheetProperties",
    "updateDimensionProperties",
    "updateNamedRange",
    "repeatCell",
    "addNamedRange",
    "deleteNamedRange",
    "autoFill",
    "cutPaste",
    "copyPaste",
    "mergeCells",
    "unmergeCells",
    "updateBorders",
    "updateCells",
    "addFilterView",
    "appendCells",
    "clearBasicFilter",
    "deleteDimension",
    "deleteEmbeddedObject",
    "deleteFilterView",
    "duplicateFilterView",
    "duplicateSheet",
    "findReplace",
    "insertDimension",
    "insertRange",
    "moveDimension",
    "updateEmbeddedObjectPosition",
    "pasteData",
    "textToColumns",
    "updateFilterView",
    "deleteRange",
    "appendDimension",
    "addConditionalFormatRule",
    "updateConditionalFormatRule",
    "deleteConditionalFormatRule",
    "sortRange",
    "setDataValidation",
    "setBasicFilter",
    "addProtectedRange",
    "updateProtectedRange",
    "deleteProtectedRange",
    "autoResizeDimensions",
    "addChart",
    "updateChartSpec",
    "updateBanding",
    "addBanding",
    "deleteBanding",
    "createDeveloperMetadata",
    "updateDeveloperMetadata",
    "deleteDeveloperMetadata",
    "randomizeRange",
    "addDimensionGroup",
    "deleteDimensionGroup",
    "updateDimensionGroup",
    "trimWhitespace",
    "deleteDuplicates",
    "updateEmbeddedObjectBorder",
    "addSlicer",
    "updateSlicerSpec",
    "addDataSource",
    "updateDataSource",
    "deleteDataSource",
    "refreshDataSource",
    "cancelDataSourceRefresh",
    "addTable",
    "updateTable",
    "deleteTable",
];

fn batch_update(spreadsheet: &mut Spreadsheet, body: &[u8]) -> Result<Response, Response> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| invalid_argument("Invalid JSON payload received. Unexpected token."))?;
    let Value::Object(obj) = value else {
        return Err(invalid_argument(
            "Invalid JSON payload received. Expected an object.",
        ));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "requests"
                | "includeSpreadsheetInResponse"
                | "responseRanges"
                | "responseIncludeGridData"
        ) {
            return Err(invalid_argument(format!(
                "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
            )));
        }
    }
    let requests = match obj.get("requests") {
        Some(Value::Array(r)) if !r.is_empty() => r.clone(),
        _ => return Err(invalid_argument("Must specify at least one request.")),
    };
    // All or nothing: work on a copy.
    let mut draft = spreadsheet.clone();
    let mut replies = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let Some(req) = request.as_object() else {
            return Err(invalid_argument(format!(
                "Invalid requests[{i}]: must be an object."
            )));
        };
        if req.len() != 1 {
            return Err(invalid_argument(format!(
                "Invalid requests[{i}]: exactly one kind of request must be set."
            )));
        }
        let Some((kind, args)) = req.iter().next() else {
            return Err(invalid_argument(format!(
                "Invalid requests[{i}]: no request set."
            )));
        };
        let reply = match kind.as_str() {
            "addSheet" => add_sheet(&mut draft, i, args)?,
            "deleteSheet" => delete_sheet(&mut draft, i, args)?,
            other if OTHER_REQUEST_KINDS.contains(&other) => {
                return Err(gerror(
                    StatusCode::NOT_IMPLEMENTED,
                    format!("The fake Sheets API does not implement requests[{i}].{other}."),
                    "UNIMPLEMENTED",
                    None,
                ));
            }
            other => {
                return Err(invalid_argument(format!(
                    "Invalid JSON payload received. Unknown name \"{other}\" at 'requests[{i}]': Cannot find field."
                )));
            }
        };
        replies.push(reply);
    }
    *spreadsheet = draft;
    let mut body = json!({"spreadsheetId": spreadsheet.id, "replies": replies});
    if obj.get("includeSpreadsheetInResponse") == Some(&json!(true))
        && let Some(b) = body.as_object_mut()
    {
        b.insert("updatedSpreadsheet".into(), spreadsheet.json());
    }
    Ok(Json(body).into_response())
}

fn add_sheet(spreadsheet: &mut Spreadsheet, i: usize, args: &Value) -> Result<Value, Response> {
    let props = args.get("properties").cloned().unwrap_or_else(|| json!({}));
    let title = match props.get("title") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            let mut n = spreadsheet.sheets.len() + 1;
            while spreadsheet.find_sheet(&format!("Sheet{n}")).is_some() {
                n += 1;
            }
            format!("Sheet{n}")
        }
        Some(other) => {
            return Err(invalid_argument(format!(
                "Invalid value at 'requests[{i}].add_sheet.properties.title' (TYPE_STRING), {other}"
            )));
        }
    };
    if spreadsheet
        .sheets
        .iter()
        .any(|s| s.title.to_lowercase() == title.to_lowercase())
    {
        return Err(invalid_argument(format!(
            "Invalid requests[{i}].addSheet: A sheet with the name \"{title}\" already exists. Please enter another name."
        )));
    }
    let sheet_id = match props.get("sheetId").and_then(Value::as_i64) {
        Some(id) => {
            if spreadsheet.sheets.iter().any(|s| s.sheet_id == id) {
                return Err(invalid_argument(format!(
                    "Invalid requests[{i}].addSheet: Sheet with id {id} already exists."
                )));
            }
            id
        }
        None => {
            let id = spreadsheet.next_sheet_id;
            spreadsheet.next_sheet_id += 1;
            id
        }
    };
    let grid = props.get("gridProperties");
    let dim = |name: &str, default: usize| {
        grid.and_then(|g| g.get(name))
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .filter(|n| *n > 0)
            .unwrap_or(default)
    };
    let sheet = Sheet::new(
        sheet_id,
        &title,
        dim("rowCount", 1000),
        dim("columnCount", 26),
    );
    let index = props
        .get("index")
        .and_then(Value::as_u64)
        .map(|n| (n as usize).min(spreadsheet.sheets.len()))
        .unwrap_or(spreadsheet.sheets.len());
    spreadsheet.sheets.insert(index, sheet);
    Ok(json!({"addSheet": {"properties": spreadsheet.sheets[index].properties(index)}}))
}

fn delete_sheet(spreadsheet: &mut Spreadsheet, i: usize, args: &Value) -> Result<Value, Response> {
    let id = args.get("sheetId").and_then(Value::as_i64).unwrap_or(0);
    let Some(pos) = spreadsheet.sheets.iter().position(|s| s.sheet_id == id) else {
        return Err(invalid_argument(format!(
            "Invalid requests[{i}].deleteSheet: No sheet with id: {id}"
        )));
    };
    if spreadsheet.sheets.len() == 1 {
        return Err(invalid_argument(format!(
            "Invalid requests[{i}].deleteSheet: You can't remove all the sheets in a document."
        )));
    }
    spreadsheet.sheets.remove(pos);
    Ok(json!({}))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn routes_paths() {
        assert_eq!(route("abc"), Some((Op::GetSpreadsheet, "abc".into(), None)));
        assert_eq!(
            route("abc:batchUpdate"),
            Some((Op::BatchUpdate, "abc".into(), None))
        );
        assert_eq!(
            route("abc/values/Sheet1!A1:C3"),
            Some((Op::GetValues, "abc".into(), Some("Sheet1!A1:C3".into())))
        );
        assert_eq!(
            route("abc/values/%27Tab%20name%27!A%3AZ:append"),
            Some((
                Op::AppendValues,
                "abc".into(),
                Some("'Tab name'!A:Z".into())
            ))
        );
        assert_eq!(
            route("abc/values/Sheet1:clear"),
            Some((Op::ClearValues, "abc".into(), Some("Sheet1".into())))
        );
        assert_eq!(route("abc:copyTo"), None);
        assert_eq!(route("abc/developerMetadata"), None);
        assert_eq!(percent_decode("%E2%82%AC%2"), Some("€%2".into()));
    }

    #[test]
    fn user_entered_types() {
        assert_eq!(user_entered("42"), Cell::Number(42.0));
        assert_eq!(user_entered("-1.5e3"), Cell::Number(-1500.0));
        assert_eq!(user_entered("+14155550100"), Cell::Number(14155550100.0));
        assert_eq!(
            user_entered("'+14155550100"),
            Cell::Text("+14155550100".into())
        );
        assert_eq!(user_entered("TRUE"), Cell::Bool(true));
        assert_eq!(
            user_entered("=SUM(A1:A2)"),
            Cell::Formula("=SUM(A1:A2)".into())
        );
        assert_eq!(
            user_entered("ada@example.com"),
            Cell::Text("ada@example.com".into())
        );
        assert_eq!(user_entered("inf"), Cell::Text("inf".into()));
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.25), "0.25");
    }
}
