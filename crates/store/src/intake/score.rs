//! Live scoring inside the intake transaction: each lead touched by the batch is scored
//! incrementally from its stored ledger (the events of the batch are applied to it, or the
//! profile rules re-run when the profile changed), and its crossing of the sales-ready
//! threshold moves it to sales.

use super::{BatchError, EventInsert, IntakeTx, LeadInsert, OutboxInsert, ScoreWrite, WriterCtx, Writes};
use crate::leads::{ConsentView, Lead, LeadRow, Utm};
use crate::scoring::score_now;
use crate::ts::Ts;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;
use voronka_domain::scoring::{Entry, Micros, Model, Profile, ScoredEvent, decode_inputs, decode_ledger, encode_inputs, encode_ledger};
use voronka_domain::{LeadStatus, NewLead};

/// A lead keeps at most this many scorable events; older ones have decayed to nothing.
const MAX_INPUTS: usize = 5000;

/// Event targets (type, page path, action name) by id, and which rules of the current
/// model each matches.
#[derive(Default)]
pub(super) struct TargetCache {
    ids: HashMap<(String, String, String), u32>,
    info: HashMap<u32, (String, String, String)>,
    masks: HashMap<u32, (u64, bool)>,
    version: i64,
    /// Targets this writer created (or looked for while creating) in the open transaction.
    fresh: Vec<(String, String, String)>,
}

impl TargetCache {
    /// Ids of these targets, created in the dictionary when new.
    pub(super) async fn resolve<T: IntakeTx>(&mut self, tx: &mut T, keys: &[(String, String, String)]) -> Result<Vec<u32>, BatchError> {
        let mut missing: Vec<(String, String, String)> = keys.iter().filter(|k| !self.ids.contains_key(*k)).cloned().collect();
        missing.sort();
        missing.dedup();
        if !missing.is_empty() {
            let mut found = tx.targets_by_key(&missing).await?;
            if found.len() < missing.len() {
                self.fresh.extend(missing.iter().cloned());
                tx.insert_targets(&missing).await?;
                found = tx.targets_by_key(&missing).await?;
            }
            for t in found {
                self.remember(t.id as u32, t.kind, t.path, t.name);
            }
        }
        keys.iter().map(|k| self.ids.get(k).copied().ok_or(BatchError::Conflict("event target not stored"))).collect()
    }

    /// Makes sure the targets of stored inputs are known (another process may have made them).
    pub(super) async fn ensure<T: IntakeTx>(&mut self, tx: &mut T, ids: impl Iterator<Item = u32>) -> Result<(), BatchError> {
        let mut missing: Vec<i64> = ids.filter(|id| !self.info.contains_key(id)).map(|id| id as i64).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            for t in tx.targets_by_id(&missing).await? {
                self.remember(t.id as u32, t.kind, t.path, t.name);
            }
        }
        Ok(())
    }

    fn remember(&mut self, id: u32, kind: String, path: String, name: String) {
        self.ids.insert((kind.clone(), path.clone(), name.clone()), id);
        self.info.insert(id, (kind, path, name));
        // An id seen before under another target (only after a rollback) matches anew.
        self.masks.remove(&id);
    }

    /// The open transaction committed: what it created is stored.
    pub(super) fn committed(&mut self) {
        self.fresh.clear();
    }

    /// The open transaction was rolled back, and the targets it created with it: their ids
    /// are forgotten (SQLite gives a rolled-back id to the next target it stores).
    pub(super) fn rolled_back(&mut self) {
        for key in std::mem::take(&mut self.fresh) {
            if let Some(id) = self.ids.remove(&key) {
                self.info.remove(&id);
                self.masks.remove(&id);
            }
        }
    }

    /// The event as the model sees it.
    pub(super) fn scored(&mut self, model: &Model, version: i64, id: u32, at: Micros) -> ScoredEvent {
        if self.version != version {
            self.masks.clear();
            self.version = version;
        }
        let (mask, page_view) = match self.masks.get(&id) {
            Some(m) => *m,
            None => {
                let m = match self.info.get(&id) {
                    Some((kind, path, name)) => (model.target_mask(kind, path, name), kind == "page_view"),
                    None => (0, false),
                };
                self.masks.insert(id, m);
                m
            }
        };
        ScoredEvent { at, mask, page_view }
    }
}

struct LeadState {
    ledger: Vec<Entry>,
    inputs: Option<Vec<(Micros, u32)>>,
    inputs_dirty: bool,
    status: LeadStatus,
    /// The score before this batch (None for a lead created in it).
    before: Option<f64>,
    dirty: bool,
}

/// The scores of the leads a batch touches.
pub(super) struct Scoring {
    version: i64,
    model: Arc<Model>,
    leads: BTreeMap<Uuid, LeadState>,
    /// Leads that became sales-ready in this batch.
    promoted: Vec<Uuid>,
}

impl Scoring {
    pub(super) fn new((version, model): (i64, Arc<Model>)) -> Scoring {
        Scoring { version, model, leads: BTreeMap::new(), promoted: Vec::new() }
    }

    /// A lead created in this batch, scored on its profile; `pre` is its profile ledger worked out before the
    /// batch, used when made with this batch's model version.
    pub(super) fn new_lead(&mut self, id: Uuid, profile: &Profile, pre: Option<&(i64, Vec<Entry>)>, at: Ts) {
        let ledger = match pre {
            Some((v, entries)) if *v == self.version => entries.clone(),
            _ => self.model.profile_entries(profile, at.micros()),
        };
        self.leads.insert(
            id,
            LeadState { ledger, inputs: Some(Vec::new()), inputs_dirty: false, status: LeadStatus::New, before: None, dirty: true },
        );
    }

    /// Loads the ledgers (and with `inputs`, the scorable events) of existing leads. A
    /// ledger made with another model version is rebuilt from the lead's profile and events.
    pub(super) async fn load<T: IntakeTx>(
        &mut self,
        tx: &mut T,
        leads: &[(Uuid, LeadStatus)],
        inputs: bool,
        ctx: &mut WriterCtx,
    ) -> Result<(), BatchError> {
        let now = chrono::Utc::now().timestamp_micros();
        let fresh: Vec<Uuid> = leads.iter().filter(|(id, _)| !self.leads.contains_key(id)).map(|(id, _)| *id).collect();
        let mut stale: Vec<Uuid> = Vec::new();
        if !fresh.is_empty() {
            let rows: HashMap<Uuid, (Vec<u8>, i64)> =
                tx.load_scores(&fresh).await?.into_iter().map(|r| (r.lead_id, (r.ledger, r.model_version))).collect();
            for (id, status) in leads.iter().filter(|(id, _)| fresh.contains(id)) {
                let (ledger, current) = match rows.get(id) {
                    Some((bytes, v)) => (decode_ledger(bytes), Some(*v)),
                    None => (Vec::new(), None),
                };
                if current != Some(self.version) {
                    stale.push(*id);
                }
                let before = Some(self.model.score(&ledger, now));
                self.leads.insert(*id, LeadState { ledger, inputs: None, inputs_dirty: false, status: *status, before, dirty: false });
            }
        }
        let want_inputs: Vec<Uuid> = leads
            .iter()
            .map(|(id, _)| *id)
            .chain(stale.iter().copied())
            .filter(|id| (inputs || stale.contains(id)) && self.leads.get(id).is_some_and(|s| s.inputs.is_none()))
            .collect();
        if !want_inputs.is_empty() {
            let mut got: HashMap<Uuid, Vec<(Micros, u32)>> =
                tx.load_inputs(&want_inputs).await?.into_iter().map(|r| (r.lead_id, decode_inputs(&r.events).collect())).collect();
            for id in &want_inputs {
                if let Some(st) = self.leads.get_mut(id) {
                    st.inputs = Some(got.remove(id).unwrap_or_default());
                }
            }
            let all_ids: Vec<u32> =
                want_inputs.iter().filter_map(|id| self.leads.get(id)).flat_map(|s| s.inputs.iter().flatten().map(|(_, t)| *t)).collect();
            ctx.targets.ensure(tx, all_ids.into_iter()).await?;
        }
        if !stale.is_empty() {
            let rows = tx.fetch_leads(&stale).await?;
            for row in rows {
                let profile = profile_of_row(&row);
                if let Some(st) = self.leads.get_mut(&row.id) {
                    st.ledger = self.model.profile_entries(&profile, row.created_at.micros());
                    st.dirty = true;
                }
                self.rebuild_behaviour(row.id, &mut ctx.targets);
            }
        }
        Ok(())
    }

    /// Re-runs the profile rules; an entry for a rule that held before keeps its date.
    pub(super) fn set_profile(&mut self, id: Uuid, profile: Profile, at: Ts) {
        let Some(st) = self.leads.get_mut(&id) else { return };
        let fresh = self.model.profile_entries(&profile, at.micros());
        let old: HashMap<u16, Micros> = st.ledger.iter().filter(|e| e.profile).map(|e| (e.rule, e.at)).collect();
        st.ledger.retain(|e| !e.profile);
        st.ledger.extend(fresh.into_iter().map(|mut e| {
            if let Some(t) = old.get(&e.rule) {
                e.at = *t;
            }
            e
        }));
        st.dirty = true;
    }

    /// Adds scorable events: applied one by one when they come after what the lead has, or
    /// the behaviour part rebuilt from all its events when some come earlier.
    pub(super) fn add_events(&mut self, id: Uuid, mut events: Vec<(Micros, u32)>, targets: &mut TargetCache) {
        if events.is_empty() {
            return;
        }
        events.sort_unstable();
        let (model, version) = (self.model.clone(), self.version);
        let Some(st) = self.leads.get_mut(&id) else { return };
        let inputs = st.inputs.get_or_insert_with(Vec::new);
        let in_order = inputs.last().is_none_or(|last| events[0].0 >= last.0);
        st.dirty = true;
        st.inputs_dirty = true;
        if in_order {
            let lookback = model.visit_lookback();
            for (at, target) in events {
                let ev = targets.scored(&model, version, target, at);
                let recent: Vec<Micros> = if lookback > 0 && ev.page_view {
                    let mut v: Vec<Micros> = inputs
                        .iter()
                        .rev()
                        .take_while(|(t, _)| *t >= at - lookback)
                        .filter(|(t, id)| targets.scored(&model, version, *id, *t).page_view)
                        .map(|(t, _)| *t)
                        .collect();
                    v.reverse();
                    v
                } else {
                    Vec::new()
                };
                model.apply_event(&mut st.ledger, ev, &recent);
                inputs.push((at, target));
            }
        } else {
            inputs.extend(events);
            inputs.sort_unstable();
            self.rebuild_behaviour(id, targets);
        }
    }

    fn rebuild_behaviour(&mut self, id: Uuid, targets: &mut TargetCache) {
        let (model, version) = (self.model.clone(), self.version);
        let Some(st) = self.leads.get_mut(&id) else { return };
        let scored: Vec<ScoredEvent> = st.inputs.iter().flatten().map(|(at, t)| targets.scored(&model, version, *t, *at)).collect();
        st.ledger.retain(|e| e.profile);
        st.ledger.extend(model.behaviour_entries(&scored));
        st.dirty = true;
    }

    /// Writes the changed scores and inputs, and moves leads that crossed the sales-ready
    /// threshold to sales (a timeline event and an outbox message each).
    pub(super) async fn finish<T: IntakeTx>(&mut self, tx: &mut T, writes: &mut Writes<'_>, now: Ts) -> Result<(), BatchError> {
        let t = self.model.thresholds().sales_ready;
        let mut scores = Vec::new();
        let mut inputs = Vec::new();
        for (id, st) in self.leads.iter_mut() {
            if !st.dirty {
                continue;
            }
            let s = score_now(&self.model, &st.ledger, now.micros());
            let crossed = st.before.is_none_or(|b| b < t) && s.score >= t;
            if crossed && matches!(st.status, LeadStatus::New | LeadStatus::Nurturing) {
                writes.events.push(EventInsert {
                    lead_id: Some(*id),
                    visitor_id: None,
                    site_id: None,
                    kind: "status_changed",
                    at: now,
                    actor: Some("scoring"),
                    data: json!({"from": st.status.as_str(), "to": "sales_ready", "reason": "score_threshold", "score": (s.score * 10.0).round() / 10.0, "threshold": t}).to_string(),
                });
                writes.outbox.push(OutboxInsert {
                    topic: "lead.sales_ready",
                    aggregate_id: *id,
                    payload: json!({"lead_id": id, "score": (s.score * 10.0).round() / 10.0}).to_string(),
                    at: now,
                });
                st.status = LeadStatus::SalesReady;
                self.promoted.push(*id);
            }
            scores.push(ScoreWrite {
                lead_id: *id,
                created_status: st.before.is_none().then(|| st.status.as_str()),
                score: s.score,
                priority: s.priority,
                profile: s.profile,
                temperature: s.temperature.as_str(),
                grade: s.grade.as_str(),
                ledger: encode_ledger(&st.ledger),
                model_version: self.version,
                at: now,
            });
            if st.inputs_dirty
                && let Some(v) = st.inputs.as_mut()
            {
                if v.len() > MAX_INPUTS {
                    v.drain(..v.len() - MAX_INPUTS);
                }
                inputs.push((*id, encode_inputs(v)));
            }
        }
        if !self.promoted.is_empty() {
            tx.set_sales_ready(&self.promoted, now).await?;
        }
        if !scores.is_empty() {
            // In key order: index pages are filled in turn, and writers lock rows in one order.
            scores.sort_unstable_by_key(|s| s.lead_id);
            tx.save_scores(&scores).await?;
        }
        if !inputs.is_empty() {
            tx.save_inputs(&inputs).await?;
        }
        Ok(())
    }

    /// A lead created in this batch as the API shows it.
    pub(super) fn lead_of_insert(&self, l: &LeadInsert, now: Ts) -> Lead {
        let st = self.leads.get(&l.id);
        let ledger = st.map(|s| s.ledger.as_slice()).unwrap_or(&[]);
        let s = score_now(&self.model, ledger, now.micros());
        let n = l.lead;
        let c = |o: &Option<String>| o.clone();
        Lead {
            id: l.id,
            name: c(&n.name),
            phone: n.phone.as_ref().map(|p| p.as_str().to_string()),
            email: n.email.as_ref().map(|e| e.as_str().to_string()),
            messenger: n.messenger.as_ref().map(|m| m.as_str().to_string()),
            company: c(&n.company),
            position: c(&n.position),
            city: c(&n.city),
            interest: c(&n.interest),
            message: c(&n.message),
            budget: n.budget,
            status: st.map(|s| s.status).unwrap_or(LeadStatus::New).as_str().to_string(),
            status_reason: None,
            score: s.score,
            priority: s.priority,
            temperature: s.temperature.as_str().into(),
            grade: s.grade.as_str().into(),
            owner: None,
            channel: n.channel.clone(),
            campaign: c(&n.campaign),
            source: c(&n.source),
            utm: Utm {
                source: c(&n.utm.source),
                medium: c(&n.utm.medium),
                campaign: c(&n.utm.campaign),
                content: c(&n.utm.content),
                term: c(&n.utm.term),
            },
            referrer: c(&n.referrer),
            landing_page: c(&n.landing_page),
            tracking_number: n.tracking_number.as_ref().map(|p| p.as_str().to_string()),
            visitor_id: c(&n.visitor_id),
            external_id: c(&n.external_id),
            fields: Value::Object(n.fields.clone()),
            consent: n.consent.as_ref().map(|x| ConsentView { marketing: x.marketing, text: x.text.clone(), at: x.at.map(Ts::from) }),
            repeat_count: 0,
            returning_of: l.returning_of,
            contact_id: l.contact_id,
            created_at: l.at,
            updated_at: l.at,
            last_request_at: l.at,
            assigned_at: None,
            sla_due_at: None,
            first_touch_at: None,
        }
    }

    /// A stored lead as the API shows it, with the score and status of this batch.
    pub(super) fn lead_of_row(&self, mut row: LeadRow, now: Ts) -> Lead {
        if let Some(st) = self.leads.get(&row.id) {
            row.ledger = Some(encode_ledger(&st.ledger));
            row.status = st.status.as_str().to_string();
        }
        row.into_lead(&self.model, now.micros())
    }
}

/// The profile of a new submission.
pub(super) fn profile_of_new(l: &NewLead) -> Profile {
    Profile::new(
        &[
            ("name", l.name.clone()),
            ("phone", l.phone.as_ref().map(|p| p.as_str().to_string())),
            ("email", l.email.as_ref().map(|e| e.as_str().to_string())),
            ("messenger", l.messenger.as_ref().map(|m| m.as_str().to_string())),
            ("company", l.company.clone()),
            ("position", l.position.clone()),
            ("city", l.city.clone()),
            ("interest", l.interest.clone()),
            ("message", l.message.clone()),
            ("channel", Some(l.channel.clone())),
            ("campaign", l.campaign.clone()),
            ("source", l.source.clone()),
            ("utm_source", l.utm.source.clone()),
            ("utm_medium", l.utm.medium.clone()),
            ("utm_campaign", l.utm.campaign.clone()),
            ("utm_content", l.utm.content.clone()),
            ("utm_term", l.utm.term.clone()),
            ("referrer", l.referrer.clone()),
            ("landing_page", l.landing_page.clone()),
            ("tracking_number", l.tracking_number.as_ref().map(|p| p.as_str().to_string())),
        ],
        l.budget,
        &l.fields,
    )
}

/// The profile of a stored lead.
pub(crate) fn profile_of_row(r: &LeadRow) -> Profile {
    let empty = serde_json::Map::new();
    Profile::new(
        &[
            ("name", r.name.clone()),
            ("phone", r.phone.clone()),
            ("email", r.email.clone()),
            ("messenger", r.messenger.clone()),
            ("company", r.company.clone()),
            ("position", r.position.clone()),
            ("city", r.city.clone()),
            ("interest", r.interest.clone()),
            ("message", r.message.clone()),
            ("channel", Some(r.channel.clone())),
            ("campaign", r.campaign.clone()),
            ("source", r.source.clone()),
            ("utm_source", r.utm_source.clone()),
            ("utm_medium", r.utm_medium.clone()),
            ("utm_campaign", r.utm_campaign.clone()),
            ("utm_content", r.utm_content.clone()),
            ("utm_term", r.utm_term.clone()),
            ("referrer", r.referrer.clone()),
            ("landing_page", r.landing_page.clone()),
            ("tracking_number", r.tracking_number.clone()),
        ],
        r.budget,
        r.fields.as_object().unwrap_or(&empty),
    )
}
