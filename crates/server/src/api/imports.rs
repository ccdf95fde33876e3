//! Imports over HTTP: `POST /api/v1/imports` takes a CSV or XLSX file (multipart `file`, or
//! the raw body with `?file_name=`), checks it and answers 202 with the run, which the server
//! then works through in the background (and resumes after a restart). Progress, the
//! downloadable report and the undo of a whole import sit beside it.

use crate::AppState;
use crate::error::ApiError;
use crate::import::{self, ImportError, ImportRequest};
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;
use voronka_domain::errors::Text;
use voronka_store::imports::ImportInfo;
use voronka_store::users::Access;

/// This process as an import worker.
pub fn worker_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("server:{}:{}", std::process::id(), uuid::Uuid::now_v7()))
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> ApiError {
        match e {
            ImportError::File(r) => ApiError::Fields { code: "invalid_file", fields: vec![("file".into(), r.en, r.ru)] },
            ImportError::Invalid { field, text, detail } => {
                let (en, ru) = match detail {
                    Some(d) => (format!("{} ({d})", text.en), format!("{} ({d})", text.ru)),
                    None => (text.en.to_string(), text.ru.to_string()),
                };
                ApiError::Fields { code: "invalid_fields", fields: vec![(field.to_string(), en, ru)] }
            }
            ImportError::Busy(id) => ApiError::Conflict {
                code: "import_running",
                en: format!("import {id} of this file is running"),
                ru: format!("импорт {id} этого файла уже идёт"),
            },
            ImportError::Store(s) => s.into(),
            ImportError::Intake(i) => i.into(),
        }
    }
}

/// Options of an upload, from the query string or the multipart form's text fields.
#[derive(Debug, Default, Deserialize)]
pub struct UploadOptions {
    pub source: Option<String>,
    pub file_name: Option<String>,
    pub campaign: Option<String>,
    pub dry_run: Option<String>,
    /// JSON object: column → lead field.
    pub mapping: Option<String>,
}

const BAD_MAPPING: Text = Text::new("must be a JSON object of column → lead field", "должно быть JSON-объектом «столбец → поле лида»");
const NO_FILE: Text = Text::new("no file was sent", "файл не передан");
const BAD_FLAG: Text = Text::new("must be true or false", "должно быть true или false");

fn flag(v: Option<&str>) -> Result<bool, ApiError> {
    match v.map(str::trim) {
        None | Some("") | Some("false") | Some("0") | Some("off") => Ok(false),
        Some("true") | Some("1") | Some("on") => Ok(true),
        _ => Err(ApiError::invalid("dry_run", BAD_FLAG)),
    }
}

/// Who may import: admins, marketers and heads of sales (and tokens without a user).
pub fn may_import(access: &Access) -> bool {
    !matches!(access, Access::Own(_))
}

/// Builds the request from the options and the file.
pub fn request_of(
    st: &AppState,
    o: UploadOptions,
    file_name: Option<String>,
    bytes: Bytes,
    actor: String,
) -> Result<ImportRequest, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid("file", NO_FILE));
    }
    let mapping: Map<String, Value> = match o.mapping.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => Map::new(),
        Some(m) => match serde_json::from_str::<Value>(m) {
            Ok(Value::Object(m)) => m,
            _ => return Err(ApiError::invalid("mapping", BAD_MAPPING)),
        },
    };
    let file_name = file_name.or(o.file_name).filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "upload.csv".into());
    let source = o.source.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| file_name.clone());
    Ok(ImportRequest {
        source,
        file_name,
        bytes,
        mapping,
        campaign: o.campaign.filter(|c| !c.trim().is_empty()),
        dry_run: flag(o.dry_run.as_deref())?,
        actor,
        keep_file: true,
        region: st.cfg.region,
    })
}

/// Reads a multipart upload: the `file` part and the options as text parts.
pub async fn read_multipart(mut mp: Multipart, mut o: UploadOptions) -> Result<(UploadOptions, Option<String>, Bytes), ApiError> {
    let mut file = None;
    let mut name = None;
    while let Some(field) = mp.next_field().await.map_err(|e| ApiError::MalformedJson(format!("bad multipart body: {e}")))? {
        let key = field.name().unwrap_or("").to_string();
        if key == "file" {
            name = field.file_name().map(str::to_string);
            file = Some(field.bytes().await.map_err(|_| ApiError::PayloadTooLarge)?);
            continue;
        }
        let text = field.text().await.map_err(|e| ApiError::MalformedJson(format!("bad multipart field {key}: {e}")))?;
        match key.as_str() {
            "source" => o.source = Some(text),
            "campaign" => o.campaign = Some(text),
            "dry_run" => o.dry_run = Some(text),
            "mapping" => o.mapping = Some(text),
            "file_name" => o.file_name = Some(text),
            _ => {}
        }
    }
    Ok((o, name, file.unwrap_or_default()))
}

/// Checks the file, creates (or resumes) the run and starts it in the background.
pub async fn start(st: &AppState, req: ImportRequest) -> Result<ImportInfo, ApiError> {
    let prepared = import::prepare(&st.store, req, worker_id()).await?;
    let info = prepared.info.clone();
    spawn_run(st.clone(), prepared);
    Ok(info)
}

pub fn spawn_run(st: AppState, prepared: import::Prepared) {
    tokio::spawn(async move {
        let id = prepared.info.id;
        match import::run(&st.store, prepared, worker_id(), &|_| {}).await {
            Ok(info) => {
                tracing::info!(import = %id, created = info.created, repeats = info.repeats, rejected = info.rejected, "import finished")
            }
            Err(e) => tracing::warn!(import = %id, error = %format!("{e:#}"), "import failed; it resumes when started again"),
        }
    });
}

/// Resumes uploads whose worker stopped (this server restarted, or another died).
pub async fn resume_stalled(st: &AppState) -> anyhow::Result<usize> {
    let stale = voronka_store::Ts::from(st.store.now().0 - chrono::Duration::from_std(import::LEASE)?);
    let mut n = 0;
    for id in st.store.stalled_uploads(stale).await? {
        match import::prepare_kept(&st.store, id, st.cfg.region, worker_id()).await {
            Ok(Some(p)) => {
                tracing::info!(import = %id, "resuming an interrupted import");
                spawn_run(st.clone(), p);
                n += 1;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(import = %id, error = %e, "cannot resume the import"),
        }
    }
    Ok(n)
}

/// `POST /api/v1/imports` (scope `leads:write`).
pub async fn create(State(st): State<AppState>, Query(q): Query<UploadOptions>, req: Request) -> Result<Response, ApiError> {
    let token = st.tokens.authorize(&st.store, req.headers(), "leads:write").await?;
    if !may_import(&token.access()) {
        return Err(ApiError::Forbidden("leads:import"));
    }
    let multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("multipart/form-data"));
    let (opts, name, bytes) = if multipart {
        let mp = Multipart::from_request(req, &st).await.map_err(|e| ApiError::MalformedJson(format!("bad multipart body: {e}")))?;
        read_multipart(mp, q).await?
    } else {
        let bytes = Bytes::from_request(req, &st).await.map_err(ApiError::from)?;
        (q, None, bytes)
    };
    let request = request_of(&st, opts, name, bytes, token.actor())?;
    let info = start(&st, request).await?;
    let mut resp = (StatusCode::ACCEPTED, Json(&info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/imports/{}", info.id)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn authorized(st: &AppState, headers: &HeaderMap, scope: &'static str) -> Result<String, ApiError> {
    let token = st.tokens.authorize(&st.store, headers, scope).await?;
    if !may_import(&token.access()) {
        return Err(ApiError::Forbidden("leads:import"));
    }
    Ok(token.actor())
}

/// `GET /api/v1/imports`: the newest first.
pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorized(&st, &headers, "leads:read").await?;
    Ok(Json(json!({ "items": st.store.imports(100).await? })))
}

/// `GET /api/v1/imports/{id}`: the run and its progress.
pub async fn get_one(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<ImportInfo>, ApiError> {
    authorized(&st, &headers, "leads:read").await?;
    let id = super::uuid_path(&id)?;
    Ok(Json(st.store.import_info(id).await?.ok_or(ApiError::NotFound)?))
}

/// `GET /api/v1/imports/{id}/report.csv`: every row's outcome and reason.
pub async fn report(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    authorized(&st, &headers, "leads:read").await?;
    let id = super::uuid_path(&id)?;
    st.store.import_info(id).await?.ok_or(ApiError::NotFound)?;
    let ru = crate::error::current_lang() == voronka_domain::Lang::Ru;
    report_response(&st, id, ru).await
}

pub async fn report_response(st: &AppState, id: uuid::Uuid, ru: bool) -> Result<Response, ApiError> {
    let body = import::report_csv(&st.store, id, ru).await?;
    let mut with_bom = Vec::with_capacity(body.len() + 3);
    with_bom.extend_from_slice(b"\xEF\xBB\xBF"); // Excel opens UTF-8 CSV right only with a BOM
    with_bom.extend_from_slice(&body);
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"import-{id}-report.csv\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        Body::from(with_bom),
    )
        .into_response())
}

/// Why an import cannot be undone, if that is known without the store (which also refuses
/// a run a live worker holds).
pub fn undo_refusal(info: &ImportInfo) -> Option<ApiError> {
    let (en, ru) = if info.dry_run {
        ("a dry run created nothing to undo", "пробный прогон ничего не создал, отменять нечего")
    } else {
        match info.status.as_str() {
            // A running import is refused by the store unless its worker has stopped (killed).
            "undone" | "undoing" => ("the import is already undone", "импорт уже отменён"),
            _ => return None,
        }
    };
    Some(ApiError::Conflict { code: "cannot_undo", en: en.into(), ru: ru.into() })
}

/// The store refuses an undo it cannot take (a worker holds the run, or it was just undone).
pub fn undo_error(e: voronka_store::StoreError) -> ApiError {
    match e {
        voronka_store::StoreError::Invalid(_) => ApiError::Conflict {
            code: "cannot_undo",
            en: "the import is running or already undone".into(),
            ru: "импорт ещё идёт или уже отменён".into(),
        },
        e => e.into(),
    }
}

/// `POST /api/v1/imports/{id}/undo`: removes the leads the import created (those nobody has
/// worked on) and the repeat requests it added.
pub async fn undo(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let actor = authorized(&st, &headers, "leads:write").await?;
    let id = super::uuid_path(&id)?;
    let info = st.store.import_info(id).await?.ok_or(ApiError::NotFound)?;
    if let Some(e) = undo_refusal(&info) {
        return Err(e);
    }
    let r = st.store.undo_import(id, &actor).await.map_err(undo_error)?;
    Ok(Json(json!({ "id": id, "removed": r.removed, "kept": r.kept, "repeats_removed": r.repeats_removed })))
}
