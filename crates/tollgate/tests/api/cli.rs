//! The binary itself: a bad setting stops start-up naming the variable; secrets never print.

use std::process::Command;

fn tollgate(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("tollgate-cli-{}", tollgate::random_token(8)));
    std::fs::create_dir_all(&dir).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).current_dir(&dir);
    for var in [
        "PORT", "BIND", "PUBLIC_URL", "DATA_DIR", "KV_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE", "PLANS",
        "AUTH_PROVIDER",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let output = command.output().expect("the tollgate binary runs");
    let _ = std::fs::remove_dir_all(dir);
    output
}

#[test]
fn bad_settings_stop_start_up_and_name_the_variable() {
    for (env, variable) in [
        (vec![("PORT", "http")], "PORT"),
        (vec![("KV_URL", "postgres://db")], "KV_URL"),
        (vec![("STRIPE_SECRET_KEY", "sk_test_x")], "STRIPE_WEBHOOK_SECRET"),
        (vec![("AUTH_PROVIDER", "clerk")], "AUTH_PROVIDER"),
    ] {
        let out = tollgate(&[], &env);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(variable), "{env:?}: {stderr}");
    }
    // A port that is taken is named too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = tollgate(&[], &[("PORT", &port), ("KV_URL", "memory:")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT"));
}

#[test]
fn config_prints_settings_without_secrets() {
    let out = tollgate(
        &["config"],
        &[
            ("STRIPE_SECRET_KEY", "sk_test_do_not_print"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_do_not_print"),
            ("PLANS", "price_a"),
            ("PORT", "4321"),
        ],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4321") && stdout.contains("price_a"));
    assert!(!stdout.contains("do_not_print"), "{stdout}");
    assert!(stdout.contains("[redacted]"));
}
