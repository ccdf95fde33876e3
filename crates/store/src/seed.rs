//! A realistic, reproducible dataset for benchmarks, written through bulk paths (one
//! transaction per chunk on SQLite, COPY on PostgreSQL), not through the API: leads with
//! Russian and English names, phones, e-mails (a share on free mail), companies, cities,
//! channels and campaigns, statuses, a year of site behaviour each, and their scores.

use crate::db::Db;
use crate::intake::path_of;
use crate::scoring::score_now;
use crate::ts::Ts;
use crate::{Store, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;
use voronka_domain::scoring::{Micros, Model, Profile, ScoredEvent, encode_inputs, encode_ledger};

#[derive(Debug, Clone, Default)]
pub struct SeedSpec {
    pub leads: u64,
    /// Average behaviour events per lead (each lead has 0 to twice this).
    pub events_per_lead: u32,
    /// The random seed: the same seed makes the same dataset.
    pub seed: u64,
    /// Give each lead a visitor id `v{index}` (for tracker benchmarks).
    pub visitors: bool,
    /// Users who own the leads past the `new` / `nurturing` states, in turn.
    pub owners: Vec<Uuid>,
}

#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub leads: u64,
    pub events: u64,
    pub millis: u64,
}

const RU_FIRST: &[&str] = &[
    "Иван",
    "Мария",
    "Алексей",
    "Анна",
    "Дмитрий",
    "Елена",
    "Сергей",
    "Ольга",
    "Андрей",
    "Наталья",
    "Павел",
    "Татьяна",
    "Михаил",
    "Ксения",
    "Никита",
    "Юлия",
];
const RU_LAST: &[&str] = &[
    "Иванов",
    "Смирнова",
    "Кузнецов",
    "Попова",
    "Васильев",
    "Петрова",
    "Соколов",
    "Михайлова",
    "Новиков",
    "Фёдорова",
    "Морозов",
    "Волкова",
    "Лебедев",
    "Козлова",
];
const EN_FIRST: &[&str] = &["John", "Emma", "Michael", "Olivia", "David", "Sophia", "James", "Mia"];
const EN_LAST: &[&str] = &["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Clark"];
const COMPANIES: &[&str] = &[
    "ООО Ромашка",
    "АО Стройинвест",
    "ИП Петров",
    "ООО ТехноСервис",
    "Acme Ltd",
    "ООО Вектор",
    "ГК Север",
    "ООО Агро+",
    "ЗАО Металл",
    "Globex LLC",
];
const POSITIONS: &[&str] = &[
    "Генеральный директор",
    "Менеджер по закупкам",
    "CEO",
    "Руководитель отдела",
    "Бухгалтер",
    "Владелец",
    "Head of Sales",
    "Инженер",
    "Маркетолог",
];
const CITIES: &[(&str, u32)] = &[
    ("Москва", 30),
    ("Санкт-Петербург", 15),
    ("Новосибирск", 6),
    ("Екатеринбург", 6),
    ("Казань", 5),
    ("Нижний Новгород", 4),
    ("Краснодар", 4),
    ("Самара", 3),
    ("Тверь", 2),
    ("Moscow", 2),
];
const FREE: &[&str] = &["gmail.com", "mail.ru", "yandex.ru", "bk.ru", "list.ru", "inbox.ru", "rambler.ru", "yahoo.com"];
const CORP: &[&str] = &["romashka.ru", "stroyinvest.ru", "vector.pro", "sever.group", "acme.com", "tehno.ru", "agroplus.ru"];
const CHANNELS: &[(&str, u32)] = &[
    ("web_form", 35),
    ("call", 20),
    ("chat", 10),
    ("callback", 8),
    ("social", 7),
    ("email", 5),
    ("import", 5),
    ("cpa", 4),
    ("referral", 3),
    ("offline", 3),
];
const STATUSES: &[(&str, u32)] = &[
    ("new", 40),
    ("nurturing", 20),
    ("in_progress", 10),
    ("qualified", 5),
    ("converted", 5),
    ("refused", 10),
    ("junk", 5),
    ("postponed", 3),
    ("assigned", 2),
];
const EVENTS: &[(&str, u32)] = &[
    ("page_view", 60),
    ("video_view", 8),
    ("email_open", 8),
    ("download", 5),
    ("chat_message", 5),
    ("calculator", 4),
    ("email_click", 4),
    ("ad_click", 4),
    ("callback_request", 1),
    ("presentation_request", 1),
];
const PATHS: &[&str] = &[
    "/",
    "/catalog/flats",
    "/catalog/houses",
    "/blog/how-to-choose",
    "/blog/mortgage",
    "/prices",
    "/tarify",
    "/akcii",
    "/contacts",
    "/about",
    "/promo/spring",
    "/sale",
];
const NAMES: &[&str] = &["tour", "price-list", "presentation", "mortgage", "plan", ""];

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn weighted<'a>(rng: &mut StdRng, items: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = items.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (v, w) in items {
        if x < *w {
            return v;
        }
        x -= w;
    }
    items[0].0
}

/// One generated lead with its events and score.
pub(crate) struct Row {
    pub id: Uuid,
    pub name: String,
    pub phone: String,
    pub email: Option<String>,
    pub company: Option<String>,
    pub position: Option<String>,
    pub city: String,
    pub channel: &'static str,
    pub campaign: String,
    pub utm_source: Option<&'static str>,
    pub status: &'static str,
    pub owner: Option<Uuid>,
    pub visitor_id: Option<String>,
    pub search: String,
    pub created: Micros,
    /// (at, target id, kind, path, name)
    pub events: Vec<(Micros, u32)>,
    pub ledger: Vec<u8>,
    pub score: f64,
    pub priority: f64,
    pub profile: f64,
    pub temperature: &'static str,
    pub grade: &'static str,
    pub inputs: Vec<u8>,
}

/// The targets every seeded event uses, with their ids.
fn targets() -> Vec<(String, String, String)> {
    let mut t = Vec::new();
    for p in PATHS {
        t.push(("page_view".to_string(), path_of(p), String::new()));
    }
    for (k, _) in EVENTS.iter().filter(|(k, _)| *k != "page_view") {
        for n in NAMES {
            t.push((k.to_string(), String::new(), n.to_string()));
        }
    }
    t
}

struct Generator {
    model: Arc<Model>,
    now: Micros,
    targets: Vec<(String, String, String)>,
    /// Index into `targets` → target id (dictionary).
    ids: Vec<u32>,
    /// Target id → index into `targets`.
    index: HashMap<u32, usize>,
    masks: Vec<(u64, bool)>,
    spec: SeedSpec,
}

impl Generator {
    fn row(&self, i: u64) -> Row {
        let mut rng = StdRng::seed_from_u64(self.spec.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        const YEAR: i64 = 365 * 24 * 3_600_000_000;
        // Leads arrive over the year in order, each in a slot of its own, as intake writes
        // them: a real table holds its rows (and time-ordered ids) in arrival order.
        let slot = (YEAR / self.spec.leads.max(1) as i64).max(1);
        let created = self.now - YEAR + (i as i64).saturating_mul(slot) + rng.random_range(0..slot);
        let mut rand_bytes = [0u8; 10];
        rng.fill(&mut rand_bytes);
        let id = uuid::Builder::from_unix_timestamp_millis((created / 1000) as u64, &rand_bytes).into_uuid();
        let ru = rng.random_bool(0.85);
        let (first, last) =
            if ru { (pick(&mut rng, RU_FIRST), pick(&mut rng, RU_LAST)) } else { (pick(&mut rng, EN_FIRST), pick(&mut rng, EN_LAST)) };
        let name = format!("{first} {last}");
        // A bijection of the index: every lead has its own number.
        let phone = format!("+79{:09}", (i.wrapping_mul(7_919).wrapping_add(self.spec.seed)) % 1_000_000_000);
        let email = rng.random_bool(0.7).then(|| {
            let domain = if rng.random_bool(0.4) { pick(&mut rng, FREE) } else { pick(&mut rng, CORP) };
            format!("user{i}@{domain}")
        });
        let company = rng.random_bool(0.5).then(|| pick(&mut rng, COMPANIES).to_string());
        let position = rng.random_bool(0.4).then(|| pick(&mut rng, POSITIONS).to_string());
        let city = weighted(&mut rng, CITIES).to_string();
        let channel = weighted(&mut rng, CHANNELS);
        let campaign = format!("{channel}-{}", rng.random_range(1..=12));
        let utm_source =
            matches!(channel, "web_form" | "callback" | "chat").then(|| pick(&mut rng, &["yandex", "google", "vk", "telegram"]));
        let status = weighted(&mut rng, STATUSES);
        let owner = (!self.spec.owners.is_empty() && !matches!(status, "new" | "nurturing"))
            .then(|| self.spec.owners[(i % self.spec.owners.len() as u64) as usize]);
        let visitor_id = self.spec.visitors.then(|| format!("v{i}"));
        let n = if self.spec.events_per_lead == 0 { 0 } else { rng.random_range(0..=2 * self.spec.events_per_lead) };
        let mut events: Vec<(Micros, u32)> = (0..n)
            .map(|_| {
                let at = created - 30 * 86_400_000_000 + rng.random_range(0..(self.now - created + 30 * 86_400_000_000).max(1));
                let kind = weighted(&mut rng, EVENTS);
                let idx = if kind == "page_view" {
                    rng.random_range(0..PATHS.len())
                } else {
                    let k = EVENTS.iter().filter(|(k, _)| *k != "page_view").position(|(k, _)| *k == kind).unwrap_or(0);
                    PATHS.len() + k * NAMES.len() + rng.random_range(0..NAMES.len())
                };
                (at.min(self.now), self.ids[idx])
            })
            .collect();
        events.sort_unstable();
        let phone_e = voronka_domain::Phone::from_e164_unchecked(phone.clone());
        let search = voronka_domain::lead::search_text(Some(&name), company.as_deref(), email.as_deref(), Some(&phone_e), None);
        let profile = Profile::new(
            &[
                ("name", Some(name.clone())),
                ("phone", Some(phone.clone())),
                ("email", email.clone()),
                ("company", company.clone()),
                ("position", position.clone()),
                ("city", Some(city.clone())),
                ("channel", Some(channel.to_string())),
            ],
            None,
            &serde_json::Map::new(),
        );
        let mut ledger = self.model.profile_entries(&profile, created);
        let scored: Vec<ScoredEvent> = events
            .iter()
            .map(|(at, t)| {
                let (mask, page_view) = self.masks[self.index.get(t).copied().unwrap_or(0)];
                ScoredEvent { at: *at, mask, page_view }
            })
            .collect();
        ledger.extend(self.model.behaviour_entries(&scored));
        let s = score_now(&self.model, &ledger, self.now);
        Row {
            id,
            name,
            phone,
            email,
            company,
            position,
            city,
            channel,
            campaign,
            utm_source,
            status,
            owner,
            visitor_id,
            search,
            created,
            inputs: encode_inputs(&events),
            events,
            ledger: encode_ledger(&ledger),
            score: s.score,
            priority: s.priority,
            profile: s.profile,
            temperature: s.temperature.as_str(),
            grade: s.grade.as_str(),
        }
    }
}

impl Store {
    /// Writes `spec.leads` generated leads (and their events and scores) in chunks; calls
    /// `progress` with the number written so far.
    pub async fn seed(&self, spec: &SeedSpec, progress: impl Fn(u64)) -> Result<SeedReport, StoreError> {
        let started = Instant::now();
        let (version, model) = self.refresh_model().await?;
        // The dictionary of event targets.
        let targets = targets();
        let mut ids = Vec::with_capacity(targets.len());
        for (k, p, n) in &targets {
            let id: i64 = crate::db::with_write!(&self.db, pool => {
                sqlx::query("INSERT INTO event_targets (kind, path, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").bind(k).bind(p).bind(n).execute(pool).await?;
                sqlx::query_scalar::<_, i64>("SELECT id FROM event_targets WHERE kind = $1 AND path = $2 AND name = $3").bind(k).bind(p).bind(n).fetch_one(pool).await?
            });
            ids.push(id as u32);
        }
        let masks = targets.iter().map(|(k, p, n)| (model.target_mask(k, p, n), k == "page_view")).collect();
        let index = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let generator = Arc::new(Generator { model, now: self.now().micros(), targets, ids, index, masks, spec: spec.clone() });
        let mut report = SeedReport::default();
        const CHUNK: u64 = 20_000;
        let mut start = 0;
        while start < spec.leads {
            let end = (start + CHUNK).min(spec.leads);
            let g = generator.clone();
            let rows: Vec<Row> = tokio::task::spawn_blocking(move || {
                let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1) as u64;
                let per = (end - start).div_ceil(threads);
                std::thread::scope(|s| {
                    let hs: Vec<_> = (0..threads)
                        .map(|t| {
                            let g = &g;
                            s.spawn(move || (start + t * per..(start + (t + 1) * per).min(end)).map(|i| g.row(i)).collect::<Vec<_>>())
                        })
                        .collect();
                    hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
                })
            })
            .await
            .map_err(|e| StoreError::Other(anyhow::anyhow!("generator stopped: {e}")))?;
            report.events += rows.iter().map(|r| r.events.len() as u64).sum::<u64>();
            match &self.db {
                Db::Sqlite { .. } => {
                    let path = self.sqlite_path.clone().ok_or_else(|| StoreError::Other(anyhow::anyhow!("no SQLite file")))?;
                    let g = generator.clone();
                    tokio::task::spawn_blocking(move || sqlite_write(&path, &rows, &g, version))
                        .await
                        .map_err(|e| StoreError::Other(anyhow::anyhow!("seed writer stopped: {e}")))?
                        .map_err(|e| StoreError::Other(anyhow::anyhow!("seed write failed: {e}")))?;
                }
                Db::Pg(pool) => pg_write(pool, &rows, &generator, version).await?,
            }
            report.leads = end;
            progress(end);
            start = end;
        }
        if let Db::Pg(pool) = &self.db {
            // A bulk load is vacuumed as well as analysed: the visibility map lets the
            // dashboard's counts read only the indexes (whatever autovacuum is set to).
            sqlx::raw_sql("VACUUM (ANALYZE)").execute(pool).await?;
        }
        // The dataset comes with its search index, as a server would have built it.
        while self.index_words(100_000).await? > 0 {}
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

fn event_data(g: &Generator, target: u32) -> String {
    let idx = g.index.get(&target).copied().unwrap_or(0);
    let (kind, path, name) = &g.targets[idx];
    if kind == "page_view" {
        json!({"url": format!("https://site.ru{path}"), "name": null}).to_string()
    } else {
        json!({"url": null, "name": if name.is_empty() { None } else { Some(name) }}).to_string()
    }
}

fn kind_of(g: &Generator, target: u32) -> &str {
    let idx = g.index.get(&target).copied().unwrap_or(0);
    &g.targets[idx].0
}

fn sqlite_write(path: &std::path::Path, rows: &[Row], g: &Generator, version: i64) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut lead = tx.prepare_cached(
            "INSERT INTO leads (id, name, phone, email, company, position, city, channel, campaign, utm_source, visitor_id, fields, status, \
             search, created_at, updated_at, last_request_at, owner_id, assigned_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, '{}', ?12, ?13, ?14, ?14, ?14, ?15, CASE WHEN ?15 IS NULL THEN NULL ELSE ?14 END)",
        )?;
        let mut ident = tx.prepare_cached("INSERT OR IGNORE INTO identities (ident, kind, lead_id, created_at) VALUES (?1, ?2, ?3, ?4)")?;
        let mut score = tx.prepare_cached(
            "INSERT INTO lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at, status, owner_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut inputs = tx.prepare_cached("INSERT INTO lead_inputs (lead_id, events, rev) VALUES (?1, ?2, 1)")?;
        let mut event = tx.prepare_cached(
            "INSERT INTO events (lead_id, visitor_id, kind, at, actor, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?4)",
        )?;
        for r in rows {
            lead.execute(rusqlite::params![
                r.id,
                r.name,
                r.phone,
                r.email,
                r.company,
                r.position,
                r.city,
                r.channel,
                r.campaign,
                r.utm_source,
                r.visitor_id,
                r.status,
                r.search,
                r.created,
                r.owner
            ])?;
            ident.execute(rusqlite::params![format!("phone:{}", r.phone), "phone", r.id, r.created])?;
            if let Some(e) = &r.email {
                ident.execute(rusqlite::params![format!("email:{e}"), "email", r.id, r.created])?;
            }
            score.execute(rusqlite::params![
                r.id,
                r.score,
                r.priority,
                r.profile,
                r.temperature,
                r.grade,
                r.ledger,
                version,
                g.now,
                r.status,
                r.owner
            ])?;
            if !r.events.is_empty() {
                inputs.execute(rusqlite::params![r.id, r.inputs])?;
            }
            event.execute(rusqlite::params![
                r.id,
                r.visitor_id,
                "lead_created",
                r.created,
                "seed",
                json!({"channel": r.channel, "campaign": r.campaign}).to_string()
            ])?;
            for (at, t) in &r.events {
                event.execute(rusqlite::params![r.id, r.visitor_id, kind_of(g, *t), at, "seed", event_data(g, *t)])?;
            }
        }
    }
    tx.commit()
}

/// A value in COPY text format.
fn copy_text(out: &mut String, v: Option<&str>) {
    match v {
        None => out.push_str("\\N"),
        Some(s) => {
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn copy_bytes(out: &mut String, b: &[u8]) {
    out.push_str("\\\\x");
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

fn ts_text(us: Micros) -> String {
    Ts::from_micros(us).map(|t| t.rfc3339()).unwrap_or_default()
}

async fn copy(pool: &sqlx::PgPool, statement: &str, data: String) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let mut sink = conn.copy_in_raw(statement).await?;
    sink.send(data.into_bytes()).await?;
    sink.finish().await?;
    Ok(())
}

async fn pg_write(pool: &sqlx::PgPool, rows: &[Row], g: &Generator, version: i64) -> Result<(), StoreError> {
    let mut leads = String::new();
    let mut idents = String::new();
    let mut scores = String::new();
    let mut inputs = String::new();
    let mut events = String::new();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let now = ts_text(g.now);
    for r in rows {
        let created = ts_text(r.created);
        let cols: [Option<&str>; 12] = [
            Some(&r.name),
            Some(&r.phone),
            r.email.as_deref(),
            r.company.as_deref(),
            r.position.as_deref(),
            Some(&r.city),
            Some(r.channel),
            Some(&r.campaign),
            r.utm_source,
            r.visitor_id.as_deref(),
            Some(r.status),
            Some(&r.search),
        ];
        leads.push_str(&r.id.to_string());
        for c in cols {
            leads.push('\t');
            copy_text(&mut leads, c);
        }
        let _ = write!(leads, "\t{{}}\t{created}\t{created}\t{created}");
        match r.owner {
            Some(o) => {
                let _ = writeln!(leads, "\t{o}\t{created}");
            }
            None => leads.push_str("\t\\N\t\\N\n"),
        }
        for (ident, kind) in [(Some(format!("phone:{}", r.phone)), "phone"), (r.email.as_ref().map(|e| format!("email:{e}")), "email")] {
            if let Some(ident) = ident
                && seen.insert(ident.clone(), ()).is_none()
            {
                copy_text(&mut idents, Some(&ident));
                let _ = writeln!(idents, "\t{kind}\t{}\t{created}", r.id);
            }
        }
        let _ = write!(scores, "{}\t{}\t{}\t{}\t{}\t{}\t", r.id, r.score, r.priority, r.profile, r.temperature, r.grade);
        copy_bytes(&mut scores, &r.ledger);
        let _ = writeln!(scores, "\t{version}\t{now}");
        if !r.events.is_empty() {
            let _ = write!(inputs, "{}\t", r.id);
            copy_bytes(&mut inputs, &r.inputs);
            inputs.push_str("\t1\n");
        }
        let visitor = r.visitor_id.as_deref();
        let mut ev = |kind: &str, at: &str, data: &str| {
            let _ = write!(events, "{}\t", r.id);
            copy_text(&mut events, visitor);
            let _ = write!(events, "\t{kind}\t{at}\tseed\t");
            copy_text(&mut events, Some(data));
            let _ = writeln!(events, "\t{at}");
        };
        ev("lead_created", &created, &json!({"channel": r.channel, "campaign": r.campaign}).to_string());
        for (at, t) in &r.events {
            ev(kind_of(g, *t), &ts_text(*at), &event_data(g, *t));
        }
    }
    copy(
        pool,
        "COPY leads (id, name, phone, email, company, position, city, channel, campaign, utm_source, visitor_id, status, search, fields, created_at, updated_at, last_request_at, owner_id, assigned_at) FROM STDIN",
        leads,
    )
    .await?;
    // Identities a previous chunk already holds are skipped by loading into a temporary table.
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql("CREATE TEMP TABLE IF NOT EXISTS seed_identities (LIKE identities)").execute(&mut *conn).await?;
    sqlx::raw_sql("TRUNCATE seed_identities").execute(&mut *conn).await?;
    let mut sink = conn.copy_in_raw("COPY seed_identities (ident, kind, lead_id, created_at) FROM STDIN").await?;
    sink.send(idents.into_bytes()).await?;
    sink.finish().await?;
    sqlx::raw_sql("INSERT INTO identities SELECT * FROM seed_identities ON CONFLICT DO NOTHING").execute(&mut *conn).await?;
    drop(conn);
    copy(
        pool,
        "COPY lead_scores (lead_id, score, priority, profile, temperature, grade, ledger, model_version, scored_at) FROM STDIN",
        scores,
    )
    .await?;
    copy(pool, "COPY lead_inputs (lead_id, events, rev) FROM STDIN", inputs).await?;
    copy(pool, "COPY events (lead_id, visitor_id, kind, at, actor, data, created_at) FROM STDIN", events).await?;
    Ok(())
}
