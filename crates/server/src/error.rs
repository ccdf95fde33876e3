//! One error type for the HTTP layer, rendered in one place as the JSON of API.md:
//! `{"error":{"code":…,"message":…,"fields":{…}}}`, in the language the client asked for.
//! 5xx causes are logged and never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use voronka_domain::errors::Text;
use voronka_domain::{FieldErrors, Lang};
use voronka_store::{IntakeError, StoreError};

tokio::task_local! {
    /// The language of the current request (from `Accept-Language`).
    pub static LANG: Lang;
}

pub fn current_lang() -> Lang {
    LANG.try_with(|l| *l).unwrap_or_default()
}

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(&'static str),
    NotFound,
    MethodNotAllowed,
    MalformedJson(String),
    UnsupportedMediaType(&'static str),
    PayloadTooLarge,
    RateLimited {
        retry_after_secs: u64,
    },
    ContactRequired(FieldErrors),
    InvalidFields(FieldErrors),
    /// A scoring model with problems, each named by its rule or setting.
    InvalidModel(voronka_domain::scoring::ModelErrors),
    UnknownSiteKey,
    /// 401 for an inbound webhook: `signature_required`, `invalid_signature` or `stale_signature`.
    Signature(&'static str),
    OriginNotAllowed,
    /// 409 with a code and a text in both languages.
    Conflict {
        code: &'static str,
        en: String,
        ru: String,
    },
    /// 422 with a code and named fields whose texts are in both languages.
    Fields {
        code: &'static str,
        fields: Vec<(String, String, String)>,
    },
    IdempotencyConflict,
    Unavailable,
    Internal(anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: &str, text: Text) -> ApiError {
        let mut f = FieldErrors::new();
        f.add(field, text);
        ApiError::InvalidFields(f)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ContactRequired(_) | ApiError::InvalidFields(_) | ApiError::InvalidModel(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownSiteKey => StatusCode::UNAUTHORIZED,
            ApiError::Signature(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Fields { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::IdempotencyConflict => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::ContactRequired(_) => "contact_required",
            ApiError::InvalidFields(_) => "invalid_fields",
            ApiError::InvalidModel(_) => "invalid_model",
            ApiError::UnknownSiteKey => "unknown_site_key",
            ApiError::Signature(code) => code,
            ApiError::Conflict { code, .. } | ApiError::Fields { code, .. } => code,
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::IdempotencyConflict => "idempotency_key_reused",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn message(&self, lang: Lang) -> String {
        let t = |en: &str, ru: &str| if lang == Lang::Ru { ru.to_string() } else { en.to_string() };
        match self {
            ApiError::Unauthorized => {
                t("A valid API token is required: Authorization: Bearer TOKEN", "Нужен действующий API-токен: Authorization: Bearer TOKEN")
            }
            ApiError::Forbidden(scope) => match lang {
                Lang::Ru => format!("У токена нет права {scope}"),
                Lang::En => format!("The token lacks the scope {scope}"),
            },
            ApiError::NotFound => t("Not found", "Не найдено"),
            ApiError::MethodNotAllowed => t("Method not allowed", "Метод не поддерживается"),
            ApiError::MalformedJson(detail) => match lang {
                Lang::Ru => format!("Тело запроса — не корректный JSON: {detail}"),
                Lang::En => format!("The body is not valid JSON: {detail}"),
            },
            ApiError::UnsupportedMediaType(expected) => match lang {
                Lang::Ru => format!("Неподдерживаемый Content-Type; ожидается {expected}"),
                Lang::En => format!("Unsupported Content-Type; expected {expected}"),
            },
            ApiError::PayloadTooLarge => t("The body is over the size limit", "Тело запроса больше допустимого"),
            ApiError::RateLimited { .. } => t("Too many requests; retry later", "Слишком много запросов; повторите позже"),
            ApiError::ContactRequired(_) => {
                t("A usable phone, e-mail or messenger is required", "Нужен корректный телефон, e-mail или мессенджер")
            }
            ApiError::InvalidFields(_) => t("Some fields are invalid", "Некоторые поля заполнены неверно"),
            ApiError::InvalidModel(_) => {
                t("The scoring model has problems; each is named", "В модели скоринга есть ошибки; каждая указана")
            }
            ApiError::UnknownSiteKey => t("Unknown site key", "Неизвестный ключ сайта"),
            ApiError::Signature("stale_signature") => t(
                "The signature's timestamp is more than 300 seconds away from the server's clock",
                "Метка времени подписи отличается от часов сервера больше чем на 300 секунд",
            ),
            ApiError::Signature("invalid_signature") => t("The signature does not match the body", "Подпись не соответствует телу запроса"),
            ApiError::Signature(_) => t(
                "Sign the request: X-Voronka-Timestamp and X-Voronka-Signature (HMAC-SHA256 of \"timestamp.body\")",
                "Подпишите запрос: X-Voronka-Timestamp и X-Voronka-Signature (HMAC-SHA256 от \"timestamp.body\")",
            ),
            ApiError::Conflict { en, ru, .. } => t(en, ru),
            ApiError::Fields { .. } => t("Some fields are invalid", "Некоторые поля заполнены неверно"),
            ApiError::OriginNotAllowed => {
                t("This site may not send events from this origin", "С этого адреса сайту нельзя отправлять события")
            }
            ApiError::IdempotencyConflict => {
                t("This Idempotency-Key was used with a different body", "Этот Idempotency-Key уже использован с другим телом запроса")
            }
            ApiError::Unavailable => t("The service is temporarily unavailable", "Сервис временно недоступен"),
            ApiError::Internal(_) => t("Internal error", "Внутренняя ошибка"),
        }
    }

    /// Each named field's problem in `lang`, for the error body and the UI.
    pub fn field_messages(&self, lang: Lang) -> Vec<(String, String)> {
        let pick = |en: &str, ru: &str| if lang == Lang::Ru { ru.to_string() } else { en.to_string() };
        match self {
            ApiError::ContactRequired(f) | ApiError::InvalidFields(f) => f.localized(lang).into_iter().collect(),
            ApiError::Fields { fields, .. } => fields.iter().map(|(k, en, ru)| (k.clone(), pick(en, ru))).collect(),
            ApiError::InvalidModel(m) => m.iter().map(|(k, v)| (k.clone(), v.get(lang).to_string())).collect(),
            _ => Vec::new(),
        }
    }

    pub fn fields(&self) -> Option<&FieldErrors> {
        match self {
            ApiError::ContactRequired(f) | ApiError::InvalidFields(f) => Some(f),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let lang = current_lang();
        let status = self.status();
        match &self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            ApiError::Unavailable => tracing::warn!("answered 503"),
            _ => {}
        }
        let mut err = json!({"code": self.code(), "message": self.message(lang)});
        let fields = self.field_messages(lang);
        if !fields.is_empty() || self.fields().is_some() {
            err["fields"] = serde_json::Value::Object(fields.into_iter().map(|(k, v)| (k, json!(v))).collect());
        }
        let mut resp = (status, axum::Json(json!({ "error": err }))).into_response();
        match self {
            ApiError::RateLimited { retry_after_secs } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            ApiError::Unauthorized => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Invalid(m) => ApiError::Conflict { code: "conflict", en: m.clone(), ru: m },
            StoreError::Db(sqlx_err) => ApiError::Internal(anyhow::Error::new(sqlx_err).context("database query failed")),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> ApiError {
        match e {
            IntakeError::IdempotencyConflict => ApiError::IdempotencyConflict,
            IntakeError::ShuttingDown => ApiError::Unavailable,
            IntakeError::UnknownLead => ApiError::NotFound,
            IntakeError::Storage(e) => {
                tracing::error!(error = ?e, "intake failed");
                ApiError::Unavailable
            }
        }
    }
}

impl From<voronka_domain::lead::Rejection> for ApiError {
    fn from(r: voronka_domain::lead::Rejection) -> ApiError {
        match r {
            voronka_domain::lead::Rejection::ContactRequired(f) => ApiError::ContactRequired(f),
            voronka_domain::lead::Rejection::InvalidFields(f) => ApiError::InvalidFields(f),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE { ApiError::PayloadTooLarge } else { ApiError::MalformedJson(r.body_text()) }
    }
}

impl ApiError {
    pub fn field(field: &str, en: &str, ru: &str) -> ApiError {
        ApiError::Fields { code: "invalid_fields", fields: vec![(field.to_string(), en.to_string(), ru.to_string())] }
    }
}

impl From<voronka_store::workflow::WorkflowError> for ApiError {
    fn from(e: voronka_store::workflow::WorkflowError) -> ApiError {
        use voronka_store::workflow::WorkflowError as W;
        match e {
            W::NotFound => ApiError::NotFound,
            W::InvalidTransition { from, to } => ApiError::Conflict {
                code: "invalid_transition",
                en: format!("A lead cannot move from {from} to {to}"),
                ru: format!("Лид нельзя перевести из {from} в {to}"),
            },
            W::ReasonRequired => ApiError::Fields {
                code: "reason_required",
                fields: vec![("reason".into(), "a reason from the list is required".into(), "нужна причина из списка".into())],
            },
            W::Invalid { field, en, ru } => ApiError::Fields { code: "invalid_fields", fields: vec![(field, en, ru)] },
            W::AlreadyConverted => ApiError::Conflict {
                code: "already_converted",
                en: "The lead is already converted".into(),
                ru: "Лид уже конвертирован".into(),
            },
            W::ContactTaken { field, .. } => ApiError::Conflict {
                code: "contact_taken",
                en: format!("This {field} belongs to another lead; merge the leads instead"),
                ru: format!("Этот {field} принадлежит другому лиду; объедините лиды"),
            },
            W::Refused { code, en, ru } => ApiError::Conflict { code, en, ru },
            W::Store(s) => ApiError::from(s),
        }
    }
}
