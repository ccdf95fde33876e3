//! The web UI over HTTP: sessions, CSRF, throttled logins, security headers, access, the
//! card's actions, the kanban, the settings editors, language, escaping. The same flows in
//! a real browser are in `ui_browser.rs`.

use serde_json::{Value, json};
use uuid::Uuid;
use voronka_server::AppConfig;
use voronka_store::users::{Access, User};
use voronka_testkit::*;

const PASSWORD: &str = "correct horse battery";

async fn lead(app: &TestApp, body: Value) -> Uuid {
    let r = app.lead(body).await;
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().parse().unwrap()
}

async fn give(app: &TestApp, lead: Uuid, to: &User) {
    app.store.reassign(lead, to.id, "test", &Access::All).await.expect("assign");
}

fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

async fn api_lead(app: &TestApp, id: Uuid) -> Value {
    app.get(&format!("/api/v1/leads/{id}"), Some(&app.token)).await.json()
}

#[tokio::test]
async fn login_sets_a_safe_cookie_renews_the_session_and_logout_ends_it() {
    let app = spawn_app().await;
    app.user("admin@example.com", "admin", PASSWORD).await;

    // Without a session every page sends to the login page, keeping where it was going.
    let r = app.get("/inbox?tab=mine", None).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").unwrap(), "/login?next=%2Finbox%3Ftab%3Dmine");

    let page = app.get("/login", None).await;
    let login_csrf = set_cookie_value(&page, "vk_login_csrf").unwrap();
    let post = |fields: Vec<(&'static str, String)>, cookie: String| {
        let body = serde_urlencoded::to_string(&fields).unwrap();
        let req = app
            .req("POST", "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", cookie)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        send(app.addr, req)
    };
    // The form's token must come with its cookie.
    let r = post(
        vec![("_csrf", "forged".into()), ("email", "admin@example.com".into()), ("password", PASSWORD.into())],
        format!("vk_login_csrf={login_csrf}"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(set_cookie_value(&r, "vk_session").is_none());
    // A wrong password: 401, no session.
    let r = post(
        vec![("_csrf", login_csrf.clone()), ("email", "admin@example.com".into()), ("password", "nope".into())],
        format!("vk_login_csrf={login_csrf}"),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Wrong e-mail or password"), "{}", r.text());
    assert!(set_cookie_value(&r, "vk_session").is_none());

    // A good login: HttpOnly, SameSite, not Secure over plain HTTP; a foreign `next` is ignored.
    let r = post(
        vec![
            ("_csrf", login_csrf.clone()),
            ("email", "Admin@Example.com".into()),
            ("password", PASSWORD.into()),
            ("next", "//evil.example/x".into()),
        ],
        format!("vk_login_csrf={login_csrf}"),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), "/inbox");
    let set =
        r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|c| c.starts_with("vk_session=")).unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"), "{set}");
    let first = set_cookie_value(&r, "vk_session").unwrap();

    // A second login with the first cookie gets a new id; the old one stops working.
    let r = post(
        vec![
            ("_csrf", login_csrf.clone()),
            ("email", "admin@example.com".into()),
            ("password", PASSWORD.into()),
            ("next", "/kanban".into()),
        ],
        format!("vk_login_csrf={login_csrf}; vk_session={first}"),
    )
    .await;
    assert_eq!(r.header("location").unwrap(), "/kanban");
    let second = set_cookie_value(&r, "vk_session").unwrap();
    assert_ne!(first, second);
    let old = UiSession { cookie: first, csrf: String::new() };
    assert_eq!(app.ui_get(&old, "/inbox").await.status, 303);
    let mut s = UiSession { cookie: second, csrf: String::new() };
    let inbox = app.ui_get(&s, "/inbox").await;
    assert_eq!(inbox.status, 200);
    s.csrf = csrf_of(&inbox.text()).unwrap();

    // Logout ends the session at once.
    let r = app.ui_post(&s, "/logout", &[]).await;
    assert_eq!(r.status, 303);
    assert!(r.headers.get_all("set-cookie").iter().any(|v| v.to_str().unwrap().starts_with("vk_session=;")));
    assert_eq!(app.ui_get(&s, "/inbox").await.status, 303);
    // htmx requests are told where to go instead.
    let r = send(
        app.addr,
        app.req("GET", "/inbox/rows")
            .header("cookie", format!("vk_session={}", s.cookie))
            .header("hx-request", "true")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("hx-redirect").as_deref(), Some("/login"));
}

#[tokio::test]
async fn the_session_cookie_is_secure_behind_https() {
    let app =
        spawn_app_with(AppConfig { trust_forwarded_for: true, ..AppConfig::default() }, std::sync::Arc::new(voronka_domain::SystemClock))
            .await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let page = app.get("/login", None).await;
    let csrf = set_cookie_value(&page, "vk_login_csrf").unwrap();
    let body = form_body(&[("_csrf", &csrf), ("email", "a@example.com"), ("password", PASSWORD)]);
    let r = send(
        app.addr,
        app.req("POST", "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("vk_login_csrf={csrf}"))
            .header("x-forwarded-proto", "https")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await;
    let set =
        r.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).find(|c| c.starts_with("vk_session=")).unwrap();
    assert!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
}

#[tokio::test]
async fn failed_logins_are_throttled() {
    let app = spawn_app().await;
    app.user("m@example.com", "manager", PASSWORD).await;
    for _ in 0..5 {
        let r = app.try_ui_login("m@example.com", "wrong").await.unwrap_err();
        assert_eq!(r.status, 401);
    }
    // Even the right password waits now.
    let r = app.try_ui_login("m@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 900, "{wait}");
    assert!(r.text().contains("Too many failed attempts"));
    // Another account is not blocked by them.
    app.user("other@example.com", "manager", PASSWORD).await;
    app.ui_login("other@example.com", PASSWORD).await;
}

#[tokio::test]
async fn every_state_changing_request_needs_the_csrf_token() {
    let app = spawn_app().await;
    let admin = app.user("admin@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("admin@example.com", PASSWORD).await;
    let id = lead(&app, json!({"name": "Ирина", "phone": "+79215550001"})).await;
    let task = app
        .store
        .create_task(
            id,
            &voronka_store::workflow::NewTask { kind: "call", title: "t", due: None, assignee: Some(admin.id) },
            "t",
            &Access::All,
        )
        .await
        .unwrap();
    let routes = [
        (format!("/leads/{id}/activity"), "kind=call&text=x"),
        (format!("/leads/{id}/status"), "status=junk&reason_junk=spam"),
        (format!("/leads/{id}/task"), "kind=call&title=x"),
        (format!("/leads/{id}/edit"), "name=Hacked"),
        (format!("/leads/{id}/assign"), "user_id=00000000-0000-0000-0000-000000000000"),
        (format!("/leads/{id}/convert"), "contact_name=x"),
        (format!("/tasks/{}/done", task.id), "result=x"),
        ("/kanban/move".to_string(), "status=junk&reason=spam"),
        ("/settings/sites".to_string(), "name=Evil"),
        ("/settings/forms".to_string(), "name=Evil"),
        ("/settings/scoring".to_string(), "model=%7B%7D"),
        ("/settings/workflow".to_string(), "key=slas&slas=%5B%5D"),
        ("/settings/reasons".to_string(), "kind=junk&lines=a+%7C+b+%7C+c"),
        ("/settings/users".to_string(), "email=evil%40example.com&role=admin&name=Evil"),
        (format!("/settings/users/{}", admin.id), "hours_mon="),
        ("/settings/tokens".to_string(), "name=evil&scope=admin"),
        ("/me/lang".to_string(), "lang=ru"),
        ("/logout".to_string(), ""),
    ];
    for (path, body) in &routes {
        let none = app.ui_post_raw(&s, path, body, &[]).await;
        assert_eq!(none.status, 403, "{path} without a token: {}", none.status);
        let wrong = app.ui_post_raw(&s, path, &format!("{body}&_csrf=not-the-token"), &[]).await;
        assert_eq!(wrong.status, 403, "{path} with a wrong token");
        let header = app.ui_post_raw(&s, path, body, &[("x-csrf-token", "not-the-token")]).await;
        assert_eq!(header.status, 403, "{path} with a wrong header");
        // The right token from another site's page is refused too.
        let cross = app.ui_post_raw(&s, path, &format!("{body}&_csrf={}", s.csrf), &[("origin", "https://evil.example")]).await;
        assert_eq!(cross.status, 403, "{path} from another origin");
    }
    assert!(none_changed(&app, id).await);
    assert!(app.store.sites().await.unwrap().is_empty());
    assert_eq!(app.store.list_tokens().await.unwrap().len(), 1, "only the test's own token");
    assert!(app.store.user_by_email("evil@example.com").await.unwrap().is_none());
    // The session still works, and the token in the header is accepted.
    let ok = app.ui_post_raw(&s, &format!("/leads/{id}/activity"), "kind=note&text=ok", &[("x-csrf-token", &s.csrf)]).await;
    assert_eq!(ok.status, 303, "{}", ok.text());
}

async fn none_changed(app: &TestApp, id: Uuid) -> bool {
    let l = api_lead(app, id).await;
    let timeline = app.get(&format!("/api/v1/leads/{id}/timeline"), Some(&app.token)).await.json();
    // The lead's request and the task the test made; nothing else.
    status_of(&l) == "new" && l["name"] == "Ирина" && timeline["items"].as_array().unwrap().len() == 2
}

#[tokio::test]
async fn pages_render_for_each_role_with_security_headers() {
    let app = spawn_app().await;
    for (email, role) in
        [("a@example.com", "admin"), ("h@example.com", "head_of_sales"), ("m@example.com", "manager"), ("k@example.com", "marketer")]
    {
        app.user(email, role, PASSWORD).await;
    }
    let id = lead(&app, json!({"name": "Пётр", "phone": "+79215550002", "company": "ООО Ромашка"})).await;
    let pages = [
        "/inbox",
        "/inbox?tab=unsorted",
        "/inbox?tab=mine&sort=created",
        "/inbox/rows",
        "/kanban",
        "/tasks",
        "/tasks?view=overdue",
        "/tasks?view=cards",
        "/dashboard",
        "/dashboard?days=90",
        "/settings/sources",
        "/settings/scoring",
        "/settings/workflow",
        "/settings/reasons",
        "/settings/users",
        "/settings/tokens",
    ];
    let allowed = |role: &str, page: &str| -> bool {
        match page {
            "/settings/sources" | "/settings/scoring" => role == "admin" || role == "marketer",
            "/settings/workflow" | "/settings/reasons" | "/settings/users" => role == "admin" || role == "head_of_sales",
            "/settings/tokens" => role == "admin",
            _ => true,
        }
    };
    for (email, role) in
        [("a@example.com", "admin"), ("h@example.com", "head_of_sales"), ("m@example.com", "manager"), ("k@example.com", "marketer")]
    {
        let s = app.ui_login(email, PASSWORD).await;
        for p in pages {
            let r = app.ui_get(&s, p).await;
            let want = if allowed(role, p) { 200 } else { 403 };
            assert_eq!(r.status, want, "{role} {p}: {}", r.text());
            let csp = r.header("content-security-policy").unwrap_or_default();
            assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'") && !csp.contains("unsafe"), "{p}: {csp}");
            assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
            let html = r.text();
            // No inline script or style: every <script> has a src, no style attribute.
            for part in html.split("<script").skip(1) {
                let tag = part.split('>').next().unwrap_or("");
                assert!(tag.contains("src=\"/ui/assets/"), "{p}: inline script <script{tag}>");
            }
            assert!(!html.contains(" style=\"") && !html.contains("<style"), "{p} has inline style");
        }
        let card = app.ui_get(&s, &format!("/leads/{id}")).await;
        // A manager sees only own leads; the others see the unassigned lead.
        assert_eq!(card.status, if role == "manager" { 404 } else { 200 }, "{role}");
    }
    // Unknown pages and leads answer 404 pages, bad ids too.
    let s = app.ui_login("a@example.com", PASSWORD).await;
    assert_eq!(app.ui_get(&s, &format!("/leads/{}", Uuid::now_v7())).await.status, 404);
    assert_eq!(app.ui_get(&s, "/leads/not-a-uuid").await.status, 404);
    // Static files are served with their type and a validator.
    let js = app.get("/ui/assets/htmx.min.js", None).await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    let etag = js.header("etag").unwrap();
    let again =
        send(app.addr, app.req("GET", "/ui/assets/htmx.min.js").header("if-none-match", &etag).body(Default::default()).unwrap()).await;
    assert_eq!(again.status, 304);
    assert!(js.text().contains("htmx"));
    assert!(app.get("/ui/assets/chart.umd.min.js", None).await.text().contains("Chart"));
    assert_eq!(app.get("/ui/assets/../Cargo.toml", None).await.status, 404);
}

#[tokio::test]
async fn a_manager_sees_and_changes_only_own_leads_in_the_ui() {
    let app = spawn_app().await;
    let a = app.user("a@example.com", "manager", PASSWORD).await;
    let b = app.user("b@example.com", "manager", PASSWORD).await;
    let mine = lead(&app, json!({"name": "Алиса Своя", "phone": "+79215550003"})).await;
    let theirs = lead(&app, json!({"name": "Борис Чужой", "phone": "+79215550004"})).await;
    give(&app, mine, &a).await;
    give(&app, theirs, &b).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;
    for page in ["/inbox", "/inbox?q=Борис", "/inbox?q=8%20921%20555-00-04", "/inbox/rows", "/kanban", "/tasks", "/dashboard"] {
        let html = app.ui_get(&s, page).await.text();
        assert!(!html.contains(&theirs.to_string()) && !html.contains("Чужой"), "{page} shows another manager's lead");
    }
    assert!(app.ui_get(&s, "/inbox").await.text().contains("Алиса Своя"));
    assert_eq!(app.ui_get(&s, &format!("/leads/{theirs}")).await.status, 404);
    for (path, fields) in [
        (format!("/leads/{theirs}/activity"), vec![("kind", "call")]),
        (format!("/leads/{theirs}/status"), vec![("status", "junk"), ("reason_junk", "spam")]),
        (format!("/leads/{theirs}/task"), vec![("kind", "call"), ("title", "x")]),
        (format!("/leads/{theirs}/edit"), vec![("name", "x")]),
        (format!("/leads/{theirs}/convert"), vec![("contact_name", "x")]),
    ] {
        assert_eq!(app.ui_post(&s, &path, &fields).await.status, 404, "{path}");
    }
    let mv = app.ui_post(&s, "/kanban/move", &[("id", &theirs.to_string()), ("status", "junk"), ("reason", "spam")]).await;
    assert_eq!(mv.status, 404);
    // B's task, and a merge on B's lead.
    let r = app
        .call("POST", &format!("/api/v1/leads/{theirs}/tasks"), &app.token, Some(&json!({"kind": "call", "title": "перезвонить"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let task = r.json()["id"].as_str().unwrap().to_string();
    let double = lead(&app, json!({"name": "Борис Чужой", "email": "boris@firm.ru"})).await;
    give(&app, double, &b).await;
    let r = app.call("POST", &format!("/api/v1/leads/{theirs}/merge"), &app.token, Some(&json!({"merged_id": double}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let merge = r.json()["merge"]["id"].as_str().unwrap().to_string();
    let a_id = a.id.to_string();
    for (path, fields) in [
        (format!("/leads/{theirs}/assign"), vec![("user_id", a_id.as_str())]),
        (format!("/leads/{theirs}/merge"), vec![("other", "+79215550003")]),
        (format!("/leads/{theirs}/triage"), vec![("action", "accept")]),
        (format!("/merges/{merge}/undo"), vec![]),
        (format!("/tasks/{task}/done"), vec![("result", "x")]),
    ] {
        assert_eq!(app.ui_post(&s, &path, &fields).await.status, 404, "{path}");
    }
    let t = app.call("GET", &format!("/api/v1/leads/{theirs}/tasks"), &app.token, None).await.json();
    assert_eq!(t[0]["status"], "open");
    assert!(app.get(&format!("/api/v1/leads/{theirs}/merges"), Some(&app.token)).await.json()[0]["undone_at"].is_null());
    // A manager does not assign leads.
    assert_eq!(app.ui_post(&s, &format!("/leads/{mine}/assign"), &[("user_id", &b.id.to_string())]).await.status, 403);
    let l = api_lead(&app, theirs).await;
    assert_eq!(status_of(&l), "assigned");
    assert_eq!(l["name"], "Борис Чужой");
}

#[tokio::test]
async fn card_actions_work_and_refusals_name_the_field() {
    let app = spawn_app().await;
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    let s = app.ui_login("m@example.com", PASSWORD).await;
    let id = lead(&app, json!({"name": "Ольга", "phone": "+79215550005", "company": "ООО Ромашка"})).await;
    give(&app, id, &m).await;
    let card = format!("/leads/{id}");

    // A call: the timeline shows it and the first touch moves the lead into work.
    let r = app
        .ui_post(
            &s,
            &format!("{card}/activity"),
            &[("kind", "call"), ("direction", "out"), ("duration_minutes", "2.5"), ("result", "перезвонить"), ("text", "обсудили цены")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location").unwrap(), format!("{card}?done=activity_logged"));
    let html = app.ui_get(&s, &format!("{card}?done=activity_logged")).await.text();
    assert!(html.contains("Logged") && html.contains("обсудили цены") && html.contains("2:30"), "{html}");
    assert_eq!(status_of(&api_lead(&app, id).await), "in_progress");
    let bad = app.ui_post(&s, &format!("{card}/activity"), &[("kind", "fax")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("kind"));
    let bad = app.ui_post(&s, &format!("{card}/activity"), &[("kind", "call"), ("duration_minutes", "lots")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("duration_minutes"));

    // A task, then done.
    assert_eq!(
        app.ui_post(&s, &format!("{card}/task"), &[("kind", "call"), ("title", "Перезвонить в пятницу"), ("due", "2020-01-01T10:00")])
            .await
            .status,
        303
    );
    let tasks = app.ui_get(&s, "/tasks?view=overdue").await.text();
    assert!(tasks.contains("Перезвонить в пятницу") && tasks.contains("Ольга"), "{tasks}");
    let task = app.store.tasks(&Access::All, None, false).await.unwrap().remove(0);
    assert_eq!(
        app.ui_post(&s, &format!("/tasks/{}/done", task.id), &[("result", "ok"), ("back", "/tasks")]).await.header("location").unwrap(),
        "/tasks?done=task_done"
    );
    assert!(app.ui_get(&s, "/tasks").await.text().contains("No open tasks"));
    assert_eq!(app.ui_post(&s, &format!("{card}/task"), &[("kind", "call"), ("title", "x"), ("due", "someday")]).await.status, 422);

    // Edits are audited; nothing changed is said so.
    assert_eq!(
        app.ui_post(
            &s,
            &format!("{card}/edit"),
            &[("name", "Ольга Петрова"), ("phone", "+7 921 555-00-05"), ("company", "ООО Ромашка"), ("city", "Казань")]
        )
        .await
        .header("location")
        .unwrap(),
        format!("{card}?done=lead_saved")
    );
    let l = api_lead(&app, id).await;
    assert_eq!(
        (l["name"].as_str(), l["city"].as_str(), l["phone"].as_str()),
        (Some("Ольга Петрова"), Some("Казань"), Some("+79215550005"))
    );
    let bad = app
        .ui_post(
            &s,
            &format!("{card}/edit"),
            &[
                ("name", "Ольга Петрова"),
                ("email", "not-an-email"),
                ("phone", "+7 921 555-00-05"),
                ("company", "ООО Ромашка"),
                ("city", "Казань"),
            ],
        )
        .await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("email"));

    // Conversion: a bad INN is named and the typed values stay; a good one converts.
    let bad = app
        .ui_post(&s, &format!("{card}/convert"), &[("contact_name", "Ольга"), ("company_name", "ООО Ромашка"), ("inn", "7707083890")])
        .await;
    assert_eq!(bad.status, 422);
    let html = bad.text();
    assert!(
        html.contains("company.inn")
            && html.contains("value=\"7707083890\"")
            && html.contains("<details class=\"convert\" id=\"convert\" open>"),
        "{html}"
    );
    let ok = app
        .ui_post(
            &s,
            &format!("{card}/convert"),
            &[
                ("contact_name", "Ольга"),
                ("company_name", "ООО Ромашка"),
                ("inn", "7707083893"),
                ("deal_title", "Поставка"),
                ("deal_amount", "150 000"),
            ],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    let l = api_lead(&app, id).await;
    assert_eq!(status_of(&l), "converted");
    assert!(l["contact_id"].is_string());
    let again = app.ui_post(&s, &format!("{card}/convert"), &[("contact_name", "Ольга")]).await;
    assert_eq!(again.status, 409);
    assert!(again.text().contains("already converted"));

    // Refusal needs a reason from the list.
    let other = lead(&app, json!({"name": "Олег", "phone": "+79215550006"})).await;
    give(&app, other, &m).await;
    let r = app.ui_post(&s, &format!("/leads/{other}/status"), &[("status", "refused")]).await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("reason"));
    let r = app
        .ui_post(&s, &format!("/leads/{other}/status"), &[("status", "refused"), ("reason_refused", "price"), ("comment", "дорого")])
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let l = api_lead(&app, other).await;
    assert_eq!((status_of(&l), l["status_reason"].as_str()), ("refused", Some("price")));
    let html = app.ui_get(&s, &format!("/leads/{other}")).await.text();
    assert!(html.contains("reason: Price"), "the timeline names the reason: {html}");
    // A forbidden move: 409 with the message.
    let r = app.ui_post(&s, &format!("/leads/{other}/status"), &[("status", "qualified")]).await;
    assert_eq!(r.status, 409);
    assert!(r.text().contains("cannot move from refused to qualified"));
    // Postponed until a time in the user's zone.
    let third = lead(&app, json!({"name": "Павел", "phone": "+79215550007"})).await;
    give(&app, third, &m).await;
    let r = app.ui_post(&s, &format!("/leads/{third}/status"), &[("status", "postponed"), ("until", "2030-01-15T10:00")]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let due =
        app.store.tasks(&Access::All, Some(m.id), false).await.unwrap().into_iter().find(|t| t.lead_id == third).unwrap().due_at.unwrap();
    assert_eq!(due.rfc3339(), "2030-01-15T07:00:00.000000Z", "10:00 in Moscow");
}

#[tokio::test]
async fn the_card_shows_source_score_explanation_and_completeness_and_logs_e_mails_and_meetings() {
    let app = spawn_app().await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;
    let bare = lead(&app, json!({"phone": "+79215550031"})).await;
    let full = lead(
        &app,
        json!({"name": "Ирина", "phone": "+79215550032", "email": "irina@romashka.ru", "company": "ООО Ромашка",
               "position": "Генеральный директор", "city": "Пермь", "utm_source": "yandex", "utm_campaign": "vesna-2026",
               "referrer": "https://ya.ru/search?q=crm"}),
    )
    .await;
    let html = app.ui_get(&s, &format!("/leads/{full}")).await.text();
    // Source and UTM.
    for v in ["yandex", "vesna-2026", "https://ya.ru/search?q=crm"] {
        assert!(html.contains(v), "{v} on the card: {html}");
    }
    // The score's explanation: every rule the API names, in the card's table.
    let score = app.get(&format!("/api/v1/leads/{full}/score"), Some(&app.token)).await.json();
    let rules: Vec<&str> = score["explanation"].as_array().unwrap().iter().map(|e| e["rule"].as_str().unwrap()).collect();
    assert!(!rules.is_empty(), "{score}");
    let table = html.split("id=\"explanation\"").nth(1).unwrap().split("</table>").next().unwrap();
    for r in &rules {
        assert!(table.contains(r), "rule {r} explained on the card: {table}");
    }
    // Completeness: the lead with more fields filled is more complete.
    let percent = |html: &str| -> u32 {
        let m = html.split("id=\"completeness\"").nth(1).unwrap();
        m.split('>').nth(1).unwrap().split('%').next().unwrap().trim().parse().unwrap()
    };
    let bare_html = app.ui_get(&s, &format!("/leads/{bare}")).await.text();
    assert!(percent(&html) > percent(&bare_html), "{} vs {}", percent(&html), percent(&bare_html));
    assert!(percent(&html) <= 100);

    // An e-mail and a meeting, logged from the card, are on its timeline.
    let card = format!("/leads/{full}");
    for (kind, text) in [("email", "отправили коммерческое предложение"), ("meeting", "встреча в офисе клиента")]
    {
        let r = app.ui_post(&s, &format!("{card}/activity"), &[("kind", kind), ("text", text)]).await;
        assert_eq!(r.status, 303, "{kind}: {}", r.text());
    }
    let html = app.ui_get(&s, &card).await.text();
    assert!(html.contains("отправили коммерческое предложение") && html.contains("встреча в офисе клиента"), "{html}");
    let timeline = app.get(&format!("/api/v1/leads/{full}/timeline"), Some(&app.token)).await.json();
    let kinds: Vec<String> = timeline["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap_or("").to_string()).collect();
    assert!(kinds.iter().any(|k| k.contains("email")) && kinds.iter().any(|k| k.contains("meeting")), "{kinds:?}");
}

#[tokio::test]
async fn a_head_of_sales_assigns_from_the_card() {
    let app = spawn_app().await;
    let team = app.store.create_team("Север").await.unwrap();
    let head = app.user("h@example.com", "head_of_sales", PASSWORD).await;
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    for u in [&head, &m] {
        app.store.update_user(u.id, &voronka_store::users::UserSpec { team_id: Some(team.id), ..Default::default() }).await.unwrap();
    }
    let id = lead(&app, json!({"name": "Глеб", "phone": "+79215550008"})).await;
    let s = app.ui_login("h@example.com", PASSWORD).await;
    let r = app.ui_post(&s, &format!("/leads/{id}/assign"), &[("user_id", &m.id.to_string())]).await;
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(api_lead(&app, id).await["owner"]["id"], m.id.to_string());
    let html = app.ui_get(&s, "/inbox").await.text();
    assert!(html.contains("Глеб") && html.contains(">m<"), "the owner's name is shown");
}

#[tokio::test]
async fn a_head_of_sales_sees_each_managers_card_completeness() {
    let app = spawn_app().await;
    let team = app.store.create_team("Север").await.unwrap();
    let head = app.user("h@example.com", "head_of_sales", PASSWORD).await;
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    for u in [&head, &m] {
        app.store.update_user(u.id, &voronka_store::users::UserSpec { team_id: Some(team.id), ..Default::default() }).await.unwrap();
    }
    // Of the default five lead fields (name, phone, e-mail, company, interest): 4 and 1.
    let full = lead(&app, json!({"name": "Глеб", "phone": "+79215550030", "email": "g@firm.ru", "company": "ООО Ромашка"})).await;
    let bare = lead(&app, json!({"phone": "+79215550031"})).await;
    give(&app, full, &m).await;
    give(&app, bare, &m).await;
    let s = app.ui_login("h@example.com", PASSWORD).await;
    let html = app.ui_get(&s, "/tasks?view=cards").await.text();
    let table = html.split("id=\"card-completeness\"").nth(1).expect("the completeness table");
    let row = table.split("<tr>").find(|r| r.contains("<td>m</td>")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("<td>2</td>") && row.contains("<td>50%</td>") && row.contains("<td>1</td>"), "{row}");
    // A manager asking for it gets their own tasks instead.
    let s = app.ui_login("m@example.com", PASSWORD).await;
    let html = app.ui_get(&s, "/tasks?view=cards").await.text();
    assert!(!html.contains("card-completeness") && html.contains("task-list"));
}

#[tokio::test]
async fn kanban_moves_and_refuses_forbidden_moves_with_a_message() {
    let app = spawn_app().await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;
    let id = lead(&app, json!({"name": "Вера", "phone": "+79215550009"})).await;
    let html = app.ui_get(&s, "/kanban").await.text();
    assert!(html.contains(&format!("data-id=\"{id}\"")));
    let mv = |status: &'static str, extra: Vec<(&'static str, &'static str)>| {
        let id = id.to_string();
        let s = s.clone();
        let app = &app;
        async move {
            let mut f: Vec<(&str, &str)> = vec![("id", &id), ("status", status)];
            f.extend(extra);
            app.ui_post(&s, "/kanban/move", &f).await
        }
    };
    let r = mv("qualified", vec![]).await;
    assert_eq!(r.status, 409);
    assert!(r.json()["message"].as_str().unwrap().contains("cannot move from new to qualified"));
    let r = mv("converted", vec![]).await;
    assert_eq!(r.status, 409);
    assert!(r.json()["message"].as_str().unwrap().contains("convert dialog"));
    let r = mv("junk", vec![]).await;
    assert_eq!(r.status, 422);
    assert!(r.json()["details"][0].as_str().unwrap().starts_with("reason"));
    let r = mv("in_progress", vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"ok": true, "status": "in_progress"}));
    assert_eq!(status_of(&api_lead(&app, id).await), "in_progress");
    let r = mv("junk", vec![("reason", "spam")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let html = app.ui_get(&s, "/kanban").await.text();
    let junk_col = html.split("id=\"col-junk\"").nth(1).unwrap().split("</section>").next().unwrap();
    assert!(junk_col.contains("Вера") && junk_col.contains("data-count>1<"), "{junk_col}");
}

#[tokio::test]
async fn the_inbox_filters_searches_and_refreshes() {
    let app = spawn_app().await;
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;
    let ivan = lead(&app, json!({"name": "Иван Телефонов", "phone": "8 (921) 555-12-34", "channel": "call"})).await;
    lead(&app, json!({"name": "Анна Почтова", "email": "anna@firm.ru", "channel": "web_form"})).await;
    give(&app, ivan, &m).await;
    let page = |q: &'static str| {
        let s = s.clone();
        let app = &app;
        async move { app.ui_get(&s, q).await.text() }
    };
    for q in ["/inbox?q=%2B7+921+5551234", "/inbox?q=89215551234", "/inbox?q=921-555-12", "/inbox?q=Телефон"] {
        let html = page(q).await;
        assert!(html.contains("Иван Телефонов") && !html.contains("Анна Почтова"), "{q}");
    }
    let unsorted = page("/inbox?tab=unsorted").await;
    assert!(unsorted.contains("Анна Почтова") && !unsorted.contains("Иван Телефонов"));
    let calls = page("/inbox?channel=call").await;
    assert!(calls.contains("Иван Телефонов") && !calls.contains("Анна Почтова"));
    let bad = app.ui_get(&s, "/inbox?status=maybe").await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("status"));
    // Phones are shown formatted, newest first on request.
    assert!(page("/inbox?sort=created").await.contains("+7 921 555-12-34"));
    // The first page polls for new leads; a lead sent now appears in the next refresh.
    let html = page("/inbox").await;
    assert!(html.contains("hx-get=\"/inbox/rows?tab=all"), "{html}");
    assert!(html.contains("hx-trigger=\"every 5s\""));
    lead(&app, json!({"name": "Новенький", "phone": "+79215550010"})).await;
    let rows = page("/inbox/rows?tab=all&sort=priority").await;
    assert!(rows.contains("Новенький") && rows.contains("class=\"fresh\""));
    assert!(!rows.contains("<html"), "a fragment, not a page");
}

#[tokio::test]
async fn the_dashboard_counts_by_channel_state_and_sla() {
    let app = spawn_app().await;
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;
    let a = lead(&app, json!({"name": "A", "phone": "+79215550011", "channel": "call"})).await;
    lead(&app, json!({"name": "B", "phone": "+79215550012", "channel": "call"})).await;
    lead(&app, json!({"name": "C", "phone": "+79215550013", "channel": "web_form"})).await;
    give(&app, a, &m).await;
    // Touched at once: within its deadline.
    app.store.log_activity(a, "call", &json!({}), "user:m", Some(m.id), &Access::of(Some(&m.as_ref()))).await.unwrap();
    let html = app.ui_get(&s, "/dashboard").await.text();
    assert!(html.contains("id=\"dash-total\">3<"), "{html}");
    let funnel = html.split("id=\"funnel\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(funnel.contains("New</td><td class=\"num\">2<") && funnel.contains("In progress</td><td class=\"num\">1<"), "{funnel}");
    assert!(html.contains("id=\"sla-percent\">100%<"), "{html}");
    // Chart data rides in an attribute, escaped.
    assert!(
        html.contains("data-chart=\"{&#34;data&#34;") || html.contains("data-chart=\"{&quot;"),
        "chart config escaped in the attribute"
    );
}

#[tokio::test]
async fn arrivals_fall_on_the_viewers_local_days() {
    use voronka_store::analytics::DayCount;
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let clock = voronka_domain::TestClock::new(at("2026-03-10T20:30:00Z"));
    let app = spawn_app_with(AppConfig::default(), std::sync::Arc::new(clock.clone())).await;
    // 20:30 UTC on 10 March is 23:30 in Moscow (UTC+3); an hour later it is the 11th there.
    lead(&app, json!({"phone": "+79215550021", "channel": "call"})).await;
    clock.advance(chrono::Duration::hours(1));
    lead(&app, json!({"phone": "+79215550022", "channel": "call"})).await;
    lead(&app, json!({"phone": "+79215550023", "channel": "web_form"})).await;
    clock.advance(chrono::Duration::days(2));
    lead(&app, json!({"phone": "+79215550024", "channel": "web_form"})).await;
    let to = voronka_store::Ts::from(at("2026-03-12T21:30:01Z"));
    let day = |d: &str| at(&format!("{d}T00:00:00Z")).timestamp() / 86_400;
    let count = |d: &str, channel: &str, count: i64| DayCount { day: day(d), channel: channel.into(), count };

    let moscow = app.store.arrivals(&Access::All, voronka_store::Ts::from(at("2026-03-09T21:00:00Z")), to, 3 * 3600).await.unwrap();
    assert_eq!(
        moscow.per_day,
        [
            count("2026-03-10", "call", 1),
            count("2026-03-11", "call", 1),
            count("2026-03-11", "web_form", 1),
            count("2026-03-13", "web_form", 1)
        ]
    );
    assert_eq!(moscow.funnel, [("new".to_string(), 4)]);
    let utc = app.store.arrivals(&Access::All, voronka_store::Ts::from(at("2026-03-10T00:00:00Z")), to, 0).await.unwrap();
    assert_eq!(utc.per_day, [count("2026-03-10", "call", 2), count("2026-03-10", "web_form", 1), count("2026-03-12", "web_form", 1)]);
    // The period's bounds hold inside a day: from 21:00 UTC the first lead is left out.
    let later = app.store.arrivals(&Access::All, voronka_store::Ts::from(at("2026-03-10T21:00:00Z")), to, 0).await.unwrap();
    assert_eq!(later.funnel, [("new".to_string(), 3)]);
    // A manager sees only own leads.
    let m = app.user("m@example.com", "manager", PASSWORD).await;
    let none = app.store.arrivals(&Access::Own(m.id), voronka_store::Ts::from(at("2026-03-01T00:00:00Z")), to, 0).await.unwrap();
    assert!(none.per_day.is_empty() && none.funnel.is_empty(), "{none:?}");
}

/// The dashboard's arrivals and funnel and the kanban's counts, as a viewer who sees every
/// lead gets them (on SQLite from the arrival counts where they can), against the same
/// figures read from the leads themselves (a viewer of the unowned leads: every lead here).
async fn arrival_figures(app: &TestApp, from: &str, to: voronka_store::Ts) -> voronka_store::analytics::Arrivals {
    let from = voronka_store::Ts::from(from.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    let all = app.store.arrivals(&Access::All, from, to, 3 * 3600).await.unwrap();
    let direct = Access::Team { team_id: None, user_id: Uuid::nil() };
    assert_eq!(all, app.store.arrivals(&direct, from, to, 3 * 3600).await.unwrap(), "counted and direct agree");
    assert_eq!(app.store.status_counts(&Access::All).await.unwrap(), app.store.status_counts(&direct).await.unwrap());
    all
}

#[tokio::test]
async fn arrival_counts_follow_new_changed_and_removed_leads() {
    use voronka_domain::Clock;
    use voronka_store::analytics::DayCount;
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let clock = voronka_domain::TestClock::new(at("2026-03-10T10:30:00Z"));
    let app = spawn_app_with(AppConfig::default(), std::sync::Arc::new(clock.clone())).await;
    let sqlite = backend() == "sqlite";
    // One lead a batch: a second lead of an hour adds to the count the first made.
    let index = || async {
        while app.store.index_words(1).await.unwrap() > 0 {}
        assert_eq!(app.store.unindexed_leads().await.unwrap(), 0);
    };
    let now = || voronka_store::Ts::from(clock.now() + chrono::Duration::seconds(1));
    // Moscow days (UTC+3); 10:30 UTC on the 10th is 13:30 there.
    let day = |d: &str| at(&format!("{d}T00:00:00Z")).timestamp() / 86_400;
    let count = |d: &str, channel: &str, count: i64| DayCount { day: day(d), channel: channel.into(), count };
    let funnel = |f: &[(&str, i64)]| f.iter().map(|(s, n)| (s.to_string(), *n)).collect::<Vec<_>>();

    let first = lead(&app, json!({"phone": "+79215550031", "channel": "call"})).await;
    let second = lead(&app, json!({"phone": "+79215550032", "channel": "call"})).await;
    clock.advance(chrono::Duration::hours(1));
    lead(&app, json!({"phone": "+79215550033", "channel": "web_form"})).await;
    clock.advance(chrono::Duration::days(1));
    lead(&app, json!({"phone": "+79215550034", "channel": "web_form"})).await;
    clock.advance(chrono::Duration::minutes(30));
    let expected = [count("2026-03-10", "call", 2), count("2026-03-10", "web_form", 1), count("2026-03-11", "web_form", 1)];
    // Not counted yet (read from the leads), then counted; a period from the middle of an
    // hour leaves that hour's earlier leads out.
    for counted in [false, true] {
        if counted {
            index().await;
        }
        let a = arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await;
        assert_eq!((a.per_day, a.funnel), (expected.to_vec(), funnel(&[("new", 4)])), "counted: {counted}");
        let a = arrival_figures(&app, "2026-03-10T10:45:00Z", now()).await;
        assert_eq!(a.per_day, expected[1..], "counted: {counted}");
    }

    // A lead in the hour now running, then in a whole hour not counted yet.
    lead(&app, json!({"phone": "+79215550035", "channel": "call"})).await;
    let a = arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await;
    assert!(a.per_day.contains(&count("2026-03-11", "call", 1)), "{:?}", a.per_day);
    clock.advance(chrono::Duration::hours(1));
    assert_eq!(arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await.funnel, funnel(&[("new", 5)]));

    // Counted leads of one hour change state: the funnel follows at once.
    for id in [first, second] {
        let body = json!({"status": "junk", "reason": "spam"});
        let r = app.call("POST", &format!("/api/v1/leads/{id}/status"), &app.token, Some(&body)).await;
        assert!(r.status < 300, "{}", r.text());
    }
    let a = arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await;
    assert_eq!(a.funnel, funnel(&[("junk", 2), ("new", 3)]));
    assert_eq!(a.per_day[0], count("2026-03-10", "call", 2), "the arrival stays");
    index().await;
    assert_eq!(arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await.funnel, funnel(&[("junk", 2), ("new", 3)]));

    // Counted leads removed by an import's undo, then a new lead in the same hour that may
    // take the last one's rowid again (SQLite): counted at once, onto the hour's counts.
    let r = app.upload("/api/v1/imports", &app.token, "a.csv", b"Name,Phone\nA,+79215550036\nB,+79215550037\n", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(app.wait_import(&id).await["created"], 2);
    index().await;
    let a = arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await;
    assert_eq!(a.funnel, funnel(&[("junk", 2), ("new", 5)]));
    let r = app.call("POST", &format!("/api/v1/imports/{id}/undo"), &app.token, None).await;
    assert_eq!(r.json()["removed"], 2, "{}", r.text());
    assert_eq!(arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await.funnel, funnel(&[("junk", 2), ("new", 3)]));
    lead(&app, json!({"phone": "+79215550038", "channel": "import"})).await;
    if sqlite {
        assert_eq!(app.store.unindexed_leads().await.unwrap(), 0, "the rowid was taken again, at or below the mark");
    }
    for later in [false, true] {
        if later {
            clock.advance(chrono::Duration::hours(1));
        }
        let a = arrival_figures(&app, "2026-03-09T21:00:00Z", now()).await;
        assert_eq!(a.funnel, funnel(&[("junk", 2), ("new", 4)]), "the hour whole: {later}");
        assert_eq!(a.per_day.iter().filter(|d| d.channel == "import").map(|d| d.count).sum::<i64>(), 1);
    }
}

#[tokio::test]
async fn settings_editors_check_like_the_api_and_save() {
    let app = spawn_app().await;
    let admin = app.user("a@example.com", "admin", PASSWORD).await;
    let s = app.ui_login("a@example.com", PASSWORD).await;

    // Scoring: a bad rule is named; a good model saves and re-scores.
    let mut model = app.get("/api/v1/scoring/model", Some(&app.token)).await.json();
    model["rules"][0]["points"] = json!("many");
    let bad = app.ui_post(&s, "/settings/scoring", &[("model", &model.to_string())]).await;
    assert_eq!(bad.status, 422);
    let html = bad.text();
    let rule = model["rules"][0]["id"].as_str().unwrap();
    assert!(html.contains(rule) && html.contains("many"), "the rule is named and the typed model kept: {html}");
    let bad = app.ui_post(&s, "/settings/scoring", &[("model", "{not json")]).await;
    assert_eq!(bad.status, 400);
    model["rules"][0]["points"] = json!(7);
    let ok = app.ui_post(&s, "/settings/scoring", &[("model", &model.to_string())]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.text().contains("re-scored"));
    assert_eq!(app.get("/api/v1/scoring/model", Some(&app.token)).await.json()["rules"][0]["points"], json!(7.0));

    // Workflow settings: one editor at a time, checked.
    let bad = app.ui_post(&s, "/settings/workflow", &[("key", "slas"), ("slas", "[{\"seconds\": -5}]")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("slas"));
    let cal = json!({"timezone": "Mars/Olympus", "hours": {}});
    let bad = app.ui_post(&s, "/settings/workflow", &[("key", "calendar"), ("calendar", &cal.to_string())]).await;
    assert_eq!(bad.status, 422);
    let scripts = json!([{"name": "Холодный звонок", "body": "Здравствуйте! Меня зовут…"}]);
    assert_eq!(app.ui_post(&s, "/settings/workflow", &[("key", "scripts"), ("scripts", &scripts.to_string())]).await.status, 303);
    let id = lead(&app, json!({"name": "Скрипт", "phone": "+79215550014"})).await;
    assert!(app.ui_get(&s, &format!("/leads/{id}")).await.text().contains("Меня зовут"));

    // Reasons: a bad line is named; a good list replaces the old.
    let bad =
        app.ui_post(&s, "/settings/reasons", &[("kind", "refused"), ("lines", "expensive | Too expensive | Дорого\nno pipes here")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("line 2"));
    assert_eq!(
        app.ui_post(
            &s,
            "/settings/reasons",
            &[("kind", "refused"), ("lines", "expensive | Too expensive | Дорого\nlater | Not now | Не сейчас")]
        )
        .await
        .status,
        303
    );
    let reasons = app.store.reasons(Some("refused")).await.unwrap();
    assert_eq!(reasons.iter().filter(|r| r.active).map(|r| r.code.as_str()).collect::<Vec<_>>(), ["expensive", "later"]);

    // Users: created with a schedule; a bad schedule is named.
    let r = app
        .ui_post(
            &s,
            "/settings/users",
            &[
                ("email", "new@example.com"),
                ("name", "Новенькая"),
                ("role", "manager"),
                ("level", "senior"),
                ("password", "long enough pass"),
                ("timezone", "Asia/Vladivostok"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let u = app.store.user_by_email("new@example.com").await.unwrap().unwrap();
    assert_eq!((u.level.as_str(), u.timezone.as_str()), ("senior", "Asia/Vladivostok"));
    let path = format!("/settings/users/{}", u.id);
    let r = app
        .ui_post(
            &s,
            &path,
            &[
                ("hours_mon", "10:00-14:00, 15:00-19:00"),
                ("hours_sat", "10:00-12:00"),
                ("vacations", "2027-07-01..2027-07-14"),
                ("days_off", "2027-01-07"),
                ("timezone", "Asia/Vladivostok"),
                ("name", "Новенькая"),
                ("email", "new@example.com"),
                ("role", "manager"),
                ("level", "senior"),
                ("capacity", "30"),
                ("active", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let u = app.store.user(u.id).await.unwrap().unwrap();
    assert_eq!(u.hours.mon.len(), 2);
    assert_eq!(u.hours.sat, vec![["10:00".to_string(), "12:00".to_string()]]);
    assert_eq!(u.hours.tue, Vec::<[String; 2]>::new());
    assert_eq!((u.capacity, u.vacations.len(), u.days_off.len()), (30, 1, 1));
    let bad = app.ui_post(&s, &path, &[("hours_mon", "morning")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("hours.mon"));
    let bad = app.ui_post(&s, &format!("/settings/users/{}", admin.id), &[("active", "")]).await;
    assert_eq!(bad.status, 422, "an admin cannot switch off their own account");
    // The new user logs in with the password set here.
    app.ui_login("new@example.com", "long enough pass").await;

    // Tokens: shown once, work on the API, stop working when revoked.
    let r = app.ui_post(&s, "/settings/tokens", &[("name", "1C"), ("scope", "leads:read")]).await;
    assert_eq!(r.status, 200);
    let html = r.text();
    let token = html.split("id=\"new-token\">").nth(1).unwrap().split('<').next().unwrap().to_string();
    assert!(token.starts_with("vk_"));
    assert_eq!(app.get("/api/v1/leads", Some(&token)).await.status, 200);
    assert!(!app.ui_get(&s, "/settings/tokens").await.text().contains(&token), "never shown again");
    let listed = app.store.list_tokens().await.unwrap().into_iter().find(|t| t.name == "1C").unwrap();
    assert_eq!(app.ui_post(&s, &format!("/settings/tokens/{}/revoke", listed.id), &[]).await.status, 303);
    assert_eq!(app.get("/api/v1/leads", Some(&token)).await.status, 401);

    // Sources: a site and a form, with embed codes to copy.
    assert_eq!(
        app.ui_post(&s, "/settings/sites", &[("name", "Главный"), ("origins", "https://example.ru, https://www.example.ru/")]).await.status,
        303
    );
    let bad = app.ui_post(&s, "/settings/sites", &[("name", "Плохой"), ("origins", "example.ru")]).await;
    assert_eq!(bad.status, 422);
    assert!(bad.text().contains("origins"));
    let site = app.store.sites().await.unwrap().remove(0);
    assert_eq!(site.origins, ["https://example.ru", "https://www.example.ru"]);
    assert_eq!(
        app.ui_post(
            &s,
            "/settings/forms",
            &[("name", "Заявка"), ("site_id", &site.id.to_string()), ("channel", "web_form"), ("campaign", "spring")]
        )
        .await
        .status,
        303
    );
    let html = app.ui_get(&s, "/settings/sources").await.text();
    let form = app.store.forms().await.unwrap().remove(0);
    assert!(
        html.contains(&format!("/f/{}", form.form_key)) && html.contains(&format!("data-site-key=&#34;{}&#34;", site.site_key)),
        "{html}"
    );
}

#[tokio::test]
async fn language_follows_accept_language_then_the_user() {
    let app = spawn_app().await;
    app.user("a@example.com", "admin", PASSWORD).await;
    let ru =
        send(app.addr, app.req("GET", "/login").header("accept-language", "ru-RU,ru;q=0.9,en;q=0.8").body(Default::default()).unwrap())
            .await;
    assert!(ru.text().contains("<html lang=\"ru\">") && ru.text().contains("Пароль"));
    let en = send(app.addr, app.req("GET", "/login").header("accept-language", "en-GB").body(Default::default()).unwrap()).await;
    assert!(en.text().contains("Password"));
    let chosen = app.get("/login?lang=ru", None).await;
    assert!(chosen.text().contains("Пароль"));
    assert_eq!(set_cookie_value(&chosen, "vk_lang").as_deref(), Some("ru"));

    let s = app.ui_login("a@example.com", PASSWORD).await;
    assert!(app.ui_get(&s, "/inbox").await.text().contains(">Inbox<"));
    let r = app.ui_post(&s, "/me/lang", &[("lang", "ru"), ("back", "/kanban")]).await;
    assert_eq!(r.header("location").as_deref(), Some("/kanban"));
    let html = app.ui_get(&s, "/kanban").await.text();
    assert!(html.contains("<html lang=\"ru\">") && html.contains(">Входящие<") && html.contains("Отказ"));
    assert_eq!(app.ui_post(&s, "/me/lang", &[("lang", "de")]).await.status, 422);
    assert_eq!(
        app.ui_post(&s, "/me/lang", &[("lang", "en"), ("back", "https://evil.example")]).await.header("location").as_deref(),
        Some("/inbox")
    );
}

/// What the public internet may put into a lead: tags, handlers, `javascript:` URLs.
pub const XSS: &[&str] = &[
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=2\">",
    "\"><svg onload=window.__xss=3>",
    "javascript:window.__xss=4",
    "' onmouseover='window.__xss=5",
    "</textarea><script>window.__xss=6</script>",
    "{{7*7}}<iframe src=javascript:window.__xss=7>",
];

#[tokio::test]
async fn an_xss_corpus_in_every_field_is_escaped_on_every_page() {
    let app = spawn_app().await;
    let admin = app.user("a@example.com", "admin", PASSWORD).await;
    let form = app.store.create_form(&voronka_store::FormSpec { name: "Форма".into(), ..Default::default() }).await.unwrap();
    let fields = [
        "name",
        "company",
        "position",
        "city",
        "message",
        "interest",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "referrer",
        "landing_page",
        "custom",
    ];
    for (i, payload) in XSS.iter().enumerate() {
        let mut pairs: Vec<(String, String)> = fields.iter().map(|f| (f.to_string(), payload.to_string())).collect();
        pairs.push(("phone".into(), format!("+7921555{:04}", 100 + i)));
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        let r = send(
            app.addr,
            app.req("POST", &format!("/f/{}", form.form_key))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        )
        .await;
        assert!(r.status < 300, "{}", r.text());
    }
    let leads = app.list("limit=50").await["items"].as_array().unwrap().clone();
    assert_eq!(leads.len(), XSS.len());
    let first: Uuid = leads[0]["id"].as_str().unwrap().parse().unwrap();
    app.store
        .create_task(
            first,
            &voronka_store::workflow::NewTask { kind: "call", title: XSS[0], due: None, assignee: Some(admin.id) },
            "t",
            &Access::All,
        )
        .await
        .unwrap();
    let s = app.ui_login("a@example.com", PASSWORD).await;
    let mut pages: Vec<String> =
        ["/inbox", "/inbox?sort=created", "/inbox/rows", "/kanban", "/tasks", "/dashboard"].iter().map(|p| p.to_string()).collect();
    pages.extend(leads.iter().map(|l| format!("/leads/{}", l["id"].as_str().unwrap())));
    for p in &pages {
        let html = app.ui_get(&s, p).await.text();
        for bad in ["<script>window", "<img src=x", "<svg onload", "<iframe", "onmouseover='", "href=\"javascript:", "</textarea><script"] {
            assert!(!html.contains(bad), "{p} contains {bad:?} unescaped");
        }
    }
    // And the escaped text is there, so the test looks at the right pages.
    let card = app.ui_get(&s, &format!("/leads/{first}")).await.text();
    assert!(card.contains("&#60;script&#62;window.__xss=1&#60;/script&#62;") || card.contains("&lt;script&gt;"), "{card}");
}

#[tokio::test]
async fn the_hosted_form_page_posts_into_intake() {
    let app = spawn_app().await;
    let form = app.store.create_form(&voronka_store::FormSpec { name: "Заявка на демо".into(), ..Default::default() }).await.unwrap();
    let r =
        send(app.addr, app.req("GET", &format!("/f/{}", form.form_key)).header("accept-language", "ru").body(Default::default()).unwrap())
            .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-security-policy").unwrap().contains("script-src 'self'"));
    let html = r.text();
    assert!(html.contains("Заявка на демо") && html.contains(&format!("action=\"/f/{}\"", form.form_key)) && html.contains("name=\"_hp\""));
    assert_eq!(app.get("/f/f_unknown", None).await.status, 404);
}
