//! Settings from environment variables (and an optional `.env`), parsed once at start-up.
//! A bad value stops start-up with a message naming the variable; secrets never print.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::domain::PriceId;

/// A secret value: usable, never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub enum KvSettings {
    /// One redb file in `DATA_DIR` (the default).
    Embedded { path: PathBuf },
    /// `KV_URL=memory:` — nothing persists; for tests and demos.
    Memory,
    /// `KV_URL=redis://host:port[/db]`, the store the Next.js recipe uses.
    Redis { url: String },
}

#[derive(Debug, Clone)]
pub enum StripeSettings {
    /// No `STRIPE_SECRET_KEY`: run the Stripe emulator in-process on this port (0 = any free port).
    Emulator {
        port: u16,
    },
    Remote {
        secret_key: Secret,
        webhook_secret: Secret,
        api_base: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AuthSettings {
    Local,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub bind: IpAddr,
    /// Where users reach the app; `None` means `http://localhost:{bound port}`.
    pub public_url: Option<String>,
    pub data_dir: PathBuf,
    pub kv: KvSettings,
    pub stripe: StripeSettings,
    /// The prices offered, in display order; `None` in emulator mode means the seeded plans.
    pub plans: Option<Vec<PriceId>>,
    pub auth: AuthSettings,
    /// Whether `past_due` still grants access (a grace period while Stripe retries the card).
    pub past_due_grace: bool,
    /// Free trial length offered at Checkout, if any.
    pub trial_days: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { variable, message: message.into() }
}

/// Lines `KEY=VALUE` of a `.env` file; `#` comments and blank lines skipped, optional quotes removed.
pub fn parse_dotenv(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

impl Settings {
    /// The process environment over `.env` in the working directory (the environment wins).
    pub fn from_env() -> Result<Settings, ConfigError> {
        let mut vars = std::fs::read_to_string(".env").map(|t| parse_dotenv(&t)).unwrap_or_default();
        vars.extend(std::env::vars());
        Settings::from_vars(&vars)
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Settings, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let port = match get("PORT") {
            None => 3000,
            Some(v) => v.parse().map_err(|_| error("PORT", format!("'{v}' is not a port number (0-65535)")))?,
        };
        let bind = match get("BIND") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v.parse().map_err(|_| error("BIND", format!("'{v}' is not an IP address")))?,
        };
        let public_url = match get("PUBLIC_URL") {
            None => None,
            Some(v) if (v.starts_with("http://") || v.starts_with("https://")) && v.len() > 8 && !v.contains(char::is_whitespace) => {
                Some(v.trim_end_matches('/').to_string())
            }
            Some(v) => return Err(error("PUBLIC_URL", format!("'{v}' must be an http:// or https:// URL"))),
        };
        let data_dir = PathBuf::from(get("DATA_DIR").unwrap_or("./data"));
        let kv = match get("KV_URL") {
            None => KvSettings::Embedded { path: data_dir.join("tollgate.redb") },
            Some("memory:") => KvSettings::Memory,
            Some(v) if v.starts_with("redis://") => KvSettings::Redis { url: v.to_string() },
            Some(v) if v.starts_with("redb:") => KvSettings::Embedded { path: PathBuf::from(&v["redb:".len()..]) },
            Some(v) => {
                return Err(error("KV_URL", format!("'{v}' is not supported: use redis://host:port, redb:/path/file.redb or memory:")))
            }
        };
        let stripe = match get("STRIPE_SECRET_KEY") {
            None => {
                let port = match get("STRIPE_EMULATOR_PORT") {
                    None => 12111,
                    Some(v) => v.parse().map_err(|_| error("STRIPE_EMULATOR_PORT", format!("'{v}' is not a port number")))?,
                };
                StripeSettings::Emulator { port }
            }
            Some(key) => {
                if !(key.starts_with("sk_") || key.starts_with("rk_")) {
                    return Err(error("STRIPE_SECRET_KEY", "must be a secret key (sk_… or rk_…), not a publishable key"));
                }
                let webhook_secret = get("STRIPE_WEBHOOK_SECRET")
                    .ok_or_else(|| error("STRIPE_WEBHOOK_SECRET", "is required when STRIPE_SECRET_KEY is set"))?;
                if !webhook_secret.starts_with("whsec_") {
                    return Err(error("STRIPE_WEBHOOK_SECRET", "must start with whsec_"));
                }
                let api_base = get("STRIPE_API_BASE").unwrap_or("https://api.stripe.com").trim_end_matches('/').to_string();
                if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
                    return Err(error("STRIPE_API_BASE", "must be an http:// or https:// URL"));
                }
                StripeSettings::Remote { secret_key: Secret::new(key), webhook_secret: Secret::new(webhook_secret), api_base }
            }
        };
        let plans = match get("PLANS") {
            None if matches!(stripe, StripeSettings::Remote { .. }) => {
                return Err(error(
                    "PLANS",
                    "is required with STRIPE_SECRET_KEY: the price ids to offer, comma-separated, or a file of them",
                ))
            }
            None => None,
            Some(v) => Some(parse_plans(v)?),
        };
        let auth = match get("AUTH_PROVIDER") {
            None | Some("local") => AuthSettings::Local,
            Some("clerk") => return Err(error("AUTH_PROVIDER", "clerk is not available in this build yet; use local")),
            Some(v) => return Err(error("AUTH_PROVIDER", format!("'{v}' is not a provider (local)"))),
        };
        let past_due_grace = match get("PAST_DUE_GRACE") {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(v) => return Err(error("PAST_DUE_GRACE", format!("'{v}' is not true or false"))),
        };
        let trial_days = match get("TRIAL_DAYS") {
            None | Some("0") => None,
            Some(v) => match v.parse::<u32>() {
                Ok(d) if (1..=730).contains(&d) => Some(d),
                _ => return Err(error("TRIAL_DAYS", format!("'{v}' must be a whole number of days from 1 to 730"))),
            },
        };
        Ok(Settings { port, bind, public_url, data_dir, kv, stripe, plans, auth, past_due_grace, trial_days })
    }
}

/// `PLANS`: `price_a,price_b`, or the path of a file holding ids separated by commas, spaces or lines.
fn parse_plans(value: &str) -> Result<Vec<PriceId>, ConfigError> {
    let text = if value.starts_with("price_") {
        value.to_string()
    } else {
        std::fs::read_to_string(value).map_err(|e| error("PLANS", format!("'{value}' is neither price ids nor a readable file: {e}")))?
    };
    let ids: Vec<PriceId> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| PriceId::parse(s).map_err(|e| error("PLANS", e.to_string())))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(error("PLANS", "lists no price"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_run_offline() {
        let s = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(s.port, 3000);
        assert!(matches!(s.stripe, StripeSettings::Emulator { port: 12111 }));
        assert!(matches!(s.kv, KvSettings::Embedded { .. }));
        assert_eq!(s.auth, AuthSettings::Local);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (pairs, variable) in [
            (vec![("PORT", "eighty")], "PORT"),
            (vec![("PUBLIC_URL", "localhost:3000")], "PUBLIC_URL"),
            (vec![("KV_URL", "mysql://x")], "KV_URL"),
            (vec![("STRIPE_SECRET_KEY", "pk_test_1")], "STRIPE_SECRET_KEY"),
            (vec![("STRIPE_SECRET_KEY", "sk_test_1")], "STRIPE_WEBHOOK_SECRET"),
            (vec![("STRIPE_SECRET_KEY", "sk_test_1"), ("STRIPE_WEBHOOK_SECRET", "whsec_1")], "PLANS"),
            (vec![("PLANS", "prod_x")], "PLANS"),
            (vec![("AUTH_PROVIDER", "ldap")], "AUTH_PROVIDER"),
            (vec![("TRIAL_DAYS", "-3")], "TRIAL_DAYS"),
        ] {
            assert_eq!(Settings::from_vars(&vars(&pairs)).unwrap_err().variable, variable);
        }
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_vars(&vars(&[
            ("STRIPE_SECRET_KEY", "sk_test_supersecret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_alsosecret"),
            ("PLANS", "price_a, price_b"),
        ]))
        .unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains("supersecret") && !printed.contains("alsosecret"));
        assert_eq!(s.plans.unwrap().len(), 2);
    }

    #[test]
    fn dotenv_lines() {
        let parsed = parse_dotenv("# comment\nPORT=4000\nexport BIND=\"0.0.0.0\"\n\nX='y z'\n");
        assert_eq!(parsed["PORT"], "4000");
        assert_eq!(parsed["BIND"], "0.0.0.0");
        assert_eq!(parsed["X"], "y z");
    }
}
