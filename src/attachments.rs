//! Optional attachment store: a directory where attachment bytes are kept by their SHA-256
//! (`<dir>/ab/abcdef…`). Content-addressed, so a redelivered message writes nothing new and two
//! messages with the same file share it. Without a store, intake keeps attachment metadata only.

use std::path::{Path, PathBuf};

use intake_adapters::{Attachment, UpdateAction};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct AttachmentStore {
    dir: PathBuf,
}

impl AttachmentStore {
    /// Use `dir`, creating it, and check now that it is writable, so a bad setting fails at
    /// start-up rather than on the first attachment.
    pub fn open(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("attachment dir {}: {e}", dir.display()))?;
        let probe = dir.join(format!(".write-check-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&probe, b"")
            .map_err(|e| anyhow::anyhow!("attachment dir {} is not writable: {e}", dir.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write the content an adapter kept for the attachments of `action`, record where it went
    /// (`storageKey`) and drop the bytes.
    pub async fn store(&self, action: &mut UpdateAction) -> std::io::Result<()> {
        let UpdateAction::Append(message) = action else { return Ok(()) };
        for attachment in &mut message.attachments {
            self.store_one(attachment).await?;
        }
        Ok(())
    }

    async fn store_one(&self, attachment: &mut Attachment) -> std::io::Result<()> {
        let Some(content) = attachment.content.take() else { return Ok(()) };
        let sha = hex::encode(Sha256::digest(&content.0));
        let key = format!("{}/{sha}", &sha[..2]);
        let path = self.dir.join(&key);
        if tokio::fs::try_exists(&path).await? {
            attachment.storage_key = Some(key);
            return Ok(());
        }
        tokio::fs::create_dir_all(path.parent().expect("key has a folder")).await?;
        // Write aside and rename, so a crash never leaves a half-written file under the key.
        let partial = path.with_extension(format!("partial-{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&partial, &content.0).await?;
        tokio::fs::rename(&partial, &path).await?;
        attachment.sha256.get_or_insert(sha);
        attachment.storage_key = Some(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_adapters::{AttachmentContent, Direction, NormalizedMessage};

    #[tokio::test]
    async fn stores_by_content_once_and_drops_the_bytes() {
        let dir = std::env::temp_dir().join(format!("intake-att-{}", uuid::Uuid::new_v4().simple()));
        let store = AttachmentStore::open(&dir).unwrap();
        let attachment = |bytes: &[u8]| Attachment {
            filename: Some("a.txt".into()),
            content: Some(AttachmentContent(bytes.to_vec())),
            ..Default::default()
        };
        let mut action = UpdateAction::Append(NormalizedMessage {
            idempotency_key: "k".into(),
            direction: Direction::Inbound,
            sender: Default::default(),
            subject: None,
            body: String::new(),
            attachments: vec![attachment(b"hello"), attachment(b"hello"), Attachment::default()],
            occurred_at: chrono::Utc::now(),
            is_auto_reply: false,
            metadata: Default::default(),
            fingerprint: None,
        });
        store.store(&mut action).await.unwrap();
        let UpdateAction::Append(m) = &action else { unreachable!() };
        let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(m.attachments[0].storage_key.as_deref(), Some(&*format!("2c/{sha}")));
        assert_eq!(m.attachments[1].storage_key, m.attachments[0].storage_key);
        assert!(m.attachments.iter().all(|a| a.content.is_none()));
        assert_eq!(m.attachments[2].storage_key, None);
        assert_eq!(std::fs::read(dir.join(format!("2c/{sha}"))).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.join("2c")).unwrap().count(), 1, "no partial files left");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unwritable_dir_fails_at_open() {
        assert!(AttachmentStore::open("/proc/intake-cannot-write-here").is_err());
    }
}
