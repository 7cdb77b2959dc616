//! The `authgate` command: parse the CLI, load the config, run until a signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use authgate::store::redis::RedisStore;
use clap::{Parser, Subcommand};

use authgate::config::{Config, EXIT_CONFIG};
use authgate::settings::Settings;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "ext_authz authentication gateway for Envoy and Istio"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// End sessions everywhere at once: every replica reads the same store.
    Revoke {
        /// End every session of this user (as the user header shows it, without prefix).
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        user: Option<String>,
        /// End every session of every user.
        #[arg(long)]
        all: bool,
    },
    /// How many sessions exist.
    Count,
}

#[derive(Subcommand)]
enum TokensAction {
    /// Revoke personal access tokens everywhere at once (sessions stay).
    Revoke {
        /// Every token of this user (as the user header shows it, without prefix).
        #[arg(long, conflicts_with_all = ["id", "all"], required_unless_present_any = ["id", "all"])]
        user: Option<String>,
        /// The token with this id.
        #[arg(long, conflicts_with = "all")]
        id: Option<String>,
        /// Every token of every person (sessions stay: `sessions revoke --all` ends those).
        #[arg(long)]
        all: bool,
    },
    /// How many personal access tokens exist.
    Count,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP ext_authz.
    Serve {
        /// YAML config file.
        #[arg(long, env = "AUTHGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective one (secrets redacted).
    CheckConfig {
        /// YAML config file.
        #[arg(long, env = "AUTHGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Show what the policy makes of one request: its path, the matching rule, the namespace,
    /// and the SubjectAccessReview that would be sent (with --kubeconfig: the live answer).
    Explain {
        /// YAML config file.
        #[arg(long, env = "AUTHGATE_CONFIG")]
        config: Option<PathBuf>,
        /// User name as Kubernetes knows it.
        #[arg(long)]
        user: String,
        /// A group of the user (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Ask this cluster for the live answer.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// HTTP method, e.g. GET.
        method: String,
        /// URL (`https://host/path?query`) or path.
        url: String,
    },
    /// Manage browser sessions in the shared (Redis) store.
    Sessions {
        /// YAML config file.
        #[arg(long, env = "AUTHGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Manage personal access tokens in the shared (Redis) store.
    Tokens {
        /// YAML config file.
        #[arg(long, env = "AUTHGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TokensAction,
    },
    /// Get a personal access token for the command line through your browser, and keep it
    /// (in ~/.config/authgate/tokens.json, readable only by you).
    Login {
        /// The gateway, e.g. https://kubeflow.example.com.
        #[arg(long)]
        url: String,
        /// The token's name (default: authgate-cli@<this host>).
        #[arg(long)]
        name: Option<String>,
        /// How long it lives (at most the gateway's personal_tokens.max_lifetime).
        #[arg(long, default_value = "30d")]
        expires_in: String,
        /// Limit it to these namespaces (repeatable); none: wherever you may.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
    },
    /// Print the kept token for a gateway, for scripts (kfp.Client(existing_token=…), curl).
    Token {
        /// The gateway.
        #[arg(long)]
        url: String,
    },
    /// Revoke the kept token at the gateway and forget it.
    Logout {
        /// The gateway.
        #[arg(long)]
        url: String,
    },
    /// Write a new Ed25519 signing key (PKCS#8 PEM) for the identity JWT.
    Keygen {
        /// Where to write it; `-` for standard output.
        #[arg(long, short, default_value = "-")]
        out: PathBuf,
        /// Also write the public key (SPKI PEM) here, e.g. for `extra_public_key_files`.
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server also exports traces when the OTEL_* variables ask, from inside its runtime
    // (the gRPC exporter's channel lives there); every other command only logs.
    let runtime = matches!(cli.command, Command::Serve { .. })
        .then(|| tokio::runtime::Runtime::new().expect("tokio runtime"));
    let telemetry = match &runtime {
        Some(runtime) => runtime.block_on(async { authgate::telemetry::init(true) }),
        None => authgate::telemetry::init(false),
    };
    let telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("authgate: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Serve { config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = runtime.expect("made for serve");
            let stopped = runtime.block_on(serve(config));
            telemetry.shutdown();
            match stopped {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "authgate stopped");
                    eprintln!("authgate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok(settings) => {
                print!("{}", settings.config().redacted_yaml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Explain {
            config,
            user,
            groups,
            kubeconfig,
            method,
            url,
        } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let question = authgate::explain::Question {
                user,
                groups,
                method,
                url,
            };
            let explanation = authgate::explain::explain(&config, &question);
            let config = config.config();
            print!("{}", explanation.report);
            match (kubeconfig, explanation.review) {
                (Some(kubeconfig), Some(review)) => {
                    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
                    match runtime.block_on(live_answer(config, kubeconfig, &review)) {
                        Ok(answer) => {
                            println!("live answer:     {answer}");
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("authgate explain: {e:#}");
                            ExitCode::FAILURE
                        }
                    }
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Command::Sessions { config, action } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(sessions(config.config(), action)) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authgate sessions: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tokens { config, action } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(tokens(config.config(), action)) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("authgate tokens: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Login {
            url,
            name,
            expires_in,
            namespaces,
        } => {
            let asked = authgate::client::Asked {
                name: name.unwrap_or_else(default_token_name),
                expires_in,
                namespaces,
            };
            client_command("login", async {
                let gateway = authgate::client::gateway(&url)?;
                let saved = authgate::client::login(&gateway, &asked).await?;
                Ok(format!(
                    "logged in at {gateway} as {}: token {} ({}), expires {}; `authgate token --url {url}` prints it",
                    saved.user, saved.name, saved.id, saved.expires_at
                ))
            })
        }
        Command::Token { url } => client_command("token", async {
            let gateway = authgate::client::gateway(&url)?;
            match authgate::client::saved(&gateway)? {
                Some(saved) => {
                    if authgate::client::expired(&saved) {
                        eprintln!(
                            "authgate token: the token kept for {gateway} expired at {}: run authgate login --url {url}",
                            saved.expires_at
                        );
                    }
                    Ok(saved.token)
                }
                None => anyhow::bail!("no token for {gateway}: run authgate login --url {url}"),
            }
        }),
        Command::Logout { url } => client_command("logout", async {
            let gateway = authgate::client::gateway(&url)?;
            Ok(match authgate::client::logout(&gateway).await? {
                Some(saved) => format!("revoked and forgot token {} ({})", saved.name, saved.id),
                None => format!("no token kept for {gateway}"),
            })
        }),
        Command::Keygen { out, public_out } => match keygen(&out, public_out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("authgate keygen: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Loads the config, printing every problem and returning exit code 64 on failure. Notes (such
/// as mapped oidc-authservice variables) go to stderr.
fn load(file: Option<&Path>) -> Result<Settings, ExitCode> {
    let settings = Settings::load(file).map_err(|e| {
        eprintln!("authgate: {e}");
        ExitCode::from(EXIT_CONFIG as u8)
    })?;
    for note in settings.notes() {
        eprintln!("authgate: note: {note}");
    }
    Ok(settings)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = authgate::App::build(settings)
        .await
        .context("cannot start")?;
    let running = app.start().await.context("cannot start")?;
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight checks");
    running.shutdown().await;
    Ok(())
}

async fn live_answer(
    config: &Config,
    kubeconfig: PathBuf,
    review: &authgate::authz::sar::AccessRequest,
) -> anyhow::Result<String> {
    use authgate::authz::sar::{AccessReviewApi, KubeAccessReview};
    let mut k8s = config.kubernetes.clone();
    k8s.kubeconfig = Some(kubeconfig);
    let client = authgate::k8s::client(&k8s).await?;
    let answer = KubeAccessReview::new(client, k8s.timeout)
        .review(review)
        .await?;
    Ok(if answer.allowed {
        format!("allowed ({})", answer.reason)
    } else {
        format!("denied → 403 ({})", answer.reason)
    })
}

/// The shared store, for commands that manage what every replica reads.
async fn shared_store(config: &Config, what: &str) -> anyhow::Result<RedisStore> {
    if config.session.store != authgate::config::StoreKind::Redis {
        anyhow::bail!(
            "session.store is memory: {what} live inside each running authgate and end when it \
             restarts; use the redis store to manage them from outside"
        );
    }
    Ok(RedisStore::connect(&config.session).await?)
}

async fn sessions(config: &Config, action: SessionsAction) -> anyhow::Result<String> {
    use authgate::store::{SessionStore, TokenStore};
    let store = shared_store(config, "sessions").await?;
    Ok(match action {
        SessionsAction::Revoke {
            user: Some(user), ..
        } => {
            // The departed collaborator: their command-line tokens end with their sessions.
            let n = store.delete_user(&user).await?;
            let tokens = store.revoke_tokens_of(&user).await?;
            tracing::info!(target: "authgate::audit", event = "revoke", user = %user, sessions = n, tokens, "sessions and personal access tokens revoked");
            format!("revoked {n} session(s) and {tokens} personal access token(s) of {user}")
        }
        SessionsAction::Revoke { all: true, .. } => {
            let n = store.delete_all().await?;
            tracing::info!(target: "authgate::audit", event = "revoke_all", sessions = n, "all sessions revoked");
            format!("revoked {n} session(s)")
        }
        SessionsAction::Revoke { .. } => anyhow::bail!("name --user or --all"),
        SessionsAction::Count => format!("{} session(s)", store.count().await?),
    })
}

async fn tokens(config: &Config, action: TokensAction) -> anyhow::Result<String> {
    use authgate::store::TokenStore;
    let store = shared_store(config, "personal access tokens").await?;
    Ok(match action {
        TokensAction::Revoke {
            user: Some(user), ..
        } => {
            let n = store.revoke_tokens_of(&user).await?;
            tracing::info!(target: "authgate::audit", event = "token_revoked", user = %user, tokens = n, by = "cli", "personal access tokens revoked");
            format!("revoked {n} personal access token(s) of {user}")
        }
        TokensAction::Revoke { id: Some(id), .. } => match store.revoke_token_id(&id).await? {
            Some(user) => {
                tracing::info!(target: "authgate::audit", event = "token_revoked", user = %user, id = %id, by = "cli", "personal access token revoked");
                format!("revoked personal access token {id} of {user}")
            }
            None => anyhow::bail!("no personal access token has id {id}"),
        },
        TokensAction::Revoke { all: true, .. } => {
            let n = store.revoke_all_tokens().await?;
            tracing::info!(target: "authgate::audit", event = "token_revoked", tokens = n, by = "cli", scope = "all", "every personal access token revoked");
            format!("revoked {n} personal access token(s)")
        }
        TokensAction::Revoke { .. } => anyhow::bail!("name --user, --id or --all"),
        TokensAction::Count => format!("{} personal access token(s)", store.count_tokens().await?),
    })
}

/// Runs a client command; prints what it says, or why it failed.
fn client_command(
    name: &str,
    command: impl std::future::Future<Output = anyhow::Result<String>>,
) -> ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(command) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authgate {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `authgate-cli@<host name>`.
fn default_token_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this-computer".into());
    let name = format!("authgate-cli@{host}");
    name.chars().take(64).collect()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn keygen(out: &Path, public_out: Option<&Path>) -> anyhow::Result<()> {
    let pem = authgate::signing::generate_key_pem();
    if let Some(public_out) = public_out {
        std::fs::write(public_out, authgate::signing::public_key_pem(&pem)?)
            .with_context(|| format!("cannot write {}", public_out.display()))?;
    }
    if out == Path::new("-") {
        print!("{pem}");
        return Ok(());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    file.write_all(pem.as_bytes())?;
    eprintln!("wrote a new Ed25519 signing key to {}", out.display());
    Ok(())
}
