//! The sales workflow's rules: which state moves are allowed, which need a reason, and the
//! Russian registration numbers a company is checked by (INN, KPP, OGRN, OKPO).

use crate::LeadStatus;
use crate::LeadStatus::*;

/// Whether the state machine allows a lead to move from `from` to `to` through the status
/// endpoint. Conversion happens only through the convert endpoint; nothing leaves
/// `converted`; a refused lead may go back to nurturing (re-nurture), junk back to new (a
/// mistake undone).
pub fn can_move(from: LeadStatus, to: LeadStatus) -> bool {
    if from == to {
        return false;
    }
    match from {
        New => matches!(to, Nurturing | SalesReady | Assigned | InProgress | Refused | Junk | Postponed),
        Nurturing => matches!(to, SalesReady | Assigned | InProgress | Refused | Junk | Postponed),
        SalesReady => matches!(to, Nurturing | Assigned | InProgress | Refused | Junk | Postponed),
        Assigned => matches!(to, InProgress | Nurturing | SalesReady | Refused | Junk | Postponed),
        InProgress => matches!(to, Qualified | Nurturing | Refused | Junk | Postponed),
        Qualified => matches!(to, InProgress | Nurturing | Refused | Postponed),
        Postponed => matches!(to, InProgress | Assigned | Nurturing | SalesReady | Refused | Junk),
        Refused => matches!(to, Nurturing),
        Junk => matches!(to, New),
        Converted => false,
    }
}

/// Moves that need a reason from the editable lists.
pub fn needs_reason(to: LeadStatus) -> bool {
    matches!(to, Refused | Junk)
}

/// The refusal reasons a new installation starts with (code, English, Russian).
pub const REFUSAL_REASONS: &[(&str, &str, &str)] = &[
    ("price", "Price", "Цена"),
    ("no_budget", "No budget", "Нет бюджета"),
    ("competitor", "Chose a competitor", "Выбрал конкурента"),
    ("not_now", "Not now", "Не сейчас"),
    ("no_answer", "No answer", "Не отвечает"),
    ("other", "Other", "Другое"),
];

/// The junk (non-target) reasons a new installation starts with.
pub const JUNK_REASONS: &[(&str, &str, &str)] = &[
    ("spam", "Spam", "Спам"),
    ("wrong_number", "Wrong number", "Ошибся номером"),
    ("out_of_area", "Out of area", "Вне зоны обслуживания"),
    ("pickup_only", "Pickup only", "Только самовывоз"),
    ("exotic_request", "Exotic request", "Нецелевой запрос"),
    ("duplicate", "Duplicate", "Дубль"),
    ("other", "Other", "Другое"),
];

fn digits(s: &str, len: &[usize]) -> Option<Vec<u32>> {
    let s = s.trim();
    if !len.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().map(|b| (b - b'0') as u32).collect())
}

fn weighted(d: &[u32], w: &[u32]) -> u32 {
    d.iter().zip(w).map(|(a, b)| a * b).sum()
}

/// INN (ИНН): 10 digits for an organisation, 12 for an individual, with check digits.
pub fn inn_valid(s: &str) -> bool {
    let Some(d) = digits(s, &[10, 12]) else { return false };
    if d.len() == 10 {
        let c = weighted(&d, &[2, 4, 10, 3, 5, 9, 4, 6, 8]) % 11 % 10;
        c == d[9]
    } else {
        let c1 = weighted(&d, &[7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) % 11 % 10;
        let c2 = weighted(&d, &[3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]) % 11 % 10;
        c1 == d[10] && c2 == d[11]
    }
}

/// KPP (КПП): 9 characters — 4 digits (tax office), 2 digits or capital latin letters
/// (reason), 3 digits. It has no check digit.
pub fn kpp_valid(s: &str) -> bool {
    let b = s.trim().as_bytes();
    b.len() == 9
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4..6].iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        && b[6..].iter().all(u8::is_ascii_digit)
}

/// OGRN (ОГРН, 13 digits) or OGRNIP (ОГРНИП, 15 digits): the last digit is the number
/// without it modulo 11 (13) or 13 (15), modulo 10.
pub fn ogrn_valid(s: &str) -> bool {
    let s = s.trim();
    let Some(_) = digits(s, &[13, 15]) else { return false };
    let (body, check) = s.split_at(s.len() - 1);
    let Ok(n) = body.parse::<u64>() else { return false };
    let m = if s.len() == 13 { 11 } else { 13 };
    (n % m % 10).to_string() == check
}

/// OKPO (ОКПО): 8 digits (organisation) or 10 (individual entrepreneur); the check digit
/// is the sum with weights 1,2,3… modulo 11, retried with weights 3,4,5… when it is 10.
pub fn okpo_valid(s: &str) -> bool {
    let Some(d) = digits(s, &[8, 10]) else { return false };
    let (body, check) = d.split_at(d.len() - 1);
    let sum = |start: u32| -> u32 { body.iter().enumerate().map(|(i, x)| x * (start + (i as u32 % 10))).sum::<u32>() % 11 };
    let mut c = sum(1);
    if c == 10 {
        c = sum(3);
        if c == 10 {
            c = 0;
        }
    }
    c == check[0]
}

/// Company size by headcount (Russian SME categories): micro < 15, small < 100, medium
/// < 250, large from 250.
pub fn size_by_employees(n: u64) -> &'static str {
    match n {
        0..=14 => "micro",
        15..=99 => "small",
        100..=249 => "medium",
        _ => "large",
    }
}

pub const COMPANY_SIZES: &[&str] = &["large", "medium", "small", "micro"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_table() {
        // Every pair: allowed exactly where the table says.
        let allowed: &[(LeadStatus, &[LeadStatus])] = &[
            (New, &[Nurturing, SalesReady, Assigned, InProgress, Refused, Junk, Postponed]),
            (Nurturing, &[SalesReady, Assigned, InProgress, Refused, Junk, Postponed]),
            (SalesReady, &[Nurturing, Assigned, InProgress, Refused, Junk, Postponed]),
            (Assigned, &[InProgress, Nurturing, SalesReady, Refused, Junk, Postponed]),
            (InProgress, &[Qualified, Nurturing, Refused, Junk, Postponed]),
            (Qualified, &[InProgress, Nurturing, Refused, Postponed]),
            (Postponed, &[InProgress, Assigned, Nurturing, SalesReady, Refused, Junk]),
            (Refused, &[Nurturing]),
            (Junk, &[New]),
            (Converted, &[]),
        ];
        for (from, tos) in allowed {
            for to in LeadStatus::ALL {
                assert_eq!(can_move(*from, to), tos.contains(&to), "{from} → {to}");
            }
        }
        // Conversion is never a plain status move.
        assert!(LeadStatus::ALL.iter().all(|f| !can_move(*f, Converted)));
    }

    #[test]
    fn reasons_are_required_for_refusal_and_junk_only() {
        assert!(needs_reason(Refused) && needs_reason(Junk));
        assert!(!needs_reason(Postponed) && !needs_reason(Qualified));
    }

    #[test]
    fn inn_check_digits() {
        for ok in ["7707083893", "7830002293", "500100732259"] {
            assert!(inn_valid(ok), "{ok}");
        }
        for bad in ["7707083890", "500100732250", "770708389", "77070838931", "77O7083893", ""] {
            assert!(!inn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn ogrn_check_digits() {
        for ok in ["1027700132195", "1027739609391", "304500116000157"] {
            assert!(ogrn_valid(ok), "{ok}");
        }
        for bad in ["1027700132194", "304500116000158", "102770013219", "abc"] {
            assert!(!ogrn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn kpp_shape() {
        assert!(kpp_valid("773601001"));
        assert!(kpp_valid("7736AB001"));
        assert!(!kpp_valid("77360100"));
        assert!(!kpp_valid("7736ab001"));
    }

    #[test]
    fn okpo_check_digit() {
        // Sberbank's OKPO 00032537: weights 1..7 give 25 % 11 = 3... computed by the rule.
        assert!(okpo_valid("00032537"));
        assert!(!okpo_valid("00032536"));
        assert!(!okpo_valid("0003253"));
    }

    #[test]
    fn sizes_follow_headcount() {
        assert_eq!(size_by_employees(3), "micro");
        assert_eq!(size_by_employees(50), "small");
        assert_eq!(size_by_employees(120), "medium");
        assert_eq!(size_by_employees(5000), "large");
    }
}
