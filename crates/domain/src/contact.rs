//! Contact values that cannot hold bad data: phones in E.164, e-mails trimmed and lower-cased,
//! messenger ids in one canonical spelling. Each also yields its identity key for dedup.

use phonenumber::country;
use std::fmt;
use std::str::FromStr;

/// The region a phone without a country code is read in (RU by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(country::Id);

impl Default for PhoneRegion {
    fn default() -> Self {
        PhoneRegion(country::Id::RU)
    }
}

impl FromStr for PhoneRegion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        country::Id::from_str(&s.trim().to_ascii_uppercase())
            .map(PhoneRegion)
            .map_err(|_| format!("unknown region {s:?}: use a two-letter country code such as RU"))
    }
}

/// A valid phone number in E.164 (`+79215551234`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Reads a phone typed in any common way (`8 (921) 555-12-34`, `+7 921 5551234`,
    /// `89215551234`); numbers without a country code are read in `region`.
    pub fn parse(raw: &str, region: PhoneRegion) -> Option<Phone> {
        let raw = raw.trim();
        // Cheap guards before the full parser: a phone has 7–17 digits and little else.
        let digits = raw.chars().filter(|c| c.is_ascii_digit()).count();
        if !(7..=17).contains(&digits) || raw.len() > 40 {
            return None;
        }
        if region.0 == country::Id::RU
            && let Some(national) = ru_mobile(raw)
        {
            return Some(Phone(format!("+7{national}")));
        }
        Self::parse_full(raw, region)
    }

    /// The full libphonenumber rules (a few microseconds a number).
    fn parse_full(raw: &str, region: PhoneRegion) -> Option<Phone> {
        let number = phonenumber::parse(Some(region.0), raw).ok()?;
        if !number.is_valid() {
            return None;
        }
        Some(Phone(number.format().mode(phonenumber::Mode::E164).to_string()))
    }

    pub fn from_e164_unchecked(s: String) -> Phone {
        Phone(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn identity(&self) -> String {
        format!("phone:{}", self.0)
    }
    /// Digit strings a person might type to find this number: `79215551234`,
    /// `89215551234` and `9215551234` for a Russian number.
    pub fn search_forms(&self) -> Vec<String> {
        let digits: String = self.0.chars().filter(|c| c.is_ascii_digit()).collect();
        let mut out = vec![digits.clone()];
        if let Some(national) = digits.strip_prefix('7')
            && national.len() == 10
        {
            out.push(format!("8{national}"));
            out.push(national.to_string());
        }
        out
    }
    /// International display form, e.g. `+7 921 555-12-34`.
    pub fn display(&self) -> String {
        phonenumber::parse(None, &self.0)
            .map(|n| n.format().mode(phonenumber::Mode::International).to_string())
            .unwrap_or_else(|_| self.0.clone())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fast path for the most common lead contact, a Russian mobile number (national
/// pattern `9\d{9}` in libphonenumber's metadata) typed with the usual separators. Returns
/// the ten national digits, or None to let the full parser decide.
fn ru_mobile(raw: &str) -> Option<String> {
    let mut digits = String::with_capacity(12);
    let mut plus = false;
    for (i, c) in raw.char_indices() {
        match c {
            '0'..='9' => {
                if digits.len() == 11 {
                    return None;
                }
                digits.push(c);
            }
            '+' if i == 0 => plus = true,
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return None,
        }
    }
    let national = match (plus, digits.len()) {
        (true, 11) if digits.starts_with("79") => &digits[1..],
        (false, 11) if digits.starts_with("79") || digits.starts_with("89") => &digits[1..],
        (false, 10) if digits.starts_with('9') => &digits[..],
        _ => return None,
    };
    Some(national.to_string())
}

/// An e-mail address, trimmed and lower-cased, with a dotted domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// Public mail services: an address there says nothing about a company.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "mail.ru",
    "yandex.ru",
    "ya.ru",
    "yandex.com",
    "bk.ru",
    "list.ru",
    "inbox.ru",
    "internet.ru",
    "rambler.ru",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "aol.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "zoho.com",
    "yandex.by",
    "yandex.kz",
    "ukr.net",
    "tut.by",
    "mail.com",
    "qip.ru",
    "lenta.ru",
    "autorambler.ru",
    "myrambler.ru",
];

impl Email {
    pub fn parse(raw: &str) -> Option<Email> {
        let s = raw.trim().to_lowercase();
        if s.len() > 254 {
            return None;
        }
        let (local, domain) = s.rsplit_once('@')?;
        if local.is_empty() || !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return None;
        }
        if !email_address::EmailAddress::is_valid(&s) {
            return None;
        }
        Some(Email(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
    pub fn is_free_mail(&self) -> bool {
        Email::is_free_mail_domain(self.domain())
    }
    /// Whether a (lower-case) domain is a free mail service.
    pub fn is_free_mail_domain(domain: &str) -> bool {
        FREE_MAIL_DOMAINS.contains(&domain)
    }
    pub fn identity(&self) -> String {
        format!("email:{}", self.0)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A messenger id in canonical form: `telegram:name`, `whatsapp:+79215551234` or `vk:name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Messenger(String);

impl Messenger {
    /// Accepts `@name`, `t.me/name`, `tg:name`, `telegram:name`; `wa:+7…`, `whatsapp:…`,
    /// `wa.me/7…`; `vk:name`, `vk.com/name`. URLs may carry `https://` and `www.`.
    pub fn parse(raw: &str, region: PhoneRegion) -> Option<Messenger> {
        let s = raw.trim();
        let lower = s.to_lowercase();
        let bare = lower.trim_start_matches("https://").trim_start_matches("http://").trim_start_matches("www.").trim_end_matches('/');
        let (kind, rest) = if let Some(r) = bare.strip_prefix('@') {
            ("telegram", r)
        } else if let Some(r) = strip_any(bare, &["t.me/", "telegram.me/", "tg:", "telegram:"]) {
            ("telegram", r.trim_start_matches('@'))
        } else if let Some(r) = strip_any(bare, &["wa.me/", "wa:", "whatsapp:"]) {
            ("whatsapp", r)
        } else if let Some(r) = strip_any(bare, &["vk.com/", "vk.ru/", "m.vk.com/", "vk:"]) {
            ("vk", r)
        } else {
            return None;
        };
        match kind {
            "telegram" => {
                let ok = (5..=32).contains(&rest.len())
                    && rest.starts_with(|c: char| c.is_ascii_lowercase())
                    && rest.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                ok.then(|| Messenger(format!("telegram:{rest}")))
            }
            "whatsapp" => {
                let number = if rest.starts_with('+') {
                    rest.to_string()
                } else if rest.len() >= 11 {
                    format!("+{rest}")
                } else {
                    rest.to_string()
                };
                Phone::parse(&number, region).map(|p| Messenger(format!("whatsapp:{}", p.as_str())))
            }
            _ => {
                let ok = (2..=50).contains(&rest.len())
                    && rest.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
                ok.then(|| Messenger(format!("vk:{rest}")))
            }
        }
    }
    pub fn from_canonical_unchecked(s: String) -> Messenger {
        Messenger(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn identity(&self) -> String {
        self.0.clone()
    }
}

fn strip_any<'a>(s: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| s.strip_prefix(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ru(raw: &str) -> Option<String> {
        Phone::parse(raw, PhoneRegion::default()).map(|p| p.as_str().to_string())
    }

    #[test]
    fn every_spec_phone_format_is_one_e164_number() {
        for raw in [
            "8 (921) 555-12-34",
            "+7 921 5551234",
            "89215551234",
            "+7 (921) 555-12-34",
            "7 921 555 12 34",
            "  8-921-555-12-34 ",
            "+79215551234",
            "tel:+7-921-555-12-34",
        ] {
            assert_eq!(ru(raw).as_deref(), Some("+79215551234"), "{raw}");
        }
    }

    #[test]
    fn the_russian_mobile_fast_path_agrees_with_libphonenumber() {
        let r = PhoneRegion::default();
        let mut n: u64 = 9_000_000_007;
        for i in 0..3000u64 {
            n = 9_000_000_000 + (n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i) % 999_999_999);
            let d = n.to_string();
            let spellings = [
                format!("+7{d}"),
                format!("8{d}"),
                format!("7{d}"),
                d.clone(),
                format!("+7 ({}) {}-{}-{}", &d[..3], &d[3..6], &d[6..8], &d[8..]),
                format!("8 ({}) {}-{}-{}", &d[..3], &d[3..6], &d[6..8], &d[8..]),
                format!("8.{}.{}", &d[..3], &d[3..]),
            ];
            for s in spellings {
                assert_eq!(Phone::parse(&s, r), Phone::parse_full(&s, r), "{s}");
            }
        }
        // Not a mobile: the full rules decide.
        for s in ["+7 495 123-45-67", "+77012345678", "+8 921 555 12 34", "9215551234567"] {
            assert_eq!(Phone::parse(s, r), Phone::parse_full(s, r), "{s}");
        }
    }

    #[test]
    fn moscow_landline_and_foreign_numbers_parse() {
        assert_eq!(ru("8 (495) 123-45-67").as_deref(), Some("+74951234567"));
        assert_eq!(ru("+1 650 253 0000").as_deref(), Some("+16502530000"));
        assert_eq!(ru("+44 20 7946 0958").as_deref(), Some("+442079460958"));
    }

    #[test]
    fn garbage_is_not_a_phone() {
        for raw in ["", "123", "abc", "8 (921) 555-12", "+7 921 555 12 34 56 78 90", "'; DROP TABLE leads;--", "☎☎☎"] {
            assert_eq!(ru(raw), None, "{raw}");
        }
    }

    #[test]
    fn phone_search_forms_cover_russian_spellings() {
        let p = Phone::parse("89215551234", PhoneRegion::default()).unwrap();
        assert_eq!(p.search_forms(), vec!["79215551234", "89215551234", "9215551234"]);
    }

    #[test]
    fn region_is_configurable() {
        let de: PhoneRegion = "de".parse().unwrap();
        assert_eq!(Phone::parse("030 123456", de).unwrap().as_str(), "+4930123456");
        assert!("XX".parse::<PhoneRegion>().is_err());
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(Email::parse("  Victor.P@Example.RU ").unwrap().as_str(), "victor.p@example.ru");
        assert_eq!(Email::parse("Иван@почта.рф").unwrap().as_str(), "иван@почта.рф");
        for bad in ["", "victor", "v@localhost", "v@@x.ru", "@x.ru", "v@.ru", "v@x.ru.", "a b@x.ru"] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn free_mail_is_recognised() {
        assert!(Email::parse("a@gmail.com").unwrap().is_free_mail());
        assert!(Email::parse("a@Mail.Ru").unwrap().is_free_mail());
        assert!(!Email::parse("a@romashka.ru").unwrap().is_free_mail());
    }

    #[test]
    fn messengers_have_one_canonical_spelling() {
        let r = PhoneRegion::default();
        let m = |s: &str| Messenger::parse(s, r).map(|m| m.as_str().to_string());
        assert_eq!(m("@Victor").as_deref(), Some("telegram:victor"));
        assert_eq!(m("https://t.me/victor/").as_deref(), Some("telegram:victor"));
        assert_eq!(m("tg:@victor").as_deref(), Some("telegram:victor"));
        assert_eq!(m("wa:+7 921 555-12-34").as_deref(), Some("whatsapp:+79215551234"));
        assert_eq!(m("https://wa.me/79215551234").as_deref(), Some("whatsapp:+79215551234"));
        assert_eq!(m("vk.com/id12345").as_deref(), Some("vk:id12345"));
        assert_eq!(m("vk:durov").as_deref(), Some("vk:durov"));
        for bad in ["victor", "@ab", "@1victor", "wa:123", "vk:", "icq:12345"] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }
}
