//! `voronka`: one binary for the server and its operations — serve, migrate, tokens,
//! forms, sites, and the benchmark.

mod bench;
mod import;

// A faster allocator for the request path (many small allocations per request).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use voronka_domain::{PhoneRegion, SystemClock};
use voronka_server::{AppConfig, AppState};
use voronka_store::{FormSpec, Store, StoreConfig};

#[derive(Parser)]
#[command(name = "voronka", version, about = "Voronka — lead management / управление лидами")]
struct Cli {
    /// Database: sqlite://PATH or postgres://USER@HOST/DB
    #[arg(long, global = true, env = "VORONKA_DATABASE_URL", default_value = "sqlite://./voronka.db")]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: API, public endpoints, background work.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Public forms that landing pages post to.
    Form {
        #[command(subcommand)]
        command: FormCommand,
    },
    /// Sites that embed the tracker.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Import leads from a CSV or XLSX file through the intake (dedup, scoring); resumable,
    /// with a dry run, a report of every row, and undo.
    Import(import::ImportArgs),
    /// Build the search index and the dashboard's arrival counts anew from the leads
    /// (SQLite; after a `VACUUM` or a dump loaded without `--preserve-rowids`).
    Reindex,
    /// Benchmarks of the running system (see README, Performance).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address and port to listen on; port 0 picks a free port.
    #[arg(long, env = "VORONKA_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Region for phones written without a country code (ISO 3166 code).
    #[arg(long, env = "VORONKA_PHONE_REGION", default_value = "RU")]
    phone_region: String,
    /// Largest request body in bytes.
    #[arg(long, env = "VORONKA_BODY_LIMIT", default_value_t = 64 * 1024)]
    body_limit: usize,
    /// Public form submissions allowed per client IP per minute.
    #[arg(long, env = "VORONKA_FORM_RATE_PER_MINUTE", default_value_t = 20)]
    form_rate_per_minute: u32,
    /// Read the client IP from X-Forwarded-For and the scheme from X-Forwarded-Proto (only
    /// behind a trusted reverse proxy).
    #[arg(long, env = "VORONKA_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Mark the UI's session cookie Secure: the site is served over HTTPS.
    #[arg(long, env = "VORONKA_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Let outbound webhooks reach loopback addresses (local development and tests only;
    /// private, link-local and other internal addresses stay refused).
    #[arg(long, env = "VORONKA_WEBHOOK_ALLOW_LOOPBACK")]
    webhook_allow_loopback: bool,
    /// Database connections in the pool.
    #[arg(long, env = "VORONKA_DB_CONNECTIONS", default_value_t = 16)]
    db_connections: u32,
    /// Intake writer tasks (PostgreSQL; SQLite always has one writer).
    #[arg(long, env = "VORONKA_INTAKE_WRITERS", default_value_t = 4)]
    intake_writers: usize,
    /// Seconds between refreshes of the stored scores lists sort by (decay, priority window).
    #[arg(long, env = "VORONKA_SCORE_REFRESH_SECONDS", default_value_t = 600)]
    score_refresh_seconds: u64,
    /// Log format.
    #[arg(long, env = "VORONKA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only the token) on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// leads:read, leads:write, events:write or admin; repeatable (default: leads:read leads:write).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The e-mail of the user the token acts as (sees what the user sees).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print the user's id.
    Create {
        #[arg(long)]
        email: String,
        /// admin, head_of_sales, manager, telemarketer or marketer.
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// junior or senior.
        #[arg(long)]
        level: Option<String>,
        /// The team's name (created when new).
        #[arg(long)]
        team: Option<String>,
        /// IANA time zone, e.g. Europe/Moscow.
        #[arg(long)]
        timezone: Option<String>,
    },
}

#[derive(Subcommand)]
enum FormCommand {
    /// Create a form and print its key.
    Create {
        #[arg(long)]
        name: String,
        /// Where the visitor is sent after a submission (303).
        #[arg(long)]
        thank_you: Option<String>,
        /// Channel recorded on its leads.
        #[arg(long, default_value = "web_form")]
        channel: String,
        /// Campaign recorded on its leads.
        #[arg(long)]
        campaign: Option<String>,
        /// Name of the hidden honeypot field.
        #[arg(long, default_value = "_hp")]
        honeypot: String,
        /// Field mapping as JSON: {"their_field": "lead_field", …}.
        #[arg(long)]
        field_map: Option<String>,
    },
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Create a site and print its key.
    Create {
        #[arg(long)]
        name: String,
        /// Origins allowed to send tracker events (https://example.ru); repeatable.
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(a) => a.log_format,
        _ => LogFormat::Text,
    };
    init_logs(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VORONKA_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn open(url: &str) -> Result<Store> {
    Store::open(&StoreConfig::new(url), Arc::new(SystemClock)).await
}

async fn run(cli: Cli) -> Result<()> {
    let url = cli.database_url;
    match cli.command {
        Command::Serve(args) => serve(&url, args).await,
        Command::Migrate => {
            Store::migrate(&url).await?;
            println!("migrated");
            Ok(())
        }
        Command::Reindex => {
            let store = open(&url).await?;
            if !store.reset_search_index().await? {
                println!("nothing to do: PostgreSQL keeps its search index itself / нечего делать: PostgreSQL ведёт поисковый индекс сам");
                store.close().await;
                return Ok(());
            }
            let (total, started) = (store.unindexed_leads().await?, std::time::Instant::now());
            let mut done = 0usize;
            loop {
                let n = store.index_words(20_000).await?;
                if n == 0 {
                    break;
                }
                done += n;
                eprint!("\r  {done}/{total}");
            }
            if done > 0 {
                eprintln!();
            }
            store.close().await;
            println!(
                "reindexed {done} leads in {:.1} s / переиндексировано лидов: {done} за {:.1} с",
                started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Token { command: TokenCommand::Create { name, scopes, user } } => {
            let store = open(&url).await?;
            let scopes: Vec<String> = scopes.iter().flat_map(|s| s.split([',', ' '])).filter(|s| !s.is_empty()).map(String::from).collect();
            let (_, token) = match user {
                None => store.create_token(&name, &scopes).await?,
                Some(email) => {
                    let u = store.user_by_email(&email).await?.ok_or_else(|| anyhow::anyhow!("no user with e-mail {email}"))?;
                    if scopes.iter().any(|s| s == "admin") && u.role != "admin" {
                        anyhow::bail!("only an admin's token may have the admin scope");
                    }
                    store.create_user_token(u.id, &name, &scopes).await?
                }
            };
            println!("{token}");
            store.close().await;
            Ok(())
        }
        Command::User { command: UserCommand::Create { email, role, name, password_stdin, level, team, timezone } } => {
            let store = open(&url).await?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).context("cannot read the password from stdin")?;
                Some(line.trim_end_matches(['\n', '\r']).to_string())
            } else {
                None
            };
            let team_id = match team {
                None => None,
                Some(t) => Some(match store.teams().await?.into_iter().find(|x| x.name == t) {
                    Some(x) => x.id,
                    None => store.create_team(&t).await?.id,
                }),
            };
            let spec = voronka_store::users::UserSpec {
                email: Some(email),
                role: Some(role),
                name,
                password,
                level,
                team_id,
                timezone,
                ..Default::default()
            };
            let problems = spec.check(true);
            if let Some((field, en, _)) = problems.first() {
                anyhow::bail!("{field}: {en}");
            }
            let user = store.create_user(&spec).await?;
            println!("{}", user.id);
            store.close().await;
            Ok(())
        }
        Command::Form { command: FormCommand::Create { name, thank_you, channel, campaign, honeypot, field_map } } => {
            let store = open(&url).await?;
            let field_map = match field_map {
                None => Default::default(),
                Some(s) => match serde_json::from_str::<serde_json::Value>(&s).context("--field-map is not JSON")? {
                    serde_json::Value::Object(m) => m,
                    _ => anyhow::bail!("--field-map must be a JSON object"),
                },
            };
            let spec = FormSpec {
                name,
                thank_you_url: thank_you,
                site_id: None,
                channel: Some(channel),
                campaign,
                honeypot_field: Some(honeypot),
                field_map,
            };
            let form = store.create_form(&spec).await?;
            println!("{}", form.form_key);
            store.close().await;
            Ok(())
        }
        Command::Site { command: SiteCommand::Create { name, origins } } => {
            let store = open(&url).await?;
            let site = store.create_site(&name, &origins).await?;
            println!("{}", site.site_key);
            store.close().await;
            Ok(())
        }
        Command::Import(args) => {
            let store = open(&url).await?;
            let r = import::run(&store, args).await;
            store.close().await;
            r
        }
        Command::Bench { command } => bench::run(command).await,
    }
}

async fn serve(url: &str, args: ServeArgs) -> Result<()> {
    let region: PhoneRegion = args.phone_region.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let mut cfg = StoreConfig::new(url);
    cfg.pool.max_connections = args.db_connections;
    cfg.writers = args.intake_writers;
    let store = Store::open(&cfg, Arc::new(SystemClock)).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let app_cfg = AppConfig {
        region,
        body_limit: args.body_limit,
        form_rate_per_minute: args.form_rate_per_minute,
        trust_forwarded_for: args.trust_forwarded_for,
        secure_cookies: args.secure_cookies,
        webhook_allow_loopback: args.webhook_allow_loopback,
        ..AppConfig::default()
    };
    let state = AppState::new(store.clone(), app_cfg);
    let jobs = [
        voronka_server::jobs::spawn_upkeep(state.clone(), std::time::Duration::from_secs(600)),
        voronka_server::jobs::spawn_score_refresh(state.clone(), std::time::Duration::from_secs(args.score_refresh_seconds.max(10))),
        voronka_server::jobs::spawn_workflow(state.clone(), std::time::Duration::from_secs(1)),
        voronka_server::jobs::spawn_search_index(state.clone()),
        voronka_server::jobs::spawn_vacuum(state.clone(), std::time::Duration::from_secs(60)),
    ];
    tracing::info!(%addr, database = store.backend().name(), "voronka serving");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    voronka_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped accepting; in-flight requests finished");
    // The background jobs stop before the database closes under them; a pass cut short is
    // rolled back and its outbox messages, held under a lease, are taken up again later.
    for job in jobs {
        job.abort();
        let _ = job.await;
    }
    store.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
