//! Tracker events inside the intake transaction: each is kept on the timeline (of its lead,
//! or as anonymous interest of its visitor) and scores its lead at once.

use super::score::Scoring;
use super::*;
use std::collections::HashMap;
use voronka_domain::LeadStatus;
use voronka_domain::scoring::Micros;

/// One site action or marketing reaction.
#[derive(Debug, Clone)]
pub struct TrackedEvent {
    /// `page_view`, `video_view`, … or a custom name.
    pub kind: String,
    pub url: Option<String>,
    pub name: Option<String>,
    /// When it happened (a past time is allowed); the time of receipt when absent.
    pub at: Option<Ts>,
    /// Anything else the site sent with it (a JSON object).
    pub data: Value,
}

/// A batch of events of one visitor (from a site) or one lead (with a token).
#[derive(Debug, Clone)]
pub struct EventsCommand {
    pub site_id: Option<Uuid>,
    pub visitor_id: Option<String>,
    pub lead_id: Option<Uuid>,
    pub events: Vec<TrackedEvent>,
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventsReply {
    pub accepted: usize,
    /// The lead the events were scored on; none while the visitor is anonymous.
    pub lead_id: Option<Uuid>,
}

/// The page path of a URL, lower-cased, without query or fragment: what URL rules match.
pub fn path_of(url: &str) -> String {
    let no_scheme = url.split_once("://").map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or("")).map(|p| format!("/{p}"));
    let path = no_scheme.unwrap_or_else(|| url.to_string());
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path: String = path.to_lowercase().chars().take(300).collect();
    if path.is_empty() { "/".into() } else { path }
}

/// An event's type, page path (page views) and name: its key in the target dictionary.
pub(super) type TargetKey = (String, String, String);

/// The dictionary key of an event.
pub(super) fn target_key(kind: &str, data: &Value) -> TargetKey {
    let path = data.get("url").and_then(Value::as_str).map(path_of).unwrap_or_default();
    let name: String = data.get("name").and_then(Value::as_str).unwrap_or("").chars().take(200).collect();
    (kind.to_string(), if kind == "page_view" { path } else { String::new() }, name)
}

pub(super) async fn write_events<'a, T: IntakeTx>(
    tx: &mut T,
    jobs: &[(usize, &'a EventsCommand, Ts)],
    scoring: &mut Scoring,
    writes: &mut Writes<'a>,
    ctx: &mut WriterCtx,
    _now: Ts,
) -> Result<Vec<(usize, Result<EventsReply, IntakeError>)>, BatchError> {
    // The lead of each job: named by id (token), or the visitor's latest lead.
    let visitors: Vec<&str> = jobs.iter().filter(|(_, c, _)| c.lead_id.is_none()).filter_map(|(_, c, _)| c.visitor_id.as_deref()).collect();
    let by_visitor: HashMap<String, (Uuid, LeadStatus)> = if visitors.is_empty() {
        HashMap::new()
    } else {
        tx.leads_of_visitors(&visitors)
            .await?
            .into_iter()
            .map(|r| (r.visitor_id, (r.id, r.status.parse().unwrap_or(LeadStatus::New))))
            .collect()
    };
    let named: Vec<Uuid> = jobs.iter().filter_map(|(_, c, _)| c.lead_id).collect();
    let by_id: HashMap<Uuid, LeadStatus> = if named.is_empty() {
        HashMap::new()
    } else {
        tx.lead_statuses(&named).await?.into_iter().map(|r| (r.id, r.status.parse().unwrap_or(LeadStatus::New))).collect()
    };

    let mut out = Vec::with_capacity(jobs.len());
    let mut per_lead: std::collections::BTreeMap<Uuid, (LeadStatus, Vec<(Micros, TargetKey)>)> = Default::default();
    for (i, cmd, received) in jobs {
        let lead = match (cmd.lead_id, cmd.visitor_id.as_deref()) {
            (Some(id), _) => match by_id.get(&id) {
                Some(st) => Some((id, *st)),
                None => {
                    out.push((*i, Err(IntakeError::UnknownLead)));
                    continue;
                }
            },
            (None, Some(v)) => by_visitor.get(v).copied(),
            (None, None) => None,
        };
        for e in &cmd.events {
            let at = e.at.unwrap_or(*received);
            let mut data = json!({"url": e.url, "name": e.name});
            if e.data.as_object().is_some_and(|o| !o.is_empty()) {
                data["data"] = e.data.clone();
            }
            let key = target_key(&e.kind, &data);
            writes.events.push(EventInsert {
                lead_id: lead.map(|l| l.0),
                visitor_id: cmd.visitor_id.as_deref(),
                site_id: cmd.site_id,
                kind: &e.kind,
                at,
                actor: cmd.actor.as_deref(),
                data: data.to_string(),
            });
            if let Some((id, status)) = lead {
                per_lead.entry(id).or_insert_with(|| (status, Vec::new())).1.push((at.micros(), key));
            }
        }
        out.push((*i, Ok(EventsReply { accepted: cmd.events.len(), lead_id: lead.map(|l| l.0) })));
    }

    if !per_lead.is_empty() {
        let mut leads: Vec<(Uuid, LeadStatus)> = per_lead.iter().map(|(id, (st, _))| (*id, *st)).collect();
        leads.sort_by_key(|l| l.0);
        scoring.load(tx, &leads, true, ctx).await?;
        let keys: Vec<(String, String, String)> = per_lead.values().flat_map(|(_, v)| v.iter().map(|(_, k)| k.clone())).collect();
        let ids = ctx.targets.resolve(tx, &keys).await?;
        let mut ids = ids.into_iter();
        for (id, (_, events)) in per_lead {
            let inputs: Vec<(Micros, u32)> = events.iter().map(|(at, _)| (*at, ids.next().unwrap_or(0))).collect();
            scoring.add_events(id, inputs, &mut ctx.targets);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_lower_case_paths() {
        assert_eq!(path_of("https://Site.ru/Prices/Flats?utm=1#x"), "/prices/flats");
        assert_eq!(path_of("https://site.ru"), "/");
        assert_eq!(path_of("/akcii?x"), "/akcii");
        assert_eq!(path_of(""), "/");
    }
}
