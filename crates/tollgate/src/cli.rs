//! The command line: `tollgate` (= `tollgate serve`) and `tollgate config`.

use clap::{Parser, Subcommand};

/// Signup and Stripe subscription billing, offline by default.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, PartialEq)]
pub enum Command {
    /// Serve the app (the default). Configuration comes from the environment and `.env`.
    Serve,
    /// Print the configuration as parsed, secrets redacted, and exit.
    Config,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_definition_is_valid() {
        super::Cli::command().debug_assert();
        assert_eq!(super::Cli::parse_from(["tollgate"]).command, None);
        assert_eq!(super::Cli::parse_from(["tollgate", "config"]).command, Some(super::Command::Config));
    }
}
