//! Imports of CSV and XLSX files: encodings and separators as Excel saves them, Russian
//! headers mapped by themselves, every row through the intake (dedup, scoring), the report
//! with row numbers and reasons, dry runs, mapping saved per source, and undo.

use serde_json::{Value, json};
use voronka_testkit::{TestApp, spawn_app};

fn cp1251(s: &str) -> Vec<u8> {
    encoding_rs::WINDOWS_1251.encode(s).0.into_owned()
}

async fn import(app: &TestApp, name: &str, file: &[u8], fields: &[(&str, &str)]) -> Value {
    let r = app.upload("/api/v1/imports", &app.token, name, file, fields).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert_eq!(r.header("location").as_deref(), Some(format!("/api/v1/imports/{id}").as_str()));
    app.wait_import(&id).await
}

async fn report(app: &TestApp, id: &str, lang: &str) -> Vec<Vec<String>> {
    let r = app
        .send_req(
            app.req("GET", &format!("/api/v1/imports/{id}/report.csv"))
                .header("authorization", format!("Bearer {}", app.token))
                .header("accept-language", lang),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.body.strip_prefix(b"\xEF\xBB\xBF".as_slice()).expect("a BOM for Excel").to_vec();
    let mut rd = csv::ReaderBuilder::new().has_headers(false).from_reader(body.as_slice());
    rd.records().map(|r| r.unwrap().iter().map(str::to_string).collect()).collect()
}

async fn find(app: &TestApp, q: &str) -> Vec<Value> {
    app.list(&format!("q={}", urlencode(q))).await["items"].as_array().unwrap().clone()
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[tokio::test]
async fn a_windows_1251_semicolon_file_goes_through_the_intake_row_by_row() {
    let app = spawn_app().await;
    let existing = app.lead(json!({"name": "Пётр", "phone": "+79215550001"})).await.json();
    let long_name = "Я".repeat(201);
    let text = format!(
        "ФИО;Телефон;Email;Компания;Должность;Город;Комментарий;utm_source;Отдел\r\n\
         Иванов Иван;8 (921) 555-00-01;;ООО Ромашка;Директор;Пермь;Перезвонить;expo;Закупки\r\n\
         Сидорова Анна;+7 921 555-00-02;anna@romashka.ru;\"ООО \"\"Ромашка; и Ко\"\"\";Генеральный директор;Казань;;expo;Продажи\r\n\
         Без контактов;;;;;;;;\r\n\
         Анна Сидорова;89215550002;;;;;;;\r\n\
         Плохая почта;;not-an-email;;;;;;\r\n\
         {long_name};89215550003;;;;;;;\r\n"
    );
    let done = import(&app, "выставка.csv", &cp1251(&text), &[("source", "Выставка 2026")]).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["format"], "csv");
    assert_eq!((done["created"].as_i64(), done["repeats"].as_i64(), done["rejected"].as_i64()), (Some(1), Some(2), Some(3)), "{done}");
    assert_eq!(done["processed"], 6);
    assert_eq!(done["total_rows"], 6);

    // The new lead: normalised, deduplicated, with its source, channel, custom field and score.
    let found = find(&app, "+7 921 555-00-02").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let lead = &found[0];
    assert_eq!(lead["phone"], "+79215550002");
    assert_eq!(lead["email"], "anna@romashka.ru");
    assert_eq!(lead["company"], "ООО \"Ромашка; и Ко\"");
    assert_eq!(lead["city"], "Казань");
    assert_eq!(lead["channel"], "import");
    assert_eq!(lead["source"], "Выставка 2026");
    assert_eq!(lead["utm"]["source"], "expo", "{lead}");
    assert_eq!(lead["fields"]["Отдел"], "Продажи", "{lead}");
    assert_eq!(lead["repeat_count"], 1, "row 5 is the same person");
    let score = app.get(&format!("/api/v1/leads/{}/score", lead["id"].as_str().unwrap()), Some(&app.token)).await.text();
    assert!(score.contains("phone_and_email"), "scored on its profile: {score}");

    // The person who already had an open lead: a repeat request on it, no second lead.
    let e = app.get(&format!("/api/v1/leads/{}", existing["id"].as_str().unwrap()), Some(&app.token)).await.json();
    assert_eq!(e["repeat_count"], 1);
    assert_eq!(find(&app, "89215550001").await.len(), 1);
    assert!(find(&app, "89215550003").await.is_empty(), "a rejected row writes nothing");

    // The report: every row with its outcome; rejected ones with their reason and field.
    let id = done["id"].as_str().unwrap();
    let rows = report(&app, id, "en").await;
    assert_eq!(rows[0], ["row", "outcome", "lead_id", "reason", "field", "message"]);
    let by_row = |n: &str| rows.iter().find(|r| r[0] == n).unwrap_or_else(|| panic!("row {n} in {rows:?}")).clone();
    assert_eq!(by_row("2")[1], "repeat");
    assert_eq!(by_row("2")[2], existing["id"].as_str().unwrap());
    assert_eq!(by_row("3")[1], "created");
    assert_eq!(by_row("4")[1..4], ["rejected".to_string(), String::new(), "no phone, e-mail or messenger".into()]);
    assert_eq!(by_row("5")[1], "repeat");
    assert_eq!(by_row("6")[4], "email");
    assert!(by_row("6")[5].contains("not a valid e-mail"), "{:?}", by_row("6"));
    assert_eq!(by_row("7")[3], "invalid fields");
    assert_eq!(by_row("7")[4], "name");
    let ru = report(&app, id, "ru").await;
    assert_eq!(ru[0][0], "строка");
    assert!(ru.iter().any(|r| r[0] == "4" && r[3] == "нет телефона, e-mail или мессенджера"), "{ru:?}");
}

#[tokio::test]
async fn in_a_large_file_the_earlier_row_of_a_person_creates_the_lead() {
    // Rows are parsed in chunks on several threads; they must still reach the intake in file
    // order, and on PostgreSQL, whose writers commit batches side by side, a person's later
    // row must not overtake the earlier one. Every person appears twice, the second time
    // some thousand rows later, in another chunk.
    let app = spawn_app().await;
    let people = 2_500;
    let mut text = String::from("Name,Phone\n");
    for i in 0..people * 2 {
        let p = if i < people { i } else { people * 2 - 1 - i };
        text.push_str(&format!("Person {p},+7921{:07}\n", 1_000_000 + p));
    }
    let done = import(&app, "big.csv", text.as_bytes(), &[]).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!((done["created"].as_i64(), done["repeats"].as_i64()), (Some(people as i64), Some(people as i64)), "{done}");
    let rows = report(&app, done["id"].as_str().unwrap(), "en").await;
    let wrong: Vec<usize> = rows[1..]
        .iter()
        .filter(|r| {
            let row: usize = r[0].parse().unwrap();
            // Data rows are numbered from 2 (the header is row 1).
            r[1] != if row - 2 < people { "created" } else { "repeat" }
        })
        .map(|r| r[0].parse().unwrap())
        .collect();
    assert!(wrong.is_empty(), "{} rows out of order: {:?}", wrong.len(), &wrong[..wrong.len().min(40)]);
    assert_eq!(rows.len(), 1 + people * 2);
}

#[tokio::test]
async fn an_xlsx_with_russian_headers_and_numeric_phones_imports() {
    let app = spawn_app().await;
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["Имя", "Телефон", "Почта", "Компания", "Должность", "Город"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_string(1, 0, "Олег").unwrap();
    sheet.write_number(1, 1, 79215550011.0).unwrap();
    sheet.write_string(1, 2, "oleg@mail.ru").unwrap();
    sheet.write_string(1, 3, "АО Вектор").unwrap();
    sheet.write_string(1, 4, "Менеджер").unwrap();
    sheet.write_string(1, 5, "Москва").unwrap();
    // Row 3 left blank; row 4 with a phone as text.
    sheet.write_string(3, 0, "Mary").unwrap();
    sheet.write_string(3, 1, "+7 (921) 555-00-12").unwrap();
    let bytes = book.save_to_buffer().unwrap();
    let done = import(&app, "base.xlsx", &bytes, &[]).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["format"], "xlsx");
    assert_eq!(done["created"], 2, "{done}");
    assert_eq!(done["source"], "base.xlsx", "the file's name when no source is given");
    let oleg = &find(&app, "79215550011").await[0];
    assert_eq!(
        (oleg["name"].as_str(), oleg["email"].as_str(), oleg["company"].as_str()),
        (Some("Олег"), Some("oleg@mail.ru"), Some("АО Вектор"))
    );
    assert_eq!(oleg["position"], "Менеджер");
    let rows = report(&app, done["id"].as_str().unwrap(), "en").await;
    let numbers: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(numbers, ["2", "4"], "rows as the spreadsheet numbers them");
}

#[tokio::test]
async fn a_dry_run_forecasts_every_row_and_writes_no_lead() {
    let app = spawn_app().await;
    app.lead(json!({"phone": "+79215550021"})).await;
    let refused = app.lead(json!({"phone": "+79215550022"})).await.json();
    let r = app
        .call(
            "POST",
            &format!("/api/v1/leads/{}/status", refused["id"].as_str().unwrap()),
            &app.token,
            Some(&json!({"status": "refused", "reason": "no_budget"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let before = app.list("limit=100").await["items"].as_array().unwrap().len();
    let csv = "Name,Phone\nA,+79215550021\nB,+79215550022\nC,+79215550023\nD,+79215550023\nE,\n";
    let done = import(&app, "x.csv", csv.as_bytes(), &[("dry_run", "true")]).await;
    assert_eq!(done["dry_run"], true);
    assert_eq!(done["status"], "done");
    assert_eq!(
        (done["created"].as_i64(), done["repeats"].as_i64(), done["returned"].as_i64(), done["rejected"].as_i64()),
        (Some(1), Some(2), Some(1), Some(1)),
        "{done}"
    );
    assert_eq!(app.list("limit=100").await["items"].as_array().unwrap().len(), before, "nothing written");
    let rows = report(&app, done["id"].as_str().unwrap(), "en").await;
    let outcomes: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(outcomes, ["repeat", "returning", "created", "repeat", "rejected"]);
    let undo = app.call("POST", &format!("/api/v1/imports/{}/undo", done["id"].as_str().unwrap()), &app.token, None).await;
    assert_eq!(undo.status, 409, "{}", undo.text());
}

#[tokio::test]
async fn bad_files_and_mappings_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let r = app.upload("/api/v1/imports", &app.token, "x.csv", "Имя;Город\nА;Б\n".as_bytes(), &[]).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.json()["error"]["fields"]["mapping"].as_str().unwrap().contains("Имя, Город"), "{}", r.text());
    let r = app.upload("/api/v1/imports", &app.token, "x.csv", b"Phone\n1\n", &[("mapping", r#"{"Phone": "telephone"}"#)]).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["fields"]["mapping"].is_string());
    let r = app.upload("/api/v1/imports", &app.token, "x.xls", &[0xD0, 0xCF, 0x11, 0xE0, 1, 2, 3], &[]).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["fields"]["file"].is_string());
    let r = app.upload("/api/v1/imports", &app.token, "x.csv", b"", &[]).await;
    assert_eq!(r.status, 422);
    let r = app.upload("/api/v1/imports", &app.token, "x.csv", b"Phone\n1\n", &[("dry_run", "maybe")]).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["fields"]["dry_run"].is_string());
    let reader = app.token_with(&["leads:read"]).await;
    let r = app.upload("/api/v1/imports", &reader, "x.csv", b"Phone\n1\n", &[]).await;
    assert_eq!(r.status, 403);
    let manager = app.user("m@example.com", "manager", "password-123").await;
    let (_, mtoken) = app.store.create_user_token(manager.id, "m", &["leads:write".to_string(), "leads:read".to_string()]).await.unwrap();
    let r = app.upload("/api/v1/imports", &mtoken, "x.csv", b"Phone\n+79215550099\n", &[]).await;
    assert_eq!(r.status, 403, "a manager does not import bases");
    assert_eq!(app.get("/api/v1/imports", Some(&app.token)).await.json()["items"].as_array().unwrap().len(), 0, "nothing started");
}

#[tokio::test]
async fn a_mapping_is_saved_for_its_source_and_used_for_its_next_file() {
    let app = spawn_app().await;
    let first = import(
        &app,
        "a.csv",
        "Клиент;Моб\nА;+79215550031\n".as_bytes(),
        &[("source", "Партнёр"), ("mapping", r#"{"Клиент": "name", "Моб": "phone"}"#)],
    )
    .await;
    assert_eq!(first["created"], 1, "{first}");
    let second = import(&app, "b.csv", "Клиент;Моб\nБ;+79215550032\n".as_bytes(), &[("source", "Партнёр")]).await;
    assert_eq!(second["created"], 1, "the saved mapping found the phone: {second}");
    assert_eq!(second["mapping"]["Моб"], "phone");
    assert_eq!(find(&app, "+79215550032").await[0]["name"], "Б");
}

#[tokio::test]
async fn undo_removes_what_the_import_added_and_keeps_leads_people_worked_on() {
    let app = spawn_app().await;
    let existing = app.lead(json!({"name": "Старый", "phone": "+79215550041"})).await.json();
    let eid = existing["id"].as_str().unwrap();
    let refused = app.lead(json!({"phone": "+79215550044"})).await.json();
    let rid = refused["id"].as_str().unwrap();
    app.call("POST", &format!("/api/v1/leads/{rid}/status"), &app.token, Some(&json!({"status": "junk", "reason": "spam"}))).await;
    let csv = "Name,Phone\nA,+79215550041\nB,+79215550042\nC,+79215550043\nD,+79215550044\nB2,+79215550042\n";
    let done = import(&app, "u.csv", csv.as_bytes(), &[]).await;
    assert_eq!((done["created"].as_i64(), done["repeats"].as_i64(), done["returned"].as_i64()), (Some(2), Some(2), Some(1)), "{done}");
    let id = done["id"].as_str().unwrap();
    let c = find(&app, "+79215550043").await[0]["id"].as_str().unwrap().to_string();
    // Someone called lead C: it stays.
    let r = app.call("POST", &format!("/api/v1/leads/{c}/activities"), &app.token, Some(&json!({"kind": "note", "text": "звонил"}))).await;
    assert!(r.status < 300, "{}", r.text());
    assert_eq!(app.get(&format!("/api/v1/leads/{eid}"), Some(&app.token)).await.json()["repeat_count"], 1);

    let r = app.call("POST", &format!("/api/v1/imports/{id}/undo"), &app.token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"id": id, "removed": 2, "kept": 1, "repeats_removed": 3}),
        "B and D removed; C kept; two repeats and D's return note gone"
    );

    assert!(find(&app, "+79215550042").await.is_empty());
    assert_eq!(find(&app, "+79215550043").await.len(), 1);
    let e = app.get(&format!("/api/v1/leads/{eid}"), Some(&app.token)).await.json();
    assert_eq!(e["repeat_count"], 0);
    let tl = app.get(&format!("/api/v1/leads/{eid}/timeline"), Some(&app.token)).await.text();
    assert!(!tl.contains("repeat_request"), "{tl}");
    let rtl = app.get(&format!("/api/v1/leads/{rid}/timeline"), Some(&app.token)).await.text();
    assert!(!rtl.contains("lead_returned"), "{rtl}");
    // The removed leads' contacts are free again; the junk lead has its identity back.
    assert_eq!(app.lead(json!({"phone": "+79215550042"})).await.status, 201);
    let back = app.lead(json!({"phone": "+79215550044"})).await;
    assert_eq!(back.status, 201);
    assert_eq!(back.json()["returning_of"], rid, "{}", back.text());
    let info = app.get(&format!("/api/v1/imports/{id}"), Some(&app.token)).await.json();
    assert_eq!((info["status"].as_str(), info["removed"].as_i64(), info["kept"].as_i64()), (Some("undone"), Some(2), Some(1)));
    let again = app.call("POST", &format!("/api/v1/imports/{id}/undo"), &app.token, None).await;
    assert_eq!(again.status, 409);
    let audit = app.get("/api/v1/audit?action=import.undo", Some(&app.token)).await.json();
    assert_eq!(audit["items"][0]["detail"]["removed"], 2, "{audit}");
}

#[tokio::test]
async fn an_upload_left_unfinished_is_resumed_by_the_server() {
    use voronka_server::import::{ImportRequest, prepare};
    let clock = voronka_domain::TestClock::new(chrono::Utc::now());
    let app = voronka_testkit::spawn_app_with(Default::default(), std::sync::Arc::new(clock.clone())).await;
    let csv = "Phone\n+79215550051\n+79215550052\n";
    // A run created by a worker that then died: no rows done, an old heartbeat.
    let p = prepare(
        &app.store,
        ImportRequest {
            source: "s".into(),
            file_name: "r.csv".into(),
            bytes: bytes::Bytes::from(csv),
            mapping: Default::default(),
            campaign: Some("spring".into()),
            dry_run: false,
            actor: "test".into(),
            keep_file: true,
            region: Default::default(),
        },
        "dead-worker",
    )
    .await
    .unwrap();
    let id = p.info.id.to_string();
    drop(p);
    assert_eq!(voronka_server::api::imports::resume_stalled(&app.state).await.unwrap(), 0, "its lease is still fresh");
    clock.advance(chrono::Duration::seconds(11));
    assert_eq!(voronka_server::api::imports::resume_stalled(&app.state).await.unwrap(), 1);
    let done = app.wait_import(&id).await;
    assert_eq!(done["created"], 2, "{done}");
    assert_eq!(find(&app, "+79215550052").await[0]["campaign"], "spring");
}

#[tokio::test]
async fn the_settings_page_uploads_shows_progress_reports_and_undoes() {
    let app = spawn_app().await;
    app.user("mk@example.com", "marketer", "password-123").await;
    app.user("mg@example.com", "manager", "password-123").await;
    let s = app.ui_login("mk@example.com", "password-123").await;
    let file = cp1251("ФИО;Телефон\r\n<script>alert(1)</script>;+79215550061\r\nБез телефона;\r\n");
    let r = app.ui_upload(&s, "/settings/import", None, "<b>x</b>.csv", &file, &[]).await;
    assert_eq!(r.status, 403, "an upload without the CSRF token is refused");
    assert_eq!(app.get("/api/v1/imports", Some(&app.token)).await.json()["items"].as_array().unwrap().len(), 0);

    let r = app.ui_upload(&s, "/settings/import", Some(&s.csrf), "<b>x</b>.csv", &file, &[("source", "Ярмарка"), ("dry_run", "")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").as_deref(), Some("/settings/import?done=import_started"));
    let id = app.get("/api/v1/imports", Some(&app.token)).await.json()["items"][0]["id"].as_str().unwrap().to_string();
    app.wait_import(&id).await;
    let page = app.ui_get(&s, "/settings/import").await.text();
    assert!(page.contains(&format!("data-import=\"{id}\" data-status=\"done\"")), "{page}");
    assert!(!page.contains("<b>x</b>"), "file names are escaped: {}", &page[page.find("data-import").unwrap()..][..400]);
    let report = app.ui_get(&s, &format!("/settings/import/{id}/report.csv")).await;
    assert_eq!(report.status, 200);
    assert!(report.text().contains("\"3\",\"rejected\""), "{}", report.text());

    let r = app.ui_post(&s, &format!("/settings/import/{id}/undo"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(find(&app, "+79215550061").await.is_empty());
    let page = app.ui_get(&s, "/settings/import").await.text();
    assert!(page.contains(&format!("data-import=\"{id}\" data-status=\"undone\"")));

    let m = app.ui_login("mg@example.com", "password-123").await;
    assert_eq!(app.ui_get(&m, "/settings/import").await.status, 403, "managers do not import");
}

#[tokio::test]
async fn a_run_held_by_a_live_worker_is_neither_taken_twice_nor_undone() {
    use voronka_server::import::{ImportRequest, prepare};
    let clock = voronka_domain::TestClock::new(chrono::Utc::now());
    let app = voronka_testkit::spawn_app_with(Default::default(), std::sync::Arc::new(clock.clone())).await;
    let csv = "Phone\n+79215550071\n";
    let req = || ImportRequest {
        source: "s".into(),
        file_name: "h.csv".into(),
        bytes: bytes::Bytes::from(csv),
        mapping: Default::default(),
        campaign: None,
        dry_run: false,
        actor: "test".into(),
        keep_file: true,
        region: Default::default(),
    };
    let held = prepare(&app.store, req(), "other-worker").await.unwrap();
    let id = held.info.id;
    // The same file from the same source while another worker holds its run.
    let r = app.upload("/api/v1/imports", &app.token, "h.csv", csv.as_bytes(), &[("source", "s")]).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "import_running");
    assert!(matches!(prepare(&app.store, req(), "third-worker").await, Err(voronka_server::import::ImportError::Busy(_))));
    let r = app.call("POST", &format!("/api/v1/imports/{id}/undo"), &app.token, None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    // The worker died: once its heartbeat is old, the run can be undone (nothing to remove).
    clock.advance(chrono::Duration::seconds(31));
    let r = app.call("POST", &format!("/api/v1/imports/{id}/undo"), &app.token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.json()["removed"].as_i64(), r.json()["kept"].as_i64()), (Some(0), Some(0)));
    // …and the dead worker, were it to wake, cannot write progress or finish it.
    assert!(!app.store.import_progress(id, "other-worker", None, 1, &Default::default()).await.unwrap());
    let info = app.store.finish_import(id, "other-worker", None).await.unwrap();
    assert_eq!(info.status, "undone");
}

/// A file of `n` rows, every third without a contact (rejected).
fn with_rejected_rows(n: usize) -> String {
    let mut text = String::from("Name,Phone\n");
    for i in 0..n {
        if i % 3 == 2 {
            text.push_str(&format!("Nobody {i},\n"));
        } else {
            text.push_str(&format!("Person {i},+7922{:07}\n", 2_000_000 + i));
        }
    }
    text
}

fn request(name: &str, text: String) -> voronka_server::import::ImportRequest {
    voronka_server::import::ImportRequest {
        source: name.into(),
        file_name: format!("{name}.csv"),
        bytes: bytes::Bytes::from(text),
        mapping: Default::default(),
        campaign: None,
        dry_run: false,
        actor: "test".into(),
        keep_file: false,
        region: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_rejected_rows_written_beside_the_rows_are_all_there() {
    // The run hands its rejected rows and its progress to a task of its own, so that the rows
    // reach the intake without waiting for those writes. Written after every row here, most
    // progress is skipped while that task is behind; no rejected row may be, and the import
    // ends with its final figures.
    use voronka_server::import::{prepare, run};
    let app = spawn_app().await;
    let p = prepare(&app.store, request("beside", with_rejected_rows(900)), "w").await.unwrap();
    let p = p.progress_every(std::time::Duration::ZERO);
    let id = p.info.id;
    let info = run(&app.store, p, "w", &|_| {}).await.unwrap();
    assert_eq!((info.status.as_str(), info.processed, info.created, info.rejected), ("done", 900, 600, 300), "{info:?}");
    let counts = app.store.import_counts(id).await.unwrap();
    assert_eq!((counts.created, counts.rejected), (600, 300), "every row's outcome is recorded");
    let rows = report(&app, &id.to_string(), "en").await;
    let rejected: Vec<&Vec<String>> = rows[1..].iter().filter(|r| r[1] == "rejected").collect();
    assert_eq!(rejected.len(), 300);
    assert!(rejected.iter().all(|r| (r[0].parse::<usize>().unwrap() - 2) % 3 == 2), "the rows without a contact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_taken_over_midway_stops_as_busy() {
    // Progress is written by another task than the one handing rows over: when it finds the
    // import taken over by another worker, the run must stop soon after (`Busy`), not at its
    // end, and leave the import to that worker, neither finishing nor failing it.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use voronka_server::import::{ImportError, prepare, run};
    let app = spawn_app().await;
    let rows = 20_000;
    let mut text = String::from("Name,Phone\n");
    for i in 0..rows {
        text.push_str(&format!("Nobody {i},\n"));
    }
    let p = prepare(&app.store, request("taken", text), "first").await.unwrap();
    let p = p.progress_every(std::time::Duration::ZERO);
    let id = p.info.id;
    let store = app.store.clone();
    let calls = AtomicUsize::new(0);
    let r = run(&app.store, p, "first", &|_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // A claim that counts "first"'s heartbeat as stale, as a worker would after 30 s;
            // then time for the recorder to write a progress and find the run gone.
            let later = voronka_store::ts::Ts::from(chrono::Utc::now() + chrono::Duration::hours(1));
            let handle = tokio::runtime::Handle::current();
            let took = tokio::task::block_in_place(|| handle.block_on(store.claim_import(id, "second", later)));
            assert!(took.unwrap(), "the second worker takes the run over");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    })
    .await;
    assert!(matches!(r, Err(ImportError::Busy(x)) if x == id), "{:?}", r.map(|i| i.status));
    let calls = calls.into_inner();
    assert!(calls < rows / 2, "the run went on for {calls} of {rows} rows after it was taken over");
    let info = app.store.import_info(id).await.unwrap().unwrap();
    assert_eq!(info.status, "running", "the import is the second worker's to finish");
    assert!(!app.store.import_progress(id, "first", None, 1, &Default::default()).await.unwrap());
    assert!(app.store.import_progress(id, "second", None, 1, &Default::default()).await.unwrap());
}
