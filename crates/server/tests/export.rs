//! Export of lead lists as CSV and XLSX: the list's filters and the caller's access apply,
//! formulas are neutralised (raw only for admins), and every export is in the audit log.

use serde_json::{Value, json};
use voronka_testkit::*;

const COLUMNS: usize = 30;

fn csv_rows(r: &Resp) -> Vec<Vec<String>> {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert!(r.header("content-disposition").unwrap().contains(".csv"));
    let body = r.body.strip_prefix(b"\xEF\xBB\xBF".as_slice()).expect("a UTF-8 byte order mark first");
    let mut rd = csv::ReaderBuilder::new().has_headers(false).from_reader(body);
    rd.records().map(|rec| rec.expect("a CSV record").iter().map(String::from).collect()).collect()
}

fn col(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
}

async fn tricky_lead(app: &TestApp) -> String {
    let r = app
        .lead(json!({
            "name": "=HYPERLINK(\"http://evil.example/\",\"Нажми\")",
            "phone": "+7 921 700-11-22",
            "email": "evil@example.com",
            "company": "@SUM(1+1)*cmd|' /C calc'!A0",
            "city": "-2+3",
            "message": "-таб",
            "position": "+1",
            "utm": {"source": "=1+1", "campaign": "осень"},
        }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn csv_export_neutralises_formulas_and_keeps_cyrillic() {
    let app = spawn_app().await;
    let evil = tricky_lead(&app).await;
    app.lead(json!({"name": "Мария Иванова", "phone": "89035550011", "company": "ООО «Ромашка»", "channel": "call", "city": "x;=cmd|' /C calc'!A0"})).await;
    let reader = app.token_with(&["leads:read"]).await;

    let r = app.get("/api/v1/leads/export.csv", Some(&reader)).await;
    // Every field is quoted, so where Excel splits on `;` a value cannot become a cell.
    assert!(r.body.starts_with(b"\xEF\xBB\xBF\"id\",\"created_at\","), "{}", r.text());
    assert!(r.text().contains("\"x;=cmd|' /C calc'!A0\""), "{}", r.text());
    let rows = csv_rows(&r);
    assert_eq!(rows.len(), 3, "a header and two leads");
    let h = &rows[0];
    assert_eq!(h.len(), COLUMNS);
    assert_eq!(&h[..4], ["id", "created_at", "name", "phone"]);
    let e = rows.iter().find(|r| r[0] == evil).expect("the tricky lead");
    assert_eq!(e[col(h, "name")], "'=HYPERLINK(\"http://evil.example/\",\"Нажми\")");
    assert_eq!(e[col(h, "company")], "'@SUM(1+1)*cmd|' /C calc'!A0");
    assert_eq!(e[col(h, "city")], "'-2+3");
    assert_eq!(e[col(h, "position")], "'+1");
    assert_eq!(e[col(h, "phone")], "'+79217001122", "a phone starts with + and is neutralised too");
    assert_eq!(e[col(h, "utm_source")], "'=1+1");
    assert_eq!(e[col(h, "utm_campaign")], "осень");
    let m = rows.iter().find(|r| r[col(h, "name")] == "Мария Иванова").expect("the plain lead");
    assert_eq!(m[col(h, "company")], "ООО «Ромашка»");
    assert_eq!(m[col(h, "channel")], "call");
    for r in &rows[1..] {
        for c in r {
            assert!(!c.starts_with(['=', '+', '-', '@', '\t', '\r']), "cell {c:?} would run as a formula");
        }
    }

    // The list's filters apply; a bad one is named.
    let only_calls = csv_rows(&app.get("/api/v1/leads/export.csv?channel=call&sort=created", Some(&reader)).await);
    assert_eq!(only_calls.len(), 2);
    assert_eq!(only_calls[1][col(h, "name")], "Мария Иванова");
    let bad = app.get("/api/v1/leads/export.csv?status=bogus", Some(&reader)).await;
    assert_eq!(bad.status, 422);
    assert!(bad.json()["error"]["fields"]["status"].is_string(), "{}", bad.text());
    // Paging is the export's own: a limit does not cut the file.
    assert_eq!(csv_rows(&app.get("/api/v1/leads/export.csv?limit=1", Some(&reader)).await).len(), 3);

    // Raw cells only for admins.
    let r = app.get("/api/v1/leads/export.csv?raw=true", Some(&reader)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let raw = csv_rows(&app.get("/api/v1/leads/export.csv?raw=true", Some(&app.token)).await);
    let e = raw.iter().find(|r| r[0] == evil).unwrap();
    assert_eq!(e[col(h, "name")], "=HYPERLINK(\"http://evil.example/\",\"Нажми\")");
    assert_eq!(app.get("/api/v1/leads/export.csv?raw=maybe", Some(&app.token)).await.status, 422);

    // Without a token, or the scope, nothing.
    assert_eq!(app.get("/api/v1/leads/export.csv", None).await.status, 401);
    let writer = app.token_with(&["leads:write"]).await;
    assert_eq!(app.get("/api/v1/leads/export.xlsx", Some(&writer)).await.status, 403);

    // Every export is in the audit log: who, the filter, the rows.
    let audit = app.get("/api/v1/audit?action=export", Some(&app.token)).await;
    assert_eq!(audit.status, 200, "{}", audit.text());
    let items = audit.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "four exports succeeded: {items:?}");
    let calls = items.iter().find(|i| i["detail"]["filter"] == "channel=call&sort=created").expect("the filtered export");
    assert_eq!(calls["detail"]["rows"], 1);
    assert_eq!(calls["detail"]["format"], "csv");
    assert_eq!(calls["actor"], "token:scoped");
    assert!(items.iter().any(|i| i["detail"]["raw"] == true));
    assert_eq!(app.get("/api/v1/audit", Some(&reader)).await.status, 403, "the audit log is for admins");
}

#[tokio::test]
async fn xlsx_export_reads_back_with_the_same_cells() {
    use calamine::Reader;
    let app = spawn_app().await;
    let evil = tricky_lead(&app).await;
    let r = app.get("/api/v1/leads/export.xlsx", Some(&app.token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type").unwrap(), "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
    let mut book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(r.body.to_vec())).expect("an XLSX workbook");
    let sheet = book.worksheet_range("Leads").expect("the Leads sheet");
    let rows: Vec<Vec<String>> = sheet.rows().map(|r| r.iter().map(|c| c.to_string()).collect()).collect();
    assert_eq!(rows.len(), 2);
    let h = &rows[0];
    assert_eq!(h.len(), COLUMNS);
    assert_eq!(rows[1][0], evil);
    assert_eq!(rows[1][col(h, "name")], "'=HYPERLINK(\"http://evil.example/\",\"Нажми\")");
    assert_eq!(rows[1][col(h, "utm_campaign")], "осень");
    assert_eq!(rows[1][col(h, "message")], "'-таб");
    assert_eq!(rows[1][col(h, "phone")], "'+79217001122");
}

#[tokio::test]
async fn a_manager_exports_own_leads_only_and_the_inbox_exports_its_view() {
    let app = spawn_app().await;
    let m = app.user("m@example.com", "manager", "correct horse battery").await;
    let mine = app.lead(json!({"name": "Свой", "phone": "+79210000001"})).await.json()["id"].as_str().unwrap().to_string();
    let other = app.lead(json!({"name": "Чужой", "phone": "+79210000002"})).await.json()["id"].as_str().unwrap().to_string();
    let r = app.call("POST", &format!("/api/v1/leads/{mine}/assign"), &app.token, Some(&json!({"user_id": m.id}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (_, token) = app.store.create_user_token(m.id, "m", &["leads:read".to_string()]).await.unwrap();
    let rows = csv_rows(&app.get("/api/v1/leads/export.csv", Some(&token)).await);
    let ids: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids, [mine.as_str()], "not {other}");
    assert_eq!(rows[1][col(&rows[0], "owner")], "m", "the owner by name");
    let r = app.get("/api/v1/leads/export.csv?raw=true", Some(&token)).await;
    assert_eq!(r.status, 403, "a manager's token is no admin");

    // The inbox's export links carry its view; the session's user is the actor.
    let s = app.ui_login("m@example.com", "correct horse battery").await;
    let page = app.ui_get(&s, "/inbox?tab=mine&q=%D1%81%D0%B2%D0%BE%D0%B9").await.text();
    let link = page.split("href=\"/inbox/export.csv?").nth(1).and_then(|r| r.split('"').next()).expect("the CSV link");
    assert!(link.starts_with("tab=mine&") && link.contains("q=%D1%81%D0%B2%D0%BE%D0%B9"), "{link}");
    let rows = csv_rows(&app.ui_get(&s, "/inbox/export.csv?tab=mine&q=%D1%81%D0%B2%D0%BE%D0%B9").await);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][0], mine);
    let x = app.ui_get(&s, "/inbox/export.xlsx?tab=all").await;
    assert_eq!(x.status, 200);
    assert!(x.body.starts_with(b"PK"), "a zip container");
    let audit: Value = app.get("/api/v1/audit?action=export", Some(&app.token)).await.json();
    let by_user: Vec<&Value> = audit["items"].as_array().unwrap().iter().filter(|i| i["actor"] == "user:m").collect();
    assert_eq!(by_user.len(), 3, "the API export and the two from the inbox: {audit}");
    assert!(by_user.iter().any(|i| i["detail"]["filter"].as_str().unwrap().contains("tab=mine")));
    assert!(by_user.iter().all(|i| i["detail"]["user_id"] == json!(m.id)), "the user's id is recorded");
    // Without a session the export is a login redirect, never a file.
    let anon = app.get("/inbox/export.csv", None).await;
    assert_eq!(anon.status, 303);
}
