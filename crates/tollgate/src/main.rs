use clap::Parser;
use tollgate::cli::{Cli, Command};
use tollgate::config::Settings;
use tollgate::startup::Application;

#[tokio::main]
async fn main() {
    tollgate::return_large_allocations();
    let cli = Cli::parse();
    let environment = match tollgate::config::environment() {
        Ok(environment) => environment,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Command::Config { json }) = cli.command {
        // The table is printed even when the configuration is wrong: it shows what was read.
        std::process::exit(tollgate::cli::config(&environment, json));
    }
    let settings = match Settings::from_environment(&environment) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("tollgate: configuration error: {e}");
            }
            std::process::exit(2);
        }
    };
    tollgate::telemetry::init_with(settings.log_format);
    match cli.command {
        Some(Command::Config { .. }) => unreachable!("handled above"),
        Some(Command::Sync(target)) => {
            if let Err(e) = tollgate::cli::sync(settings, target).await {
                eprintln!("tollgate: sync: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some(Command::Doctor { json }) => std::process::exit(if tollgate::cli::doctor(&settings, json).await { 0 } else { 1 }),
        Some(Command::Import { dry_run }) => {
            if let Err(e) = tollgate::cli::import(settings, dry_run).await {
                eprintln!("tollgate: import: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some(Command::Setup { dry_run }) => {
            if let Err(e) = tollgate::cli::setup(&settings, dry_run).await {
                eprintln!("tollgate: setup: {e:#}");
                std::process::exit(1);
            }
            return;
        }
        Some(Command::Serve) | None => {}
    }
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("tollgate: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    // A closed stdout (a supervisor that stopped reading) must not stop the server: no `println!`.
    let say = |line: String| {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{line}");
    };
    say(format!("Tollgate listening on http://{} — open {}", app.addr, app.public_url));
    if let Some(emulator) = &app.emulator_url {
        say(format!(
            "Stripe emulator at {emulator} (no STRIPE_SECRET_KEY set). Test card 4242 4242 4242 4242; 4000 0000 0000 9995 is declined."
        ));
    }
    if app.state.mailer.is_outbox() {
        say(format!("No SMTP_URL: account emails (sign-up and reset links) go to {}/dev/outbox", app.public_url));
    }
    if let Err(e) = app.run_until_stopped().await {
        eprintln!("tollgate: server error: {e}");
        std::process::exit(1);
    }
}
