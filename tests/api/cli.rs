//! The command line: `schema`, `token`, `migrate`, and how `serve` refuses to
//! start unsafely.

use std::process::Output;

use crate::helpers::{
    Backend, SECRET, TestDatabase, command, graphql, postgres_server_url, with_database,
};
use crate::on_both_backends;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must fail, and returns what it said on stderr.
fn refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run(args, env);
    assert!(!output.status.success(), "{args:?} must fail");
    stderr(&output)
}

#[test]
fn schema_graphql_in_the_repository_equals_the_output_of_onboarding_schema() {
    let output = run(&["schema"], &[]);
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let committed = std::fs::read_to_string(path).expect("schema.graphql at the repository root");
    assert!(
        printed == committed,
        "schema.graphql is out of date: regenerate it with `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn serve_without_a_jwt_key_refuses_to_start_and_names_the_settings() {
    let message = refusal(&["serve"], &[("DATABASE_URL", "sqlite::memory:")]);
    for setting in ["JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "--dev"] {
        assert!(
            message.contains(setting),
            "the error names {setting}: {message}"
        );
    }
}

#[test]
fn serve_refuses_a_jwt_secret_shorter_than_32_bytes() {
    let message = refusal(&["serve"], &[("JWT_SECRET", "short")]);
    assert!(message.contains("at least 32 bytes"), "{message}");
}

#[test]
fn serve_dev_refuses_to_bind_a_non_loopback_address() {
    let message = refusal(&["serve", "--dev"], &[("LISTEN_ADDR", "0.0.0.0:0")]);
    assert!(message.contains("loopback"), "{message}");
}

#[test]
fn serve_refuses_a_public_key_file_that_could_never_verify_a_token() {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/keys");
    for (file, expected) in [
        ("rsa-private.pem", "private key"),
        ("ed25519-private.pem", "private key"),
        ("ec-p384-public.pem", "on another curve"),
    ] {
        let path = keys.join(file);
        let path = path.to_str().expect("a UTF-8 path");
        // A database it cannot open: a key that loads would still stop it.
        let message = refusal(
            &["serve"],
            &[
                ("JWT_PUBLIC_KEY_FILE", path),
                ("DATABASE_URL", "mysql://nowhere"),
            ],
        );
        assert!(message.contains(expected), "{file}: {message}");
    }
}

#[test]
fn out_of_range_settings_are_refused_with_the_setting_named() {
    let output = run(
        &["serve", "--dev"],
        &[
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_URL", "sqlite::memory:"),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--database-max-connections"));

    let output = run(
        &[
            "token",
            "--dev",
            "--sub",
            "alice",
            "--ttl",
            "18446744073709551615s",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("--ttl"), "{}", stderr(&output));
}

#[test]
fn serve_refuses_cors_origins_that_no_browser_could_send() {
    for origins in [
        "https://app.example.com/",
        "https://*.example.com",
        "app.example.com",
    ] {
        let message = refusal(
            &["serve", "--dev"],
            &[
                ("CORS_ALLOWED_ORIGINS", origins),
                ("DATABASE_URL", "mysql://nowhere"),
            ],
        );
        assert!(
            message.contains("CORS_ALLOWED_ORIGINS"),
            "{origins}: {message}"
        );
    }
}

#[test]
fn migrate_says_why_it_cannot_reach_the_database() {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let silent_url = format!(
        "postgres://postgres@{}/onboarding",
        silent.local_addr().expect("its address")
    );
    let cases = [
        (
            "postgres://postgres@127.0.0.1:1/onboarding",
            "Connection refused",
        ),
        (silent_url.as_str(), "no answer within 5 s"),
        (
            "sqlite:///no/such/directory/onboarding.db",
            "directory must exist",
        ),
    ];
    for (url, expected) in cases {
        let message = refusal(&["migrate"], &[("DATABASE_URL", url)]);
        assert!(message.contains(expected), "{url}: {message}");
    }
}

#[test]
fn token_without_a_secret_says_which_setting_to_give() {
    let message = refusal(&["token", "--sub", "alice"], &[]);
    assert!(message.contains("JWT_SECRET"), "{message}");
}

#[test]
fn token_refuses_an_empty_sub_and_says_what_a_user_id_is() {
    let output = run(&["token", "--dev", "--sub", ""], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "no token is printed");
    let message = stderr(&output);
    assert!(
        message.contains("--sub") && message.contains("1 to 255 bytes with no NUL"),
        "{message}"
    );
}

#[test]
fn token_with_a_ttl_that_is_not_a_duration_shows_examples() {
    let output = run(&["token", "--dev", "--sub", "alice", "--ttl", "abc"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("--ttl") && message.contains("e.g. `15m`, `1h`, `7d`"),
        "{message}"
    );
    let help = run(&["token", "--help"], &[]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("default 1h"), "{help}");
}

#[test]
fn token_dev_with_jwt_secret_set_signs_with_jwt_secret_and_says_so() {
    let output = run(
        &["token", "--dev", "--sub", "alice"],
        &[("JWT_SECRET", SECRET)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let note = stderr(&output);
    assert!(
        note.contains("signed with JWT_SECRET, not the development secret"),
        "{note}"
    );
    let token = String::from_utf8(output.stdout).expect("UTF-8");
    let verified = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    );
    assert!(verified.is_ok(), "JWT_SECRET verifies it: {verified:?}");
}

#[test]
fn a_sqlite_database_whose_directory_is_missing_is_refused_with_its_path() {
    let dir = std::env::temp_dir().join(format!("onboarding-no-such-dir-{}", std::process::id()));
    let path = dir.join("x.db");
    let url = format!("sqlite://{}", path.display());
    for args in [&["migrate"][..], &["serve", "--dev"]] {
        let message = refusal(
            args,
            &[("DATABASE_URL", &url), ("LISTEN_ADDR", "127.0.0.1:0")],
        );
        assert!(
            message.contains(&path.display().to_string())
                && message.contains("directory must exist and be writable"),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn migrate_to_a_postgres_database_that_does_not_exist_says_how_to_create_it() {
    let Some(server) = postgres_server_url() else {
        return;
    };
    let name = format!("onboarding_missing_{}", std::process::id());
    let url = with_database(&server, &name);
    let message = refusal(&["migrate"], &[("DATABASE_URL", &url)]);
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("a Postgres URL");
    let createdb = format!(
        "create it with: createdb -h {} -p {} -U {} {name}",
        options.get_host(),
        options.get_port(),
        options.get_username()
    );
    assert!(message.contains(&createdb), "{message}");
}

async fn a_token_from_onboarding_token_is_accepted_with_its_admin_role(backend: Backend) {
    let output = run(
        &["token", "--sub", "root", "--role", "admin", "--ttl", "5m"],
        &[("JWT_SECRET", SECRET)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let token = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned();

    let db = TestDatabase::create(backend).await;
    let server = crate::helpers::ServerProcess::start(&db.url, &[]).await;
    let query = "{ onboardingState(userId: \"someone\") { userId } }";
    let body = graphql(&server.graphql_url(), Some(&token), query).await;
    assert_eq!(
        body["data"]["onboardingState"]["userId"], "someone",
        "{body}"
    );
}

async fn serve_dev_prints_a_demo_token_that_works_and_graphiql_carries_it(backend: Backend) {
    use std::io::{BufRead, BufReader};
    let db = TestDatabase::create(backend).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = command(
        &["serve", "--dev"],
        &[("DATABASE_URL", &db.url), ("LISTEN_ADDR", &listen)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("the binary starts");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let token = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix("Authorization: Bearer ")
                .map(str::to_owned)
        })
        .expect("a printed demo token");

    let address = format!("http://{listen}");
    let query = "{ onboardingState { userId } }";
    let body = graphql(&format!("{address}/graphql"), Some(&token), query).await;
    assert_eq!(body["data"]["onboardingState"]["userId"], "demo-user");
    let page = reqwest::Client::new()
        .get(format!("{address}/graphql"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains(&token),
        "GraphiQL's headers carry the demo token"
    );
    let _ = child.kill();
    let _ = child.wait();
    let mut warnings = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut warnings);
    assert!(
        warnings.contains("DEVELOPMENT MODE"),
        "a loud warning: {warnings}"
    );
}

async fn migrate_applies_the_migrations_and_exits(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let output = run(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        db.count_all_rows().await,
        0,
        "the table exists and is empty"
    );
    let again = run(&["migrate"], &[("DATABASE_URL", &db.url)]);
    assert!(again.status.success(), "migrating twice is harmless");
}

on_both_backends!(
    a_token_from_onboarding_token_is_accepted_with_its_admin_role,
    serve_dev_prints_a_demo_token_that_works_and_graphiql_carries_it,
    migrate_applies_the_migrations_and_exits,
);
