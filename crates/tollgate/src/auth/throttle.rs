//! Sign-in throttling. Failed attempts are counted per account and per client address in the KV,
//! so the limits hold across instances; past a few free attempts each failure imposes a growing
//! wait (2 s, 4 s, … 32 s), then a lock for the rest of the window. The same answer comes whether
//! or not the account exists, and a success clears the account's count.
//!
//! Emails (sign-up and reset links) are limited too, so the forms cannot be used to flood an
//! inbox or to send mail in bulk: a few per recipient, more per client address, in each window.

use std::net::IpAddr;
use std::time::Duration;

use crate::kv::{keys, KvError, SharedKv};

/// Failures are counted over this window (from the first one), and the lock lasts this long.
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures allowed before waits start: few for one account, many for one address (a whole office
/// or a proxy can share it).
const FREE_PER_ACCOUNT: u64 = 5;
const FREE_PER_ADDRESS: u64 = 50;
/// Growing waits after the free attempts, before the lock.
const GROWING_WAITS: u64 = 5;
/// Emails one recipient is sent, and one client address may cause (a whole office can share
/// one), per window.
const MAILS_PER_RECIPIENT: u64 = 3;
const MAILS_PER_ADDRESS: u64 = 60;

/// Whether a request may send its email.
#[derive(Debug, PartialEq)]
pub enum MailDecision {
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

pub struct Throttle {
    kv: SharedKv,
}

/// Who an attempt counts against.
pub struct Attempt<'a> {
    pub account: &'a str,
    pub address: Option<IpAddr>,
}

impl Attempt<'_> {
    fn subjects(&self) -> Vec<(&'static str, String, u64)> {
        let mut subjects = vec![("account", self.account.to_string(), FREE_PER_ACCOUNT)];
        if let Some(address) = self.address {
            subjects.push(("address", address.to_string(), FREE_PER_ADDRESS));
        }
        subjects
    }
}

impl Throttle {
    pub fn new(kv: SharedKv) -> Throttle {
        Throttle { kv }
    }

    /// Seconds to wait before this attempt may be checked, if it must wait.
    pub async fn must_wait(&self, attempt: &Attempt<'_>) -> Result<Option<u64>, KvError> {
        let now = crate::unix_now();
        let mut longest = None;
        for (kind, subject, _) in attempt.subjects() {
            let until = self.kv.get(&keys::throttle(&format!("{kind}-lock"), &subject)).await?.and_then(|t| t.parse::<i64>().ok());
            if let Some(until) = until.filter(|until| *until > now) {
                longest = longest.max(Some((until - now) as u64));
            }
        }
        Ok(longest)
    }

    pub async fn failed(&self, attempt: &Attempt<'_>) -> Result<(), KvError> {
        for (kind, subject, free) in attempt.subjects() {
            let failures = self.kv.increment(&keys::throttle(kind, &subject), WINDOW).await?;
            if let Some(wait) = wait_after(failures, free) {
                let until = crate::unix_now() + wait.as_secs() as i64;
                self.kv.set_expiring(&keys::throttle(&format!("{kind}-lock"), &subject), &until.to_string(), wait).await?;
            }
        }
        Ok(())
    }

    /// Count a request that would email `recipient`, from `address`.
    pub async fn mail_requested(&self, recipient: &str, address: Option<IpAddr>) -> Result<MailDecision, KvError> {
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

    pub async fn succeeded(&self, attempt: &Attempt<'_>) -> Result<(), KvError> {
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
        assert_eq!(wait_after(49, 50), None);
    }
}
