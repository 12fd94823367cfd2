//! The outbox. There is no mail server in development, so mail the provider
//! sends (password resets, username and company reminders) is written as
//! `.eml` files to a folder, and each message gets one log line saying where
//! it went. The log line never holds the message body: reset links are
//! secrets. For the same reason the outbox is private: the folder is
//! created with mode 0700 (an existing one of this user's is narrowed to
//! it) and every message is written with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use lettre::Message;
use lettre::message::header::ContentTransferEncoding;
use lettre::message::header::ContentType;
use lettre::message::{Body, Mailbox, SinglePart};

pub struct Outbox {
    dir: PathBuf,
    from: String,
    /// The folder was found open to others and could not be narrowed; said
    /// once in the log.
    warned: AtomicBool,
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
        Outbox {
            dir,
            from,
            warned: AtomicBool::new(false),
        }
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
        let dir = self.dir.clone();
        let warn = !self.warned.load(Ordering::Relaxed);
        let written = tokio::task::spawn_blocking(move || {
            let open_to_others = private_dir(&dir)?;
            let path = dir.join(format!("{:032x}.eml", rand::random::<u128>()));
            write_private(&path, &msg.formatted())?;
            Ok::<_, std::io::Error>((path, open_to_others))
        })
        .await
        .map_err(|e| MailError::Write(e.to_string()))?;
        let (path, open_to_others) = written.map_err(|e| MailError::Write(e.to_string()))?;
        if open_to_others && warn && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(outbox = %self.dir.display(), "the outbox folder is not this user's and others may read it; mail there holds reset and welcome links");
        }
        tracing::info!(mail.to = %to, mail.subject = %subject, mail.file = %path.display(), "mail written to outbox");
        Ok(path)
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or narrows an
/// existing folder of this user's to 0700. Returns whether it stays open
/// to others (a folder of another user's, or a shared one such as `/tmp`
/// with its sticky bit, is never changed).
#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            Ok(false)
        }
        Err(e) => Err(e),
        Ok(m) if m.mode() & 0o077 == 0 => Ok(false),
        Ok(m) if m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o1000 == 0 => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::info!(outbox = %dir.display(), "outbox folder made private (mode 0700)");
            Ok(false)
        }
        Ok(_) => Ok(true),
    }
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    Ok(false)
}

/// Writes a new file (never an existing one, never through a link) that
/// only its owner may read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
