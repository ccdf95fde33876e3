//! Lead states, temperature and grade.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    New,
    Nurturing,
    SalesReady,
    Assigned,
    InProgress,
    Qualified,
    Converted,
    Refused,
    Junk,
    Postponed,
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 10] = [
        LeadStatus::New,
        LeadStatus::Nurturing,
        LeadStatus::SalesReady,
        LeadStatus::Assigned,
        LeadStatus::InProgress,
        LeadStatus::Qualified,
        LeadStatus::Converted,
        LeadStatus::Refused,
        LeadStatus::Junk,
        LeadStatus::Postponed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Nurturing => "nurturing",
            LeadStatus::SalesReady => "sales_ready",
            LeadStatus::Assigned => "assigned",
            LeadStatus::InProgress => "in_progress",
            LeadStatus::Qualified => "qualified",
            LeadStatus::Converted => "converted",
            LeadStatus::Refused => "refused",
            LeadStatus::Junk => "junk",
            LeadStatus::Postponed => "postponed",
        }
    }

    /// An open lead takes repeat requests; a closed one (converted, refused, junk) does not:
    /// a new submission from the same person opens a new lead linked to it.
    pub fn is_open(self) -> bool {
        !matches!(self, LeadStatus::Converted | LeadStatus::Refused | LeadStatus::Junk)
    }
}

impl fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeadStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        LeadStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temperature {
    Cold,
    Warm,
    Hot,
}

impl Temperature {
    pub fn as_str(self) -> &'static str {
        match self {
            Temperature::Cold => "cold",
            Temperature::Warm => "warm",
            Temperature::Hot => "hot",
        }
    }
}

impl FromStr for Temperature {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "cold" => Ok(Temperature::Cold),
            "warm" => Ok(Temperature::Warm),
            "hot" => Ok(Temperature::Hot),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grade {
    A,
    B,
    C,
}

impl Grade {
    pub fn as_str(self) -> &'static str {
        match self {
            Grade::A => "A",
            Grade::B => "B",
            Grade::C => "C",
        }
    }
}

impl FromStr for Grade {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "A" => Ok(Grade::A),
            "B" => Ok(Grade::B),
            "C" => Ok(Grade::C),
            _ => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in LeadStatus::ALL {
            assert_eq!(s.as_str().parse::<LeadStatus>(), Ok(s));
        }
        assert!("deleted".parse::<LeadStatus>().is_err());
    }

    #[test]
    fn only_converted_refused_and_junk_are_closed() {
        let closed: Vec<_> = LeadStatus::ALL.into_iter().filter(|s| !s.is_open()).collect();
        assert_eq!(closed, vec![LeadStatus::Converted, LeadStatus::Refused, LeadStatus::Junk]);
    }
}
