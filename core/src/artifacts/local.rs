//! The local-folder object store for `longhaul dev`: keys are paths under one
//! root. An upload streams into a hidden temp file in the destination folder
//! and is renamed into place on complete (an atomic rename: nothing
//! half-written is ever visible under the key); abort deletes the temp file.
//! Download links (HMAC-signed tokens served by the API) are not here yet.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    hex, validate_key, validate_prefix, ObjectInfo, ObjectStore, Result, StorageError,
    StoredObject, Upload,
};

/// Marks temp files of uploads in progress; [`LocalStore::list`] skips them.
const TEMP_MARKER: &str = ".longhaul-upload-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> StorageError {
    move |source| StorageError::Io { context, source }
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(io("creating the root folder"))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    async fn open_existing(&self, key: &str) -> Result<(tokio::fs::File, u64)> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::NotFound(key.to_string()))
            }
            Err(e) => return Err(io("opening an object")(e)),
        };
        let size = file.metadata().await.map_err(io("reading metadata"))?.len();
        Ok((file, size))
    }
}

pub struct LocalUpload {
    key: String,
    temp: PathBuf,
    dest: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
}

#[async_trait]
impl Upload for LocalUpload {
    async fn put_part(&mut self, bytes: Bytes) -> Result<()> {
        let file = self
            .file
            .as_mut()
            .expect("an upload is used after it ended");
        if let Err(e) = file.write_all(&bytes).await {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(io("writing an upload")(e));
        }
        self.hasher.update(&bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<StoredObject> {
        let mut file = self.file.take().expect("an upload is used after it ended");
        let finished = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&self.temp, &self.dest).await
        }
        .await;
        if let Err(e) = finished {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(io("completing an upload")(e));
        }
        Ok(StoredObject {
            key: std::mem::take(&mut self.key),
            size: self.size,
            sha256: hex(&std::mem::take(&mut self.hasher).finalize()),
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        drop(self.file.take());
        match tokio::fs::remove_file(&self.temp).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("aborting an upload")(e)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let dest = self.path_of(key)?;
        let dir = dest
            .parent()
            .expect("a key path has a parent")
            .to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io("creating the object's folder"))?;
        let name = dest
            .file_name()
            .expect("a key has a name")
            .to_string_lossy();
        let temp = dir.join(format!(".{name}{TEMP_MARKER}{:016x}", fastrand::u64(..)));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(io("creating an upload's temp file"))?;
        Ok(Box::new(LocalUpload {
            key: key.to_string(),
            temp,
            dest,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
        }))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let (mut file, size) = self.open_existing(key).await?;
        if range.start > range.end || range.end > size {
            return Err(StorageError::InvalidRange {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(io("seeking"))?;
        let mut buf = vec![0; (range.end - range.start) as usize];
        file.read_exact(&mut buf).await.map_err(io("reading"))?;
        Ok(buf.into())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let (mut file, size) = self.open_existing(key).await?;
        let mut buf = Vec::with_capacity(size as usize);
        file.read_to_end(&mut buf).await.map_err(io("reading"))?;
        Ok(buf.into())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("deleting an object")(e)),
            _ => Ok(()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        validate_prefix(prefix)?;
        // Walk only the deepest folder the prefix names in full.
        let start = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut pending = vec![(self.root.join(start), start.to_string())];
        while let Some((dir, rel)) = pending.pop() {
            let mut entries = match tokio::fs::read_dir(&dir).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("listing a folder")(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io("listing"))? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let key = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let kind = entry.file_type().await.map_err(io("listing"))?;
                if kind.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        pending.push((entry.path(), key));
                    }
                } else if kind.is_file() && !name.contains(TEMP_MARKER) && key.starts_with(prefix) {
                    let size = entry.metadata().await.map_err(io("listing"))?.len();
                    out.push(ObjectInfo { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
