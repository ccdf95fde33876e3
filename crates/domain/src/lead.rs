//! A lead submission as it arrives (JSON from the API, fields from a public form) and the
//! validated, normalised `NewLead` that the store commits.

use crate::contact::{Email, Messenger, Phone, PhoneRegion};
use crate::errors::{FieldErrors, texts};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Utm {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consent {
    pub marketing: bool,
    pub text: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// A validated submission: every contact normalised, every text within its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLead {
    pub name: Option<String>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
    pub messenger: Option<Messenger>,
    pub company: Option<String>,
    pub position: Option<String>,
    pub city: Option<String>,
    pub interest: Option<String>,
    pub message: Option<String>,
    pub budget: Option<f64>,
    pub channel: String,
    pub campaign: Option<String>,
    pub source: Option<String>,
    pub utm: Utm,
    pub referrer: Option<String>,
    pub landing_page: Option<String>,
    pub tracking_number: Option<Phone>,
    pub visitor_id: Option<String>,
    pub external_id: Option<String>,
    pub fields: Map<String, Value>,
    pub consent: Option<Consent>,
    /// The submission exactly as received, kept on the lead's first timeline event.
    pub submission: Value,
}

/// Why a submission is not a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// No usable phone, e-mail or messenger; `fields` names the contacts that were given but bad.
    ContactRequired(FieldErrors),
    /// One or more fields are bad; each is named.
    InvalidFields(FieldErrors),
}

/// What the edge tells the parser about the submission's origin.
#[derive(Debug, Clone)]
pub struct IntakeDefaults {
    pub channel: String,
    pub campaign: Option<String>,
    pub region: PhoneRegion,
}

const MAX_CUSTOM_FIELDS: usize = 50;
const MAX_CUSTOM_BYTES: usize = 16 * 1024;

/// Text fields of a lead and their length limits in characters.
const TEXT_LIMITS: &[(&str, usize)] = &[
    ("name", 200),
    ("company", 300),
    ("position", 200),
    ("city", 100),
    ("interest", 1000),
    ("message", 10_000),
    ("campaign", 200),
    ("source", 200),
    ("referrer", 2048),
    ("landing_page", 2048),
    ("external_id", 200),
];
const UTM_KEYS: [&str; 5] = ["source", "medium", "campaign", "content", "term"];
const UTM_LIMIT: usize = 500;

/// Collects the raw values of a submission, with the type errors found on the way.
#[derive(Default)]
struct Raw {
    text: std::collections::HashMap<&'static str, String>,
    phone: Option<String>,
    email: Option<String>,
    messenger: Option<String>,
    tracking_number: Option<String>,
    visitor_id: Option<String>,
    channel: Option<String>,
    budget: Option<f64>,
    utm: [Option<String>; 5],
    fields: Map<String, Value>,
    consent: Option<(Option<bool>, Option<String>, Option<String>)>,
    errors: FieldErrors,
}

fn text_key(name: &str) -> Option<&'static str> {
    TEXT_LIMITS.iter().find(|(k, _)| *k == name).map(|(k, _)| *k)
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// A string value, trimmed; empty means absent. Numbers are accepted as their text.
fn string_of(v: &Value, field: &str, errors: &mut FieldErrors) -> Option<String> {
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            errors.add(field, texts::NOT_STRING);
            return None;
        }
    };
    if s.contains('\0') {
        errors.add(field, texts::NUL_CHAR);
        return None;
    }
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn number_of(v: &Value, field: &str, errors: &mut FieldErrors) -> Option<f64> {
    match v {
        Value::Null => None,
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => {
            let cleaned: String = s.chars().filter(|c| !c.is_whitespace() && *c != '\u{a0}').collect();
            match cleaned.replace(',', ".").parse::<f64>() {
                Ok(n) if n.is_finite() => Some(n),
                _ => {
                    errors.add(field, texts::NOT_NUMBER);
                    None
                }
            }
        }
        _ => {
            errors.add(field, texts::NOT_NUMBER);
            None
        }
    }
}

impl Raw {
    fn set(&mut self, key: &str, v: &Value) {
        let errors = &mut self.errors;
        match key {
            "phone" => self.phone = string_of(v, "phone", errors),
            "email" => self.email = string_of(v, "email", errors),
            "messenger" => self.messenger = string_of(v, "messenger", errors),
            "tracking_number" => self.tracking_number = string_of(v, "tracking_number", errors),
            "visitor_id" => self.visitor_id = string_of(v, "visitor_id", errors),
            "channel" => self.channel = string_of(v, "channel", errors),
            "budget" => self.budget = number_of(v, "budget", errors),
            "utm" => match v {
                Value::Null => {}
                Value::Object(o) => {
                    for (k, val) in o {
                        match UTM_KEYS.iter().position(|u| u == k) {
                            Some(i) => self.utm[i] = string_of(val, &format!("utm.{k}"), errors),
                            None => {
                                self.fields.insert(format!("utm_{k}"), val.clone());
                            }
                        }
                    }
                }
                _ => errors.add("utm", texts::NOT_OBJECT),
            },
            "fields" => match v {
                Value::Null => {}
                Value::Object(o) => {
                    for (k, val) in o {
                        self.fields.insert(k.clone(), val.clone());
                    }
                }
                _ => errors.add("fields", texts::NOT_OBJECT),
            },
            "consent" => match v {
                Value::Null => {}
                Value::Object(o) => {
                    let marketing = match o.get("marketing") {
                        None | Some(Value::Null) => None,
                        Some(Value::Bool(b)) => Some(*b),
                        Some(_) => {
                            errors.add("consent.marketing", texts::NOT_BOOL);
                            None
                        }
                    };
                    let text = o.get("text").and_then(|t| string_of(t, "consent.text", errors));
                    let at = o.get("at").and_then(|t| string_of(t, "consent.at", errors));
                    self.consent = Some((marketing, text, at));
                }
                Value::Bool(b) => self.consent = Some((Some(*b), None, None)),
                _ => errors.add("consent", texts::NOT_OBJECT),
            },
            other => {
                if let Some(u) = other.strip_prefix("utm_").and_then(|u| UTM_KEYS.iter().position(|k| *k == u)) {
                    self.utm[u] = string_of(v, other, errors);
                } else if let Some(k) = text_key(other) {
                    if let Some(s) = string_of(v, k, errors) {
                        self.text.insert(k, s);
                    }
                } else {
                    // Unknown names are kept, not lost: they become custom fields.
                    self.fields.insert(other.to_string(), v.clone());
                }
            }
        }
    }

    fn finish(mut self, defaults: &IntakeDefaults, submission: Value) -> Result<NewLead, Rejection> {
        let region = defaults.region;
        let errors = &mut self.errors;
        for (k, limit) in TEXT_LIMITS {
            if let Some(s) = self.text.get(k)
                && s.chars().count() > *limit
            {
                errors.add(*k, texts::TOO_LONG);
            }
        }
        let mut utm = [None, None, None, None, None];
        for (i, v) in std::mem::take(&mut self.utm).into_iter().enumerate() {
            if let Some(s) = v {
                if s.chars().count() > UTM_LIMIT {
                    errors.add(format!("utm.{}", UTM_KEYS[i]), texts::TOO_LONG);
                }
                utm[i] = Some(s);
            }
        }
        let phone = self.phone.as_deref().and_then(|raw| {
            let p = Phone::parse(raw, region);
            if p.is_none() {
                errors.add("phone", texts::INVALID_PHONE);
            }
            p
        });
        let email = self.email.as_deref().and_then(|raw| {
            let e = Email::parse(raw);
            if e.is_none() {
                errors.add("email", texts::INVALID_EMAIL);
            }
            e
        });
        let messenger = self.messenger.as_deref().and_then(|raw| {
            let m = Messenger::parse(raw, region);
            if m.is_none() {
                errors.add("messenger", texts::INVALID_MESSENGER);
            }
            m
        });
        let tracking_number = self.tracking_number.as_deref().and_then(|raw| {
            let p = Phone::parse(raw, region);
            if p.is_none() {
                errors.add("tracking_number", texts::INVALID_PHONE);
            }
            p
        });
        if let Some(v) = &self.visitor_id {
            let ok = v.len() <= 100 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !ok {
                errors.add("visitor_id", texts::BAD_VISITOR);
            }
        }
        let channel = match self.channel.take() {
            Some(c) => {
                if !is_slug(&c) {
                    errors.add("channel", texts::BAD_SLUG);
                }
                c
            }
            None => defaults.channel.clone(),
        };
        if let Some(b) = self.budget
            && b < 0.0
        {
            errors.add("budget", texts::NEGATIVE);
        }
        if self.fields.len() > MAX_CUSTOM_FIELDS {
            errors.add("fields", texts::TOO_MANY_FIELDS);
        } else if serde_json::to_vec(&self.fields).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_CUSTOM_BYTES {
            errors.add("fields", texts::TOO_LONG);
        } else if let Some(k) = self.fields.iter().find(|(k, v)| k.contains('\0') || has_nul(v)).map(|(k, _)| k.clone()) {
            errors.add(format!("fields.{}", k.replace('\0', "")), texts::NUL_CHAR);
        }
        let consent = match self.consent.take() {
            None => None,
            Some((marketing, text, at)) => {
                if text.as_ref().is_some_and(|t| t.chars().count() > 5000) {
                    errors.add("consent.text", texts::TOO_LONG);
                }
                let at = at.and_then(|a| match DateTime::parse_from_rfc3339(&a) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(_) => {
                        errors.add("consent.at", texts::BAD_TIME);
                        None
                    }
                });
                Some(Consent { marketing: marketing.unwrap_or(false), text, at })
            }
        };

        let usable = phone.is_some() || email.is_some() || messenger.is_some();
        if !usable {
            let mut contact_errors = FieldErrors::new();
            for (k, t) in self.errors.iter() {
                contact_errors.add(k, t);
            }
            if contact_errors.is_empty() {
                contact_errors.add("phone", texts::CONTACT_REQUIRED);
            }
            return Err(Rejection::ContactRequired(contact_errors));
        }
        if !self.errors.is_empty() {
            return Err(Rejection::InvalidFields(self.errors));
        }
        let [us, um, uc, uco, ut] = utm;
        let mut text = self.text;
        Ok(NewLead {
            name: text.remove("name"),
            phone,
            email,
            messenger,
            company: text.remove("company"),
            position: text.remove("position"),
            city: text.remove("city"),
            interest: text.remove("interest"),
            message: text.remove("message"),
            budget: self.budget,
            channel,
            campaign: text.remove("campaign").or_else(|| defaults.campaign.clone()),
            source: text.remove("source"),
            utm: Utm { source: us, medium: um, campaign: uc, content: uco, term: ut },
            referrer: text.remove("referrer"),
            landing_page: text.remove("landing_page"),
            tracking_number,
            visitor_id: self.visitor_id,
            external_id: text.remove("external_id"),
            fields: self.fields,
            consent,
            submission,
        })
    }
}

pub fn is_slug(s: &str) -> bool {
    (1..=50).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The raw input: JSON object of the API, or the flat fields of a public form.
pub struct LeadInput;

impl LeadInput {
    /// Parses the body of `POST /api/v1/leads`: an object whose every field is optional.
    /// Unknown top-level names are kept as custom fields rather than dropped.
    pub fn from_json(body: Value, defaults: &IntakeDefaults) -> Result<NewLead, Rejection> {
        let mut raw = Raw::default();
        match &body {
            Value::Object(o) => {
                for (k, v) in o {
                    if k.contains('\0') {
                        raw.errors.add(k.replace('\0', ""), texts::NUL_CHAR);
                        continue;
                    }
                    raw.set(k, v);
                }
            }
            _ => {
                raw.errors.add("body", texts::NOT_OBJECT);
                return Err(Rejection::InvalidFields(raw.errors));
            }
        }
        raw.finish(defaults, body)
    }

    /// Reads the fields of a public form through its mapping (form field → lead field);
    /// names without a mapping use the default names and their usual aliases.
    pub fn from_form(
        pairs: &[(String, String)],
        mapping: &Map<String, Value>,
        skip: &[&str],
        defaults: &IntakeDefaults,
    ) -> Result<NewLead, Rejection> {
        let mut raw = Raw::default();
        let mut submission = Map::new();
        for (k, v) in pairs {
            if skip.contains(&k.as_str()) {
                continue;
            }
            match submission.get_mut(k) {
                Some(Value::Array(a)) => a.push(Value::String(v.clone())),
                Some(prev) => {
                    let first = prev.take();
                    *prev = Value::Array(vec![first, Value::String(v.clone())]);
                }
                None => {
                    submission.insert(k.clone(), Value::String(v.clone()));
                }
            }
            if k.contains('\0') {
                raw.errors.add(k.replace('\0', ""), texts::NUL_CHAR);
                continue;
            }
            let target = match mapping.get(k).and_then(Value::as_str) {
                Some(t) => t.to_string(),
                None => default_form_name(k),
            };
            if target.is_empty() {
                continue; // mapped to "" = ignore
            }
            let value = Value::String(v.clone());
            raw.set(&target, &value);
        }
        raw.finish(defaults, Value::Object(submission))
    }
}

/// The lead field a form field name means when the form has no mapping for it.
pub fn default_form_name(name: &str) -> String {
    let n = name.trim().to_lowercase();
    let target = match n.as_str() {
        "name" | "fio" | "fullname" | "full_name" | "your-name" | "your_name" | "имя" | "фио" => "name",
        "phone" | "tel" | "telephone" | "phone_number" | "your-phone" | "телефон" => "phone",
        "email" | "e-mail" | "mail" | "your-email" | "почта" => "email",
        "message" | "comment" | "comments" | "text" | "your-message" | "комментарий" | "сообщение" => "message",
        "company" | "organization" | "компания" => "company",
        "city" | "город" => "city",
        "position" | "job_title" | "должность" => "position",
        "telegram" | "messenger" | "whatsapp" => "messenger",
        "visitor_id" | "_vid" | "vk_vid" => "visitor_id",
        _ => return name.to_string(),
    };
    target.to_string()
}

impl NewLead {
    /// Identity keys by which this submission finds an earlier lead of the same person,
    /// strongest first: phone, e-mail, messenger.
    pub fn identities(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(3);
        if let Some(p) = &self.phone {
            out.push(p.identity());
        }
        if let Some(e) = &self.email {
            out.push(e.identity());
        }
        if let Some(m) = &self.messenger {
            out.push(m.identity());
        }
        out
    }

    /// Lower-cased text searched by `q`: name, company, e-mail, phone spellings, messenger.
    pub fn search_text(&self) -> String {
        search_text(
            self.name.as_deref(),
            self.company.as_deref(),
            self.email.as_ref().map(Email::as_str),
            self.phone.as_ref(),
            self.messenger.as_ref().map(Messenger::as_str),
        )
    }
}

pub fn search_text(
    name: Option<&str>,
    company: Option<&str>,
    email: Option<&str>,
    phone: Option<&Phone>,
    messenger: Option<&str>,
) -> String {
    let mut s = String::new();
    for part in [name, company, email, messenger].into_iter().flatten() {
        s.push_str(&part.to_lowercase());
        s.push('\u{1f}');
    }
    if let Some(p) = phone {
        for f in p.search_forms() {
            s.push_str(&f);
            s.push('\u{1f}');
        }
    }
    s
}

/// A query typed into search, turned into what `search_text` holds: a phone in any spelling
/// becomes its digits, anything else is lower-cased.
pub fn search_needle(q: &str, region: PhoneRegion) -> String {
    if let Some(p) = Phone::parse(q, region) {
        return p.search_forms().swap_remove(0);
    }
    let t = q.trim();
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    if !digits.is_empty() && t.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c)) {
        return digits;
    }
    t.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> IntakeDefaults {
        IntakeDefaults { channel: "api".into(), campaign: None, region: PhoneRegion::default() }
    }

    fn fields_of(r: Rejection) -> Vec<String> {
        match r {
            Rejection::ContactRequired(f) | Rejection::InvalidFields(f) => f.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    #[test]
    fn the_api_example_parses_into_a_normalised_lead() {
        let body = json!({"name":"Виктор","phone":"+7 (921) 555-12-34","email":"V@Example.ru","messenger":"@victor",
            "company":"ООО Ромашка","position":"CEO","city":"Москва","interest":"2-комнатная квартира",
            "message":"free text","budget":2000000,"channel":"web_form","campaign":"spring-2027","source":"landing-1",
            "utm":{"source":"yandex","medium":"cpc","campaign":"flats","content":"a","term":"купить"},
            "referrer":"https://ya.ru/","landing_page":"https://site/","tracking_number":"+74951234567",
            "visitor_id":"v-1","external_id":"x1","fields":{"any":"custom"},
            "consent":{"marketing":true,"text":"Согласен","at":"2027-03-01T10:00:00Z"}});
        let l = LeadInput::from_json(body, &defaults()).unwrap();
        assert_eq!(l.phone.unwrap().as_str(), "+79215551234");
        assert_eq!(l.email.unwrap().as_str(), "v@example.ru");
        assert_eq!(l.messenger.unwrap().as_str(), "telegram:victor");
        assert_eq!(l.tracking_number.unwrap().as_str(), "+74951234567");
        assert_eq!(l.utm.term.as_deref(), Some("купить"));
        assert_eq!(l.budget, Some(2_000_000.0));
        assert_eq!(l.channel, "web_form");
        assert_eq!(l.fields["any"], "custom");
        assert!(l.consent.unwrap().marketing);
    }

    #[test]
    fn no_usable_contact_is_contact_required() {
        let r = LeadInput::from_json(json!({"name":"Виктор"}), &defaults()).unwrap_err();
        assert!(matches!(r, Rejection::ContactRequired(_)));
        let r = LeadInput::from_json(json!({"name":"Виктор","phone":"123"}), &defaults()).unwrap_err();
        assert!(matches!(&r, Rejection::ContactRequired(f) if f.contains("phone")));
    }

    #[test]
    fn every_bad_field_is_named() {
        let r = LeadInput::from_json(
            json!({"phone":"+79215551234","email":"nope","budget":"much","utm":{"source":["x"]},"channel":"Web Form",
                   "consent":{"at":"yesterday"},"name":"x".repeat(201),"visitor_id":"<script>"}),
            &defaults(),
        )
        .unwrap_err();
        assert!(matches!(r, Rejection::InvalidFields(_)));
        assert_eq!(fields_of(r), vec!["budget", "channel", "consent.at", "email", "name", "utm.source", "visitor_id"]);
    }

    #[test]
    fn unknown_names_become_custom_fields() {
        let l = LeadInput::from_json(json!({"email":"a@b.ru","tags":["x"]}), &defaults()).unwrap();
        assert_eq!(l.fields["tags"], json!(["x"]));
    }

    #[test]
    fn nul_characters_are_refused_by_field() {
        let r = LeadInput::from_json(json!({"email":"a@b.ru","name":"a\u{0}b"}), &defaults()).unwrap_err();
        assert_eq!(fields_of(r), vec!["name"]);
        let r = LeadInput::from_json(json!({"email":"a@b.ru","fields":{"k":"a\u{0}"}}), &defaults()).unwrap_err();
        assert_eq!(fields_of(r), vec!["fields.k"]);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        assert!(LeadInput::from_json(json!([1, 2]), &defaults()).is_err());
    }

    #[test]
    fn names_are_trimmed_never_fixed() {
        let l = LeadInput::from_json(json!({"email":"a@b.ru","name":"  иВАН  петров\u{200f} "}), &defaults()).unwrap();
        assert_eq!(l.name.as_deref(), Some("иВАН  петров\u{200f}"));
    }

    #[test]
    fn form_fields_map_by_default_names_and_aliases() {
        let pairs: Vec<(String, String)> = [("fio", "Анна"), ("tel", "89215551234"), ("utm_source", "vk"), ("size", "L"), ("_hp", "")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let l = LeadInput::from_form(&pairs, &Map::new(), &["_hp"], &defaults()).unwrap();
        assert_eq!(l.name.as_deref(), Some("Анна"));
        assert_eq!(l.phone.unwrap().as_str(), "+79215551234");
        assert_eq!(l.utm.source.as_deref(), Some("vk"));
        assert_eq!(l.fields["size"], "L");
        assert!(l.submission.get("_hp").is_none());
    }

    #[test]
    fn form_mapping_overrides_defaults() {
        let pairs = vec![("contact".to_string(), "a@b.ru".to_string()), ("name".to_string(), "x".to_string())];
        let mut map = Map::new();
        map.insert("contact".into(), json!("email"));
        map.insert("name".into(), json!(""));
        let l = LeadInput::from_form(&pairs, &map, &[], &defaults()).unwrap();
        assert_eq!(l.email.unwrap().as_str(), "a@b.ru");
        assert_eq!(l.name, None);
    }

    #[test]
    fn search_needle_reads_phones_in_any_format() {
        let r = PhoneRegion::default();
        assert_eq!(search_needle("8 (921) 555-12-34", r), "79215551234");
        assert_eq!(search_needle("555-12", r), "55512");
        assert_eq!(search_needle("Ромашка", r), "ромашка");
    }

    #[test]
    fn identities_go_strongest_first() {
        let l = LeadInput::from_json(json!({"email":"a@b.ru","phone":"89215551234","messenger":"@victor"}), &defaults()).unwrap();
        assert_eq!(l.identities(), vec!["phone:+79215551234", "email:a@b.ru", "telegram:victor"]);
    }
}
