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
        .env("TAILGATE_JWT_SECRET", "0123456789abcdef0123456789abcdef")
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
    std::fs::write(&secret, "s3cret-of-at-least-32-bytes-long\n").unwrap();
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
    assert_eq!(
        loaded.auth.hmac_secret.as_deref(),
        Some(&b"s3cret-of-at-least-32-bytes-long"[..])
    );
    assert_eq!(loaded.listen.port(), 8080);
}

#[test]
fn a_short_secret_exits_64_naming_the_key_and_the_reason() {
    let out = tailgate()
        .args([
            "serve",
            "--jwt-secret",
            "x",
            "--jwt-issuer",
            "i",
            "--jwt-audience",
            "a",
        ])
        .output()
        .expect("run tailgate");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jwt-secret") && stderr.contains("RFC 7518"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let mint = tailgate()
        .args([
            "token",
            "mint",
            "--secret",
            "x",
            "--issuer",
            "i",
            "--audience",
            "a",
        ])
        .args(["--sub", "u", "--job", "j"])
        .output()
        .expect("run tailgate");
    assert_eq!(mint.status.code(), Some(0), "minting still works");
    let stderr = String::from_utf8_lossy(&mint.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("32 bytes"),
        "{stderr}"
    );
}

#[test]
fn help_shows_each_setting_environment_variable_without_stray_equals() {
    let out = tailgate().args(["serve", "--help"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', ',']).next().unwrap_or(""))
        .filter(|f| *f != "help")
        .collect();
    assert!(flags.len() > 20, "{help}");
    for flag in flags {
        let env = format!("[env: TAILGATE_{}]", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "--{flag} lacks {env}:\n{help}");
    }
    for args in [
        &["token", "mint", "--help"][..],
        &["token", "inspect", "--help"],
    ] {
        let out = tailgate().args(args).output().expect("run");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(!help.contains("=]"), "{args:?}: {help}");
    }
}

#[test]
fn a_port_in_use_names_the_listen_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let out = tailgate()
        .args(["serve", "--dev", "--memory-only", "--listen", &addr])
        .output()
        .expect("run tailgate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains(&addr),
        "{stderr}"
    );
}
