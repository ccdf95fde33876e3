//! Settings → Import: upload a CSV or XLSX file (with a dry run), watch its progress, download
//! the report of every row, and undo a whole import. The work is the API's (`api::imports`).

use super::i18n::Tr;
use super::settings::{Tab, allow, flash, tabs};
use super::{Chrome, Page, UiError, Viewer, done, render};
use crate::AppState;
use crate::api::imports::{UploadOptions, read_multipart, report_response, request_of, start, undo_refusal};
use crate::api::uuid_path;
use crate::error::ApiError;
use askama::Template;
use axum::Extension;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use voronka_store::imports::ImportInfo;

/// Who may import and undo: admins, marketers and heads of sales.
pub const IMPORTERS: &[&str] = &["admin", "marketer", "head_of_sales"];

pub struct ImportRow {
    pub info: ImportInfo,
    pub when: String,
    pub percent: i64,
    pub undoable: bool,
}

#[derive(Template)]
#[template(path = "ui/settings_import.html")]
struct ImportPage {
    c: Chrome,
    tabs: Vec<Tab>,
    rows: Vec<ImportRow>,
    running: bool,
    fields: &'static [&'static str],
}

async fn page(st: &AppState, v: &Viewer, c: Chrome, status: StatusCode) -> Page {
    let imports = st.store.imports(50).await.map_err(|e| UiError::new(e, v))?;
    let running = imports.iter().any(|i| i.status == "running");
    let rows = imports
        .into_iter()
        .map(|info| ImportRow {
            when: super::fmt::local(info.created_at, v.tz, v.lang),
            percent: match info.total_rows {
                Some(t) if t > 0 => (info.processed * 100 / t).clamp(0, 100),
                _ => 0,
            },
            undoable: undo_refusal(&info).is_none() && info.status != "running",
            info,
        })
        .collect();
    Ok(render(status, &ImportPage { c, tabs: tabs(v, "import"), rows, running, fields: crate::import::TARGETS }))
}

pub async fn show(State(st): State<AppState>, Extension(v): Extension<Viewer>, RawQuery(q): RawQuery) -> Page {
    allow(&v, IMPORTERS)?;
    let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.import")).with_flash(flash(&q).as_deref());
    page(&st, &v, c, StatusCode::OK).await
}

/// The upload (multipart; the CSRF token comes in the header htmx sends).
pub async fn upload(State(st): State<AppState>, Extension(v): Extension<Viewer>, mp: Multipart) -> Page {
    allow(&v, IMPORTERS)?;
    let result = async {
        let (opts, name, bytes) = read_multipart(mp, UploadOptions::default()).await?;
        let req = request_of(&st, opts, name, bytes, v.actor())?;
        start(&st, req).await
    }
    .await;
    match result {
        Ok(_) => Ok(done("/settings/import", "import_started")),
        Err(err) => {
            let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.import")).with_error(&err);
            page(&st, &v, c, err.status()).await
        }
    }
}

pub async fn report(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Page {
    allow(&v, IMPORTERS)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    st.store.import_info(id).await.map_err(|e| UiError::new(e, &v))?.ok_or_else(|| UiError::new(ApiError::NotFound, &v))?;
    report_response(&st, id, v.lang == voronka_domain::Lang::Ru).await.map_err(|e| UiError::new(e, &v))
}

pub async fn undo(State(st): State<AppState>, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Page {
    allow(&v, IMPORTERS)?;
    let id = uuid_path(&id).map_err(|e| UiError::new(e, &v))?;
    let info = st.store.import_info(id).await.map_err(|e| UiError::new(e, &v))?.ok_or_else(|| UiError::new(ApiError::NotFound, &v))?;
    if let Some(err) = undo_refusal(&info) {
        let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.import")).with_error(&err);
        return page(&st, &v, c, err.status()).await;
    }
    if let Err(e) = st.store.undo_import(id, &v.actor()).await {
        let err = crate::api::imports::undo_error(e);
        let c = Chrome::new(&v, "settings", Tr(v.lang).get("settings.import")).with_error(&err);
        return page(&st, &v, c, err.status()).await;
    }
    Ok(done("/settings/import", "import_undone").into_response())
}
