//! Reading leads: one by id, the filtered list, search, cursor pagination, the timeline.

use serde_json::{Value, json};
use std::collections::HashSet;
use voronka_domain::LeadStatus;
use voronka_testkit::*;

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn search_finds_a_phone_typed_in_any_format() {
    let app = spawn_app().await;
    let target = app
        .lead(json!({"name": "Иван Петров", "phone": "+79215551234", "company": "ООО Ромашка", "email": "ivan@romashka.ru"}))
        .await
        .json();
    app.lead(json!({"name": "Мария", "phone": "+79035550000", "company": "Василёк"})).await;
    for q in ["8 (921) 555-12-34", "+7 921 5551234", "89215551234", "921-555-12", "5551234"] {
        let page = app.list(&format!("q={}", urlencode(q))).await;
        assert_eq!(ids(&page), vec![target["id"].as_str().unwrap().to_string()], "q={q}");
    }
    for q in ["иван", "ПЕТРОВ", "ромашка", "ivan@romashka", "Romashka.RU"] {
        let page = app.list(&format!("q={}", urlencode(q))).await;
        assert_eq!(ids(&page).len(), 1, "q={q}");
    }
    assert_eq!(ids(&app.list("q=%25").await).len(), 0, "a % is a character, not a wildcard");
    assert_eq!(ids(&app.list("q=_").await).len(), 0);
    // Quotes and the search index's own syntax are characters too; the words are found
    // after an edit and not before, by the old name not after — before the new leads reach
    // the search index (found by a direct look; SQLite indexes new leads in the background)
    // and once they are in it.
    let quoted = app.lead(json!({"name": "ООО \"Клён*\" OR x", "phone": "+79035550001"})).await.json();
    let qid = quoted["id"].as_str().unwrap().to_string();
    let find = |q: &'static str| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for sort in ["priority", "created", "score"] {
                let found = ids(&app.list(&format!("q={}&sort={sort}", urlencode(q))).await);
                if sort != "priority" {
                    assert_eq!(found, out, "q={q}: sort={sort} finds the same");
                }
                out = found;
            }
            out
        }
    };
    for indexed in [false, true] {
        for q in ["\"клён", "клён*\"", "\" or x", "OR x", "ён*", "ромашка", "ivan@rom"] {
            let want = if q.contains("ром") || q.contains("rom") { target["id"].as_str().unwrap() } else { qid.as_str() };
            assert_eq!(find(q).await, vec![want.to_string()], "q={q}, indexed: {indexed}");
        }
        assert!(find("нет такого").await.is_empty());
        // A NUL in a search or a filter is refused, naming the parameter, on both databases.
        for q in ["q=abc%00", "campaign=x%00y"] {
            let r = app.get(&format!("/api/v1/leads?{q}"), Some(&app.token)).await;
            assert_eq!(r.status, 422, "{q}: {}", r.text());
            assert!(r.json()["error"]["fields"].get(q.split('=').next().unwrap()).is_some(), "{}", r.text());
        }
        let n = app.store.index_words(1).await.unwrap();
        if !indexed && backend() == "sqlite" {
            assert_eq!(n, 1, "one lead a batch");
            while app.store.index_words(1000).await.unwrap() > 0 {}
        }
    }
    assert_eq!(app.store.index_words(1000).await.unwrap(), 0, "up to date");
    assert!(find("берёза").await.is_empty());
    let r = app.call("PATCH", &format!("/api/v1/leads/{qid}"), &app.token, Some(&json!({"name": "Берёза"}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(find("берёза").await, vec![qid.clone()]);
    assert!(find("клён").await.is_empty());
    // A new lead after the index caught up: found before and after it is indexed.
    let late = app.lead(json!({"name": "Поздний Ясень", "phone": "+79035550002"})).await.json();
    assert_eq!(find("ясень").await, vec![late["id"].as_str().unwrap().to_string()]);
    app.store.index_words(1000).await.unwrap();
    assert_eq!(find("ясень").await, vec![late["id"].as_str().unwrap().to_string()]);
}

/// A whole phone or e-mail typed into search finds every lead holding exactly it — the one
/// that answers for the contact now and an earlier, refused one — and no lead whose text
/// merely contains it, in every sort, before and after the search index catches up.
#[tokio::test]
async fn a_whole_phone_or_email_finds_every_lead_holding_exactly_it() {
    let app = spawn_app().await;
    let old = app.lead(json!({"name": "Анна Старая", "phone": "+79215551234", "email": "anna@example.ru"})).await.json();
    let old_id = old["id"].as_str().unwrap().to_string();
    app.store.set_status(old_id.parse().unwrap(), LeadStatus::Refused, Some("price"), None).await.unwrap();
    let new = app.lead(json!({"name": "Анна Новая", "phone": "8 921 555 12 34", "email": "Anna@Example.ru"})).await.json();
    let new_id = new["id"].as_str().unwrap().to_string();
    assert_eq!(new["returning_of"].as_str(), Some(old_id.as_str()), "{new}");
    // Text holding the phone's digits and the e-mail as parts of something longer.
    app.lead(json!({"name": "79215551234 в имени", "phone": "+79215551235", "email": "hanna@example.ru"})).await;
    app.lead(json!({"company": "anna@example.ru.com", "phone": "+79035550000"})).await;
    let mut want = vec![old_id.clone(), new_id.clone()];
    want.sort();
    // The new lead goes to a manager, who sees only the leads they own.
    let manager = app.user("manager@example.ru", "manager", "secret-password-1").await;
    app.store.reassign(new_id.parse().unwrap(), manager.id, "test", &voronka_store::users::Access::All).await.unwrap();
    let (_, manager_token) = app.store.create_user_token(manager.id, "t", &["leads:read".to_string()]).await.unwrap();
    for indexed in [false, true] {
        if !indexed && backend() == "sqlite" {
            assert!(app.store.unindexed_leads().await.unwrap() >= 4, "the first pass reads the leads not in the search index yet");
        }
        let own = app.get("/api/v1/leads?q=89215551234&sort=priority", Some(&manager_token)).await;
        assert_eq!(ids(&own.json()), vec![new_id.clone()], "a manager's search, indexed: {indexed}: {}", own.text());
        let owned = ids(&app.list(&format!("q=anna%40example.ru&owner={}", manager.id)).await);
        assert_eq!(owned, vec![new_id.clone()], "indexed: {indexed}");
        for q in ["+7 921 555-12-34", "89215551234", "ANNA@example.ru"] {
            for sort in ["priority", "created", "score"] {
                let mut found = ids(&app.list(&format!("q={}&sort={sort}", urlencode(q))).await);
                found.sort();
                assert_eq!(found, want, "q={q}, sort={sort}, indexed: {indexed}");
            }
        }
        // A state filter narrows it like any other search.
        for sort in ["priority", "created"] {
            let refused = ids(&app.list(&format!("q=89215551234&status=refused&sort={sort}")).await);
            assert_eq!(refused, vec![old_id.clone()], "sort={sort}, indexed: {indexed}");
        }
        while app.store.index_words(1000).await.unwrap() > 0 {}
    }
}

/// A repeat request that brings a contact the lead lacked fills it in, and search finds the
/// lead by it (before and after the search index catches up); one that brings nothing new
/// leaves the lead's search as it was.
#[tokio::test]
async fn a_repeat_request_that_fills_a_contact_makes_the_lead_findable_by_it() {
    let app = spawn_app().await;
    let first = app.lead(json!({"name": "Ольга Синицына", "email": "olga.sinitsyna@example.ru"})).await.json();
    let id = first["id"].as_str().unwrap().to_string();
    let found = |q: &'static str| {
        let app = &app;
        async move { ids(&app.list(&format!("q={}", urlencode(q))).await) }
    };
    assert!(found("5557788").await.is_empty());
    let again = app.lead(json!({"email": "OLGA.SINITSYNA@example.ru", "phone": "8 (921) 555-77-88"})).await;
    assert_eq!(again.json()["id"].as_str(), Some(id.as_str()), "{}", again.text());
    // The same person again with nothing new, and then with another phone: the first phone stays.
    app.lead(json!({"email": "olga.sinitsyna@example.ru", "name": "Ольга"})).await;
    app.lead(json!({"email": "olga.sinitsyna@example.ru", "phone": "+7 903 111-22-33"})).await;
    for indexed in [false, true] {
        for q in ["5557788", "+7 921 555-77-88", "синицына", "olga.sinitsyna"] {
            assert_eq!(found(q).await, vec![id.clone()], "q={q}, indexed: {indexed}");
        }
        assert!(found("1112233").await.is_empty(), "indexed: {indexed}");
        while app.store.index_words(1000).await.unwrap() > 0 {}
    }
    let lead = app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json();
    assert_eq!(lead["phone"], "+79215557788", "{lead}");
    assert_eq!(lead["name"], "Ольга Синицына", "{lead}");
    assert_eq!(lead["repeat_count"], 3, "{lead}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn filters_combine() {
    let app = spawn_app().await;
    let a = app.lead(json!({"phone": "+79000000001", "channel": "web_form", "campaign": "spring"})).await.json();
    let b = app.lead(json!({"phone": "+79000000002", "channel": "call"})).await.json();
    let c = app.lead(json!({"phone": "+79000000003", "channel": "call", "campaign": "spring"})).await.json();
    app.store.set_status(b["id"].as_str().unwrap().parse().unwrap(), LeadStatus::Refused, Some("price"), None).await.unwrap();
    let set = |p: &Value| ids(p).into_iter().collect::<HashSet<_>>();
    let s = |v: &Value| v["id"].as_str().unwrap().to_string();
    assert_eq!(set(&app.list("channel=call").await), HashSet::from([s(&b), s(&c)]));
    assert_eq!(set(&app.list("channel=call&status=new").await), HashSet::from([s(&c)]));
    assert_eq!(set(&app.list("status=refused,new&campaign=spring").await), HashSet::from([s(&a), s(&c)]));
    assert_eq!(set(&app.list("channel=web_form,call&status=refused").await), HashSet::from([s(&b)]));
    assert_eq!(set(&app.list("owner=none").await).len(), 3);
    assert_eq!(set(&app.list("min_score=1").await).len(), 0);
    assert_eq!(set(&app.list("min_score=0").await).len(), 3);
    assert_eq!(set(&app.list("created_from=2000-01-01").await).len(), 3);
    assert_eq!(set(&app.list("created_to=2000-01-01").await).len(), 0);
    assert_eq!(set(&app.list("owner=0190f5c2-0000-7000-8000-000000000000").await).len(), 0);
}

#[tokio::test]
async fn bad_list_parameters_are_named() {
    let app = spawn_app().await;
    let r = app
        .get("/api/v1/leads?status=lost&limit=0&min_score=x&created_from=yesterday&sort=random&cursor=zzz&colour=red", Some(&app.token))
        .await;
    assert_eq!(r.status, 422);
    let e = r.json();
    let fields: Vec<&String> = e["error"]["fields"].as_object().unwrap().keys().collect();
    assert_eq!(fields, vec!["colour", "created_from", "cursor", "limit", "min_score", "sort", "status"]);
}

#[tokio::test]
async fn cursor_pagination_visits_every_lead_once_newest_first() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..23 {
        let r = app.lead(json!({"phone": format!("+7900100{:04}", i)})).await;
        created.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=5&cursor={c}"),
            None => "limit=5".into(),
        };
        let page = app.list(&q).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created);
    // Oldest first, too.
    let page = app.list("sort=created_asc&limit=3").await;
    assert_eq!(ids(&page), created.iter().rev().take(3).cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn score_sort_pages_without_gaps() {
    let app = spawn_app().await;
    for i in 0..12 {
        app.lead(json!({"phone": format!("+7900200{:04}", i)})).await;
    }
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("sort=score&limit=4&cursor={c}"),
            None => "sort=score&limit=4".into(),
        };
        let page = app.list(&q).await;
        for id in ids(&page) {
            assert!(seen.insert(id), "a lead on two pages");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 12);
}

#[tokio::test]
async fn the_timeline_pages_newest_first() {
    let app = spawn_app().await;
    let id = app.lead(json!({"phone": "+79001234567"})).await.json()["id"].as_str().unwrap().to_string();
    for _ in 0..4 {
        app.lead(json!({"phone": "+79001234567"})).await;
    }
    let first = app.get(&format!("/api/v1/leads/{id}/timeline?limit=3"), Some(&app.token)).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("/api/v1/leads/{id}/timeline?limit=3&cursor={cursor}"), Some(&app.token)).await.json();
    let kinds: Vec<&str> = second["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["repeat_request", "lead_created"]);
    assert!(second["next_cursor"].is_null());
    let item = &first["items"][0];
    assert_eq!(item["actor"], "token:test");
    assert!(item["at"].as_str().unwrap().ends_with('Z'));
}

/// Priority and score lists take a bounded walk of the score index on SQLite and fall back
/// to sorting the filters' matches; every page, for common and rare filters alike, must be
/// exactly the unbounded order.
#[tokio::test]
async fn priority_lists_page_the_same_whatever_the_plan() {
    use std::sync::Arc;
    use voronka_domain::SystemClock;
    use voronka_store::seed::SeedSpec;
    use voronka_store::users::{Access, UserSpec};
    use voronka_store::{LeadFilter, LeadSort, Store, StoreConfig};

    let db = TestDb::new().await;
    let wide =
        Store::open(&StoreConfig { list_walk_rows: i64::MAX / 2, ..StoreConfig::new(&db.url) }, Arc::new(SystemClock)).await.unwrap();
    let mut owners = Vec::new();
    for i in 0..3 {
        let spec = UserSpec { email: Some(format!("m{i}@example.com")), role: Some("manager".into()), ..Default::default() };
        owners.push(wide.create_user(&spec).await.unwrap().id);
    }
    wide.seed(&SeedSpec { leads: 1_500, events_per_lead: 3, seed: 9, owners: owners.clone(), ..Default::default() }, |_| {}).await.unwrap();
    let narrow = Store::open(&StoreConfig { list_walk_rows: 40, ..StoreConfig::new(&db.url) }, Arc::new(SystemClock)).await.unwrap();
    // Leads moved after they were scored: priority lists filtered by owner or by one state
    // walk indexes of the score rows, which must follow the leads' new owner and state.
    let moved = wide.leads(&LeadFilter { sort: LeadSort::Created, limit: 60, ..Default::default() }).await.unwrap().items;
    for (n, l) in moved.iter().enumerate() {
        if n % 2 == 0 || !l.status.parse::<LeadStatus>().is_ok_and(|s| s.is_open()) {
            wide.set_status(l.id, LeadStatus::InProgress, None, Some("test")).await.unwrap();
        } else {
            wide.reassign(l.id, owners[1], "test", &Access::All).await.unwrap();
        }
    }

    async fn all(store: &Store, f: &LeadFilter) -> Vec<uuid::Uuid> {
        let mut f = f.clone();
        let mut out = Vec::new();
        loop {
            let page = store.leads(&f).await.unwrap();
            out.extend(page.items.iter().map(|l| l.id));
            match page.next_cursor {
                Some(c) => f.cursor = Some(voronka_store::Cursor::decode(&c).unwrap()),
                None => return out,
            }
        }
    }
    let st = |s: &[LeadStatus]| s.to_vec();
    // A word of a few leads (one lead's e-mail) and a common one.
    let rare = wide
        .leads(&LeadFilter { sort: LeadSort::Created, limit: 500, ..Default::default() })
        .await
        .unwrap()
        .items
        .iter()
        .find_map(|l| l.email.clone())
        .expect("a seeded lead with an e-mail");
    let filters = [
        LeadFilter { q: Some("смирнова".into()), ..Default::default() },
        LeadFilter { q: Some("смирнова".into()), status: st(&[LeadStatus::New, LeadStatus::InProgress]), ..Default::default() },
        LeadFilter { q: Some(rare.clone()), ..Default::default() },
        LeadFilter { q: Some("ооо".into()), access: Access::Own(owners[2]), ..Default::default() },
        LeadFilter { ..Default::default() },
        LeadFilter { status: st(&[LeadStatus::New, LeadStatus::Nurturing]), owner: Some(None), ..Default::default() },
        LeadFilter { status: st(&[LeadStatus::InProgress]), channel: vec!["web_form".into()], ..Default::default() },
        LeadFilter {
            status: st(&[LeadStatus::Postponed]),
            channel: vec!["chat".into()],
            temperature: vec!["cold".into()],
            ..Default::default()
        },
        LeadFilter { temperature: vec!["warm".into(), "hot".into()], ..Default::default() },
        LeadFilter { owner: Some(Some(owners[1])), ..Default::default() },
        LeadFilter { access: Access::Own(owners[2]), ..Default::default() },
    ];
    for (i, base) in filters.iter().enumerate() {
        for sort in [LeadSort::Priority, LeadSort::Score] {
            for limit in [7, 50] {
                let f = LeadFilter { sort, limit, ..base.clone() };
                let expected = all(&wide, &f).await;
                let got = all(&narrow, &f).await;
                // The same leads as a list by arrival, which reads the leads' own columns.
                let by_arrival: HashSet<_> = all(&wide, &LeadFilter { sort: LeadSort::Created, ..f.clone() }).await.into_iter().collect();
                assert_eq!(expected.iter().copied().collect::<HashSet<_>>(), by_arrival, "filter {i} {sort:?}: the filter's leads");
                assert_eq!(got.len(), expected.len(), "filter {i} {sort:?} limit {limit}: as many leads");
                assert_eq!(got, expected, "filter {i} {sort:?} limit {limit}: the same order");
                assert_eq!(got.iter().collect::<HashSet<_>>().len(), got.len(), "no lead twice");
                if i == 4 {
                    assert_eq!(got.len(), 1_500, "every lead is listed");
                }
                if i < 4 {
                    assert!(!got.is_empty(), "filter {i}: the search finds leads");
                }
            }
        }
    }
    narrow.close().await;
    wide.close().await;
}
