//! The soak run of issue 5: steady mixed load through a real Envoy into authgate (the release
//! binary, as deployed) for a set time, sampling authgate's resident memory and counting every
//! answer that was not the expected one. Run it through `scripts/soak.sh` (release build, test
//! peers, writes `docs/soak.md`); by hand:
//!
//! ```sh
//! cargo build --release --bin authgate --example soak
//! target/release/examples/soak [--minutes 10] [--out FILE] [--command "…"]
//! ```
//!
//! The mix, all at once:
//! - **browsers**: people with sessions (memory store) opening notebooks; sessions end by
//!   `max_age`, and the browser logs in again through the real OIDC provider;
//! - **login churn**: a new browser logs in every second and is abandoned (its session ends by
//!   the idle timeout), so sessions are created and expire all the time;
//! - **workloads**: 100 service accounts with projected-token stand-ins, on paths with and
//!   without a SubjectAccessReview rule, in and out of their own namespace (200 and 403);
//! - **denials**: no credential (401), made-up tokens (401, or 429 once the review budget is
//!   spent), another team's namespace (403).
//!
//! An answer outside the expected set for its kind is an error; the run fails on any error.
//! Memory is judged after the warm-up (sessions and caches at their steady size): the report
//! gives the growth from then to the end.

#[path = "../tests/suite/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kube_api::{Binding, Fixture, KubeApi, PolicyRule, Rbac, Subject};
use support::oidc::{self, ALICE, BOB, NAVIGATION_ACCEPT};
use support::process::AuthgateProcess;
use support::{Envoy, ExtAuthz, KFP_AUDIENCE, free_port, sa_token};

const WORKLOADS: usize = 100;
const TEAMS: usize = 10;
const BROWSERS: usize = 6;
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let minutes: f64 = flag("--minutes")
        .map(|m| m.parse().expect("--minutes is a number"))
        .unwrap_or(10.0);
    let out = flag("--out").map(PathBuf::from);
    let command = flag("--command").unwrap_or_else(|| args.join(" "));
    let report = soak(Duration::from_secs_f64(minutes * 60.0), &command).await;
    println!("{}", report.text);
    if let Some(out) = out {
        std::fs::write(&out, &report.text).expect("write report");
        eprintln!("written to {}", out.display());
    }
    if !report.passed {
        std::process::exit(1);
    }
}

/// What each kind of request may be answered with; anything else is an error.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Browser,
    Login,
    Workload,
    WorkloadOtherTeam,
    NoCredential,
    MadeUpToken,
}

impl Kind {
    fn expected(self) -> &'static [u16] {
        match self {
            // 302: the session reached max_age; the browser logs in again.
            Kind::Browser => &[200, 302],
            Kind::Login => &[200],
            Kind::Workload => &[200],
            Kind::WorkloadOtherTeam => &[403],
            Kind::NoCredential => &[401],
            Kind::MadeUpToken => &[401, 429],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Browser => "browser with a session",
            Kind::Login => "new login (full OIDC journey)",
            Kind::Workload => "service account, own namespace",
            Kind::WorkloadOtherTeam => "service account, other namespace",
            Kind::NoCredential => "no credential",
            Kind::MadeUpToken => "made-up bearer token",
        }
    }
}

#[derive(Default)]
struct Tally {
    /// (kind, status) -> count
    answers: BTreeMap<(Kind, u16), u64>,
    /// The first few unexpected answers, for the report.
    examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: Kind, status: u16, what: &str) {
        *self.answers.entry((kind, status)).or_default() += 1;
        if !kind.expected().contains(&status) && self.examples.len() < 10 {
            self.examples
                .push(format!("{}: {status} for {what}", kind.name()));
        }
    }

    fn total(&self) -> u64 {
        self.answers.values().sum()
    }

    fn errors(&self) -> u64 {
        self.answers
            .iter()
            .filter(|((kind, status), _)| !kind.expected().contains(status))
            .map(|(_, n)| n)
            .sum()
    }
}

struct Sample {
    at: Duration,
    rss: u64,
    requests: u64,
    errors: u64,
    sessions: f64,
}

struct Report {
    text: String,
    passed: bool,
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A metric's value from authgate's `/metrics` (first series of that name).
async fn metric(http: &reqwest::Client, metrics_url: &str, name: &str) -> f64 {
    let Ok(response) = http.get(metrics_url).send().await else {
        return f64::NAN;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn fixture() -> Fixture {
    let tokens = (0..WORKLOADS)
        .map(|i| {
            sa_token(
                &format!("soak-token-{i}"),
                &format!("team-{}", i % TEAMS),
                &format!("runner-{i}"),
                &[KFP_AUDIENCE],
            )
        })
        .collect();
    // Each team's service accounts may read notebooks in their own namespace only.
    let mut bindings: Vec<Binding> = (0..TEAMS)
        .map(|t| Binding {
            namespace: format!("team-{t}"),
            subject: Subject::Group(format!("system:serviceaccounts:team-{t}")),
            rules: vec![PolicyRule {
                api_groups: vec!["kubeflow.org".into()],
                resources: vec!["notebooks".into()],
                verbs: vec!["get".into(), "list".into()],
            }],
        })
        .collect();
    // The people open notebooks in team-a.
    for person in [ALICE.0, BOB.0] {
        bindings.push(Binding {
            namespace: "team-a".into(),
            subject: Subject::User(person.into()),
            rules: vec![PolicyRule {
                api_groups: vec!["kubeflow.org".into()],
                resources: vec!["notebooks".into()],
                verbs: vec!["get".into()],
            }],
        });
    }
    Fixture {
        tokens,
        rbac: Rbac { bindings },
    }
}

/// authgate, the release binary, as its own process (so its memory is its own), with
/// production logging (a JSON line per decision) to a file, as a log shipper would read it.
async fn start_authgate(yaml: String) -> AuthgateProcess {
    let binary = std::env::var_os("SOAK_AUTHGATE_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/authgate"),
        PathBuf::from,
    );
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --release --bin authgate",
        binary.display()
    );
    AuthgateProcess::start(&binary, &yaml).await
}

async fn soak(duration: Duration, command: &str) -> Report {
    let public_port = free_port();
    let public_url = format!("http://127.0.0.1:{public_port}");
    let client = oidc::OidcClient::for_gateway(&public_url, None);
    let provider = oidc::OidcProvider::start(vec![client]).await;
    let kube = KubeApi::start(fixture()).await;
    let yaml = support::login_config_yaml(
        kube.kubeconfig_path(),
        &public_url,
        provider.issuer(),
        0,
        "session: {idle_timeout: 1m, max_age: 2m}\n\
         kubernetes: {token_review: {review_rate: {rps: 20, burst: 150}}}\n\
         api_routes: [/api/]\n\
         authorization:\n  rules:\n\
         \x20 - name: notebooks\n    path: /notebook/{namespace}/{name}/**\n\
         \x20   resource: {group: kubeflow.org, resource: notebooks, verb: get, name: '{name}'}\n",
    );
    let authgate = start_authgate(yaml).await;
    let pid = authgate.child.id();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", authgate.http_port);
    let (upstream, _) = support::echo::start_echo().await;
    let options = support::envoy::Options {
        status_on_error: Some(503),
        listen_port: Some(public_port),
        ..Default::default()
    };
    let envoy = Envoy::start_with(ExtAuthz::Grpc, authgate.grpc, upstream, options).await;
    let url = Arc::new(move |path: &str| format!("{public_url}{path}"));

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();

    // Browsers with sessions; they log in again when the session reaches max_age.
    for b in 0..BROWSERS {
        let (tally, stop, url) = (tally.clone(), stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let user = if b % 2 == 0 { ALICE } else { BOB };
            let mut browser = oidc::browser();
            let mut journey = oidc::browser_login(&browser, &url("/"), user).await;
            tally
                .lock()
                .unwrap()
                .record(Kind::Login, journey.status, "first login");
            while !stop.load(Ordering::Relaxed) {
                let target = url(&format!("/notebook/team-a/nb-{b}/lab"));
                let status = browser
                    .get(&target)
                    .header("accept", NAVIGATION_ACCEPT)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                tally.lock().unwrap().record(Kind::Browser, status, &target);
                if status == 302 {
                    browser = oidc::browser();
                    journey = oidc::browser_login(&browser, &url("/"), user).await;
                    tally
                        .lock()
                        .unwrap()
                        .record(Kind::Login, journey.status, "login again");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Login churn: a new browser every second, used once, abandoned.
    {
        let (tally, stop, url) = (tally.clone(), stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let browser = oidc::browser();
                let journey = oidc::browser_login(&browser, &url("/churn"), ALICE).await;
                tally
                    .lock()
                    .unwrap()
                    .record(Kind::Login, journey.status, "churn login");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    // Workloads and denials, round robin over the service accounts. The made-up tokens start
    // once every workload has been seen (as in a cluster, where the workloads were there first):
    // from then on they compete for the review budget, and the workloads must not notice.
    let flood = Arc::new(AtomicBool::new(false));
    for w in 0..4 {
        let (tally, stop, url, flood) = (tally.clone(), stop.clone(), url.clone(), flood.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                if i % 8 == 7 && !flood.load(Ordering::Relaxed) {
                    i += 4;
                    continue;
                }
                let sa = i % WORKLOADS;
                let team = sa % TEAMS;
                let token = format!("soak-token-{sa}");
                let (kind, path, bearer): (Kind, String, Option<String>) = match i % 8 {
                    0..=2 => (Kind::Workload, format!("/api/v1/runs?i={i}"), Some(token)),
                    3 | 4 => (
                        Kind::Workload,
                        format!("/notebook/team-{team}/nb/api/contents"),
                        Some(token),
                    ),
                    5 => (
                        Kind::WorkloadOtherTeam,
                        format!("/notebook/team-{}/nb/api/contents", (team + 1) % TEAMS),
                        Some(token),
                    ),
                    6 => (Kind::NoCredential, "/api/v1/runs".into(), None),
                    _ => (
                        Kind::MadeUpToken,
                        "/api/v1/runs".into(),
                        Some(format!("made-up-{w}-{i}")),
                    ),
                };
                let mut request = http.get(url(&path));
                if let Some(bearer) = &bearer {
                    request = request.bearer_auth(bearer);
                }
                let status = request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                tally.lock().unwrap().record(kind, status, &path);
                i += 4;
            }
        }));
    }

    // Sampling.
    let started = Instant::now();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut samples = Vec::new();
    let mut next = Duration::ZERO;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= Duration::from_secs(5) {
            flood.store(true, Ordering::Relaxed);
        }
        if elapsed >= next {
            let (requests, errors) = {
                let t = tally.lock().unwrap();
                (t.total(), t.errors())
            };
            let sessions = metric(&http, &metrics_url, "authgate_sessions").await;
            samples.push(Sample {
                at: elapsed,
                rss: rss_of(pid),
                requests,
                errors,
                sessions,
            });
            eprintln!(
                "soak: {:>5.0}s  {requests:>8} requests  {errors} errors  rss {:.1} MiB  sessions {sessions}",
                elapsed.as_secs_f64(),
                rss_of(pid) as f64 / 1048576.0
            );
            next += SAMPLE_EVERY;
        }
        if elapsed >= duration {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let alive = matches!(
        http.get(format!("http://127.0.0.1:{}/healthz", authgate.http_port))
            .send()
            .await,
        Ok(r) if r.status().is_success()
    );
    drop(envoy);
    render(
        &tally.lock().unwrap(),
        &samples,
        started.elapsed(),
        alive,
        command,
    )
}

fn render(tally: &Tally, samples: &[Sample], took: Duration, alive: bool, command: &str) -> Report {
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut text = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        text,
        "Command: `{command}` — {:.1} minutes on {cores} cores, {}.\n",
        took.as_secs_f64() / 60.0,
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    );
    let _ = writeln!(text, "| kind | answers | expected | unexpected |");
    let _ = writeln!(text, "|---|---|---|---|");
    let mut kinds: Vec<Kind> = tally.answers.keys().map(|(k, _)| *k).collect();
    kinds.dedup();
    for kind in kinds {
        let answers: Vec<String> = tally
            .answers
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, s), n)| format!("{s}: {n}"))
            .collect();
        let unexpected: u64 = tally
            .answers
            .iter()
            .filter(|((k, s), _)| *k == kind && !kind.expected().contains(s))
            .map(|(_, n)| n)
            .sum();
        let expected: Vec<String> = kind.expected().iter().map(u16::to_string).collect();
        let _ = writeln!(
            text,
            "| {} | {} | {} | {unexpected} |",
            kind.name(),
            answers.join(", "),
            expected.join(" or ")
        );
    }
    let _ = writeln!(
        text,
        "\n| time | requests | errors | authgate RSS | active sessions |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|");
    for s in samples {
        let _ = writeln!(
            text,
            "| {:.0} s | {} | {} | {:.1} MiB | {} |",
            s.at.as_secs_f64(),
            s.requests,
            s.errors,
            mib(s.rss),
            s.sessions
        );
    }
    // Steady state: after the first sample past two minutes (sessions live at most 2 min, so
    // the store has reached its steady size), or the first sample when the run is shorter.
    let baseline = samples
        .iter()
        .find(|s| s.at >= Duration::from_secs(120))
        .or(samples.first());
    let last = samples.last();
    let growth = match (baseline, last) {
        (Some(b), Some(l)) if b.rss > 0 => (l.rss as f64 - b.rss as f64) / b.rss as f64 * 100.0,
        _ => f64::NAN,
    };
    let errors = tally.errors();
    let _ = writeln!(
        text,
        "\n**{} requests, {errors} unexpected answers; authgate {}; RSS {:.1} MiB at {:.0} s → {:.1} MiB at the end ({growth:+.1} %).**",
        tally.total(),
        if alive {
            "still healthy at the end"
        } else {
            "NOT healthy at the end"
        },
        baseline.map_or(0.0, |b| mib(b.rss)),
        baseline.map_or(0.0, |b| b.at.as_secs_f64()),
        last.map_or(0.0, |l| mib(l.rss)),
    );
    if !tally.examples.is_empty() {
        let _ = writeln!(text, "\nFirst unexpected answers:");
        for e in &tally.examples {
            let _ = writeln!(text, "- {e}");
        }
    }
    Report {
        text,
        passed: errors == 0 && alive,
    }
}
