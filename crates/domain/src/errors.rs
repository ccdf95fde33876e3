//! Field errors collected during parsing and validation, with texts in Russian and English.

use serde::Serialize;
use std::collections::BTreeMap;

/// The language of a public text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Ru,
}

impl Lang {
    /// Picks the language from an `Accept-Language` header: the first of `ru` or `en` named
    /// with the highest weight wins; English when neither is named.
    pub fn from_accept_language(header: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in header.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|v| v.parse::<f32>().ok())).unwrap_or(1.0);
            let lang = if tag == "ru" || tag.starts_with("ru-") {
                Lang::Ru
            } else if tag == "en" || tag.starts_with("en-") {
                Lang::En
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }
}

/// A message in both languages; the edge picks one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    pub en: &'static str,
    pub ru: &'static str,
}

impl Text {
    pub const fn new(en: &'static str, ru: &'static str) -> Self {
        Self { en, ru }
    }
    pub fn get(self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Ru => self.ru,
        }
    }
}

/// Each bad field with what is wrong with it; ordered by field name for stable output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Text>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn add(&mut self, field: impl Into<String>, text: Text) {
        self.0.entry(field.into()).or_insert(text);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, Text)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
    pub fn localized(&self, lang: Lang) -> BTreeMap<String, String> {
        self.0.iter().map(|(k, v)| (k.clone(), v.get(lang).to_string())).collect()
    }
}

pub mod texts {
    use super::Text;
    pub const INVALID_PHONE: Text = Text::new("not a valid phone number", "некорректный номер телефона");
    pub const INVALID_EMAIL: Text = Text::new("not a valid e-mail address", "некорректный адрес e-mail");
    pub const INVALID_MESSENGER: Text =
        Text::new("not a messenger id: use @telegram, wa:+7…, vk.com/…", "не похоже на мессенджер: укажите @telegram, wa:+7…, vk.com/…");
    pub const TOO_LONG: Text = Text::new("too long", "слишком длинное значение");
    pub const NOT_STRING: Text = Text::new("must be a string", "должно быть строкой");
    pub const NOT_NUMBER: Text = Text::new("must be a number", "должно быть числом");
    pub const NOT_BOOL: Text = Text::new("must be true or false", "должно быть true или false");
    pub const NOT_OBJECT: Text = Text::new("must be an object", "должно быть объектом");
    pub const NEGATIVE: Text = Text::new("must not be negative", "не может быть отрицательным");
    pub const NUL_CHAR: Text = Text::new("contains a NUL character", "содержит символ NUL");
    pub const BAD_SLUG: Text = Text::new(
        "use lower-case latin letters, digits, '-' and '_' (at most 50)",
        "допустимы строчные латинские буквы, цифры, '-' и '_' (не более 50)",
    );
    pub const BAD_TIME: Text = Text::new(
        "must be a date and time in RFC 3339, e.g. 2027-03-01T10:00:00Z",
        "нужны дата и время в RFC 3339, например 2027-03-01T10:00:00Z",
    );
    pub const BAD_VISITOR: Text = Text::new(
        "use at most 100 latin letters, digits, '-', '_', '.' or ':'",
        "допустимо до 100 латинских букв, цифр, '-', '_', '.' или ':'",
    );
    pub const TOO_MANY_FIELDS: Text = Text::new("too many custom fields (at most 50)", "слишком много своих полей (не более 50)");
    pub const CONTACT_REQUIRED: Text =
        Text::new("a usable phone, e-mail or messenger is required", "нужен корректный телефон, e-mail или мессенджер");
}
