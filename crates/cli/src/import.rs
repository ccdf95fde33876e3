//! `voronka import FILE`: leads from a CSV or XLSX file through the intake, with a progress
//! bar, a dry run, the report of every row, resumption of an interrupted run (start the same
//! command again) and the undo of a whole import.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;
use voronka_domain::PhoneRegion;
use voronka_server::import::{self, ImportError, ImportRequest};
use voronka_store::Store;
use voronka_store::imports::ImportInfo;

#[derive(Args)]
pub struct ImportArgs {
    /// The CSV (UTF-8 or Windows-1251; `,`, `;` or tab) or XLSX file.
    #[arg(required_unless_present_any = ["undo", "list"])]
    file: Option<PathBuf>,
    /// Where the file came from; the leads' source, and the name the column mapping is
    /// saved under for the next file (default: the file's name).
    #[arg(long)]
    source: Option<String>,
    /// Campaign for every lead (unless a row names its own).
    #[arg(long)]
    campaign: Option<String>,
    /// COLUMN=FIELD: map a column to a lead field (`=` alone ignores the column); repeatable,
    /// saved for the source.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    map: Vec<String>,
    /// Check the file and forecast each row (created, repeat, rejected) without writing leads.
    #[arg(long)]
    dry_run: bool,
    /// Write the report of every row (CSV) here.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Undo a finished import: remove the leads it created and the repeat requests it added.
    #[arg(long, value_name = "IMPORT_ID", conflicts_with_all = ["file", "list"])]
    undo: Option<Uuid>,
    /// List recent imports.
    #[arg(long, conflicts_with = "file")]
    list: bool,
    /// Region for phones written without a country code.
    #[arg(long, env = "VORONKA_PHONE_REGION", default_value = "RU")]
    phone_region: String,
    /// Language of the report and messages: ru or en.
    #[arg(long, env = "VORONKA_LANG", default_value = "ru")]
    lang: String,
    /// No progress bar (logs and scripts).
    #[arg(long)]
    quiet: bool,
}

fn actor() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

pub async fn run(store: &Store, a: ImportArgs) -> Result<()> {
    let ru = a.lang.to_lowercase().starts_with("ru");
    if a.list {
        for i in store.imports(50).await? {
            println!("{}", summary(&i, ru));
        }
        return Ok(());
    }
    if let Some(id) = a.undo {
        let info = store.import_info(id).await?.with_context(|| format!("no import {id}"))?;
        let lang = if ru { voronka_domain::Lang::Ru } else { voronka_domain::Lang::En };
        if let Some(why) = voronka_server::api::imports::undo_refusal(&info) {
            bail!("{}", why.message(lang));
        }
        let r = match store.undo_import(id, &actor()).await {
            Ok(r) => r,
            Err(e) => bail!("{}", voronka_server::api::imports::undo_error(e).message(lang)),
        };
        if ru {
            println!(
                "импорт {id} отменён: удалено лидов {}, оставлено (с ними работали) {}, снято повторных обращений {}",
                r.removed, r.kept, r.repeats_removed
            );
        } else {
            println!(
                "import {id} undone: {} leads removed, {} kept (worked on), {} repeat requests removed",
                r.removed, r.kept, r.repeats_removed
            );
        }
        return Ok(());
    }
    let Some(path) = a.file else { bail!("no file given") };
    let region: PhoneRegion = a.phone_region.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "import.csv".into());
    let mut mapping = Map::new();
    for m in &a.map {
        let Some((col, field)) = m.split_once('=') else { bail!("--map {m:?}: write COLUMN=FIELD") };
        mapping.insert(col.trim().to_string(), Value::String(field.trim().to_string()));
    }
    let worker = format!("cli:{}:{}", std::process::id(), Uuid::now_v7());
    let request = || ImportRequest {
        source: a.source.clone().unwrap_or_else(|| file_name.clone()),
        file_name: file_name.clone(),
        bytes: Bytes::from(bytes.clone()),
        mapping: mapping.clone(),
        campaign: a.campaign.clone(),
        dry_run: a.dry_run,
        actor: actor(),
        keep_file: false,
        region,
    };
    // An earlier run of this file that was killed holds its lease a few seconds more.
    let started = Instant::now();
    let prepared = loop {
        match import::prepare(store, request(), &worker).await {
            Err(ImportError::Busy(id)) if started.elapsed() < import::LEASE + Duration::from_secs(5) => {
                if !a.quiet {
                    eprintln!(
                        "{}",
                        if ru {
                            format!("импорт {id} занят другим процессом, ждём…")
                        } else {
                            format!("import {id} is held by another process; waiting…")
                        }
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(ImportError::Invalid { field, text, detail }) => {
                let t = if ru { text.ru } else { text.en };
                bail!("{field}: {t}{}", detail.map(|d| format!(" ({d})")).unwrap_or_default())
            }
            Err(ImportError::File(e)) => bail!("{}", if ru { e.ru } else { e.en }),
            Err(e) => return Err(e.into()),
            Ok(p) => break p,
        }
    };
    let sheet = &prepared.sheet;
    if !a.quiet {
        let how = match sheet.delimiter {
            Some(d) => format!("CSV, {}, {}", sheet.encoding, if d == '\t' { "tab".to_string() } else { format!("'{d}'") }),
            None => "XLSX".into(),
        };
        eprintln!(
            "{} {} ({how}): {} {}",
            if prepared.resumed() {
                if ru { "продолжаем импорт" } else { "resuming import" }
            } else if ru {
                "импорт"
            } else {
                "import"
            },
            prepared.info.id,
            sheet.total,
            if ru { "строк" } else { "rows" }
        );
    }
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(sheet.total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} ETA {eta} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let on_progress = move |p: import::Progress| {
        b.set_position(p.processed);
        b.set_message(format!("+{} ↻{} ✗{}", p.counts.created + p.counts.returned, p.counts.repeats, p.counts.rejected));
    };
    let result = import::run(store, prepared, &worker, &on_progress).await;
    bar.finish_and_clear();
    let info = result?;
    println!("{}", summary(&info, ru));
    if let Some(path) = a.report {
        let csv = import::report_csv(store, info.id, ru).await?;
        std::fs::write(&path, csv).with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("{} {}", if ru { "отчёт:" } else { "report:" }, path.display());
    } else if info.rejected > 0 {
        println!(
            "{}",
            if ru {
                format!("отклонённые строки с причинами: voronka import --report ФАЙЛ … или GET /api/v1/imports/{}/report.csv", info.id)
            } else {
                format!("rejected rows with reasons: voronka import --report FILE … or GET /api/v1/imports/{}/report.csv", info.id)
            }
        );
    }
    Ok(())
}

fn summary(i: &ImportInfo, ru: bool) -> String {
    let kind = if i.dry_run { if ru { " (пробный прогон)" } else { " (dry run)" } } else { "" };
    if ru {
        format!(
            "{} {} «{}» {}{kind}: статус {}, новых {}, повторных {}, вернувшихся {}, отклонено {}",
            i.id,
            i.created_at.rfc3339(),
            i.source,
            i.file_name,
            i.status,
            i.created,
            i.repeats,
            i.returned,
            i.rejected
        )
    } else {
        format!(
            "{} {} \"{}\" {}{kind}: {}, created {}, repeat {}, returning {}, rejected {}",
            i.id,
            i.created_at.rfc3339(),
            i.source,
            i.file_name,
            i.status,
            i.created,
            i.repeats,
            i.returned,
            i.rejected
        )
    }
}
