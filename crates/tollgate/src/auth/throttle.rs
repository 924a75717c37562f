//! Sign-in throttling. Failed attempts are counted per account in the KV, so the limits hold
//! across instances; past a few free attempts each failure imposes a growing wait (2 s, 4 s, …
//! 32 s), then a lock for the rest of the window. The same answer comes whether or not the
//! account exists, and a success clears the account's count.
//!
//! A lock never shuts out an account's owner: a browser where the account signed in before (a
//! remembered device, by cookie) counts its failures apart, so a correct password from it still
//! signs in while someone elsewhere guesses. Nor does an address ever lock sign-ins: behind a
//! proxy or in an office many people share one, and a lock per address lets one of them shut
//! everyone out.
//!
//! Emails (sign-up and reset links) are limited per recipient and per client address, so the
//! forms cannot be used to flood an inbox or to send mail in bulk: an address that asks too often
//! is refused new sign-ups and resets for the rest of the window.

use std::net::IpAddr;
use std::time::Duration;

use tollgate_core::kv::{keys, KvError, SharedKv};

/// Failures are counted over this window (from the first one), and the lock lasts this long.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures allowed before waits start, for an account (or for one remembered device of it).
const FREE_PER_ACCOUNT: u64 = 5;
/// How long a browser is remembered as one where an account signed in.
pub(crate) const DEVICE_REMEMBERED: Duration = Duration::from_secs(180 * 86_400);
/// Growing waits after the free attempts, before the lock.
const GROWING_WAITS: u64 = 5;
/// Emails one recipient is sent, and one client address may cause (a whole office can share
/// one), per window.
const MAILS_PER_RECIPIENT: u64 = 3;
const MAILS_PER_ADDRESS: u64 = 60;
/// Invitations one organization may send per window: its admins are signed in, so they are
/// counted by organization rather than by address (a team invites dozens at once).
const INVITATIONS_PER_ORGANIZATION: u64 = 500;

/// Whether a request may send its email.
#[derive(Debug, PartialEq)]
pub(crate) enum MailDecision {
    Send,
    /// This recipient had enough mail for now: answer as if sent (the answer must not differ).
    Skip,
    /// This address asked too often: refuse, for this many seconds at most.
    Refuse(u64),
}

/// The wait a number of failures earns, if any.
fn wait_after(failures: u64, free: u64) -> Option<Duration> {
    match failures.checked_sub(free) {
        None => None,
        Some(over) if over < GROWING_WAITS => Some(Duration::from_secs(2 << over)),
        Some(_) => Some(WINDOW),
    }
}

pub(crate) struct Throttle {
    kv: SharedKv,
    clock: tollgate_core::Clock,
}

/// Who an attempt counts against: the account, or — from a remembered device of it — that
/// device alone.
pub(crate) struct Attempt<'a> {
    pub(crate) account: &'a str,
    /// The device token of a browser where this account signed in before.
    pub(crate) known_device: Option<&'a str>,
}

impl Attempt<'_> {
    fn subject(&self) -> (&'static str, String) {
        use sha2::{Digest, Sha256};
        match self.known_device {
            Some(token) => ("device", format!("{}:{}", &hex::encode(Sha256::digest(token.as_bytes()))[..32], self.account)),
            None => ("account", self.account.to_string()),
        }
    }
}

impl Throttle {
    pub(crate) fn new(kv: SharedKv, clock: tollgate_core::Clock) -> Throttle {
        Throttle { kv, clock }
    }

    /// Seconds to wait before this attempt may be checked, if it must wait.
    pub(crate) async fn must_wait(&self, attempt: &Attempt<'_>) -> Result<Option<u64>, KvError> {
        let now = self.clock.unix_now();
        let (kind, subject) = attempt.subject();
        let until = self.kv.get(&keys::throttle(&format!("{kind}-lock"), &subject)).await?.and_then(|t| t.parse::<i64>().ok());
        Ok(until.filter(|until| *until > now).map(|until| (until - now) as u64))
    }

    pub(crate) async fn failed(&self, attempt: &Attempt<'_>) -> Result<(), KvError> {
        let (kind, subject) = attempt.subject();
        let failures = self.kv.increment(&keys::throttle(kind, &subject), WINDOW).await?;
        if let Some(wait) = wait_after(failures, FREE_PER_ACCOUNT) {
            let until = self.clock.unix_now() + wait.as_secs() as i64;
            self.kv.set_expiring(&keys::throttle(&format!("{kind}-lock"), &subject), &until.to_string(), wait).await?;
        }
        Ok(())
    }

    /// Whether `token` (a device cookie) belongs to a browser where `account` signed in before.
    pub(crate) async fn knows_device(&self, token: &str, account: &str) -> Result<bool, KvError> {
        Ok(self.kv.get(&keys::device(token, account)).await?.is_some())
    }

    /// `account` signed in from the browser holding `token`: remember it.
    pub(crate) async fn remember_device(&self, token: &str, account: &str) -> Result<(), KvError> {
        self.kv.set_expiring(&keys::device(token, account), "1", DEVICE_REMEMBERED).await
    }

    /// Count a request that would email `recipient`, from `address`.
    pub(crate) async fn mail_requested(&self, recipient: &str, address: Option<IpAddr>) -> Result<MailDecision, KvError> {
        if let Some(address) = address {
            if self.kv.increment(&keys::throttle("mail-from", &address.to_string()), WINDOW).await? > MAILS_PER_ADDRESS {
                return Ok(MailDecision::Refuse(WINDOW.as_secs()));
            }
        }
        if self.kv.increment(&keys::throttle("mail-to", recipient), WINDOW).await? > MAILS_PER_RECIPIENT {
            return Ok(MailDecision::Skip);
        }
        Ok(MailDecision::Send)
    }

    /// Count an invitation of `org` to `recipient`: refused (with the wait) over the
    /// organization's allowance or the recipient's (who is not to be flooded).
    pub(crate) async fn invitation_requested(&self, org: &str, recipient: &str) -> Result<Option<u64>, KvError> {
        if self.kv.increment(&keys::throttle("invitations-from", org), WINDOW).await? > INVITATIONS_PER_ORGANIZATION {
            return Ok(Some(WINDOW.as_secs()));
        }
        if self.kv.increment(&keys::throttle("mail-to", recipient), WINDOW).await? > MAILS_PER_RECIPIENT {
            return Ok(Some(WINDOW.as_secs()));
        }
        Ok(None)
    }

    pub(crate) async fn succeeded(&self, attempt: &Attempt<'_>) -> Result<(), KvError> {
        let (kind, subject) = attempt.subject();
        if kind != "account" {
            self.kv.delete(&keys::throttle(kind, &subject)).await?;
        }
        self.kv.delete(&keys::throttle("account", attempt.account)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_then_lock() {
        assert_eq!(wait_after(4, 5), None);
        assert_eq!(wait_after(5, 5), Some(Duration::from_secs(2)));
        assert_eq!(wait_after(9, 5), Some(Duration::from_secs(32)));
        assert_eq!(wait_after(10, 5), Some(WINDOW));
    }
}
