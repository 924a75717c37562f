//! Outgoing email: the links that finish a sign-up and reset a password. With `SMTP_URL` set,
//! lettre sends through that server; without it, messages go to a local outbox that the developer
//! reads at `/dev/outbox`, so an offline run still shows every email. The outbox lives in this
//! process's memory (the newest [`OUTBOX_SIZE`] messages): it is for one developer's machine, and
//! asking again (sign up again, reset again) writes a new message.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::MailSettings;
use crate::domain::Email;

/// Messages the outbox keeps.
pub const OUTBOX_SIZE: usize = 100;
/// An SMTP server that does not answer in this long fails the request (which the user can retry),
/// well inside the request deadline.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One plain-text message to one person.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: Email,
    pub subject: String,
    pub text: String,
}

/// A message in the outbox, with when it was written (unix seconds).
#[derive(Debug, Clone)]
pub struct SentMail {
    pub mail: Mail,
    pub sent_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the email could not be sent: {0}")]
pub struct MailError(String);

pub enum Mailer {
    Smtp { transport: AsyncSmtpTransport<Tokio1Executor>, from: Mailbox },
    Outbox(Mutex<VecDeque<SentMail>>),
}

impl Mailer {
    /// The mailer for these settings (already checked by `config`, so a failure here is a bug).
    pub fn new(settings: &MailSettings) -> anyhow::Result<Mailer> {
        Ok(match settings {
            MailSettings::Outbox => Mailer::Outbox(Mutex::new(VecDeque::new())),
            MailSettings::Smtp { url, from, .. } => Mailer::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|_| anyhow::anyhow!("SMTP_URL is not an SMTP URL"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build(),
                from: from.parse().map_err(|_| anyhow::anyhow!("MAIL_FROM is not an address"))?,
            },
        })
    }

    pub async fn send(&self, mail: Mail) -> Result<(), MailError> {
        match self {
            Mailer::Outbox(outbox) => {
                tracing::info!(to = %mail.to.as_str(), subject = %mail.subject, "email written to the local outbox (/dev/outbox)");
                let mut outbox = outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                outbox.push_front(SentMail { mail, sent_at: crate::clock::unix_now() });
                outbox.truncate(OUTBOX_SIZE);
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = mail.to.as_str().parse().map_err(|e| MailError(format!("recipient: {e}")))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text)
                    .map_err(|e| MailError(e.to_string()))?;
                transport.send(message).await.map(|_| ()).map_err(|e| MailError(e.to_string()))
            }
        }
    }

    /// Whether the SMTP server answers (the outbox always does).
    pub async fn reachable(&self) -> bool {
        match self {
            Mailer::Smtp { transport, .. } => transport.test_connection().await.unwrap_or(false),
            Mailer::Outbox(_) => true,
        }
    }

    pub fn is_outbox(&self) -> bool {
        matches!(self, Mailer::Outbox(_))
    }

    /// The outbox's messages, newest first; `None` when mail goes out by SMTP.
    pub fn outbox(&self) -> Option<Vec<SentMail>> {
        match self {
            Mailer::Outbox(outbox) => Some(outbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()),
            Mailer::Smtp { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_outbox_keeps_the_newest_messages() {
        let mailer = Mailer::new(&MailSettings::Outbox).unwrap();
        for n in 0..OUTBOX_SIZE + 5 {
            let mail = Mail { to: Email::parse("ada@example.com").unwrap(), subject: format!("n{n}"), text: String::new() };
            mailer.send(mail).await.unwrap();
        }
        let kept = mailer.outbox().unwrap();
        assert_eq!(kept.len(), OUTBOX_SIZE);
        assert_eq!(kept[0].mail.subject, format!("n{}", OUTBOX_SIZE + 4), "newest first");
        assert_eq!(kept[OUTBOX_SIZE - 1].mail.subject, "n5");
    }
}
