//! The outbox. There is no mail server in development, so mail the provider
//! sends (password resets, username and company reminders) is written as
//! `.eml` files to a folder, and each message gets one log line saying where
//! it went. The log line never holds the message body: reset links are
//! secrets.

use std::path::PathBuf;

use lettre::message::header::ContentTransferEncoding;
use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox, SinglePart};
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};

pub struct Outbox {
    dir: PathBuf,
    from: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad address `{0}`")]
    Address(String),
    #[error("cannot build message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("cannot write to the outbox: {0}")]
    Write(String),
}

impl Outbox {
    pub fn new(dir: PathBuf, from: String) -> Self {
        Outbox { dir, from }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Writes one plain-text message; returns the path of its `.eml` file.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<PathBuf, MailError> {
        let from: Mailbox = self.from.parse().map_err(|_| MailError::Address(self.from.clone()))?;
        let to_box: Mailbox = to.parse().map_err(|_| MailError::Address(to.to_string()))?;
        // `binary` keeps lines whole (lettre would quoted-print a long link),
        // so the .eml reads, and its link copies, as written. The file is
        // never relayed over SMTP, where 7bit/8bit line limits would matter.
        let part = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(
            Body::new_with_encoding(body, ContentTransferEncoding::Binary)
                .map_err(|_| MailError::Write("cannot encode body".into()))?,
        );
        let msg = Message::builder()
            .from(from)
            .to(to_box)
            .subject(subject)
            .singlepart(part)?;
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| MailError::Write(e.to_string()))?;
        let transport = AsyncFileTransport::<Tokio1Executor>::new(&self.dir);
        let id = transport.send(msg).await.map_err(|e| MailError::Write(e.to_string()))?;
        let path = self.dir.join(format!("{id}.eml"));
        tracing::info!(mail.to = %to, mail.subject = %subject, mail.file = %path.display(), "mail written to outbox");
        Ok(path)
    }
}
