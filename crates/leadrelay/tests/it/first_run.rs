//! A newcomer's first five minutes, through the real binary: `init`, the
//! quickstart against `leadrelay fake`, `healthcheck`, errors that say how
//! to fix them, owner-only files, and command-line manners (closed pipes,
//! JSON logs, no colour codes in files, store commands without secrets).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::binary::{bin, free_port, http_client};
use crate::support::{eventually, wait_ready};

/// Runs the binary in `dir` with `env`, without the caller's configuration.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .output()
        .expect("run leadrelay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A child killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `leadrelay serve` in `dir` with no --config (so ./leadrelay.toml, if
/// any, is found), under `umask`, logging to `dir/serve.log`; waits until
/// ready and returns the base URL.
async fn serve_in(dir: &Path, umask: &str, env: &[(&str, &str)]) -> (Running, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask} && exec \"$0\" serve --listen 127.0.0.1:{port}"
        ))
        .arg(bin())
        .current_dir(dir)
        .envs(env.iter().copied())
        .env_remove("LEADRELAY_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn leadrelay serve");
    let running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready("the server is ready", &base, Duration::from_secs(60)).await;
    (running, base)
}

async fn post_lead(base: &str, email: &str) {
    let r = http_client()
        .post(format!("{base}/v1/forms/contact"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"email":"{email}","first_name":"Ada","consent":"on"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
}

#[test]
fn init_writes_a_commented_starter_and_never_overwrites_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(dir.path(), &["init"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let path = dir.path().join("leadrelay.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# leadrelay configuration, written by `leadrelay init`."));
    assert!(text.contains("[forms.contact]") && text.contains("[destinations.backup]"));
    assert!(out.contains("leadrelay serve"), "{out}");

    // Found without --config, and valid.
    let (code, out, err) = run_in(dir.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("leadrelay.toml: configuration is valid"),
        "{out}"
    );

    std::fs::write(&path, "# mine\n").unwrap();
    let (code, _, err) = run_in(dir.path(), &["init"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");
    let (code, _, err) = run_in(dir.path(), &["init", "--force"], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    for args in [
        &["init", "-o", "other.toml"][..],
        &["init", "--config", "third.toml"][..],
    ] {
        let (code, out, err) = run_in(dir.path(), args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        let name = args[2];
        assert!(out.contains(&format!("--config {name}")), "{out}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            text
        );
    }
}

/// The README's quickstart, exactly: `leadrelay fake hubspot` prints the
/// commands; `init --fake hubspot` writes a file that keeps the contact
/// form and the backup; with the printed export, `serve` delivers the lead
/// to the fake, where the printed command finds it. Under umask 000, the
/// store and the backups are still owner-only; the log has no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_with_the_fake_hubspot_delivers_a_lead_and_keeps_files_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut fake = Running(
        Command::new(bin())
            .args(["fake", "hubspot", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The banner and instructions, up to the line that ends them.
    let mut printed = String::new();
    let mut lines = BufReader::new(fake.0.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Every record") {
            break;
        }
    }
    let url = printed
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .expect("the fake prints its URL")
        .to_string();
    let init = format!("leadrelay init --fake hubspot --fake-url {url}");
    assert!(printed.contains(&init), "{printed}");
    let export = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("export HUBSPOT_ACCESS_TOKEN="))
        .expect("an export line")
        .trim_matches('\'')
        .to_string();

    let (code, out, err) = run_in(
        dir.path(),
        &["init", "--fake", "hubspot", "--fake-url", &url],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("export HUBSPOT_ACCESS_TOKEN='{export}'")),
        "{out}"
    );

    // Without the token, serve says which variable is missing.
    let (code, _, err) = run_in(dir.path(), &["check", "--offline"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("HUBSPOT_ACCESS_TOKEN is not set"), "{err}");

    let (_server, base) = serve_in(
        dir.path(),
        "000",
        &[("HUBSPOT_ACCESS_TOKEN", export.as_str())],
    )
    .await;
    post_lead(&base, "ada@example.com").await;

    // The printed inspection command: GET the fake's contacts with the token.
    let client = http_client();
    let contacts = format!("{url}/crm/v3/objects/contacts?properties=email,firstname");
    let found = eventually(
        "the contact is in the fake HubSpot",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            let contacts = contacts.clone();
            let token = export.clone();
            async move {
                let body: Value = client
                    .get(&contacts)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                body["results"]
                    .as_array()?
                    .iter()
                    .find(|c| c["properties"]["email"] == "ada@example.com")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(found["properties"]["firstname"], "Ada");
    assert!(
        printed.contains(&format!(
            "'{url}/crm/v3/objects/contacts?properties=email,firstname'"
        )),
        "{printed}"
    );

    // The backup (kept from the default configuration) has it too.
    let backup = dir.path().join("leadrelay-backup");
    let file = eventually("the backup is written", Duration::from_secs(60), || {
        let backup = backup.clone();
        async move {
            std::fs::read_dir(&backup)
                .ok()?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.extension().is_some_and(|x| x == "jsonl")
                        && std::fs::read_to_string(p).is_ok_and(|t| t.contains("ada@example.com"))
                })
        }
    })
    .await;

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&backup), 0o700, "backup directory");
    assert_eq!(mode(&file), 0o600, "backup file");
    for name in ["leadrelay.db", "leadrelay.db-wal", "leadrelay.db-shm"] {
        let p = dir.path().join(name);
        assert_eq!(mode(&p), 0o600, "{name}");
    }

    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains('\u{1b}'), "no colour codes in a file:\n{log}");
    assert!(
        log.contains("leadrelay.toml"),
        "the log says which file: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_answers_ready_or_not_within_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = serve_in(dir.path(), "022", &[]).await;
    let (code, out, err) = run_in(dir.path(), &["healthcheck", "--url", &base], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ready"), "{out}");

    // From the configuration's server.listen.
    let port = base.rsplit(':').next().unwrap();
    std::fs::write(
        dir.path().join("leadrelay.toml"),
        format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"),
    )
    .unwrap();
    let (code, out, err) = run_in(dir.path(), &["healthcheck"], &[]);
    assert_eq!(code, 0, "{out}{err}");

    // Nothing listening.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run_in(dir.path(), &["healthcheck", "--url", &closed], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("not ready"), "{err}");

    // A listener that never answers: the timeout bounds the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (code, _, err) = run_in(
        dir.path(),
        &["healthcheck", "--url", &url, "--timeout", "1s"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("did not answer within 1s"), "{err}");
}

#[test]
fn check_reports_every_type_error_with_the_form_expected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        r#"[server]
max_body_bytes = true
per_ip_limit = 60

[storage]
pool_size = "lots"

[destinations.crm]
connector = "webhook"
enabled = "maybe"
url = "https://crm.example.com/hook"
purposes = ["crm"]

[[routes]]
destinations = ["crm"]
"#,
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let (code, _, err) = run_in(dir.path(), &["check", "--offline", "--config", p], &[]);
    assert_eq!(code, 1);
    for want in [
        format!("{p}:2:1: error: server.max_body_bytes: expected a size"),
        format!("{p}:3:1: error: server.per_ip_limit: expected a rate in quotes"),
        format!(
            "{p}:6:1: error: storage.pool_size: expected usize, found string \"lots\": write a whole number"
        ),
        format!(
            "{p}:10:1: error: destinations.crm.enabled: invalid value \"maybe\": write true, false or \"auto\""
        ),
        "error: routes[0]: every [[routes]] entry needs a name".to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("untagged"), "{err}");
}

#[test]
fn config_mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The old `leadrelay fake` snippet appended to the default file.
    let path = d.join("dup.toml");
    let default = run_in(d, &["config", "default"], &[]).1;
    let first = default
        .lines()
        .position(|l| l == "[destinations.hubspot]")
        .unwrap()
        + 1;
    let text = format!(
        "{default}\n[destinations.hubspot]\nconnector = \"hubspot\"\nbase_url = \"http://127.0.0.1:8091\"\n"
    );
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[destinations.hubspot]")
        .nth(1)
        .unwrap()
        .0
        + 1;
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run_in(d, &["check", "--offline", "--config", "dup.toml"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "table [destinations.hubspot] is defined twice, on line {first} and on line {second}"
        )),
        "{err}"
    );

    // A switched-off "auto" destination is still checked.
    std::fs::write(
        d.join("auto.toml"),
        "[destinations.crm]\nconnector = \"pipedrve\"\nenabled = \"auto\"\ntoken_env = \"H7_UNSET_TOKEN\"\npurposes = [\"crm\"]\n\n[[routes]]\nname = \"all\"\ndestinations = [\"crm\"]\n",
    )
    .unwrap();
    let (code, _, err) = run_in(d, &["check", "--offline", "--config", "auto.toml"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown connector \"pipedrve\""), "{err}");

    // A missing file points at `leadrelay init`.
    let (code, _, err) = run_in(d, &["check", "--config", "nope.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("leadrelay init --config nope.toml"), "{err}");

    // An empty file works, with a warning.
    std::fs::write(d.join("empty.toml"), "").unwrap();
    let (code, out, err) = run_in(d, &["check", "--offline", "--config", "empty.toml"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning") && err.contains("no settings"),
        "{err}"
    );

    // A port in use suggests --listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let db = format!("sqlite://{}/p.db", d.display());
    let (code, _, err) = run_in(d, &["serve", "--listen", &addr, "--storage-url", &db], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--listen"), "{err}");

    // A store that cannot be created suggests --storage-url.
    std::fs::write(d.join("a-file"), "").unwrap();
    let bad = format!("sqlite://{}/a-file/sub/x.db", d.display());
    let (code, _, err) = run_in(
        d,
        &["serve", "--listen", "127.0.0.1:0", "--storage-url", &bad],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--storage-url"), "{err}");
}

/// Writing to a pipe whose reader is gone: no panic (exit 101), whatever
/// the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/x.db", dir.path().display());
    // A store with one event, so `events list` prints rows.
    let (_server, base) = serve_in(dir.path(), "022", &[]).await;
    post_lead(&base, "pipe@example.com").await;
    let db_default = format!("sqlite://{}/leadrelay.db", dir.path().display());
    for args in [
        &["sources", "kinds"][..],
        &["config", "default"][..],
        &["version"][..],
        &["init", "-o", "piped.toml"][..],
        &["events", "list", "--storage-url", &db_default][..],
        &["events", "list", "--json", "--storage-url", &db_default][..],
        &["dlq", "list", "--storage-url", &db][..],
        &["--help"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(args)
            .current_dir(dir.path())
            .env_remove("LEADRELAY_CONFIG")
            .env_remove("DATABASE_URL")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn json_logs_are_json_on_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Warnings (an empty file) and errors (a bad file), before serve's
    // logger would have said anything, and a usage error.
    std::fs::write(d.join("empty.toml"), "").unwrap();
    std::fs::write(d.join("bad.toml"), "[server]\nlisen = 1\n").unwrap();
    let cases: [&[&str]; 4] = [
        &[
            "--log-format",
            "json",
            "check",
            "--offline",
            "--config",
            "empty.toml",
        ],
        &[
            "--log-format",
            "json",
            "check",
            "--offline",
            "--config",
            "bad.toml",
        ],
        &["--log-format=json", "serve", "--listen", "not-an-address"],
        &[
            "--log-format",
            "json",
            "dlq",
            "list",
            "--config",
            "missing.toml",
        ],
    ];
    for args in cases {
        let (_, _, err) = run_in(d, args, &[]);
        assert!(!err.trim().is_empty(), "{args:?} says something");
        for line in err.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line:?}\n{err}"));
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        }
    }
    let (_, _, err) = run_in(d, cases[0], &[]);
    assert!(
        err.contains("\"WARN\"") && err.contains("no settings"),
        "{err}"
    );
}

#[test]
fn store_commands_work_without_the_destinations_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("leadrelay.toml"),
        "[destinations.crm]\nconnector = \"hubspot\"\ntoken_env = \"H7_UNSET_HUBSPOT_TOKEN\"\npurposes = [\"crm\"]\n\n[destinations.zap]\nconnector = \"webhook\"\nenabled = \"auto\"\nurl_env = \"H7_UNSET_URL\"\npurposes = [\"crm\"]\n\n[[routes]]\nname = \"all\"\ndestinations = [\"crm\", \"zap\"]\n",
    )
    .unwrap();
    let db = format!("sqlite://{}/s.db", d.display());
    for args in [
        &["events", "list", "--storage-url", &db][..],
        &["deliveries", "list", "--storage-url", &db][..],
        &["dlq", "list", "--storage-url", &db][..],
        &["timers", "list", "--storage-url", &db][..],
        &["keys", "list", "--storage-url", &db][..],
    ] {
        let (code, out, err) = run_in(d, args, &[]);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        // Delivery warnings are not theirs to print.
        assert!(!err.contains("warning"), "{args:?}: {err}");
    }
    // Sending still needs it, and hears about the switched-off destination.
    let (code, _, err) = run_in(d, &["check", "--offline"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("H7_UNSET_HUBSPOT_TOKEN is not set"), "{err}");
    assert!(err.contains("destinations.zap: switched off"), "{err}");
}
