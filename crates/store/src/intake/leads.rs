//! Lead submissions inside the intake transaction: idempotency, identity resolution
//! (new, repeat or returning lead), the rows they write, their scores, and the answers.

use super::score::{Scoring, profile_of_row};
use super::*;
use crate::leads::LeadRow;
use std::collections::{BTreeMap, HashMap};
use voronka_domain::LeadStatus;

/// What is known of an identity's lead at resolution time.
#[derive(Debug, Clone)]
struct Known {
    lead_id: Uuid,
    status: LeadStatus,
    contact_id: Option<Uuid>,
    /// The lead the identity row points to in the database (None: added in this batch).
    db_lead: Option<Uuid>,
}

/// Identity rows to write: new ones, and existing ones moved to another lead.
#[derive(Default)]
struct IdentityChanges {
    new: BTreeMap<String, Uuid>,
    moved: BTreeMap<String, (Uuid, Uuid)>,
}

impl IdentityChanges {
    /// Points `ident` at `target`, remembering what the database must be told.
    fn point(&mut self, known: &mut HashMap<String, Known>, ident: &str, target: Uuid, status: LeadStatus) {
        let db_lead = known.get(ident).and_then(|k| k.db_lead);
        match db_lead {
            Some(old) if old == target => {
                self.moved.remove(ident);
            }
            Some(old) => {
                self.moved.insert(ident.to_string(), (old, target));
            }
            None => {
                self.new.insert(ident.to_string(), target);
            }
        }
        known.insert(ident.to_string(), Known { lead_id: target, status, contact_id: None, db_lead });
    }
}

enum Plan {
    /// Answered from the idempotency table.
    Stored(Result<IntakeReply, IntakeError>),
    /// Same key as an earlier job in this batch: answer as that job was answered.
    FollowerOf(usize),
    Created(Uuid),
    Returning(Uuid),
    Repeat(Uuid),
}

/// What `write_leads` decided and wrote, for `answer_leads` after the scores are final.
pub(super) struct LeadPlans<'a> {
    plans: Vec<Plan>,
    new_leads: Vec<LeadInsert<'a>>,
    repeat_rows: HashMap<Uuid, LeadRow>,
}

pub(super) async fn write_leads<'a, T: IntakeTx>(
    tx: &mut T,
    jobs: &[(usize, &'a IntakeCommand, &'a Prepared, Ts)],
    scoring: &mut Scoring,
    writes: &mut Writes<'a>,
    ctx: &mut WriterCtx,
    now: Ts,
) -> Result<LeadPlans<'a>, BatchError> {
    // 1. Idempotency keys seen before.
    let keys: Vec<&str> = jobs.iter().filter_map(|(_, c, _, _)| c.idempotency.as_ref().map(|k| k.scope_key.as_str())).collect();
    let stored: HashMap<String, IdemRow> =
        if keys.is_empty() { HashMap::new() } else { tx.idem_lookup(&keys).await?.into_iter().map(|r| (r.scope_key.clone(), r)).collect() };

    // 2. Identities already known.
    let mut all: Vec<&str> = jobs.iter().flat_map(|(_, _, p, _)| p.idents.iter().map(String::as_str)).collect();
    all.sort_unstable();
    all.dedup();
    let mut known: HashMap<String, Known> = HashMap::with_capacity(all.len());
    if !all.is_empty() {
        for r in tx.identity_lookup(&all).await? {
            let status = r.status.parse().unwrap_or(LeadStatus::New);
            known.insert(r.ident, Known { lead_id: r.lead_id, status, contact_id: r.contact_id, db_lead: Some(r.lead_id) });
        }
    }

    // 3. Decide each job in arrival order; later jobs see what earlier ones created.
    let mut plans: Vec<Plan> = Vec::with_capacity(jobs.len());
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut new_leads: Vec<LeadInsert> = Vec::new();
    let mut changes = IdentityChanges::default();
    let mut repeats: BTreeMap<Uuid, RepeatUpdate> = BTreeMap::new();
    let mut repeat_status: HashMap<Uuid, LeadStatus> = HashMap::new();
    let mut visitor_joins: Vec<(&str, Uuid)> = Vec::new();

    for (i, (_, cmd, prep, at)) in jobs.iter().enumerate() {
        if let Some(k) = &cmd.idempotency {
            if let Some(row) = stored.get(&k.scope_key) {
                let r = if row.request_hash.as_slice() == k.request_hash.as_slice() {
                    Ok(IntakeReply {
                        outcome: IntakeOutcome::Replayed,
                        lead_id: None,
                        status: row.status as u16,
                        answer: Answer::Stored(Arc::new(row.body.clone())),
                    })
                } else {
                    Err(IntakeError::IdempotencyConflict)
                };
                plans.push(Plan::Stored(r));
                continue;
            }
            if let Some(&leader) = first_with_key.get(k.scope_key.as_str()) {
                plans.push(Plan::FollowerOf(leader));
                continue;
            }
            first_with_key.insert(k.scope_key.as_str(), i);
        }
        let lead = &cmd.lead;
        let idents = &prep.idents;
        let matches: Vec<(&String, Known)> = idents.iter().filter_map(|id| known.get(id).map(|k| (id, k.clone()))).collect();
        let actor = cmd.actor.as_deref();
        if let Some((matched_by, open)) = matches.iter().find(|(_, k)| k.status.is_open()) {
            // A repeat request: the person has an open lead. Contacts it did not know yet
            // now point to it too.
            let (target, status) = (open.lead_id, open.status);
            for id in idents {
                changes.point(&mut known, id, target, status);
            }
            let u = repeats.entry(target).or_default();
            u.count += 1;
            u.at = Some(*at);
            u.phone = u.phone.take().or_else(|| lead.phone.as_ref().map(|p| p.as_str().to_string()));
            u.email = u.email.take().or_else(|| lead.email.as_ref().map(|p| p.as_str().to_string()));
            u.messenger = u.messenger.take().or_else(|| lead.messenger.as_ref().map(|p| p.as_str().to_string()));
            u.name = u.name.take().or_else(|| lead.name.clone());
            let data = with_keys(json!({ "matched_by": matched_by }), &prep.event);
            writes.events.push(EventInsert {
                lead_id: Some(target),
                visitor_id: lead.visitor_id.as_deref(),
                site_id: None,
                kind: "repeat_request",
                at: *at,
                actor,
                data,
            });
            writes.outbox.push(OutboxInsert {
                topic: "lead.repeat_request",
                aggregate_id: target,
                payload: json!({ "lead_id": target }).to_string(),
                at: *at,
            });
            if let Some(v) = &lead.visitor_id {
                visitor_joins.push((v, target));
            }
            repeat_status.insert(target, status);
            if let Some(mark) = cmd.import {
                writes.import_rows.push(ImportRowInsert { mark, outcome: "repeat", lead_id: target });
            }
            plans.push(Plan::Repeat(target));
            continue;
        }

        // A new lead; when the person's earlier lead is closed, it is a returning lead linked
        // to that one (and to its contact when it was converted).
        let id = Uuid::now_v7();
        let previous = matches.first().map(|(_, k)| k.clone());
        for ident in idents {
            changes.point(&mut known, ident, id, LeadStatus::New);
        }
        let contact_id = previous.as_ref().filter(|p| p.status == LeadStatus::Converted).and_then(|p| p.contact_id);
        new_leads.push(LeadInsert {
            id,
            lead,
            returning_of: previous.as_ref().map(|p| p.lead_id),
            contact_id,
            search: &prep.search,
            fields: &prep.fields,
            profile: &prep.profile,
            profile_ledger: prep.profile_ledger.as_ref(),
            at: *at,
        });
        let data = match &previous {
            Some(p) => {
                writes.events.push(EventInsert {
                    lead_id: Some(p.lead_id),
                    visitor_id: None,
                    site_id: None,
                    kind: "lead_returned",
                    at: *at,
                    actor,
                    data: json!({ "new_lead_id": id }).to_string(),
                });
                with_keys(json!({"identities": idents, "returning_of": p.lead_id, "previous_status": p.status.as_str()}), &prep.event)
            }
            None => prep.created_event.clone(),
        };
        writes.events.push(EventInsert {
            lead_id: Some(id),
            visitor_id: lead.visitor_id.as_deref(),
            site_id: None,
            kind: "lead_created",
            at: *at,
            actor,
            data,
        });
        writes.outbox.push(OutboxInsert {
            topic: "lead.created",
            aggregate_id: id,
            payload: match &previous {
                Some(p) => format!(r#"{{"lead_id":"{id}","returning_of":"{}"}}"#, p.lead_id),
                None => format!(r#"{{"lead_id":"{id}","returning_of":null}}"#),
            },
            at: *at,
        });
        if let Some(v) = &lead.visitor_id {
            visitor_joins.push((v, id));
        }
        if let Some(mark) = cmd.import {
            let outcome = if previous.is_some() { "returning" } else { "created" };
            writes.import_rows.push(ImportRowInsert { mark, outcome, lead_id: id });
        }
        plans.push(if previous.is_some() { Plan::Returning(id) } else { Plan::Created(id) });
    }

    // 4. Write, each table's rows in key order, so that concurrent writers rarely deadlock
    //    (PostgreSQL sends a batch's inserts as one statement whose parts it runs in an order of
    //    its own; a deadlock it detects fails the batch, which is retried).
    if !new_leads.is_empty() {
        tx.insert_leads(&new_leads).await?;
        // Leads of channels that need triage wait in the unsorted inbox (not routed).
        let triage = tx.triage_channels().await?;
        if !triage.is_empty() {
            let ids: Vec<Uuid> = new_leads.iter().filter(|l| triage.contains(&l.lead.channel)).map(|l| l.id).collect();
            if !ids.is_empty() {
                tx.mark_triage(&ids).await?;
            }
        }
    }
    if !changes.new.is_empty() {
        let rows: Vec<(&str, Uuid)> = changes.new.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        tx.insert_identities(&rows, now).await?;
    }
    for (ident, (from, to)) in &changes.moved {
        if tx.repoint_identity(ident, *from, *to).await? != 1 {
            return Err(BatchError::Conflict("identity moved by a concurrent transaction"));
        }
    }
    if !repeats.is_empty() {
        let rows: Vec<(Uuid, &RepeatUpdate)> = repeats.iter().map(|(id, u)| (*id, u)).collect();
        if tx.apply_repeats(&rows).await? != rows.len() as u64 {
            return Err(BatchError::Conflict("repeat target vanished"));
        }
    }

    // 5. Scores: a new lead is scored on its profile; a repeat request may have changed the
    //    profile (a contact filled in); a visitor's earlier interest joins the lead.
    for l in &new_leads {
        scoring.new_lead(l.id, l.profile, l.profile_ledger, l.at);
    }
    let mut repeat_rows: HashMap<Uuid, LeadRow> = HashMap::new();
    let ids: Vec<Uuid> = repeats.keys().copied().collect();
    for chunk in ids.chunks(256) {
        for row in tx.fetch_leads(chunk).await? {
            repeat_rows.insert(row.id, row);
        }
    }
    let loaded: Vec<(Uuid, LeadStatus)> = repeat_status.iter().map(|(k, v)| (*k, *v)).collect();
    scoring.load(tx, &loaded, false, ctx).await?;
    for (id, row) in &repeat_rows {
        // A repeat request may have filled a missing contact: keep the search column in step.
        let u = &repeats[id];
        if u.phone.is_some() || u.email.is_some() || u.messenger.is_some() || u.name.is_some() {
            let phone = row.phone.clone().map(voronka_domain::Phone::from_e164_unchecked);
            let s = voronka_domain::lead::search_text(
                row.name.as_deref(),
                row.company.as_deref(),
                row.email.as_deref(),
                phone.as_ref(),
                row.messenger.as_deref(),
            );
            tx.set_search(*id, &s).await?;
            scoring.set_profile(*id, profile_of_row(row), now);
        }
    }
    for (v, lead_id) in &visitor_joins {
        let joined = tx.join_visitor_events(v, *lead_id).await?;
        if !joined.is_empty() {
            let keys: Vec<(String, String, String)> = joined.iter().map(|e| events::target_key(&e.kind, &e.data)).collect();
            let ids = ctx.targets.resolve(tx, &keys).await?;
            scoring.load(tx, &[(*lead_id, repeat_status.get(lead_id).copied().unwrap_or(LeadStatus::New))], true, ctx).await?;
            let inputs: Vec<(i64, u32)> = joined.iter().zip(ids).map(|(e, id)| (e.at.micros(), id)).collect();
            scoring.add_events(*lead_id, inputs, &mut ctx.targets);
        }
    }
    Ok(LeadPlans { plans, new_leads, repeat_rows })
}

/// The answers, from the state of each lead after the batch (scores and statuses final).
pub(super) async fn answer_leads<T: IntakeTx>(
    tx: &mut T,
    jobs: &[(usize, &IntakeCommand, &Prepared, Ts)],
    lp: LeadPlans<'_>,
    scoring: &Scoring,
    now: Ts,
) -> Result<Vec<(usize, Result<IntakeReply, IntakeError>)>, BatchError> {
    let LeadPlans { plans, new_leads, mut repeat_rows } = lp;
    // The lead of each answer, made when first needed: an imported row is answered with its
    // outcome alone, so the writer does not build a lead no one reads.
    let new_by_id: HashMap<Uuid, &LeadInsert> = new_leads.iter().map(|l| (l.id, l)).collect();
    let mut leads: HashMap<Uuid, Arc<Lead>> = HashMap::new();
    let mut lead_of = |id: &Uuid| -> Option<Arc<Lead>> {
        if let Some(l) = leads.get(id) {
            return Some(l.clone());
        }
        let l = match (new_by_id.get(id), repeat_rows.remove(id)) {
            (Some(ins), _) => Arc::new(scoring.lead_of_insert(ins, now)),
            (None, Some(row)) => Arc::new(scoring.lead_of_row(row, now)),
            (None, None) => return None,
        };
        leads.insert(*id, l.clone());
        Some(l)
    };
    let mut results: Vec<Option<Result<IntakeReply, IntakeError>>> = Vec::with_capacity(plans.len());
    let mut stored_bodies: Vec<(usize, u16, Arc<Vec<u8>>)> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let r = match plan {
            Plan::Stored(r) => Some(match r {
                Ok(v) => Ok(v.clone()),
                Err(_) => Err(IntakeError::IdempotencyConflict),
            }),
            Plan::FollowerOf(_) => None,
            Plan::Created(id) | Plan::Returning(id) | Plan::Repeat(id) => {
                let (outcome, status) = match plan {
                    Plan::Created(_) => (IntakeOutcome::Created, 201),
                    Plan::Returning(_) => (IntakeOutcome::Returning, 201),
                    _ => (IntakeOutcome::Repeat, 200),
                };
                if jobs[i].1.import.is_some() && jobs[i].1.idempotency.is_none() {
                    results.push(Some(Ok(IntakeReply { outcome, lead_id: Some(*id), status, answer: Answer::Outcome })));
                    continue;
                }
                let Some(lead) = lead_of(id) else {
                    return Err(BatchError::Conflict("lead missing after insert"));
                };
                let lead = &lead;
                // An answer that must be replayed is stored with the lead, so it is written here.
                let answer = if jobs[i].1.idempotency.is_some() {
                    let body = Arc::new(answer_json(lead, outcome));
                    stored_bodies.push((i, status, body.clone()));
                    Answer::Stored(body)
                } else {
                    Answer::Lead(lead.clone())
                };
                Some(Ok(IntakeReply { outcome, lead_id: Some(*id), status, answer }))
            }
        };
        results.push(r);
    }
    if !stored_bodies.is_empty() {
        let rows: Vec<IdemInsert> = stored_bodies
            .iter()
            .filter_map(|(i, s, b)| {
                jobs[*i].1.idempotency.as_ref().map(|k| IdemInsert {
                    key: k.scope_key.as_str(),
                    hash: &k.request_hash,
                    status: *s,
                    body: b.as_slice(),
                })
            })
            .collect();
        tx.insert_idem(&rows, now).await?;
    }

    // Followers answer as their leader did (a replay), or 409 for a different body.
    let follower_replies: Vec<Option<Result<IntakeReply, IntakeError>>> = plans
        .iter()
        .enumerate()
        .map(|(i, plan)| match plan {
            Plan::FollowerOf(leader) => {
                let hash = |j: usize| jobs[j].1.idempotency.as_ref().map(|k| k.request_hash);
                Some(match &results[*leader] {
                    Some(Ok(r)) if hash(*leader) == hash(i) => {
                        Ok(IntakeReply { outcome: IntakeOutcome::Replayed, lead_id: r.lead_id, status: r.status, answer: r.answer.clone() })
                    }
                    _ => Err(IntakeError::IdempotencyConflict),
                })
            }
            _ => None,
        })
        .collect();
    Ok(follower_replies
        .into_iter()
        .zip(results)
        .enumerate()
        .map(|(i, (follower, own))| {
            (jobs[i].0, follower.or(own).unwrap_or_else(|| Err(IntakeError::Storage(anyhow::anyhow!("no result")))))
        })
        .collect())
}
