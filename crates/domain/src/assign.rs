//! Who gets a lead: ordered rules, each a condition on the lead and a strategy over the
//! people on duty; and the first-touch deadlines (SLA) by channel and temperature.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What routing looks at in a lead.
#[derive(Debug, Clone, Default)]
pub struct LeadFacts {
    pub channel: String,
    pub temperature: String,
    pub score: f64,
    /// The lead's city (lower-cased for comparison).
    pub region: Option<String>,
    pub industry: Option<String>,
    pub segment: Option<String>,
    pub campaign: Option<String>,
}

/// A rule's condition: every list given must contain the lead's value; empty lists and
/// absent bounds match anything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub temperatures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub industries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<String>,
}

fn has(list: &[String], v: Option<&str>) -> bool {
    list.is_empty() || v.is_some_and(|v| list.iter().any(|x| crate::scoring::normalize_city(x) == crate::scoring::normalize_city(v)))
}

impl Condition {
    pub fn matches(&self, l: &LeadFacts) -> bool {
        has(&self.channels, Some(&l.channel))
            && has(&self.temperatures, Some(&l.temperature))
            && self.min_score.is_none_or(|m| l.score >= m)
            && self.max_score.is_none_or(|m| l.score <= m)
            && has(&self.regions, l.region.as_deref())
            && has(&self.industries, l.industry.as_deref())
            && has(&self.segments, l.segment.as_deref())
            && has(&self.campaigns, l.campaign.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// In turn: whoever was assigned a lead longest ago (never: first).
    RoundRobin,
    /// Whoever has the fewest open leads.
    LeastLoaded,
    /// Whoever's specialisations include the lead's industry, region or segment; in turn.
    Specialisation,
    /// A named user.
    User { user_id: Uuid },
    /// The members of a team, in turn.
    Team { team_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub condition: Condition,
    pub strategy: Strategy,
    /// Only people of this level (`junior` or `senior`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// The rules a new installation routes with: hot and warm leads to senior managers, the
/// rest to everyone, in turn.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "Hot and warm leads to senior managers / Горячие и тёплые — старшим менеджерам".into(),
            condition: Condition { temperatures: vec!["hot".into(), "warm".into()], ..Default::default() },
            strategy: Strategy::RoundRobin,
            level: Some("senior".into()),
        },
        Rule {
            name: "Everyone in turn / Всем по очереди".into(),
            condition: Condition::default(),
            strategy: Strategy::RoundRobin,
            level: None,
        },
    ]
}

/// Someone who could take a lead, as routing sees them now.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Uuid,
    pub team_id: Option<Uuid>,
    pub level: String,
    pub industries: Vec<String>,
    pub regions: Vec<String>,
    pub segments: Vec<String>,
    /// On shift now, not on vacation or a day off.
    pub on_duty: bool,
    pub open_leads: u32,
    pub capacity: u32,
    /// When they were last given a lead (microseconds); None: never.
    pub last_assigned: Option<i64>,
}

impl Candidate {
    fn available(&self) -> bool {
        self.on_duty && self.open_leads < self.capacity
    }
}

/// The person the first applicable rule picks, and the rule's index. A rule applies when its
/// condition matches and someone it allows is available; otherwise the next rule is tried.
/// `exclude` is never picked (the owner whose deadline passed).
pub fn choose(rules: &[Rule], lead: &LeadFacts, people: &[Candidate], exclude: Option<Uuid>) -> Option<(Uuid, usize)> {
    for (i, rule) in rules.iter().enumerate() {
        if !rule.condition.matches(lead) {
            continue;
        }
        let pool: Vec<&Candidate> = people
            .iter()
            .filter(|c| c.available() && Some(c.id) != exclude)
            .filter(|c| rule.level.as_deref().is_none_or(|l| c.level == l))
            .filter(|c| match &rule.strategy {
                Strategy::User { user_id } => c.id == *user_id,
                Strategy::Team { team_id } => c.team_id == Some(*team_id),
                Strategy::Specialisation => {
                    let hit = |list: &[String], v: Option<&str>| {
                        v.is_some_and(|v| list.iter().any(|x| x.trim().to_lowercase() == v.trim().to_lowercase()))
                    };
                    hit(&c.industries, lead.industry.as_deref())
                        || hit(&c.regions, lead.region.as_deref())
                        || hit(&c.segments, lead.segment.as_deref())
                }
                _ => true,
            })
            .collect();
        let pick = match rule.strategy {
            Strategy::LeastLoaded => pool.iter().min_by_key(|c| (c.open_leads, c.last_assigned.unwrap_or(i64::MIN), c.id)).copied(),
            _ => pool.iter().min_by_key(|c| (c.last_assigned.unwrap_or(i64::MIN), c.id)).copied(),
        };
        if let Some(c) = pick {
            return Some((c.id, i));
        }
    }
    None
}

/// First-touch deadline rules: the first that matches the channel (or `*`) and temperature
/// (or `*`) gives the seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    pub channel: String,
    pub temperature: String,
    pub seconds: i64,
}

/// Call answered in 30 s, chat reply within 2 minutes, other requests (forms…) touched
/// within 15 minutes when hot or warm and 2 hours when cold.
pub fn default_slas() -> Vec<Sla> {
    let s = |c: &str, t: &str, secs: i64| Sla { channel: c.into(), temperature: t.into(), seconds: secs };
    vec![s("call", "*", 30), s("chat", "*", 120), s("*", "hot", 900), s("*", "warm", 900), s("*", "cold", 7200)]
}

pub fn sla_seconds(slas: &[Sla], channel: &str, temperature: &str) -> Option<i64> {
    slas.iter()
        .find(|s| (s.channel == "*" || s.channel == channel) && (s.temperature == "*" || s.temperature == temperature))
        .map(|s| s.seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(n: u8, level: &str) -> Candidate {
        Candidate {
            id: Uuid::from_bytes([n; 16]),
            team_id: None,
            level: level.into(),
            industries: vec![],
            regions: vec![],
            segments: vec![],
            on_duty: true,
            open_leads: 0,
            capacity: 1000,
            last_assigned: None,
        }
    }

    fn lead(t: &str) -> LeadFacts {
        LeadFacts { channel: "web_form".into(), temperature: t.into(), ..Default::default() }
    }

    #[test]
    fn round_robin_is_fair_over_a_thousand_leads() {
        let mut people: Vec<Candidate> = (1..=7).map(|n| person(n, "junior")).collect();
        let rules = default_rules();
        let mut counts = std::collections::HashMap::new();
        for t in 0..1000i64 {
            let (id, _) = choose(&rules, &lead("cold"), &people, None).unwrap();
            *counts.entry(id).or_insert(0) += 1;
            let p = people.iter_mut().find(|p| p.id == id).unwrap();
            p.last_assigned = Some(t);
            p.open_leads += 1;
        }
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        assert_eq!(counts.len(), 7);
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn a_newcomer_is_not_starved_nor_flooded() {
        let mut people: Vec<Candidate> = (1..=3).map(|n| person(n, "junior")).collect();
        for (i, p) in people.iter_mut().enumerate() {
            p.last_assigned = Some(100 + i as i64);
        }
        people.push(person(9, "junior"));
        let rules = default_rules();
        let mut got = 0;
        for t in 200..212i64 {
            let (id, _) = choose(&rules, &lead("cold"), &people, None).unwrap();
            if id == Uuid::from_bytes([9; 16]) {
                got += 1;
            }
            people.iter_mut().find(|p| p.id == id).unwrap().last_assigned = Some(t);
        }
        assert_eq!(got, 3, "one lead in four");
    }

    #[test]
    fn hot_and_warm_go_to_seniors_by_default() {
        let people = vec![person(1, "junior"), person(2, "senior"), person(3, "junior")];
        let rules = default_rules();
        assert_eq!(choose(&rules, &lead("hot"), &people, None).unwrap(), (Uuid::from_bytes([2; 16]), 0));
        assert_eq!(choose(&rules, &lead("warm"), &people, None).unwrap().0, Uuid::from_bytes([2; 16]));
        // No senior on duty: the next rule takes it.
        let mut off = people.clone();
        off[1].on_duty = false;
        assert_eq!(choose(&rules, &lead("hot"), &off, None).unwrap().1, 1);
    }

    #[test]
    fn least_loaded_and_capacity() {
        let mut people = vec![person(1, "junior"), person(2, "junior"), person(3, "junior")];
        people[0].open_leads = 5;
        people[1].open_leads = 2;
        people[2].open_leads = 9;
        people[2].capacity = 9;
        let rules = vec![Rule { name: "ll".into(), condition: Condition::default(), strategy: Strategy::LeastLoaded, level: None }];
        assert_eq!(choose(&rules, &lead("cold"), &people, None).unwrap().0, Uuid::from_bytes([2; 16]));
        people[1].open_leads = 20;
        // Full capacity is skipped; 1 has 5 < 20.
        assert_eq!(choose(&rules, &lead("cold"), &people, None).unwrap().0, Uuid::from_bytes([1; 16]));
    }

    #[test]
    fn nobody_on_duty_means_no_one() {
        let mut people = vec![person(1, "senior")];
        people[0].on_duty = false;
        assert!(choose(&default_rules(), &lead("hot"), &people, None).is_none());
        // And the escalated owner is never picked again.
        let people = vec![person(1, "senior")];
        assert!(choose(&default_rules(), &lead("hot"), &people, Some(Uuid::from_bytes([1; 16]))).is_none());
    }

    #[test]
    fn specialisation_and_named_strategies() {
        let mut people = vec![person(1, "junior"), person(2, "junior")];
        people[1].industries = vec!["Строительство".into()];
        let rules = vec![
            Rule { name: "spec".into(), condition: Condition::default(), strategy: Strategy::Specialisation, level: None },
            Rule {
                name: "user".into(),
                condition: Condition::default(),
                strategy: Strategy::User { user_id: Uuid::from_bytes([1; 16]) },
                level: None,
            },
        ];
        let mut l = lead("cold");
        l.industry = Some("строительство".into());
        assert_eq!(choose(&rules, &l, &people, None).unwrap(), (Uuid::from_bytes([2; 16]), 0));
        l.industry = Some("IT".into());
        assert_eq!(choose(&rules, &l, &people, None).unwrap(), (Uuid::from_bytes([1; 16]), 1));
    }

    #[test]
    fn conditions_on_channel_score_region_and_campaign() {
        let c = Condition {
            channels: vec!["call".into()],
            min_score: Some(10.0),
            regions: vec!["Москва".into()],
            campaigns: vec!["spring".into()],
            ..Default::default()
        };
        let mut l = LeadFacts {
            channel: "call".into(),
            temperature: "warm".into(),
            score: 12.0,
            region: Some("г. москва".into()),
            campaign: Some("spring".into()),
            ..Default::default()
        };
        assert!(c.matches(&l));
        l.score = 9.0;
        assert!(!c.matches(&l));
    }

    #[test]
    fn default_deadlines() {
        let s = default_slas();
        assert_eq!(sla_seconds(&s, "call", "cold"), Some(30));
        assert_eq!(sla_seconds(&s, "chat", "hot"), Some(120));
        assert_eq!(sla_seconds(&s, "web_form", "hot"), Some(900));
        assert_eq!(sla_seconds(&s, "web_form", "warm"), Some(900));
        assert_eq!(sla_seconds(&s, "web_form", "cold"), Some(7200));
    }

    #[test]
    fn industry_segment_and_max_score_conditions() {
        let c = Condition {
            industries: vec!["Строительство".into()],
            segments: vec!["b2b".into()],
            max_score: Some(50.0),
            temperatures: vec!["hot".into()],
            ..Default::default()
        };
        let mut l = LeadFacts {
            temperature: "hot".into(),
            score: 40.0,
            industry: Some("строительство".into()),
            segment: Some("B2B".into()),
            ..Default::default()
        };
        assert!(c.matches(&l));
        for change in 0..4 {
            let mut x = l.clone();
            match change {
                0 => x.industry = Some("IT".into()),
                1 => x.segment = None,
                2 => x.score = 51.0,
                _ => x.temperature = "warm".into(),
            }
            assert!(!c.matches(&x), "change {change}");
        }
        l.industry = None;
        assert!(!c.matches(&l), "a lead without the industry does not match a rule that names one");
    }

    #[test]
    fn a_team_rule_gives_leads_to_its_members_in_turn() {
        let team = Uuid::from_bytes([7; 16]);
        let mut people: Vec<Candidate> = (1..=4).map(|n| person(n, "junior")).collect();
        people[1].team_id = Some(team);
        people[3].team_id = Some(team);
        let rules = vec![
            Rule { name: "team".into(), condition: Condition::default(), strategy: Strategy::Team { team_id: team }, level: None },
            Rule { name: "rest".into(), condition: Condition::default(), strategy: Strategy::RoundRobin, level: None },
        ];
        let mut got = Vec::new();
        for t in 0..4i64 {
            let (id, rule) = choose(&rules, &lead("cold"), &people, None).unwrap();
            assert_eq!(rule, 0);
            got.push(id);
            people.iter_mut().find(|p| p.id == id).unwrap().last_assigned = Some(t);
        }
        let (b, d) = (Uuid::from_bytes([2; 16]), Uuid::from_bytes([4; 16]));
        assert_eq!(got, vec![b, d, b, d]);
        // The whole team off duty: the next rule takes it.
        people[1].on_duty = false;
        people[3].on_duty = false;
        assert_eq!(choose(&rules, &lead("cold"), &people, None).unwrap().1, 1);
    }
}
