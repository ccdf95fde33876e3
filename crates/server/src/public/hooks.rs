//! Inbound webhooks: `POST /hooks/{hook_key}` from call tracking, site chats, social lead-ad
//! forms and landing-page builders. Every request is signed by the sender with the
//! endpoint's secret: `X-Voronka-Timestamp` (Unix seconds) and `X-Voronka-Signature:
//! sha256=HEX`, the HMAC-SHA256 of `"{timestamp}.{raw body}"`, compared in constant time and
//! accepted within 300 seconds of the server's clock. Each event has an id, read from the
//! signed body (the kind's own: call id, chat session, lead-ad lead id, a generic
//! endpoint's mapped `event_id`; without one, the body's hash): an id seen before is
//! answered `replayed` and changes nothing.
//!
//! Requests become leads through the same intake pipeline as forms and the API (dedup,
//! scoring, routing); call and chat response times are kept for analytics.

use crate::error::ApiError;
use crate::{AppState, ops};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use voronka_domain::FieldErrors;
use voronka_domain::errors::Text;
use voronka_domain::lead::{IntakeDefaults, LeadInput, Rejection};
use voronka_domain::webhook::{SignatureError, verify};
use voronka_store::hooks::{HookEndpoint, Receipt};
use voronka_store::{IdempotencyKey, IntakeCommand, IntakeOutcome};

/// Accepted distance between the sender's timestamp and the server's clock.
pub const SKEW_SECS: i64 = 300;

/// What a request means, read from its body.
#[derive(Debug, Default)]
struct Parsed {
    event_id: Option<String>,
    /// The lead as `POST /api/v1/leads` would take it.
    lead: Map<String, Value>,
    /// For a generic endpoint: flat form-like pairs instead of `lead`.
    pairs: Option<Vec<(String, String)>>,
    kind: &'static str,
    answered: Option<bool>,
    wait: Option<i32>,
    talk: Option<i32>,
    response: Option<i32>,
    at: Option<DateTime<Utc>>,
    /// A chat without contacts is kept as the visitor's interest.
    visitor_interest: bool,
}

fn field_error(field: &str, en: &'static str, ru: &'static str) -> ApiError {
    let mut f = FieldErrors::new();
    f.add(field, Text::new(en, ru));
    ApiError::InvalidFields(f)
}

/// A string or number as text.
fn text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn first<'a>(o: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| o.get(*n).filter(|v| !v.is_null()))
}

fn seconds(o: &Map<String, Value>, names: &[&str], field: &str) -> Result<Option<i32>, ApiError> {
    match first(o, names) {
        None => Ok(None),
        Some(v) => {
            let n = v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
            match n {
                Some(n) if (0.0..=86_400.0 * 7.0).contains(&n) => Ok(Some(n.round() as i32)),
                _ => Err(field_error(field, "must be a number of seconds from 0 to 604800", "нужно число секунд от 0 до 604800")),
            }
        }
    }
}

fn instant(o: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let t = parse_instant(o, name)?;
    match t {
        Some(t) if !(2000..=2100).contains(&chrono::Datelike::year(&t)) => {
            Err(field_error(name, "must be between the years 2000 and 2100", "должно быть между 2000 и 2100 годами"))
        }
        other => Ok(other),
    }
}

fn parse_instant(o: &Map<String, Value>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| field_error(name, "must be an RFC 3339 time", "нужно время в формате RFC 3339")),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .map(Some)
            .ok_or_else(|| field_error(name, "must be an RFC 3339 time", "нужно время в формате RFC 3339")),
        Some(_) => Err(field_error(name, "must be an RFC 3339 time", "нужно время в формате RFC 3339")),
    }
}

fn object(v: &Value) -> Result<&Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| field_error("body", "must be a JSON object", "тело должно быть объектом JSON"))
}

/// Call tracking: one event per finished call.
fn call(body: &Value) -> Result<Parsed, ApiError> {
    let o = object(body)?;
    let mut p = Parsed { kind: "call", event_id: text(first(o, &["call_id", "id"])), ..Parsed::default() };
    let answered = match (first(o, &["answered"]), text(first(o, &["status", "call_status"]))) {
        (Some(Value::Bool(b)), _) => *b,
        (_, Some(s)) => match s.to_ascii_lowercase().as_str() {
            "answered" | "success" | "successful" | "completed" => true,
            "missed" | "no_answer" | "noanswer" | "busy" | "failed" | "unanswered" | "lost" => false,
            _ => return Err(field_error("status", "use answered or missed", "допустимо answered или missed")),
        },
        _ => return Err(field_error("status", "say whether the call was answered or missed", "укажите, отвечен звонок или пропущен")),
    };
    p.answered = Some(answered);
    p.wait = seconds(o, &["wait_seconds", "waiting_time", "wait"], "wait_seconds")?;
    p.talk = seconds(o, &["talk_seconds", "talk_time", "duration"], "talk_seconds")?;
    p.at = instant(o, "started_at")?;
    let recording = text(first(o, &["recording_url", "record_url"]));
    if let Some(r) = &recording
        && !(r.starts_with("https://") || r.starts_with("http://"))
    {
        return Err(field_error("recording_url", "must be an http(s) address", "нужен адрес http(s)"));
    }
    if let Some(c) = text(first(o, &["caller", "caller_number", "from", "phone"])) {
        p.lead.insert("phone".into(), Value::String(c));
    }
    if let Some(n) = text(first(o, &["caller_name", "name"])) {
        p.lead.insert("name".into(), Value::String(n));
    }
    if let Some(t) = text(first(o, &["tracking_number", "to", "called_number"])) {
        p.lead.insert("tracking_number".into(), Value::String(t));
    }
    p.lead.insert(
        "fields".into(),
        json!({
            "call_id": p.event_id, "call_status": if answered { "answered" } else { "missed" },
            "wait_seconds": p.wait, "talk_seconds": p.talk, "recording_url": recording,
        }),
    );
    if !answered {
        p.lead.insert("message".into(), Value::String("Missed call / Пропущенный звонок".into()));
    }
    Ok(p)
}

/// A chat session: contacts if the visitor left them, the first message and the first reply.
fn chat(body: &Value) -> Result<Parsed, ApiError> {
    let o = object(body)?;
    let mut p = Parsed { kind: "chat", event_id: text(first(o, &["session_id", "session", "chat_id"])), ..Parsed::default() };
    let first_msg = instant(o, "first_message_at")?;
    let first_reply = instant(o, "first_reply_at")?;
    if let (Some(m), Some(r)) = (first_msg, first_reply) {
        if r < m {
            return Err(field_error("first_reply_at", "is before the first message", "раньше первого сообщения"));
        }
        p.response = i32::try_from((r - m).num_seconds()).ok();
    }
    p.at = first_msg;
    let contacts = o.get("contacts").and_then(Value::as_object);
    for f in ["name", "phone", "email", "messenger", "company", "city"] {
        if let Some(v) = text(o.get(f)).or_else(|| contacts.and_then(|c| text(c.get(f)))) {
            p.lead.insert(f.into(), Value::String(v));
        }
    }
    if let Some(v) = text(o.get("visitor_id")) {
        p.lead.insert("visitor_id".into(), Value::String(v));
        p.visitor_interest = true;
    }
    if let Some(m) = text(first(o, &["message", "first_message"])) {
        p.lead.insert("message".into(), Value::String(m));
    }
    p.lead.insert(
        "fields".into(),
        json!({
            "chat_session": p.event_id, "first_message_at": first_msg, "first_reply_at": first_reply, "response_seconds": p.response,
        }),
    );
    Ok(p)
}

/// The lead field a lead-ad question key means.
fn ad_field(key: &str) -> String {
    match key.trim().to_lowercase().as_str() {
        "phone_number" | "phone" | "телефон" => "phone".into(),
        "full_name" | "name" | "first_name" | "last_name" | "имя" | "фамилия" => "name".into(),
        "email" | "e-mail" => "email".into(),
        "company_name" | "company" => "company".into(),
        "job_title" | "position" => "position".into(),
        "city" | "город" => "city".into(),
        other => voronka_domain::lead::default_form_name(other),
    }
}

/// Social lead-ad forms: VK (`object.answers[{key, answer}]`) and Facebook
/// (`field_data[{name, values}]`), with the form id.
fn lead_ad(body: &Value, ep: &HookEndpoint) -> Result<Parsed, ApiError> {
    let top = object(body)?;
    let o = top.get("object").and_then(Value::as_object).unwrap_or(top);
    let mut p = Parsed {
        kind: "lead_ad",
        event_id: text(first(o, &["lead_id", "leadgen_id", "id"])).or_else(|| text(top.get("event_id"))),
        ..Parsed::default()
    };
    let form_id = text(o.get("form_id")).ok_or_else(|| field_error("form_id", "is required", "обязательное поле"))?;
    let mut answers: Vec<(String, String)> = Vec::new();
    if let Some(list) = o.get("answers").and_then(Value::as_array) {
        for a in list {
            if let (Some(k), Some(v)) = (text(a.get("key")), text(a.get("answer"))) {
                answers.push((k, v));
            }
        }
    } else if let Some(list) = o.get("field_data").and_then(Value::as_array) {
        for a in list {
            let v = a.get("values").and_then(Value::as_array).and_then(|v| text(v.first()));
            if let (Some(k), Some(v)) = (text(a.get("name")), v) {
                answers.push((k, v));
            }
        }
    } else {
        return Err(field_error(
            "answers",
            "the form's answers are missing (answers or field_data)",
            "нет ответов формы (answers или field_data)",
        ));
    }
    let custom = ep.mapping.0.get("fields").and_then(Value::as_object);
    let mut extra = Map::new();
    for (k, v) in answers {
        let target = custom.and_then(|m| m.get(&k)).and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| ad_field(&k));
        if target.is_empty() {
            continue;
        }
        match target.as_str() {
            "name" | "phone" | "email" | "messenger" | "company" | "position" | "city" | "interest" | "message" => {
                match p.lead.get_mut(&target) {
                    // first_name + last_name
                    Some(Value::String(prev)) if target == "name" => {
                        prev.push(' ');
                        prev.push_str(&v);
                    }
                    Some(_) => {}
                    None => {
                        p.lead.insert(target, Value::String(v));
                    }
                }
            }
            _ => {
                extra.insert(target, Value::String(v));
            }
        }
    }
    if let Some(c) = ep.mapping.0.get("forms").and_then(|f| f.get(&form_id)).and_then(Value::as_str) {
        p.lead.insert("campaign".into(), Value::String(c.to_string()));
    }
    extra.insert("form_id".into(), Value::String(form_id));
    if let Some(id) = &p.event_id {
        extra.insert("ad_lead_id".into(), Value::String(id.clone()));
    }
    if let Some(ad) = text(o.get("ad_id")) {
        extra.insert("ad_id".into(), Value::String(ad));
    }
    p.lead.insert("fields".into(), Value::Object(extra));
    Ok(p)
}

/// A value at a dotted path (`contact.phones.0`).
fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').filter(|s| !s.is_empty()).try_fold(v, |cur, seg| match cur {
        Value::Object(o) => o.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A landing-page builder: the endpoint's mapping (lead field → path into the JSON body, or
/// form field name) picks the fields; without a mapping the usual names are understood.
fn generic(body: &Value, ep: &HookEndpoint) -> Result<Parsed, ApiError> {
    let mut p = Parsed { kind: "generic", ..Parsed::default() };
    let mapping = ep.mapping.0.as_object().cloned().unwrap_or_default();
    let mut pairs = Vec::new();
    for (field, path) in &mapping {
        let Some(path) = path.as_str() else { continue };
        if let Some(v) = text(at_path(body, path)) {
            if field == "event_id" {
                p.event_id = Some(v);
            } else {
                pairs.push((field.clone(), v));
            }
        }
    }
    if mapping.is_empty()
        && let Some(o) = body.as_object()
    {
        for (k, v) in o {
            if let Some(t) = text(Some(v)) {
                pairs.push((k.clone(), t));
            }
        }
    }
    p.pairs = Some(pairs);
    Ok(p)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// Reads a body as JSON, or as a urlencoded form (landing-page builders post forms).
fn read_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = header(headers, "content-type").unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        return Ok(Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Checks the signature headers against the raw body.
pub fn check_signature(ep: &HookEndpoint, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
    let ts = header(headers, "x-voronka-timestamp").and_then(|t| t.parse::<i64>().ok());
    let sig = header(headers, "x-voronka-signature");
    let (Some(ts), Some(sig)) = (ts, sig) else { return Err(ApiError::Signature("signature_required")) };
    verify(ep.secret.as_bytes(), ts, body, sig, now, SKEW_SECS).map_err(|e| match e {
        SignatureError::Mismatch => ApiError::Signature("invalid_signature"),
        SignatureError::Stale => ApiError::Signature("stale_signature"),
    })
}

fn answer(status: StatusCode, outcome: &str, lead_id: Option<Uuid>, event_id: &str) -> Response {
    (status, axum::Json(json!({"outcome": outcome, "lead_id": lead_id, "event_id": event_id}))).into_response()
}

pub async fn receive(
    State(st): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ep = st.store.hook_endpoint_by_key(&key).await?.filter(|e| e.active).ok_or(ApiError::NotFound)?;
    let body = body?;
    let kind: &'static str = match ep.kind.as_str() {
        "call_tracking" => "call",
        "chat" => "chat",
        "lead_ad" => "lead_ad",
        _ => "generic",
    };
    if let Err(e) = check_signature(&ep, &headers, &body, st.store.clock().now().timestamp()) {
        ops::record_hook(kind, e.code());
        return Err(e);
    }
    let value = read_body(&headers, &body)?;
    let mut p = match ep.kind.as_str() {
        "call_tracking" => call(&value)?,
        "chat" => chat(&value)?,
        "lead_ad" => lead_ad(&value, &ep)?,
        _ => generic(&value, &ep)?,
    };
    // The id comes from the signed body only: a header could be changed on a captured
    // request to make a replay look new.
    let event_id = match p.event_id.take() {
        Some(id) if id.chars().count() <= 200 => id,
        Some(_) => return Err(field_error("event_id", "too long (at most 200 characters)", "слишком длинный (не более 200 символов)")),
        None => format!("sha256:{}", hex(&Sha256::digest(&body))),
    };
    if let Some(r) = st.store.hook_receipt(ep.id, &event_id).await? {
        ops::record_hook(kind, "replayed");
        return Ok((
            StatusCode::OK,
            axum::Json(json!({"outcome": "replayed", "first_outcome": r.outcome, "lead_id": r.lead_id, "event_id": event_id})),
        )
            .into_response());
    }

    let campaign = match p.lead.get("campaign").and_then(Value::as_str) {
        Some(c) => Some(c.to_string()),
        None => campaign_of(&st, &ep, p.lead.get("tracking_number").and_then(Value::as_str)).await?,
    };
    let defaults = IntakeDefaults { channel: ep.channel.clone(), campaign, region: st.cfg.region };
    let parsed = match p.pairs.take() {
        Some(pairs) => LeadInput::from_form(&pairs, &Map::new(), &[], &defaults),
        None => {
            p.lead.remove("campaign");
            if let Some(c) = &defaults.campaign {
                p.lead.insert("campaign".into(), Value::String(c.clone()));
            }
            p.lead.insert("channel".into(), Value::String(ep.channel.clone()));
            LeadInput::from_json(Value::Object(p.lead.clone()), &defaults)
        }
    };
    let mut receipt = Receipt {
        endpoint_id: ep.id,
        event_id: event_id.clone(),
        kind: p.kind,
        outcome: String::new(),
        lead_id: None,
        visitor_id: p.lead.get("visitor_id").and_then(Value::as_str).map(str::to_string),
        answered: p.answered,
        wait_seconds: p.wait,
        talk_seconds: p.talk,
        response_seconds: p.response,
        at: voronka_store::Ts::from(p.at.unwrap_or_else(|| st.store.clock().now())),
    };
    // No contact given at all (not a bad one): a chat visitor's interest or a hidden number.
    let has_contact = ["phone", "email", "messenger"].iter().any(|c| p.lead.contains_key(*c));
    let mut lead = match parsed {
        Ok(l) => l,
        Err(Rejection::ContactRequired(_)) if !has_contact && p.visitor_interest => {
            // A chat without contacts: the visitor's interest, joined to the lead later.
            receipt.outcome = "interest".into();
            let data = json!({"name": "chat", "session": event_id, "response_seconds": p.response, "endpoint": ep.name});
            let fresh = st.store.record_hook_interest(&receipt, "chat_message", &data).await?;
            let outcome = if fresh { "interest" } else { "replayed" };
            ops::record_hook(kind, outcome);
            return Ok(answer(StatusCode::ACCEPTED, outcome, None, &event_id));
        }
        Err(Rejection::ContactRequired(_)) if !has_contact && kind == "call" => {
            // A call from a hidden number: nothing to call back, but it counts for analytics.
            receipt.outcome = "anonymous".into();
            let fresh = st.store.record_hook_receipt(&receipt).await?;
            let outcome = if fresh { "anonymous" } else { "replayed" };
            ops::record_hook(kind, outcome);
            return Ok(answer(StatusCode::ACCEPTED, outcome, None, &event_id));
        }
        Err(r) => {
            let e = ApiError::from(r);
            ops::record_hook(kind, e.code());
            return Err(e);
        }
    };
    lead.submission = value;
    let idempotency = IdempotencyKey { scope_key: format!("hook:{}:{event_id}", ep.id), request_hash: Sha256::digest(&body).into() };
    let cmd = IntakeCommand { lead, idempotency: Some(idempotency), actor: Some(format!("hook:{}", ep.name)), form_id: None, import: None };
    let reply = match st.store.intake().submit(cmd).await {
        Ok(r) => r,
        // The same event id with another body: the first one stands.
        Err(voronka_store::IntakeError::IdempotencyConflict) => {
            ops::record_hook(kind, "replayed");
            return Ok(answer(StatusCode::OK, "replayed", None, &event_id));
        }
        Err(e) => return Err(e.into()),
    };
    let (outcome, lead_id) = match reply.outcome {
        IntakeOutcome::Replayed => {
            let stored: Value = serde_json::from_slice(&reply.body()).unwrap_or(Value::Null);
            let id = stored.get("id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
            let o = if stored.get("repeat") == Some(&Value::Bool(true)) {
                "repeat"
            } else if stored.get("returning") == Some(&Value::Bool(true)) {
                "returning"
            } else {
                "created"
            };
            (o, id)
        }
        o => (o.as_str(), reply.lead_id),
    };
    receipt.outcome = outcome.to_string();
    receipt.lead_id = lead_id;
    st.store.record_hook_receipt(&receipt).await?;
    ops::record_hook(kind, reply.outcome.as_str());
    let status = if reply.outcome == IntakeOutcome::Created || reply.outcome == IntakeOutcome::Returning {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(answer(status, reply.outcome.as_str(), lead_id, &event_id))
}

/// The campaign of a call: the endpoint's number map, then the campaigns' tracking
/// numbers, then the endpoint's campaign.
async fn campaign_of(st: &AppState, ep: &HookEndpoint, tracking: Option<&str>) -> Result<Option<String>, ApiError> {
    if let Some(t) = tracking.and_then(|t| voronka_domain::Phone::parse(t, st.cfg.region)) {
        if let Some(map) = ep.mapping.0.get("numbers").and_then(Value::as_object) {
            for (num, c) in map {
                if voronka_domain::Phone::parse(num, st.cfg.region).as_ref() == Some(&t)
                    && let Some(c) = c.as_str()
                {
                    return Ok(Some(c.to_string()));
                }
            }
        }
        for (code, num) in st.store.campaign_numbers().await? {
            if voronka_domain::Phone::parse(&num, st.cfg.region).as_ref() == Some(&t) {
                return Ok(Some(code));
            }
        }
    }
    Ok(ep.campaign.clone())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
