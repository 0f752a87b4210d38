//! The `callbackd` daemon: a thin CLI over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::{error, info};

use callbackd::config::Config;

#[derive(Parser)]
#[command(
    name = "callbackd",
    version,
    about = "SIP/RTP engine for contact-center callbacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file for `run` (the default command).
    #[arg(long, short, global = true, default_value = "config.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine (the default).
    Run,
    /// Validate a configuration file and its prompt files; exit non-zero
    /// naming the field and the reason when something is wrong.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Write the call detail records (one row per leg: inbound, agent,
    /// customer) as CSV to standard output.
    Cdr {
        /// Only legs that started at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<jiff::Timestamp>,
        /// Only legs that started before this RFC 3339 time.
        #[arg(long)]
        until: Option<jiff::Timestamp>,
        /// Only the outbound legs of callbacks of this type: `ivr`, `api`
        /// or `missed_call` (automatic callbacks of missed calls).
        #[arg(long = "type", value_parser = parse_source)]
        source: Option<callbackd::callback::store::Source>,
    },
    /// Inspect the stored callbacks (the store named by the configuration).
    Callbacks {
        #[command(subcommand)]
        command: CallbacksCommand,
    },
    /// Write the organisation in force — the stored one, else the
    /// configuration's — as TOML (`[org]`, `[[queues]]`, `[[agents]]`,
    /// agents' passwords included) to standard output.
    Export,
    /// Store the `[org]`, `[[queues]]` and `[[agents]]` of a configuration
    /// file as the organisation's next version (checked first; a running
    /// engine takes it at its next start).
    Import {
        /// The file (a whole configuration, or just those sections).
        file: PathBuf,
    },
    /// Manage the admin API's users (in the store named by the
    /// configuration; works while the engine runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print a fresh API token for it, once (this is how
    /// the first admin is made).
    Add {
        /// The user's name (1..=64 of A-Z a-z 0-9 - _ . @).
        name: String,
        /// admin, manager or viewer.
        #[arg(long, value_parser = parse_role)]
        role: callbackd::callback::store::Role,
        /// A business unit to give the user (repeatable; each must exist).
        #[arg(long = "unit")]
        units: Vec<String>,
    },
    /// Issue another API token for a user and print it, once.
    Token {
        /// The user.
        name: String,
        /// Refuse the token from this RFC 3339 time on.
        #[arg(long)]
        expires: Option<jiff::Timestamp>,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Set a user's console password, read from the first line of standard
    /// input.
    Passwd {
        /// The user.
        name: String,
    },
}

#[derive(Subcommand)]
enum CallbacksCommand {
    /// Print every stored callback, numbers in plain digits.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        // The same path as `run`: load, then check into settings.
        // The capacity is given for the open-files limit `run` would have:
        // the hard limit, to which it raises the soft one.
        Command::CheckConfig { file } => {
            let open_files = open_files_limit().map(|(_, hard)| hard);
            let checked = Config::load(&file)
                .and_then(|c| c.check(base_dir(&file)))
                .and_then(|settings| match open_files {
                    Ok(n) => settings.check_capacity(n).map(Some),
                    Err(_) => Ok(None),
                });
            match checked {
                Ok(capacity) => {
                    println!("{}: ok", file.display());
                    match capacity {
                        Some(capacity) => println!("{capacity}"),
                        None => println!("capacity: unknown (the open-files limit cannot be read)"),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => run(&cli.config),
        Command::Export => match export(&cli.config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Import { file } => match import(&cli.config, &file) {
            Ok(version) => {
                println!("organisation version {version} stored");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Callbacks {
            command: CallbacksCommand::List,
        } => list_callbacks(&cli.config),
        Command::Cdr {
            since,
            until,
            source,
        } => write_cdrs(&cli.config, since, until, source),
        Command::User { command } => match user_command(&cli.config, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn parse_source(text: &str) -> Result<callbackd::callback::store::Source, String> {
    callbackd::callback::store::Source::parse(text)
        .ok_or_else(|| format!("unknown type {text:?} (expected ivr, api or missed_call)"))
}

fn parse_role(text: &str) -> Result<callbackd::callback::store::Role, String> {
    callbackd::callback::store::Role::parse(text)
        .ok_or_else(|| format!("{text:?} is not a role (admin, manager or viewer)"))
}

/// `callbackd user …`; the error is the message to print.
fn user_command(path: &Path, command: UserCommand) -> Result<(), String> {
    use callbackd::callback::store::accounts::hash_password;
    use callbackd::callback::store::{
        AccountStore, Change, NewToken, NewUser, SqliteStore, TokenSecret,
    };
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let store_path = config.store_path(base_dir(path));
    // WAL and a busy timeout: safe beside a running engine.
    let mut store = SqliteStore::open(&store_path).map_err(|e| e.to_string())?;
    let change = Change {
        actor: "cli".to_owned(),
        at: jiff::Timestamp::now(),
    };
    let issue = |store: &mut SqliteStore,
                 name: &str,
                 label: String,
                 expires_at: Option<jiff::Timestamp>|
     -> Result<(), String> {
        if let Some(at) = expires_at.filter(|at| *at <= change.at) {
            return Err(format!("--expires: {at} is in the past"));
        }
        let secret = TokenSecret::generate()
            .map_err(|e| format!("cannot draw a token from the OS random source: {e}"))?;
        let info = store
            .issue_token(
                &NewToken {
                    user: name.to_owned(),
                    label,
                    expires_at,
                    hash: secret.hash,
                },
                &change,
            )
            .map_err(|e| e.to_string())?;
        let expiry = info
            .expires_at
            .map_or_else(|| "no expiry".to_owned(), |t| format!("expires {t}"));
        eprintln!(
            "API token {} for {name:?} ({expiry}); it is shown once, keep it:",
            info.id
        );
        println!("{}", secret.text);
        Ok(())
    };
    match command {
        UserCommand::Add { name, role, units } => {
            let user = store
                .create_user(&NewUser { name, role, units }, &change)
                .map_err(|e| e.to_string())?;
            eprintln!("user {:?} created ({})", user.name, user.role);
            issue(&mut store, &user.name, "cli".to_owned(), None)
        }
        UserCommand::Token {
            name,
            expires,
            label,
        } => issue(&mut store, &name, label, expires),
        UserCommand::Passwd { name } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from standard input: {e}"))?;
            let password = line.strip_suffix('\n').unwrap_or(&line);
            let password = password.strip_suffix('\r').unwrap_or(password);
            let phc = hash_password(password).map_err(|e| format!("password: {e}"))?;
            store
                .set_password(&name, Some(&phc), &change)
                .map_err(|e| e.to_string())?;
            eprintln!("password of {name:?} set");
            Ok(())
        }
    }
}

fn write_cdrs(
    path: &Path,
    since: Option<jiff::Timestamp>,
    until: Option<jiff::Timestamp>,
    source: Option<callbackd::callback::store::Source>,
) -> ExitCode {
    use callbackd::callback::cdr::write_csv;
    use callbackd::callback::store::{LaunchStore, SqliteStore};
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store_path = config.store_path(base_dir(path));
    let mut rows = match SqliteStore::open(&store_path).and_then(|store| store.cdrs(since, until)) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(source) = source {
        rows.retain(|r| r.source == Some(source));
    }
    let stdout = std::io::stdout();
    match write_csv(&rows, &mut stdout.lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing CSV: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list_callbacks(path: &Path) -> ExitCode {
    use callbackd::callback::store::{SqliteStore, Store, format_list};
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let store_path = config.store_path(base_dir(path));
    let rows = SqliteStore::open(&store_path).and_then(|store| store.list());
    match rows {
        Ok(rows) => {
            print!("{}", format_list(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Relative paths in a configuration are resolved against its directory.
fn base_dir(config: &Path) -> &Path {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The organisation in force, as TOML.
fn export(path: &Path) -> Result<String, String> {
    use callbackd::callback::store::{OrganisationStore, SqliteStore};
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let store_path = config.store_path(base_dir(path));
    let stored = if store_path.exists() {
        SqliteStore::open(&store_path)
            .and_then(|store| store.organisation())
            .map_err(|e| e.to_string())?
    } else {
        None
    };
    Ok(match stored {
        Some(stored) => format!(
            "# callbackd organisation version {}, stored {} by {}\n{}",
            stored.version, stored.changed_at, stored.changed_by, stored.document
        ),
        None => format!(
            "# callbackd organisation from {} (not stored yet)\n{}",
            path.display(),
            config.organisation().to_toml()
        ),
    })
}

/// Stores `file`'s organisation as the next version; returns it.
fn import(config_path: &Path, file: &Path) -> Result<u64, String> {
    use callbackd::callback::store::{OrganisationStore, SqliteStore};
    use callbackd::config::Organisation;
    let settings = Config::load(config_path)
        .and_then(|c| c.check(base_dir(config_path)))
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let document = Config::from_toml_str(&text, &file.display().to_string())
        .map_err(|e| e.to_string())?
        .organisation();
    // Every rule, with the engine's sections of the running configuration.
    settings
        .with_organisation(document.clone())
        .map_err(|e| e.to_string())?;
    let mut store = SqliteStore::open(settings.store_path()).map_err(|e| e.to_string())?;
    let stored = store.organisation().map_err(|e| e.to_string())?;
    let base = stored.as_ref().map_or(0, |s| s.version);
    let before = match &stored {
        Some(s) => Some(Organisation::from_toml(&s.document).map_err(|e| e.to_string())?),
        None => None,
    };
    callbackd::engine::organisation::save(
        &mut store,
        base,
        &document,
        "import_organisation",
        before.as_ref(),
    )
    .map_err(|e| e.to_string())
}

fn run(path: &Path) -> ExitCode {
    let base_dir = base_dir(path);
    let settings = match Config::load(path).and_then(|c| c.check(base_dir)) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The stored organisation wins over the file's (seeded from it on the
    // first start).
    let (settings, org_version) =
        match callbackd::engine::organisation::adopt_organisation(settings) {
            Ok(adopted) => adopted,
            Err(e) => {
                eprintln!("{e} (`callbackd import FILE` stores a valid one)");
                return ExitCode::FAILURE;
            }
        };
    // Every call holds descriptors (RTP and RTCP sockets per leg), so does
    // every TCP connection: raise the soft limit before anything opens.
    let open_files = match raise_open_files() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot read the open-files limit: {e}");
            return ExitCode::FAILURE;
        }
    };
    let capacity = match settings.check_capacity(open_files) {
        Ok(capacity) => capacity,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "callbackd={}",
            tracing::Level::from(settings.log().level)
        ))
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    tracing::info!(open_files, "{capacity}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = settings.api().enabled.then_some(settings.api().bind);
    let mut api_options = callbackd::api::ApiOptions::new(&settings);
    api_options.org_version = org_version;
    let webhooks = callbackd::engine::webhooks::WebhookSettings::from(settings.webhooks());
    let store_path = settings.store_path().to_owned();
    let drain = settings.call().drain();
    let config_path = path.to_owned();
    runtime.block_on(async move {
        let engine = match callbackd::engine::start(settings).await {
            Ok(engine) => engine,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Webhook deliveries from the store's outbox, on their own
        // connection; what the last process left pending goes first.
        let counted = api_options.metrics.clone();
        let webhook_worker = callbackd::engine::webhooks::WebhookWorker::start_observed(
            store_path,
            webhooks,
            move |step| {
                use callbackd::api::metrics::DeliveryResult;
                use callbackd::callback::webhook::Step;
                counted.webhook_delivery(match step {
                    Step::Delivered => DeliveryResult::Delivered,
                    Step::Retry { .. } => DeliveryResult::Retried,
                    Step::GiveUp => DeliveryResult::Failed,
                });
            },
        );
        // The admin API beside the engine; it answers (health: draining)
        // until the engine has stopped.
        let api = match api {
            Some(bind) => {
                match callbackd::api::ApiServer::start(bind, engine.control(), api_options).await {
                    Ok(api) => Some(api),
                    Err(e) => {
                        error!("{e}");
                        engine.shutdown().await;
                        return ExitCode::FAILURE;
                    }
                }
            }
            None => None,
        };
        // SIGHUP reloads the engine's settings from the file.
        tokio::spawn(reload_on_sighup(config_path, engine.control()));
        // SIGTERM drains: new calls are refused (503) while the calls in
        // progress finish, for up to call.drain_s; a second signal hangs
        // up at once.
        wait_for_signal().await;
        info!(
            drain_s = drain.as_secs(),
            "stopping: draining (send SIGTERM again to hang up at once)"
        );
        let control = engine.control();
        control.drain(drain).await;
        let stopped = engine.wait();
        tokio::pin!(stopped);
        tokio::select! {
            () = &mut stopped => {}
            () = wait_for_signal() => {
                info!("second signal: hanging up every call");
                control.drain(std::time::Duration::ZERO).await;
                stopped.await;
            }
        }
        webhook_worker.stop();
        if let Some(api) = api {
            api.shutdown().await;
        }
        ExitCode::SUCCESS
    })
}

/// The open-files limit, (soft, hard).
fn open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the rlimit it is given, which lives on
    // this stack frame for the whole call; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // rlim_t is u64 on Linux.
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft open-files limit to the hard one (Linux refuses more
/// than `fs.nr_open` even under an unlimited hard limit) and returns the
/// soft limit in effect.
fn raise_open_files() -> std::io::Result<u64> {
    let (soft, hard) = open_files_limit()?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let target = hard.min(nr_open);
    if soft >= target {
        return Ok(soft);
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the rlimit it is given, which outlives
    // the call; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("open-files limit stays at {soft}: {e}");
        return Ok(soft);
    }
    Ok(target)
}

/// On every SIGHUP: reads and checks the configuration file again and
/// hands the engine its allow-lists, trunk and prompts (the organisation
/// stays the stored one). A file that fails its checks, or a prompt that
/// cannot be loaded, is logged with the field and the running settings
/// stay. Listeners, ports and limits take a restart.
async fn reload_on_sighup(path: PathBuf, control: callbackd::engine::EngineControl) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            error!("cannot handle SIGHUP (reload): {e}");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        info!(file = %path.display(), "SIGHUP: reloading the configuration");
        let file = path.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let settings = Config::load(&file)
                .and_then(|c| c.check(base_dir(&file)))
                .map_err(|e| e.to_string())?;
            callbackd::engine::organisation::adopt_organisation(settings)
                .map(|(settings, _)| settings)
                .map_err(|e| e.to_string())
        })
        .await;
        let settings = match checked {
            Ok(Ok(settings)) => settings,
            Ok(Err(e)) => {
                error!("configuration not reloaded, the running one stays: {e}");
                continue;
            }
            Err(e) => {
                error!("configuration not reloaded, the running one stays: {e}");
                continue;
            }
        };
        match control.reload(settings).await {
            Ok(()) => info!("configuration reloaded: allow-lists, trunk, prompts"),
            Err(e) => error!("configuration not reloaded, the running one stays: {e}"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
