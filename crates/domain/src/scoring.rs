//! The points model: rules, their validation, and the engine that turns a lead's profile and
//! behaviour into a score with an explanation (the ledger).
//!
//! Behaviour points decay with a half-life from the event's own time; profile points do
//! not. A rule "counted at most N times" counts the N most recent matching events, so that
//! current interest is what the score reflects. A score is evaluated at a moment: the same
//! ledger gives a lower score a month later.

use crate::contact::Email;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Microseconds since the Unix epoch (UTC).
pub type Micros = i64;

const HOUR: f64 = 3_600_000_000.0;
const DAY: f64 = 24.0 * HOUR;
/// Most event rules a model may have (each event carries a bitmask of the rules it matches).
pub const MAX_EVENT_RULES: usize = 64;

/// A problem in a model, named by the rule (`rules[3] (page_view)`) or setting it is in.
pub type ModelErrors = BTreeMap<String, Msg>;

/// A message in English and Russian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub en: String,
    pub ru: String,
}

impl Msg {
    pub fn new(en: impl Into<String>, ru: impl Into<String>) -> Msg {
        Msg { en: en.into(), ru: ru.into() }
    }
    pub fn get(&self, lang: crate::Lang) -> &str {
        match lang {
            crate::Lang::En => &self.en,
            crate::Lang::Ru => &self.ru,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Score from which a lead is warm.
    pub warm: f64,
    /// Score from which a lead is hot.
    pub hot: f64,
    /// Score from which a new or nurtured lead goes to sales.
    pub sales_ready: f64,
    /// Profile points from which the grade is A.
    pub grade_a: f64,
    /// Profile points from which the grade is B.
    pub grade_b: f64,
}

/// The model as the marketer writes it (`GET`/`PUT /api/v1/scoring/model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub half_life_days: f64,
    #[serde(default = "default_priority_window")]
    pub priority_window_hours: f64,
    pub thresholds: Thresholds,
    pub rules: Vec<RuleSpec>,
}

fn default_priority_window() -> f64 {
    72.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub points: f64,
    #[serde(flatten)]
    pub kind: RuleKindSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKindSpec {
    /// Site actions and marketing reactions: an event type, optionally narrowed by the
    /// page's path or the action's name.
    Event {
        event: String,
        /// The page path (lower-cased) contains any of these.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        url_contains: Vec<String>,
        /// The page path matches this regular expression.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url_pattern: Option<String>,
        /// The action's name (e.g. the video) equals one of these.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        name_in: Vec<String>,
        /// The action's name matches this regular expression.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name_pattern: Option<String>,
        cap: u32,
    },
    /// `visits` or more visits within `within_hours` (a visit: page views with no gap over
    /// `gap_minutes`).
    Visits {
        visits: u32,
        within_hours: f64,
        #[serde(default = "default_gap")]
        gap_minutes: f64,
        cap: u32,
    },
    /// Conditions over lead fields, all of which must hold.
    Profile { conditions: Vec<ConditionSpec> },
    /// The lead's city is on the list (any common spelling; `г.` and `ё` do not matter).
    Geo { cities: Vec<String> },
}

fn default_gap() -> f64 {
    30.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// A lead field (`email`, `company`, `city`, …) or a custom one (`fields.employees`, or
    /// just `employees`).
    pub field: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Exists,
    Equals,
    In,
    Contains,
    Pattern,
    Range,
    FreeMail,
    DecisionMaker,
}

/// Lead fields a profile condition may name directly.
pub const PROFILE_FIELDS: &[&str] = &[
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
    "tracking_number",
];

/// Words of a decision maker's job title, in English and Russian (matched as word stems).
pub const DECISION_MAKER_WORDS: &[&str] = &[
    "director",
    "ceo",
    "cfo",
    "cto",
    "coo",
    "cmo",
    "owner",
    "founder",
    "co-founder",
    "president",
    "head",
    "chief",
    "managing partner",
    "general manager",
    "vp",
    "vice president",
    "chairman",
    "директор",
    "руководител",
    "владел",
    "учредител",
    "основател",
    "генеральн",
    "начальник",
    "глава",
    "президент",
    "собственник",
    "председател",
    "управляющ",
    "партн",
];

/// Canonical form of a city for comparison: lower-case, `ё` as `е`, without `г.`.
pub fn normalize_city(s: &str) -> String {
    let lower = s.trim().to_lowercase().replace('ё', "е");
    let stripped = lower
        .strip_prefix("г. ")
        .or_else(|| lower.strip_prefix("г."))
        .or_else(|| lower.strip_prefix("город "))
        .or_else(|| lower.strip_prefix("city of "))
        .unwrap_or(&lower);
    stripped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A checked, ready-to-run model.
#[derive(Debug, Clone)]
pub struct Model {
    pub spec: ModelSpec,
    half_life_us: f64,
    window_us: f64,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Event {
        event: String,
        url_contains: Vec<String>,
        url_pattern: Option<Regex>,
        name_in: Vec<String>,
        name_pattern: Option<Regex>,
        cap: usize,
        bit: u32,
    },
    Visits {
        visits: usize,
        within_us: f64,
        gap_us: f64,
        cap: usize,
    },
    Profile {
        conditions: Vec<Condition>,
    },
    Geo {
        cities: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Condition {
    field: String,
    op: Op,
    value: Option<Value>,
    values: Vec<Value>,
    contains: String,
    pattern: Option<Regex>,
    min: Option<f64>,
    max: Option<f64>,
}

fn compile_regex(src: &str) -> Result<Regex, Msg> {
    regex::RegexBuilder::new(src).case_insensitive(true).size_limit(1 << 16).build().map_err(|e| {
        let detail = e.to_string().lines().last().unwrap_or("").to_string();
        Msg::new(format!("not a valid regular expression: {detail}"), format!("некорректное регулярное выражение: {detail}"))
    })
}

impl Model {
    /// Reads and checks a model. Every problem is reported, each named by where it is:
    /// `half_life_days`, `thresholds.hot`, `rules[2] (video_view).cap`…
    pub fn from_json(v: &Value) -> Result<Model, ModelErrors> {
        let mut errors = ModelErrors::new();
        let Value::Object(o) = v else {
            errors.insert("model".into(), Msg::new("must be a JSON object", "должна быть JSON-объектом"));
            return Err(errors);
        };
        for k in o.keys() {
            if !["half_life_days", "priority_window_hours", "thresholds", "rules", "version", "updated_at"].contains(&k.as_str()) {
                errors.insert(k.clone(), Msg::new("unknown setting", "неизвестная настройка"));
            }
        }
        let half_life_days = o.get("half_life_days").and_then(Value::as_f64);
        match half_life_days {
            None => {
                errors.insert("half_life_days".into(), Msg::new("must be a number of days", "нужно число дней"));
            }
            Some(h) if !(1.0..=3650.0).contains(&h) => {
                errors.insert("half_life_days".into(), Msg::new("must be between 1 and 3650 days", "от 1 до 3650 дней"));
            }
            _ => {}
        }
        let window = match o.get("priority_window_hours") {
            None => Some(72.0),
            Some(w) => w.as_f64(),
        };
        if !window.is_some_and(|w| (1.0..=24.0 * 365.0).contains(&w)) {
            errors.insert("priority_window_hours".into(), Msg::new("must be between 1 and 8760 hours", "от 1 до 8760 часов"));
        }
        let thresholds: Option<Thresholds> = match o.get("thresholds") {
            None => {
                errors.insert(
                    "thresholds".into(),
                    Msg::new("required: warm, hot, sales_ready, grade_a, grade_b", "обязательны: warm, hot, sales_ready, grade_a, grade_b"),
                );
                None
            }
            Some(t) => match serde_json::from_value::<Thresholds>(t.clone()) {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.insert("thresholds".into(), Msg::new(e.to_string(), format!("ошибка в порогах: {e}")));
                    None
                }
            },
        };
        if let Some(t) = &thresholds {
            if t.warm > t.hot {
                errors.insert("thresholds.hot".into(), Msg::new("must not be below warm", "не может быть меньше warm"));
            }
            if t.grade_b > t.grade_a {
                errors.insert("thresholds.grade_a".into(), Msg::new("must not be below grade_b", "не может быть меньше grade_b"));
            }
            for (k, v) in [("warm", t.warm), ("hot", t.hot), ("sales_ready", t.sales_ready), ("grade_a", t.grade_a), ("grade_b", t.grade_b)]
            {
                if !v.is_finite() {
                    errors.insert(format!("thresholds.{k}"), Msg::new("must be a number", "нужно число"));
                }
            }
        }
        let mut specs = Vec::new();
        let mut rules = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut event_rules = 0u32;
        match o.get("rules") {
            Some(Value::Array(raw)) => {
                for (i, r) in raw.iter().enumerate() {
                    let id = r.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                    let at = if id.is_empty() { format!("rules[{i}]") } else { format!("rules[{i}] ({id})") };
                    if let Some(unknown) = unknown_rule_key(r) {
                        errors.insert(at, Msg::new(format!("unknown field `{unknown}`"), format!("неизвестное поле `{unknown}`")));
                        continue;
                    }
                    let spec: RuleSpec = match serde_json::from_value(r.clone()) {
                        Ok(s) => s,
                        Err(e) => {
                            errors.insert(at, Msg::new(e.to_string(), format!("ошибка в правиле: {e}")));
                            continue;
                        }
                    };
                    if spec.id.trim().is_empty() || spec.id.len() > 64 {
                        errors.insert(format!("{at}.id"), Msg::new("must be 1 to 64 characters", "от 1 до 64 символов"));
                    } else if !seen.insert(spec.id.clone()) {
                        errors.insert(format!("{at}.id"), Msg::new("is used by another rule", "уже занят другим правилом"));
                    }
                    if !spec.points.is_finite() || spec.points.abs() > 1000.0 {
                        errors.insert(
                            format!("{at}.points"),
                            Msg::new("must be a number from -1000 to 1000", "нужно число от -1000 до 1000"),
                        );
                    }
                    match compile_rule(&spec.kind, event_rules) {
                        Ok(rule) => {
                            if matches!(rule, Rule::Event { .. }) {
                                event_rules += 1;
                                if event_rules as usize > MAX_EVENT_RULES {
                                    errors.insert(
                                        at.clone(),
                                        Msg::new(
                                            format!("a model has at most {MAX_EVENT_RULES} event rules"),
                                            format!("в модели не более {MAX_EVENT_RULES} правил по событиям"),
                                        ),
                                    );
                                }
                            }
                            rules.push(rule);
                        }
                        Err(problems) => {
                            for (k, v) in problems {
                                errors.insert(if k.is_empty() { at.clone() } else { format!("{at}.{k}") }, v);
                            }
                        }
                    }
                    specs.push(spec);
                }
            }
            _ => {
                errors.insert("rules".into(), Msg::new("must be a list of rules", "нужен список правил"));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(half_life_days), Some(window), Some(thresholds)) = (half_life_days, window, thresholds) else {
            errors.insert("model".into(), Msg::new("incomplete", "неполная модель"));
            return Err(errors);
        };
        Ok(Model {
            spec: ModelSpec { half_life_days, priority_window_hours: window, thresholds, rules: specs },
            half_life_us: half_life_days * DAY,
            window_us: window * HOUR,
            rules,
        })
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.spec).unwrap_or(Value::Null)
    }

    /// The model a new installation scores with (SPEC §3).
    pub fn starter() -> Model {
        Model::from_json(&starter_json()).expect("the starter model is valid")
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.spec.thresholds
    }

    pub fn rule_id(&self, index: u16) -> &str {
        self.spec.rules.get(index as usize).map(|r| r.id.as_str()).unwrap_or("?")
    }

    /// Which event rules an event of this type, page path and name matches (bit `n` is
    /// the `n`-th event rule). Computed once per distinct target.
    pub fn target_mask(&self, kind: &str, path: &str, name: &str) -> u64 {
        let mut mask = 0u64;
        for rule in &self.rules {
            if let Rule::Event { event, url_contains, url_pattern, name_in, name_pattern, bit, .. } = rule {
                if event != kind {
                    continue;
                }
                if !url_contains.is_empty() && !url_contains.iter().any(|c| path.contains(c.as_str())) {
                    continue;
                }
                if url_pattern.as_ref().is_some_and(|p| !p.is_match(path)) {
                    continue;
                }
                if !name_in.is_empty() && !name_in.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    continue;
                }
                if name_pattern.as_ref().is_some_and(|p| !p.is_match(name)) {
                    continue;
                }
                mask |= 1 << bit;
            }
        }
        mask
    }

    /// The ledger of profile and geography rules for a lead's profile; each entry is dated `at`.
    pub fn profile_entries(&self, profile: &Profile, at: Micros) -> Vec<Entry> {
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let hit = match rule {
                Rule::Profile { conditions } => conditions.iter().all(|c| c.holds(profile)),
                Rule::Geo { cities } => profile.city().is_some_and(|c| cities.contains(&normalize_city(&c))),
                _ => false,
            };
            if hit {
                out.push(Entry { rule: i as u16, points: self.spec.rules[i].points as f32, at, profile: true });
            }
        }
        out
    }

    /// The behaviour ledger of a lead's events (in any order): for each rule the most
    /// recent `cap` matching events.
    pub fn behaviour_entries(&self, events: &[ScoredEvent]) -> Vec<Entry> {
        let mut sorted: Vec<ScoredEvent> = events.to_vec();
        sorted.sort_by_key(|e| e.at);
        let mut out = Vec::new();
        let mut event_bit = 0u32;
        for (i, rule) in self.rules.iter().enumerate() {
            let points = self.spec.rules[i].points as f32;
            match rule {
                Rule::Event { cap, .. } => {
                    let bit = event_bit;
                    event_bit += 1;
                    let hits: Vec<Micros> = sorted.iter().filter(|e| e.mask & (1 << bit) != 0).map(|e| e.at).collect();
                    for at in &hits[hits.len().saturating_sub(*cap)..] {
                        out.push(Entry { rule: i as u16, points, at: *at, profile: false });
                    }
                }
                Rule::Visits { visits, within_us, gap_us, cap } => {
                    let views: Vec<Micros> = sorted.iter().filter(|e| e.page_view).map(|e| e.at).collect();
                    let occurrences = visit_occurrences(&views, *visits, *within_us, *gap_us);
                    for at in &occurrences[occurrences.len().saturating_sub(*cap)..] {
                        out.push(Entry { rule: i as u16, points, at: *at, profile: false });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Adds one event that is not older than any event the ledger was built from. Only the
    /// rules it matches change; the page views of the recent past (`recent_views`, oldest
    /// first, not including this event) decide the visit rules.
    pub fn apply_event(&self, ledger: &mut Vec<Entry>, event: ScoredEvent, recent_views: &[Micros]) {
        let mut event_bit = 0u32;
        for (i, rule) in self.rules.iter().enumerate() {
            let points = self.spec.rules[i].points as f32;
            let occurred = match rule {
                Rule::Event { .. } => {
                    let bit = event_bit;
                    event_bit += 1;
                    event.mask & (1 << bit) != 0
                }
                Rule::Visits { visits, within_us, gap_us, .. } if event.page_view => {
                    let starts_visit = recent_views.last().is_none_or(|last| (event.at - last) as f64 > *gap_us);
                    if starts_visit {
                        let mut views = recent_views.to_vec();
                        views.push(event.at);
                        visit_occurrences(&views, *visits, *within_us, *gap_us).last() == Some(&event.at)
                    } else {
                        false
                    }
                }
                _ => false,
            };
            if !occurred {
                continue;
            }
            let cap = match rule {
                Rule::Event { cap, .. } | Rule::Visits { cap, .. } => *cap,
                _ => usize::MAX,
            };
            ledger.push(Entry { rule: i as u16, points, at: event.at, profile: false });
            let mine: Vec<usize> = ledger.iter().enumerate().filter(|(_, e)| e.rule == i as u16).map(|(j, _)| j).collect();
            if mine.len() > cap {
                // Drop the oldest counted event of this rule.
                if let Some(&oldest) = mine.iter().min_by_key(|&&j| ledger[j].at) {
                    ledger.remove(oldest);
                }
            }
        }
    }

    /// How far back the page views that `apply_event` needs reach.
    pub fn visit_lookback(&self) -> Micros {
        self.rules
            .iter()
            .filter_map(|r| match r {
                Rule::Visits { within_us, gap_us, .. } => Some((within_us + gap_us) as Micros),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// The score of a ledger at a moment: profile points plus decayed behaviour points.
    pub fn score(&self, ledger: &[Entry], now: Micros) -> f64 {
        ledger.iter().map(|e| self.value(e, now)).sum()
    }

    /// An entry's points at a moment.
    pub fn value(&self, e: &Entry, now: Micros) -> f64 {
        if e.profile {
            e.points as f64
        } else {
            let age = (now - e.at).max(0) as f64;
            e.points as f64 * (0.5f64).powf(age / self.half_life_us)
        }
    }

    /// Score plus the points earned within the priority window: of two equal scores, the
    /// one earned recently comes first.
    pub fn priority(&self, ledger: &[Entry], now: Micros) -> f64 {
        let since = now - self.window_us as Micros;
        self.score(ledger, now) + ledger.iter().filter(|e| e.at >= since).map(|e| e.points as f64).sum::<f64>()
    }

    pub fn profile_points(&self, ledger: &[Entry]) -> f64 {
        ledger.iter().filter(|e| e.profile).map(|e| e.points as f64).sum()
    }

    pub fn temperature(&self, score: f64) -> crate::Temperature {
        let t = &self.spec.thresholds;
        if score >= t.hot {
            crate::Temperature::Hot
        } else if score >= t.warm {
            crate::Temperature::Warm
        } else {
            crate::Temperature::Cold
        }
    }

    pub fn grade(&self, profile_points: f64) -> crate::Grade {
        let t = &self.spec.thresholds;
        if profile_points >= t.grade_a {
            crate::Grade::A
        } else if profile_points >= t.grade_b {
            crate::Grade::B
        } else {
            crate::Grade::C
        }
    }

    /// The lead fields the profile and geography rules read (`city`, `budget`, `fields.x`,
    /// …): a re-score that re-runs the profile rules reads only these.
    pub fn profile_fields(&self) -> std::collections::BTreeSet<&str> {
        let mut out = std::collections::BTreeSet::new();
        for rule in &self.rules {
            match rule {
                Rule::Profile { conditions } => out.extend(conditions.iter().map(|c| c.field.as_str())),
                Rule::Geo { .. } => {
                    out.insert("city");
                }
                _ => {}
            }
        }
        out
    }

    /// Whether the rules of one part (`profile`: the profile and geography rules; otherwise
    /// the event and visit rules) of two models are the same but for their points and
    /// descriptions. Then they make the same ledger entries (an entry's points are its rule's
    /// points), and a model change carries the part's entries over by rule id with the new
    /// points instead of evaluating the leads' events or fields again.
    pub fn same_rules_but_points(&self, other: &Model, profile: bool) -> bool {
        let pick = |m: &Model| -> Vec<(String, RuleKindSpec)> {
            m.spec
                .rules
                .iter()
                .filter(|r| matches!(r.kind, RuleKindSpec::Profile { .. } | RuleKindSpec::Geo { .. }) == profile)
                .map(|r| (r.id.clone(), r.kind.clone()))
                .collect()
        };
        pick(self) == pick(other)
    }

    /// The points an entry of rule `rule` (an index into this model's rules) gives.
    pub fn rule_points(&self, rule: u16) -> Option<f32> {
        self.spec.rules.get(rule as usize).map(|r| r.points as f32)
    }
}

/// A key that the rule's kind does not have (serde cannot refuse them through `flatten`).
fn unknown_rule_key(rule: &Value) -> Option<String> {
    let o = rule.as_object()?;
    let own: &[&str] = match o.get("kind").and_then(Value::as_str) {
        Some("event") => &["event", "url_contains", "url_pattern", "name_in", "name_pattern", "cap"],
        Some("visits") => &["visits", "within_hours", "gap_minutes", "cap"],
        Some("profile") => &["conditions"],
        Some("geo") => &["cities"],
        _ => return None,
    };
    o.keys().find(|k| !["id", "description", "points", "kind"].contains(&k.as_str()) && !own.contains(&k.as_str())).cloned()
}

fn compile_rule(kind: &RuleKindSpec, bit: u32) -> Result<Rule, Vec<(String, Msg)>> {
    let mut problems = Vec::new();
    let rule = match kind {
        RuleKindSpec::Event { event, url_contains, url_pattern, name_in, name_pattern, cap } => {
            if !crate::lead::is_slug(event) {
                problems.push((
                    "event".into(),
                    Msg::new(
                        "must be an event type such as page_view (latin letters, digits, _ or -)",
                        "нужен тип события, например page_view (латиница, цифры, _ или -)",
                    ),
                ));
            }
            if *cap < 1 || *cap > 10_000 {
                problems.push(("cap".into(), Msg::new("must be from 1 to 10000", "от 1 до 10000")));
            }
            if url_contains.iter().any(|c| c.trim().is_empty()) {
                problems.push(("url_contains".into(), Msg::new("has an empty entry", "есть пустое значение")));
            }
            let url_pattern =
                url_pattern.as_deref().map(compile_regex).transpose().map_err(|e| problems.push(("url_pattern".into(), e))).ok().flatten();
            let name_pattern = name_pattern
                .as_deref()
                .map(compile_regex)
                .transpose()
                .map_err(|e| problems.push(("name_pattern".into(), e)))
                .ok()
                .flatten();
            Rule::Event {
                event: event.clone(),
                url_contains: url_contains.iter().map(|c| c.trim().to_lowercase()).collect(),
                url_pattern,
                name_in: name_in.iter().map(|n| n.trim().to_string()).collect(),
                name_pattern,
                cap: *cap as usize,
                bit,
            }
        }
        RuleKindSpec::Visits { visits, within_hours, gap_minutes, cap } => {
            if *visits < 1 || *visits > 1000 {
                problems.push(("visits".into(), Msg::new("must be from 1 to 1000", "от 1 до 1000")));
            }
            if !(*within_hours > 0.0 && *within_hours <= 24.0 * 365.0) {
                problems.push(("within_hours".into(), Msg::new("must be more than 0 and at most 8760", "больше 0 и не более 8760")));
            }
            if !(*gap_minutes > 0.0 && *gap_minutes <= 24.0 * 60.0) {
                problems.push(("gap_minutes".into(), Msg::new("must be more than 0 and at most 1440", "больше 0 и не более 1440")));
            }
            if *cap < 1 || *cap > 10_000 {
                problems.push(("cap".into(), Msg::new("must be from 1 to 10000", "от 1 до 10000")));
            }
            Rule::Visits {
                visits: *visits as usize,
                within_us: within_hours * HOUR,
                gap_us: gap_minutes * 60_000_000.0,
                cap: *cap as usize,
            }
        }
        RuleKindSpec::Profile { conditions } => {
            if conditions.is_empty() {
                problems.push(("conditions".into(), Msg::new("needs at least one condition", "нужно хотя бы одно условие")));
            }
            let mut out = Vec::new();
            for (j, c) in conditions.iter().enumerate() {
                match compile_condition(c) {
                    Ok(c) => out.push(c),
                    Err(e) => problems.push((format!("conditions[{j}]"), e)),
                }
            }
            Rule::Profile { conditions: out }
        }
        RuleKindSpec::Geo { cities } => {
            if cities.iter().any(|c| c.trim().is_empty()) {
                problems.push(("cities".into(), Msg::new("has an empty entry", "есть пустое значение")));
            }
            Rule::Geo { cities: cities.iter().map(|c| normalize_city(c)).collect() }
        }
    };
    if problems.is_empty() { Ok(rule) } else { Err(problems) }
}

fn compile_condition(c: &ConditionSpec) -> Result<Condition, Msg> {
    let field = c.field.trim();
    let field = if PROFILE_FIELDS.contains(&field) || field.starts_with("fields.") {
        field.to_string()
    } else if crate::lead::is_slug(field) || field.chars().all(|ch| ch.is_alphanumeric() || ch == '_') && !field.is_empty() {
        format!("fields.{field}")
    } else {
        return Err(Msg::new(format!("unknown field {:?}", c.field), format!("неизвестное поле {:?}", c.field)));
    };
    let mut cond = Condition {
        field,
        op: c.op,
        value: c.value.clone(),
        values: c.values.clone(),
        contains: String::new(),
        pattern: None,
        min: c.min,
        max: c.max,
    };
    match c.op {
        Op::Exists | Op::FreeMail | Op::DecisionMaker => {}
        Op::Equals => {
            if c.value.is_none() {
                return Err(Msg::new("equals needs a value", "для equals нужно значение value"));
            }
        }
        Op::In => {
            if c.values.is_empty() {
                return Err(Msg::new("in needs a list of values", "для in нужен список values"));
            }
        }
        Op::Contains => match c.value.as_ref().and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => cond.contains = s.trim().to_lowercase(),
            _ => return Err(Msg::new("contains needs a text value", "для contains нужен текст value")),
        },
        Op::Pattern => match c.value.as_ref().and_then(Value::as_str) {
            Some(s) => cond.pattern = Some(compile_regex(s)?),
            None => return Err(Msg::new("pattern needs a regular expression as value", "для pattern нужно регулярное выражение в value")),
        },
        Op::Range => {
            if c.min.is_none() && c.max.is_none() {
                return Err(Msg::new("range needs min, max or both", "для range нужны min, max или оба"));
            }
            if let (Some(a), Some(b)) = (c.min, c.max)
                && a > b
            {
                return Err(Msg::new("range has min above max", "в range min больше max"));
            }
        }
    }
    Ok(cond)
}

fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        other => Some(Cow::Owned(other.to_string())),
    }
}

fn value_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace([' ', '\u{a0}'], "").replace(',', ".").parse().ok(),
        _ => None,
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bool(x), other) | (other, Value::Bool(x)) => match other {
            Value::Bool(y) => x == y,
            Value::String(s) => {
                matches!((x, s.trim().to_lowercase().as_str()), (true, "true" | "yes" | "да" | "1") | (false, "false" | "no" | "нет" | "0"))
            }
            Value::Number(n) => n.as_f64() == Some(if *x { 1.0 } else { 0.0 }),
            _ => false,
        },
        _ => match (value_number(a), value_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => value_text(a).map(|s| s.trim().to_lowercase()) == value_text(b).map(|s| s.trim().to_lowercase()),
        },
    }
}

impl Condition {
    fn holds(&self, p: &Profile) -> bool {
        let v = p.get(&self.field);
        let present = v.is_some_and(|v| !v.is_null() && value_text(v).is_some_and(|s| !s.trim().is_empty()));
        match self.op {
            Op::Exists => present,
            _ if !present => false,
            Op::Equals => self.value.as_ref().is_some_and(|x| v.is_some_and(|v| loose_eq(v, x))),
            Op::In => v.is_some_and(|v| self.values.iter().any(|x| loose_eq(v, x))),
            Op::Contains => v.and_then(value_text).is_some_and(|s| s.to_lowercase().contains(&self.contains)),
            Op::Pattern => v.and_then(value_text).is_some_and(|s| self.pattern.as_ref().is_some_and(|p| p.is_match(&s))),
            Op::Range => v.and_then(value_number).is_some_and(|n| self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m)),
            Op::FreeMail => v.and_then(value_text).is_some_and(|s| is_free_mail_address(&s)),
            Op::DecisionMaker => v.and_then(value_text).is_some_and(|s| is_decision_maker(&s)),
        }
    }
}

/// An address on a free mail service (its domain is in the list). Cheaper than a full
/// parse: the addresses scored were normalised and checked at intake.
fn is_free_mail_address(s: &str) -> bool {
    match s.trim().rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            if domain.bytes().any(|b| b.is_ascii_uppercase()) {
                Email::is_free_mail_domain(&domain.to_ascii_lowercase())
            } else {
                Email::is_free_mail_domain(domain)
            }
        }
        _ => false,
    }
}

/// A job title of someone who decides: director, CEO, owner, head; директор, руководитель…
pub fn is_decision_maker(title: &str) -> bool {
    let t = format!(" {} ", title.to_lowercase().replace(['.', ',', '/', '(', ')', '-'], " "));
    DECISION_MAKER_WORDS.iter().any(|w| {
        if w.is_ascii() {
            // Whole words for short Latin abbreviations (so "cto" does not match "doctor").
            (w.len() > 4 && t.contains(w)) || contains_word(&t, w)
        } else {
            t.contains(w)
        }
    })
}

/// Whether `w` occurs in `t` between spaces (`t` is padded with a space at both ends).
fn contains_word(t: &str, w: &str) -> bool {
    let b = t.as_bytes();
    t.match_indices(w).any(|(i, _)| i > 0 && b[i - 1] == b' ' && b.get(i + w.len()) == Some(&b' '))
}

/// The lead fields profile rules look at.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub fields: Map<String, Value>,
}

impl Profile {
    pub fn new(top: &[(&str, Option<String>)], budget: Option<f64>, custom: &Map<String, Value>) -> Profile {
        let mut fields = Map::new();
        for (k, v) in top {
            if let Some(v) = v {
                fields.insert((*k).to_string(), Value::String(v.clone()));
            }
        }
        if let Some(b) = budget {
            fields.insert("budget".into(), json!(b));
        }
        for (k, v) in custom {
            fields.insert(format!("fields.{k}"), v.clone());
        }
        Profile { fields }
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    fn city(&self) -> Option<Cow<'_, str>> {
        self.fields.get("city").and_then(value_text)
    }
}

/// An event as the engine sees it: when, which event rules it matches, and whether it is a
/// page view (for visit rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredEvent {
    pub at: Micros,
    pub mask: u64,
    pub page_view: bool,
}

/// One line of the ledger: which rule gave how many points, when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub rule: u16,
    pub points: f32,
    pub at: Micros,
    /// Profile and geography points do not decay.
    pub profile: bool,
}

/// The moments a visit rule is met: the start of each visit that completes `n` visits
/// within the window. `views` are page-view times in order.
fn visit_occurrences(views: &[Micros], n: usize, within_us: f64, gap_us: f64) -> Vec<Micros> {
    let mut starts = Vec::new();
    let mut last: Option<Micros> = None;
    for &t in views {
        if last.is_none_or(|l| (t - l) as f64 > gap_us) {
            starts.push(t);
        }
        last = Some(t);
    }
    let mut out = Vec::new();
    let mut lo = 0;
    for hi in 0..starts.len() {
        while (starts[hi] - starts[lo]) as f64 > within_us {
            lo += 1;
        }
        if hi + 1 - lo >= n {
            out.push(starts[hi]);
        }
    }
    out
}

/// Ledger entries packed for storage (format 2): per entry a varint of the rule, the
/// profile flag and whether the points are a multiple of ¼ under 2¹⁸, then the points (a
/// zigzag varint of four times them, or the f32), then the zigzag varint of the time since
/// the entry before. With rules under 32 and such points, entries earned at one moment (a
/// lead's profile's) take 3 bytes, an event's 7–9; format 1 took 15 each, and every full
/// re-score rewrites every ledger, so their bytes are most of what it writes. Format 1 is
/// still read.
pub fn encode_ledger(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * 8);
    out.push(2u8);
    let mut last: Micros = 0;
    for e in entries {
        let quarters = e.points * 4.0;
        // -0.0 keeps its sign as an f32.
        let small = quarters.fract() == 0.0 && quarters.abs() < (1 << 20) as f32 && (quarters != 0.0 || quarters.is_sign_positive());
        put_varint(&mut out, (u64::from(e.rule) << 2) | (u64::from(e.profile) << 1) | u64::from(small));
        if small {
            put_varint(&mut out, zigzag(quarters as i64));
        } else {
            out.extend_from_slice(&e.points.to_le_bytes());
        }
        put_varint(&mut out, zigzag(e.at.wrapping_sub(last)));
        last = e.at;
    }
    out
}

/// The entries of a packed ledger (format 1 or 2); a ledger cut short yields the entries
/// before the cut.
pub fn decode_ledger(bytes: &[u8]) -> Vec<Entry> {
    match bytes.split_first() {
        Some((1, rest)) => rest
            .chunks_exact(15)
            .map(|c| Entry {
                rule: u16::from_le_bytes([c[0], c[1]]),
                points: f32::from_le_bytes([c[2], c[3], c[4], c[5]]),
                at: i64::from_le_bytes([c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13]]),
                profile: c[14] != 0,
            })
            .collect(),
        Some((2, mut rest)) => {
            let mut out = Vec::with_capacity(rest.len() / 7);
            let mut last: Micros = 0;
            while !rest.is_empty() {
                let Some(entry) = next_entry(&mut rest, &mut last) else { break };
                out.push(entry);
            }
            out
        }
        _ => Vec::new(),
    }
}

fn next_entry(rest: &mut &[u8], last: &mut Micros) -> Option<Entry> {
    let head = get_varint(rest)?;
    let points = if head & 1 == 1 {
        unzigzag(get_varint(rest)?) as f32 / 4.0
    } else {
        let (p, tail) = rest.split_first_chunk::<4>()?;
        *rest = tail;
        f32::from_le_bytes(*p)
    };
    let at = last.wrapping_add(unzigzag(get_varint(rest)?));
    *last = at;
    Some(Entry { rule: u16::try_from(head >> 2).ok()?, points, at, profile: head & 2 == 2 })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in rest.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(v);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A lead's scorable events packed for storage: 12 bytes each (time, target id).
pub fn encode_inputs(events: &[(Micros, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.len() * 12);
    for (at, target) in events {
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&target.to_le_bytes());
    }
    out
}

pub fn decode_inputs(bytes: &[u8]) -> impl Iterator<Item = (Micros, u32)> + '_ {
    bytes
        .chunks_exact(12)
        .map(|c| (i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]), u32::from_le_bytes([c[8], c[9], c[10], c[11]])))
}

/// The starter model of SPEC §3.
pub fn starter_json() -> Value {
    json!({
        "half_life_days": 30,
        "priority_window_hours": 72,
        "thresholds": {"warm": 10, "hot": 25, "sales_ready": 25, "grade_a": 8, "grade_b": 3},
        "rules": [
            {"id": "page_view", "kind": "event", "event": "page_view", "points": 1, "cap": 10,
             "description": "Any page / Любая страница"},
            {"id": "page_view_pricing", "kind": "event", "event": "page_view", "points": 3, "cap": 3,
             "url_contains": ["price", "tarif", "akci", "promo", "sale"],
             "description": "Prices, tariffs, promotions (in addition) / Цены, тарифы, акции (дополнительно)"},
            {"id": "video_view", "kind": "event", "event": "video_view", "points": 2, "cap": 5},
            {"id": "download", "kind": "event", "event": "download", "points": 3, "cap": 3},
            {"id": "calculator", "kind": "event", "event": "calculator", "points": 4, "cap": 2},
            {"id": "presentation_request", "kind": "event", "event": "presentation_request", "points": 5, "cap": 2},
            {"id": "callback_request", "kind": "event", "event": "callback_request", "points": 8, "cap": 2},
            {"id": "chat_message", "kind": "event", "event": "chat_message", "points": 3, "cap": 3},
            {"id": "email_open", "kind": "event", "event": "email_open", "points": 1, "cap": 5},
            {"id": "email_click", "kind": "event", "event": "email_click", "points": 2, "cap": 5},
            {"id": "ad_click", "kind": "event", "event": "ad_click", "points": 1, "cap": 5},
            {"id": "unsubscribe", "kind": "event", "event": "unsubscribe", "points": -5, "cap": 1},
            {"id": "frequent_visits", "kind": "visits", "visits": 6, "within_hours": 48, "gap_minutes": 30, "points": 5, "cap": 1,
             "description": "6 or more visits within 48 hours / 6 и более визитов за 48 часов"},
            {"id": "phone_and_email", "kind": "profile", "points": 3,
             "conditions": [{"field": "phone", "op": "exists"}, {"field": "email", "op": "exists"}]},
            {"id": "free_mail", "kind": "profile", "points": -2, "conditions": [{"field": "email", "op": "free_mail"}]},
            {"id": "company", "kind": "profile", "points": 2, "conditions": [{"field": "company", "op": "exists"}]},
            {"id": "decision_maker", "kind": "profile", "points": 3, "conditions": [{"field": "position", "op": "decision_maker"}]},
            {"id": "employees_50", "kind": "profile", "points": 3, "conditions": [{"field": "fields.employees", "op": "range", "min": 50}]},
            {"id": "budget_ok", "kind": "profile", "points": 5, "conditions": [{"field": "fields.budget_ok", "op": "equals", "value": true}]},
            {"id": "capital_city", "kind": "geo", "points": 2, "cities": [
                "Москва", "Moscow", "Moskva", "Мск", "Msk",
                "Санкт-Петербург", "Петербург", "Питер", "СПб", "Saint Petersburg", "Saint-Petersburg", "St Petersburg",
                "St. Petersburg", "Sankt-Peterburg", "Petersburg", "SPb"]},
            {"id": "not_served", "kind": "geo", "points": -10, "cities": [],
             "description": "Cities the company does not serve / Города, где компания не работает"}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Micros = 1_800_000_000_000_000;
    const MIN: Micros = 60_000_000;
    const H: Micros = 60 * MIN;
    const D: Micros = 24 * H;

    fn model() -> Model {
        Model::starter()
    }

    /// A change of points (or descriptions, thresholds, half-life) keeps a part's rules the
    /// same; any change to what a rule matches, its cap, its kind or the set of rules does not.
    #[test]
    fn rules_the_same_but_for_points_by_part() {
        let starter = starter_json();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut j = starter.clone();
            edit(&mut j);
            Model::from_json(&j).unwrap()
        };
        let m = model();
        let points = with(&|j| {
            j["rules"][0]["points"] = json!(2.5);
            j["rules"][15]["points"] = json!(-1);
            j["rules"][0]["description"] = json!("другое описание");
            j["half_life_days"] = json!(7);
        });
        assert!(points.same_rules_but_points(&m, false) && points.same_rules_but_points(&m, true));
        let behaviour_changes: [&dyn Fn(&mut Value); 7] = [
            &|j| j["rules"][0]["cap"] = json!(11),
            &|j| j["rules"][1]["url_contains"] = json!(["/price"]),
            &|j| j["rules"][0]["id"] = json!("views"),
            &|j| {
                j["rules"].as_array_mut().unwrap().remove(2);
            },
            // Two event rules swapped: their event bits change.
            &|j| j["rules"].as_array_mut().unwrap().swap(2, 3),
            &|j| j["rules"][12]["within_hours"] = json!(24),
            &|j| j["rules"][12]["gap_minutes"] = json!(10),
        ];
        for edit in behaviour_changes {
            let changed = with(edit);
            assert!(!changed.same_rules_but_points(&m, false), "{:?}", changed.spec.rules[0]);
            assert!(changed.same_rules_but_points(&m, true));
        }
        let profile_changes: [&dyn Fn(&mut Value); 3] = [
            &|j| j["rules"][15]["conditions"] = json!([{"field": "company", "op": "contains", "value": "ООО"}]),
            &|j| j["rules"].as_array_mut().unwrap().push(json!({"id": "spb", "kind": "geo", "points": 1, "cities": ["Санкт-Петербург"]})),
            &|j| {
                let r = j["rules"].as_array_mut().unwrap().iter_mut().find(|r| r["kind"] == "geo").unwrap();
                r["cities"] = json!(["Москва"]);
            },
        ];
        for edit in profile_changes {
            let changed = with(edit);
            assert!(!changed.same_rules_but_points(&m, true));
            assert!(changed.same_rules_but_points(&m, false));
        }
        assert_eq!(points.rule_points(0), Some(2.5));
        assert_eq!(points.rule_points(15), Some(-1.0));
        assert_eq!(points.rule_points(u16::MAX), None);
    }

    #[test]
    fn decision_maker_titles_by_whole_words_and_stems() {
        for t in ["CTO", "cto/co-founder", "Head of Sales", "Генеральный директор", "Vice President", "(CEO)", "owner", "VP, marketing"]
        {
            assert!(is_decision_maker(t), "{t}");
        }
        for t in ["Doctor", "vpn engineer", "Менеджер", "cooper", "", "headless"] {
            assert!(!is_decision_maker(t), "{t}");
        }
    }

    fn ev(m: &Model, kind: &str, path: &str, name: &str, at: Micros) -> ScoredEvent {
        ScoredEvent { at, mask: m.target_mask(kind, path, name), page_view: kind == "page_view" }
    }

    fn behaviour(m: &Model, events: &[ScoredEvent]) -> f64 {
        m.score(&m.behaviour_entries(events), NOW)
    }

    fn profile(pairs: &[(&str, &str)]) -> Profile {
        let mut custom = Map::new();
        let mut top = Vec::new();
        for (k, v) in pairs {
            if let Some(c) = k.strip_prefix("fields.") {
                custom.insert(c.to_string(), serde_json::from_str(v).unwrap_or(Value::String(v.to_string())));
            } else {
                top.push((*k, Some(v.to_string())));
            }
        }
        Profile::new(&top, None, &custom)
    }

    fn profile_points(pairs: &[(&str, &str)]) -> f64 {
        let m = model();
        m.profile_points(&m.profile_entries(&profile(pairs), NOW))
    }

    #[test]
    fn each_event_row_of_the_starter_model_has_its_points_and_cap() {
        let m = model();
        for (kind, points, cap) in [
            ("video_view", 2.0, 5),
            ("download", 3.0, 3),
            ("calculator", 4.0, 2),
            ("presentation_request", 5.0, 2),
            ("callback_request", 8.0, 2),
            ("chat_message", 3.0, 3),
            ("email_open", 1.0, 5),
            ("email_click", 2.0, 5),
            ("ad_click", 1.0, 5),
            ("unsubscribe", -5.0, 1),
        ] {
            let one = [ev(&m, kind, "", "", NOW)];
            assert_eq!(behaviour(&m, &one), points, "{kind} once");
            let many: Vec<_> = (0..cap + 4).map(|i| ev(&m, kind, "", "", NOW - i as i64)).collect();
            let got = behaviour(&m, &many);
            assert!((got - points * cap as f64).abs() < 1e-6, "{kind}: {got} for {} events, cap {cap}", cap + 4);
        }
    }

    #[test]
    fn page_views_count_once_each_up_to_ten_and_pricing_pages_three_more_each_up_to_three() {
        let m = model();
        let plain: Vec<_> = (0..15).map(|i| ev(&m, "page_view", "/blog/post", "", NOW - i * MIN)).collect();
        assert!((behaviour(&m, &plain) - 10.0).abs() < 1e-3);
        for path in ["/prices", "/tarify", "/akcii", "/promo-2027", "/sale/flats"] {
            assert!((behaviour(&m, &[ev(&m, "page_view", path, "", NOW)]) - 4.0).abs() < 1e-9, "{path}");
        }
        let pricing: Vec<_> = (0..5).map(|i| ev(&m, "page_view", "/prices", "", NOW - i * MIN)).collect();
        // 5 page views (+1 each) and 3 of them as pricing (+3 each).
        assert!((behaviour(&m, &pricing) - (5.0 + 9.0)).abs() < 1e-3);
    }

    #[test]
    fn an_event_30_days_old_counts_half() {
        let m = model();
        let old = [ev(&m, "callback_request", "", "", NOW - 30 * D)];
        assert!((behaviour(&m, &old) - 4.0).abs() < 1e-9);
        let older = [ev(&m, "callback_request", "", "", NOW - 60 * D)];
        assert!((behaviour(&m, &older) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn caps_keep_the_most_recent_events() {
        let m = model();
        let events =
            vec![ev(&m, "calculator", "", "", NOW - 60 * D), ev(&m, "calculator", "", "", NOW), ev(&m, "calculator", "", "", NOW - 30 * D)];
        // The two most recent count: 4 + 2.
        assert!((behaviour(&m, &events) - 6.0).abs() < 1e-9);
    }

    #[test]
    fn six_visits_within_48_hours_give_five_points_once() {
        let m = model();
        // Six visits three hours apart, one page view each.
        let visits: Vec<_> = (0..6).map(|i| ev(&m, "page_view", "/", "", NOW - i * 3 * H)).collect();
        assert!((behaviour(&m, &visits) - (6.0 * 1.0 + 5.0)).abs() < 0.1);
        // Five visits are not enough.
        let five: Vec<_> = (0..5).map(|i| ev(&m, "page_view", "/", "", NOW - i * 3 * H)).collect();
        assert!(behaviour(&m, &five) < 5.1);
        // Page views with gaps under 30 minutes are one visit.
        let one_visit: Vec<_> = (0..8).map(|i| ev(&m, "page_view", "/", "", NOW - i * 20 * MIN)).collect();
        assert!((behaviour(&m, &one_visit) - 8.0).abs() < 0.01);
        // Six visits spread over a week are not frequent.
        let spread: Vec<_> = (0..6).map(|i| ev(&m, "page_view", "/", "", NOW - i * 30 * H)).collect();
        assert!(behaviour(&m, &spread) < 6.0);
        // Twelve frequent visits still give the five points once.
        let twelve: Vec<_> = (0..12).map(|i| ev(&m, "page_view", "/", "", NOW - i * 3 * H)).collect();
        let e = m.behaviour_entries(&twelve);
        assert_eq!(e.iter().filter(|x| m.rule_id(x.rule) == "frequent_visits").count(), 1);
    }

    #[test]
    fn profile_rows_of_the_starter_model() {
        assert_eq!(profile_points(&[("phone", "+79215551234"), ("email", "a@romashka.ru")]), 3.0);
        assert_eq!(profile_points(&[("email", "a@gmail.com")]), -2.0);
        assert_eq!(profile_points(&[("email", "a@Mail.RU")]), -2.0);
        assert_eq!(profile_points(&[("phone", "+79215551234"), ("email", "a@yandex.ru")]), 1.0);
        assert_eq!(profile_points(&[("company", "ООО Ромашка")]), 2.0);
        for title in
            ["Генеральный директор", "CEO", "owner", "Руководитель отдела закупок", "Head of Sales", "Владелец бизнеса", "Co-Founder"]
        {
            assert_eq!(profile_points(&[("position", title)]), 3.0, "{title}");
        }
        for title in ["менеджер", "doctor", "accountant", "стажёр"] {
            assert_eq!(profile_points(&[("position", title)]), 0.0, "{title}");
        }
        assert_eq!(profile_points(&[("fields.employees", "50")]), 3.0);
        assert_eq!(profile_points(&[("fields.employees", "1 200")]), 3.0);
        assert_eq!(profile_points(&[("fields.employees", "49")]), 0.0);
        assert_eq!(profile_points(&[("fields.budget_ok", "true")]), 5.0);
        assert_eq!(profile_points(&[("fields.budget_ok", "да")]), 5.0);
        assert_eq!(profile_points(&[("fields.budget_ok", "false")]), 0.0);
        for city in ["Москва", "г. Москва", "moscow", "Санкт-Петербург", "Saint Petersburg", "спб", "Питер", "St. Petersburg"]
        {
            assert_eq!(profile_points(&[("city", city)]), 2.0, "{city}");
        }
        assert_eq!(profile_points(&[("city", "Тверь")]), 0.0);
    }

    #[test]
    fn a_city_on_the_not_served_list_takes_ten_points() {
        let mut spec = starter_json();
        let rules = spec["rules"].as_array_mut().unwrap();
        let not_served = rules.iter_mut().find(|r| r["id"] == "not_served").unwrap();
        not_served["cities"] = json!(["Калининград"]);
        let m = Model::from_json(&spec).unwrap();
        assert_eq!(m.profile_points(&m.profile_entries(&profile(&[("city", "г. Калининград")]), NOW)), -10.0);
    }

    #[test]
    fn temperature_and_grade_boundaries() {
        let m = model();
        use crate::{Grade, Temperature};
        assert_eq!(m.temperature(9.99), Temperature::Cold);
        assert_eq!(m.temperature(10.0), Temperature::Warm);
        assert_eq!(m.temperature(24.99), Temperature::Warm);
        assert_eq!(m.temperature(25.0), Temperature::Hot);
        assert_eq!(m.grade(2.99), Grade::C);
        assert_eq!(m.grade(3.0), Grade::B);
        assert_eq!(m.grade(7.99), Grade::B);
        assert_eq!(m.grade(8.0), Grade::A);
    }

    #[test]
    fn of_two_equal_scores_the_recent_one_has_the_higher_priority() {
        let m = model();
        // Same score now: 8 points two days ago vs. 16 points 30 days ago (decayed to 8).
        let recent = m.behaviour_entries(&[ev(&m, "callback_request", "", "", NOW - 2 * D)]);
        let old =
            m.behaviour_entries(&[ev(&m, "callback_request", "", "", NOW - 32 * D), ev(&m, "callback_request", "", "", NOW - 32 * D + 1)]);
        let (sr, so) = (m.score(&recent, NOW), m.score(&old, NOW));
        assert!((sr - so).abs() < 0.5, "{sr} vs {so}");
        assert!(m.priority(&recent, NOW) > m.priority(&old, NOW) + 7.0);
    }

    #[test]
    fn incremental_updates_agree_with_a_full_evaluation() {
        let m = model();
        let kinds = ["page_view", "video_view", "calculator", "callback_request", "unsubscribe", "page_view", "chat_message"];
        let paths = ["/", "/prices", "/blog", "/sale"];
        let mut events = Vec::new();
        let mut ledger = Vec::new();
        let mut t = NOW - 40 * D;
        for i in 0..400u64 {
            t += ((i * 7919) % 300) as i64 * MIN;
            let kind = kinds[(i as usize * 31) % kinds.len()];
            let e = ev(&m, kind, paths[(i as usize * 17) % paths.len()], "", t);
            let views: Vec<Micros> =
                events.iter().filter(|x: &&ScoredEvent| x.page_view && x.at >= t - m.visit_lookback()).map(|x| x.at).collect();
            m.apply_event(&mut ledger, e, &views);
            events.push(e);
            let full = m.behaviour_entries(&events);
            let (a, b) = (m.score(&ledger, t), m.score(&full, t));
            assert!((a - b).abs() < 1e-6, "after {i} events: incremental {a}, full {b}");
        }
    }

    #[test]
    fn a_bad_model_names_each_rule_and_problem() {
        let mut spec = starter_json();
        spec["half_life_days"] = json!(0);
        spec["thresholds"]["hot"] = json!(5);
        let rules = spec["rules"].as_array_mut().unwrap();
        rules[2]["cap"] = json!(0);
        rules[3]["points"] = json!("many");
        rules[4]["id"] = json!("page_view");
        rules[13]["conditions"][0]["op"] = json!("pattern");
        rules[13]["conditions"][0]["value"] = json!("([unclosed");
        rules.push(json!({"id": "x", "kind": "teleport", "points": 1}));
        let errors = Model::from_json(&spec).unwrap_err();
        let keys: Vec<&String> = errors.keys().collect();
        assert_eq!(
            keys,
            vec![
                "half_life_days",
                "rules[13] (phone_and_email).conditions[0]",
                "rules[21] (x)",
                "rules[2] (video_view).cap",
                "rules[3] (download)",
                "rules[4] (page_view).id",
                "thresholds.hot",
            ]
        );
        assert!(errors["rules[13] (phone_and_email).conditions[0]"].en.contains("regular expression"));
        assert!(errors["rules[13] (phone_and_email).conditions[0]"].ru.contains("регулярное выражение"));
    }

    #[test]
    fn the_fields_the_profile_rules_read() {
        let starter = model();
        let fields: Vec<&str> = starter.profile_fields().into_iter().collect();
        assert_eq!(fields, ["city", "company", "email", "fields.budget_ok", "fields.employees", "phone", "position"]);
        let m = Model::from_json(&json!({
            "half_life_days": 30,
            "thresholds": {"warm": 10, "hot": 25, "sales_ready": 30, "grade_a": 8, "grade_b": 3},
            "rules": [
                {"id": "b", "kind": "profile", "points": 1, "conditions": [{"field": "budget", "op": "range", "min": 1}]},
                {"id": "e", "kind": "profile", "points": 1, "conditions": [{"field": "employees", "op": "exists"}]},
                {"id": "v", "kind": "event", "event": "video_view", "points": 1, "cap": 1}
            ]
        }))
        .unwrap();
        assert_eq!(m.profile_fields().into_iter().collect::<Vec<_>>(), ["budget", "fields.employees"]);
    }

    #[test]
    fn the_starter_model_round_trips_through_json() {
        let m = model();
        let again = Model::from_json(&m.to_json()).unwrap();
        assert_eq!(again.spec, m.spec);
        assert_eq!(m.spec.rules.len(), 21);
    }

    #[test]
    fn ledgers_and_inputs_pack_and_unpack() {
        let entries = vec![
            Entry { rule: 3, points: -2.5, at: NOW, profile: false },
            Entry { rule: 15, points: 2.0, at: 1, profile: true },
            // Points that are not a multiple of ¼, or too large for the short form.
            Entry { rule: 4, points: 0.1, at: NOW, profile: false },
            Entry { rule: 5, points: -3_000_000.0, at: NOW - 86_400_000_000, profile: false },
            Entry { rule: u16::MAX, points: f32::MAX, at: i64::MAX, profile: true },
            Entry { rule: 0, points: 0.0, at: i64::MIN, profile: false },
            Entry { rule: 6, points: 1_048_575.75, at: 0, profile: false },
        ];
        assert_eq!(decode_ledger(&encode_ledger(&entries)), entries);
        assert_eq!(decode_ledger(&encode_ledger(&[])), Vec::<Entry>::new());
        // Bit for bit, also where `==` cannot tell: -0.0, NaN, infinities.
        let odd: Vec<Entry> =
            [-0.0f32, 0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE / 2.0, -0.25, 262_143.75, 262_144.0]
                .iter()
                .map(|&points| Entry { rule: 40, points, at: NOW, profile: false })
                .collect();
        let back = decode_ledger(&encode_ledger(&odd));
        assert_eq!(back.len(), odd.len());
        for (a, b) in odd.iter().zip(&back) {
            assert_eq!(a.points.to_bits(), b.points.to_bits(), "{} → {}", a.points, b.points);
        }
        let inputs = vec![(NOW, 7u32), (NOW + 1, 99)];
        assert_eq!(decode_inputs(&encode_inputs(&inputs)).collect::<Vec<_>>(), inputs);
    }

    #[test]
    fn ledgers_are_small_and_the_old_format_is_still_read() {
        // A profile entry earned with the others at one moment: 3 bytes; an event's: at
        // most 9 (format 1: 15 each).
        let at = NOW;
        let profile: Vec<Entry> = (0..4).map(|r| Entry { rule: r, points: 2.0, at, profile: true }).collect();
        // The format byte, then head, points and the time since 0 (8 bytes for 2027's).
        assert_eq!(encode_ledger(&profile[..1]).len(), 1 + 1 + 1 + 8);
        assert_eq!(encode_ledger(&profile).len(), 1 + 1 + 1 + 8 + 3 * 3);
        let events: Vec<Entry> = (0..10).map(|k| Entry { rule: 2, points: 5.0, at: at + k * 86_400_000_000, profile: false }).collect();
        let packed = encode_ledger(&events);
        // A day apart: 6 bytes of time each after the first.
        assert_eq!(packed.len(), 1 + 10 + 9 * 8);
        // Format 1, as stored before: 15 bytes an entry.
        let mut v1 = vec![1u8];
        for e in &events {
            v1.extend_from_slice(&e.rule.to_le_bytes());
            v1.extend_from_slice(&e.points.to_le_bytes());
            v1.extend_from_slice(&e.at.to_le_bytes());
            v1.push(e.profile as u8);
        }
        assert_eq!(decode_ledger(&v1), events);
        // Cut short: the entries before the cut, no panic; unknown formats: none.
        for cut in 0..packed.len() {
            let got = decode_ledger(&packed[..cut]);
            assert!(got.len() <= events.len() && got[..] == events[..got.len()], "cut at {cut}");
        }
        assert!(decode_ledger(&[3, 1, 2, 3]).is_empty());
    }
}
