//! Export of a filtered lead list as CSV or XLSX (`GET /api/v1/leads/export.csv|xlsx`, and
//! the inbox's export links). The list's filters apply, and the caller's access: a manager
//! exports own leads only. Cells a spreadsheet would run as a formula are neutralised with a
//! leading `'`; `raw=true` (admins only) leaves them as they are. Every export is written to
//! the audit log with who, the filter and the row count before the file is sent.

use crate::AppState;
use crate::api::leads::parse_list_query;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use tokio::sync::Semaphore;
use voronka_domain::errors::Text;
use voronka_store::users::Access;
use voronka_store::{Cursor, Lead, LeadFilter, LeadSort};

/// Exports running at once in this process.
static EXPORTS: Semaphore = Semaphore::const_new(2);

/// The columns, in order: the header row holds these names (the API's field names).
pub const COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "name",
    "phone",
    "email",
    "messenger",
    "company",
    "position",
    "city",
    "interest",
    "message",
    "budget",
    "status",
    "status_reason",
    "score",
    "temperature",
    "grade",
    "owner",
    "channel",
    "campaign",
    "source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "referrer",
    "landing_page",
    "repeat_count",
    "fields",
];

/// Rows of one sheet at most (Excel's limit less the header).
const XLSX_MAX_ROWS: u64 = 1_048_575;
const PAGE: u32 = 500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }
}

const BAD_RAW: Text = Text::new("must be true or false", "нужно true или false");
const TOO_MANY: Text = Text::new(
    "more than 1,048,575 leads do not fit one XLSX sheet: narrow the filter or export CSV",
    "больше 1 048 575 лидов не помещается на лист XLSX: сузьте фильтр или выгрузите CSV",
);

/// Who asks for an export.
pub struct Exporter {
    pub access: Access,
    pub actor: String,
    /// The user behind the request (names change; the id does not).
    pub user_id: Option<uuid::Uuid>,
    pub admin: bool,
}

/// A cell's text: a string as it is, a number or flag spelled out, an object as JSON.
fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.is_empty() => String::new(),
        other => other.to_string(),
    }
}

/// `'` before a text a spreadsheet would take for a formula (`=`, `+`, `-`, `@`, tab, CR).
pub fn neutralise(s: String) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s }
}

/// The lead's cells in `COLUMNS` order; `owners` names users by id.
fn row(lead: &Lead, raw: bool, owners: &HashMap<String, String>) -> Vec<String> {
    let v = serde_json::to_value(lead).unwrap_or(Value::Null);
    COLUMNS
        .iter()
        .map(|c| {
            let cell = match *c {
                "owner" => match v["owner"]["id"].as_str() {
                    Some(id) => owners.get(id).cloned().unwrap_or_else(|| id.to_string()),
                    None => String::new(),
                },
                u if u.starts_with("utm_") => cell_text(&v["utm"][&u[4..]]),
                other => cell_text(&v[other]),
            };
            if raw { cell } else { neutralise(cell) }
        })
        .collect()
}

/// Splits the export's own parameter (`raw`) from the list's filters; paging is the
/// export's business, so `limit` and `cursor` are dropped.
fn split_query(raw_query: Option<&str>) -> Result<(String, bool), ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.unwrap_or(""))
        .map_err(|_| ApiError::invalid("query", Text::new("not a query string", "не строка запроса")))?;
    let mut raw = false;
    let mut rest = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "raw" => {
                raw = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(ApiError::invalid("raw", BAD_RAW)),
                }
            }
            "limit" | "cursor" => {}
            _ => rest.push((k, v)),
        }
    }
    Ok((serde_urlencoded::to_string(&rest).unwrap_or_default(), raw))
}

/// Reads every lead of the filter, a page at a time.
async fn next_page(st: &AppState, f: &mut LeadFilter, done: &mut bool) -> Result<Vec<Lead>, ApiError> {
    if *done {
        return Ok(Vec::new());
    }
    let page = st.store.leads(f).await?;
    match page.next_cursor.as_deref().and_then(Cursor::decode) {
        Some(c) => f.cursor = Some(c),
        None => *done = true,
    }
    Ok(page.items)
}

/// Builds the export of the query's filters, or of `filter` when the caller has made it
/// (the inbox's tabs); the caller's access applies either way.
pub async fn export(
    st: AppState,
    who: Exporter,
    raw_query: Option<&str>,
    format: Format,
    mut filter: Option<LeadFilter>,
) -> Result<Response, ApiError> {
    let (filter_query, raw) = split_query(raw_query)?;
    if raw && !who.admin {
        return Err(ApiError::Forbidden("admin"));
    }
    let mut f = match filter.take() {
        Some(f) => f,
        None => parse_list_query(Some(&filter_query), st.cfg.region)?,
    };
    f.access = who.access.clone();
    f.limit = PAGE;
    f.cursor = None;
    // Arrival order: scores and priorities change while a long export pages through them,
    // creation times do not, so no lead is written twice or missed.
    f.sort = match f.sort {
        LeadSort::CreatedAsc => LeadSort::CreatedAsc,
        _ => LeadSort::Created,
    };
    // A few exports at a time: each holds its file in memory until it is sent.
    let Ok(_permit) = EXPORTS.try_acquire() else {
        return Err(ApiError::RateLimited { retry_after_secs: 10 });
    };
    let owners: HashMap<String, String> = st.store.users(None).await?.into_iter().map(|u| (u.id.to_string(), u.name)).collect();
    let stamp = st.store.clock().now().format("%Y%m%d-%H%M%S");
    let file = format!("leads-{stamp}.{}", format.name());

    // The whole file is built before anything is sent, so the audit entry names the exact
    // number of rows and a failure is an error answer, not a cut-off file.
    let mut done = false;
    let mut rows = 0u64;
    let body: Vec<u8> = match format {
        Format::Csv => {
            // Every field quoted: a `;` inside a value cannot start a new cell (and a formula)
            // where Excel splits on `;`, as Russian Excel does.
            let mut w = csv::WriterBuilder::new().quote_style(csv::QuoteStyle::Always).from_writer(Vec::with_capacity(1 << 16));
            w.write_record(COLUMNS).map_err(|e| ApiError::Internal(e.into()))?;
            loop {
                let items = next_page(&st, &mut f, &mut done).await?;
                if items.is_empty() {
                    break;
                }
                for l in &items {
                    w.write_record(row(l, raw, &owners)).map_err(|e| ApiError::Internal(e.into()))?;
                    rows += 1;
                }
            }
            // A UTF-8 byte order mark first, so Excel opens Cyrillic correctly.
            let mut out = vec![0xEF, 0xBB, 0xBF];
            out.extend(w.into_inner().map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?);
            out
        }
        Format::Xlsx => {
            let mut all: Vec<Vec<String>> = Vec::new();
            loop {
                let items = next_page(&st, &mut f, &mut done).await?;
                if items.is_empty() {
                    break;
                }
                for l in &items {
                    all.push(row(l, raw, &owners));
                }
                if all.len() as u64 > XLSX_MAX_ROWS {
                    return Err(ApiError::invalid("format", TOO_MANY));
                }
            }
            rows = all.len() as u64;
            tokio::task::spawn_blocking(move || xlsx(&all))
                .await
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("export stopped: {e}")))?
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("XLSX: {e}")))?
        }
    };
    st.store
        .record_audit(
            &who.actor,
            "export",
            &json!({"format": format.name(), "filter": filter_query, "raw": raw, "rows": rows, "user_id": who.user_id}),
        )
        .await?;
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    };
    let mut resp = (StatusCode::OK, Body::from(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// One sheet: the header row in bold, every cell a string (never a formula).
fn xlsx(rows: &[Vec<String>]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format as Style, Workbook};
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("Leads")?;
    let bold = Style::new().set_bold();
    for (c, name) in COLUMNS.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *name, &bold)?;
    }
    for (r, cells) in rows.iter().enumerate() {
        for (c, text) in cells.iter().enumerate() {
            if !text.is_empty() {
                sheet.write_string(r as u32 + 1, c as u16, text)?;
            }
        }
    }
    sheet.set_freeze_panes(1, 0)?;
    book.save_to_buffer()
}

async fn api(st: AppState, headers: HeaderMap, q: Option<String>, format: Format) -> Result<Response, ApiError> {
    let t = st.tokens.authorize(&st.store, &headers, "leads:read").await?;
    let admin = t.allows("admin") || t.user.as_ref().is_some_and(|u| u.role == "admin");
    let who = Exporter { access: t.access(), actor: t.actor(), user_id: t.user.as_ref().map(|u| u.id), admin };
    export(st, who, q.as_deref(), format, None).await
}

/// The filtered list as CSV (UTF-8 with a byte order mark, `,`-separated).
#[utoipa::path(get, path = "/api/v1/leads/export.csv", tag = "leads",
    params(("raw" = Option<bool>, Query, description = "Admins only: no formula neutralisation")),
    responses((status = 200, description = "text/csv"), (status = 403, description = "raw without admin"), (status = 422, description = "A bad filter, named")),
    security(("bearer" = ["leads:read"])))]
pub async fn csv(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api(st, headers, q, Format::Csv).await
}

/// The filtered list as an XLSX workbook.
#[utoipa::path(get, path = "/api/v1/leads/export.xlsx", tag = "leads",
    params(("raw" = Option<bool>, Query, description = "Admins only: no formula neutralisation")),
    responses((status = 200, description = "XLSX"), (status = 403, description = "raw without admin"), (status = 422, description = "A bad filter, named")),
    security(("bearer" = ["leads:read"])))]
pub async fn xlsx_export(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    api(st, headers, q, Format::Xlsx).await
}

/// `GET /api/v1/audit?action=export&limit=N` (admin): the audit log, newest first.
pub async fn audit(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Result<axum::Json<Value>, ApiError> {
    st.tokens.authorize(&st.store, &headers, "admin").await?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let action = pairs.iter().find(|(k, _)| k == "action").map(|(_, v)| v.as_str());
    let limit = match pairs.iter().find(|(k, _)| k == "limit") {
        Some((_, v)) => v.parse::<u32>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ApiError::invalid("limit", Text::new("must be a whole number from 1 to 1000", "нужно целое число от 1 до 1000"))
        })?,
        None => 100,
    };
    let items = st.store.audit_entries(action, limit).await?;
    Ok(axum::Json(json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        for s in ["=1+1", "+7 921", "-2", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(s.to_string()), format!("'{s}"));
        }
        for s in ["Иван", "1+1", "", "a=b"] {
            assert_eq!(neutralise(s.to_string()), s);
        }
    }

    #[test]
    fn the_export_query_keeps_filters_and_reads_raw() {
        assert_eq!(split_query(Some("status=new&raw=true&limit=5&cursor=x")).unwrap(), ("status=new".to_string(), true));
        assert!(split_query(Some("raw=maybe")).is_err());
    }
}
