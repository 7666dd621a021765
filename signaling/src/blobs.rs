//! Content-addressed blob files under `OPENCHAT_DATA_DIR/blobs` (attachments, avatars).
//!
//! Bytes are written and read here, on the front-end's runtime, never on the storage
//! thread; only the metadata (sha256, type, size, dimensions) goes to the database. A blob
//! is streamed to a temporary file while hashed, synced, then renamed to
//! `blobs/<first two hex>/<sha256>`, so a crash leaves either the whole blob or nothing,
//! and the database row is written only after the rename.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Bytes of a blob's beginning kept in memory for content sniffing and image headers.
pub const HEAD_BYTES_MAX: usize = 256 * 1024;
/// A download reads the file in chunks of this size: a response holds one chunk at a time
/// (plus what hyper and the socket buffer), however large the blob and however slow the
/// client.
pub const DOWNLOAD_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

/// A blob that is safely on disk.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub sha256: String,
    pub len: u64,
    /// The first [`HEAD_BYTES_MAX`] bytes.
    pub head: Vec<u8>,
}

fn valid_sha256(sha: &str) -> bool {
    sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// Uses (and creates) `data_dir/blobs`.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("blobs");
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// Reads a whole blob (tests and small files only; downloads use [`BlobStore::open_blob`]).
    pub async fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let (mut file, len) = self.open_blob(sha256).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Opens a blob for reading; returns the file and its length on disk.
    pub async fn open_blob(&self, sha256: &str) -> std::io::Result<(tokio::fs::File, u64)> {
        if !valid_sha256(sha256) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a sha256",
            ));
        }
        let file = tokio::fs::File::open(self.path(sha256)).await?;
        let len = file.metadata().await?.len();
        Ok((file, len))
    }

    /// Starts a new blob in a temporary file.
    pub async fn begin(&self) -> std::io::Result<BlobWriter> {
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            len: 0,
            head: Vec::new(),
            committed: false,
        })
    }
}

/// `len` bytes of `file` from `start`, streamed in [`DOWNLOAD_CHUNK_BYTES`] chunks. A read
/// error ends the stream early (logged); hyper then closes the connection, because fewer
/// bytes than the announced `Content-Length` were sent.
pub async fn stream_range(
    mut file: tokio::fs::File,
    start: u64,
    len: u64,
) -> std::io::Result<crate::body::Body> {
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let chunks = futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left).map_or(DOWNLOAD_CHUNK_BYTES, |left| left.min(DOWNLOAD_CHUNK_BYTES));
        let mut buf = BytesMut::with_capacity(want);
        match (&mut file).take(want as u64).read_buf(&mut buf).await {
            Ok(0) => {
                tracing::error!(left, "a blob ended before its recorded length");
                None
            }
            Ok(read) => Some((buf.freeze(), (file, left - read as u64))),
            Err(err) => {
                tracing::error!(error = %err, "reading a blob failed mid-response");
                None
            }
        }
    });
    let frames =
        chunks.map(|chunk: Bytes| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)));
    Ok(BodyExt::boxed(http_body_util::StreamBody::new(frames)))
}

/// A blob being written; dropped without [`BlobWriter::commit`], it leaves nothing behind.
pub struct BlobWriter {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    hasher: ring::digest::Context,
    len: u64,
    head: Vec<u8>,
    committed: bool,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("tmp", &self.tmp)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The first [`HEAD_BYTES_MAX`] bytes written so far.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("blob writer already finished"));
        };
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        let room = HEAD_BYTES_MAX.saturating_sub(self.head.len());
        self.head.extend_from_slice(&chunk[..room.min(chunk.len())]);
        Ok(())
    }

    /// Syncs the bytes and moves them to their content address.
    pub async fn commit(mut self, store: &BlobStore) -> std::io::Result<StoredBlob> {
        let Some(mut file) = self.file.take() else {
            return Err(std::io::Error::other("blob writer already finished"));
        };
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let digest = self.hasher.clone().finish();
        let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let path = store.path(&sha256);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Identical content is stored once; a rename over an existing copy is harmless.
        tokio::fs::rename(&self.tmp, &path).await?;
        self.committed = true;
        Ok(StoredBlob {
            sha256,
            len: self.len,
            head: std::mem::take(&mut self.head),
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_addressed_by_content_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.begin().await.unwrap();
        writer.write(b"hello ").await.unwrap();
        writer.write(b"world").await.unwrap();
        let blob = writer.commit(&store).await.unwrap();
        assert_eq!(
            blob.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!((blob.len, blob.head.as_slice()), (11, &b"hello world"[..]));
        assert_eq!(store.read(&blob.sha256).await.unwrap(), b"hello world");
        assert!(store.read("../../etc/passwd").await.is_err());
    }

    #[tokio::test]
    async fn abandoned_blobs_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut writer = store.begin().await.unwrap();
        writer.write(b"partial").await.unwrap();
        drop(writer);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp")).unwrap().count(),
            0
        );
    }
}
