//! The `tailgate` binary's command line: refusing bad config with exit code 64.
//! (Also makes `cargo test` build the binary that the black-box tests in `tests/` run.)

use std::process::Command;

fn tailgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tailgate"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn missing_settings_exit_64_naming_the_key() {
    let cases: [(&[&str], &str); 4] = [
        (&["serve"], "jwt-secret"),
        (&["serve", "--jwt-secret", "s"], "jwt-issuer"),
        (
            &["serve", "--jwt-secret", "s", "--jwt-issuer", "i"],
            "jwt-audience",
        ),
        (
            &["serve", "--dev", "--keepalive-secs", "0"],
            "keepalive-secs",
        ),
    ];
    for (args, key) in cases {
        let out = tailgate().args(args).output().expect("run tailgate");
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
}

#[test]
fn environment_supplies_settings() {
    let out = tailgate()
        .args(["serve", "--listen", "not-an-address"])
        .env("TAILGATE_JWT_SECRET", "s")
        .output()
        .expect("run tailgate");
    assert_eq!(
        out.status.code(),
        Some(64),
        "clap refuses a bad flag value with EX_USAGE, not 2"
    );
    let out = tailgate()
        .arg("serve")
        .env("TAILGATE_JWT_SECRET", "s")
        .env("TAILGATE_JWT_ISSUER", "i")
        .env("TAILGATE_JWT_AUDIENCE", "a")
        .env("TAILGATE_LISTEN", "nowhere")
        .output()
        .expect("run tailgate");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TAILGATE_LISTEN"));
}

#[test]
fn the_sample_config_loads() {
    let dir = std::env::temp_dir().join(format!("tailgate-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let sample = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/tailgate.toml"
    ))
    .unwrap();
    let config = dir.join("tailgate.toml");
    std::fs::write(
        &config,
        sample.replace("/etc/tailgate/jwt-secret", secret.to_str().unwrap()),
    )
    .unwrap();
    let args = tailgate::config::ServeArgs {
        config: Some(config),
        ..Default::default()
    };
    let loaded = tailgate::Config::load(&args, &tailgate::config::MapEnv::default())
        .expect("sample config loads");
    assert_eq!(loaded.auth.issuer, "capgo");
    assert_eq!(loaded.auth.hmac_secret.as_deref(), Some(&b"s3cret"[..]));
    assert_eq!(loaded.listen.port(), 8080);
}
