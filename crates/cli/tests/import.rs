//! `voronka import` as a process: a Windows-1251 file imported without any mapping, a dry
//! run, the report file, an import killed half-way and started again (no duplicates, every
//! row done once), and undo.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use voronka_domain::SystemClock;
use voronka_store::CountOf;
use voronka_store::{Store, StoreConfig};
use voronka_testkit::{TempDir, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_voronka");

fn voronka(args: &[&str], url: &str) -> std::process::Output {
    Command::new(BIN).args(args).env("VORONKA_DATABASE_URL", url).env("NO_COLOR", "1").output().expect("run voronka")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_windows_1251_file_imports_with_no_mapping_and_a_report() {
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let file = dir.0.join("база.csv");
    let csv = "ФИО;Телефон;Почта;Компания\r\nИванов;8 921 555 10 01;ivanov@mail.ru;ООО Альфа\r\nПетров;;;\r\nИванов И.;+79215551001;;\r\n";
    std::fs::write(&file, encoding_rs::WINDOWS_1251.encode(csv).0).unwrap();
    let report = dir.0.join("report.csv");
    let f = file.to_str().unwrap();

    let dry = voronka(&["import", f, "--dry-run", "--quiet", "--lang", "en"], &db.url);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("(dry run): done, created 1, repeat 1, returning 0, rejected 1"), "{}", text(&dry.stdout));

    let out = voronka(&["import", f, "--report", report.to_str().unwrap(), "--lang", "en"], &db.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("done, created 1, repeat 1, returning 0, rejected 1"), "{stdout}");
    assert!(text(&out.stderr).contains("CSV, windows-1251, ';'"), "{}", text(&out.stderr));
    let rep = std::fs::read_to_string(&report).unwrap();
    assert!(rep.contains("\"3\",\"rejected\",\"\",\"no phone, e-mail or messenger\""), "{rep}");

    let store = Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await.unwrap();
    assert_eq!(store.count(CountOf::Leads).await.unwrap(), 1);
    let id = store.imports(10).await.unwrap().into_iter().find(|i| !i.dry_run).unwrap().id.to_string();
    let undo = voronka(&["import", "--undo", &id, "--lang", "en"], &db.url);
    assert!(undo.status.success(), "{}", text(&undo.stderr));
    assert!(text(&undo.stdout).contains("1 leads removed, 0 kept"), "{}", text(&undo.stdout));
    assert_eq!(store.count(CountOf::Leads).await.unwrap(), 0);
    let again = voronka(&["import", "--undo", &id, "--lang", "ru"], &db.url);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("импорт уже отменён"), "{}", text(&again.stderr));
    store.close().await;
}

#[tokio::test]
async fn an_import_killed_half_way_finishes_when_started_again_without_duplicates() {
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let file = dir.0.join("big.csv");
    // 40,000 rows, 30,000 people: every fourth row is a person seen three rows earlier.
    let rows = 40_000u32;
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(w, "Имя,Телефон,Город").unwrap();
    let mut people = HashSet::new();
    for i in 0..rows {
        let person = if i % 4 == 3 { i - 3 } else { i };
        people.insert(person);
        writeln!(w, "Клиент {i},+7 921 {:07},Пермь", person).unwrap();
    }
    drop(w);
    let f = file.to_str().unwrap();
    let migrate = voronka(&["migrate"], &db.url);
    assert!(migrate.status.success(), "{}", text(&migrate.stderr));
    let store = Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await.unwrap();

    let mut child = Command::new(BIN)
        .args(["import", f, "--quiet"])
        .env("VORONKA_DATABASE_URL", &db.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let id = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "the import never started writing");
        if let Some(i) = store.imports(1).await.unwrap().first()
            && store.import_counts(i.id).await.unwrap().total() >= 2_000
        {
            break i.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.kill().unwrap(); // SIGKILL: no chance to finish anything
    child.wait().unwrap();
    let half = store.import_counts(id).await.unwrap().total();
    assert!(half < rows as i64, "killed before the end ({half} rows done)");

    let again = voronka(&["import", f, "--lang", "en"], &db.url);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains(&format!("resuming import {id}")), "{}", text(&again.stderr));
    let info = store.import_info(id).await.unwrap().unwrap();
    assert_eq!(info.status, "done");
    assert_eq!(info.created + info.repeats + info.returned + info.rejected, rows as i64, "{info:?}");
    assert_eq!(info.created, people.len() as i64, "{info:?}");
    assert_eq!(info.repeats, (rows as usize - people.len()) as i64);
    assert_eq!(store.count(CountOf::Leads).await.unwrap(), people.len() as i64, "one lead per person");
    assert_eq!(store.count(CountOf::Identities).await.unwrap(), people.len() as i64);
    assert_eq!(store.imports(10).await.unwrap().len(), 1, "the same run was resumed");
    store.close().await;
}

/// `voronka reindex`: on SQLite the search index and the dashboard's arrival counts, lost or
/// wrong (as after a `VACUUM` renumbered the leads' rowids), are built anew from the leads;
/// on PostgreSQL there is nothing to do.
#[tokio::test]
async fn reindex_builds_the_search_index_and_the_arrival_counts_anew() {
    use voronka_store::users::Access;
    let db = TestDb::new().await;
    let dir = TempDir::new();
    let file = dir.0.join("leads.csv");
    std::fs::write(&file, "Name,Phone,Email\nАнна Reindex,+79215552001,anna@example.ru\nBoris,+79215552002,\nVera,+79215552003,\n")
        .unwrap();
    let out = voronka(&["import", file.to_str().unwrap(), "--quiet", "--lang", "en"], &db.url);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = voronka(&["reindex"], &db.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let Some(path) = db.url.strip_prefix("sqlite://") else {
        assert!(text(&out.stdout).contains("nothing to do"), "{}", text(&out.stdout));
        return;
    };
    assert!(text(&out.stdout).contains("reindexed 3 leads"), "{}", text(&out.stdout));
    let conn = rusqlite::Connection::open(path).unwrap();
    let int = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    // The derived data wrong in every way it can be: counts lost and changed, index emptied.
    conn.execute_batch(
        "DELETE FROM arrivals_by_status; UPDATE arrivals_by_channel SET n = 99; \
         INSERT INTO lead_words (lead_words) VALUES ('delete-all');",
    )
    .unwrap();
    assert_eq!(int("SELECT count(*) FROM lead_words WHERE lead_words MATCH '\"reindex\"'"), 0);
    let out = voronka(&["reindex"], &db.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reindexed 3 leads"), "{}", text(&out.stdout));
    assert_eq!(int("SELECT count(*) FROM lead_words WHERE lead_words MATCH '\"reindex\"'"), 1);
    assert_eq!(int("SELECT SUM(n) FROM arrivals_by_channel"), 3);
    assert_eq!(int("SELECT SUM(n) FROM arrivals_by_status"), 3);
    assert_eq!(int("SELECT indexed_to FROM lead_words_state"), int("SELECT MAX(rowid) FROM leads"));
    let store = Store::open(&StoreConfig::new(&db.url), Arc::new(SystemClock)).await.unwrap();
    assert_eq!(store.status_counts(&Access::All).await.unwrap(), [("new".to_string(), 3)]);
    store.close().await;
}
