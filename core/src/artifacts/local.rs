//! The local-folder object store for `longhaul dev`: keys are paths under one
//! root. An upload streams into a hidden temp file in the destination folder
//! (named by its upload id, so a later attempt can find it, cut it back to its
//! last stored part and go on) and is renamed into place on complete: an
//! atomic rename, so nothing half-written is ever visible under the key. Abort
//! deletes the temp file. Downloads go through HMAC-signed tokens the API
//! serves (`download_token`), not through links of the store's own.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    validate_key, validate_prefix, ObjectInfo, ObjectReader, ObjectStore, Result, ResumableSha256,
    StorageError, StoredObject, Upload, UploadState, UploadedPart, DEFAULT_PART_SIZE,
};

/// Marks temp files of uploads in progress; [`LocalStore::list`] skips them.
const TEMP_MARKER: &str = ".longhaul-upload-";

#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    part_size: usize,
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
        Ok(Self {
            root,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// A store rooted at `root`, created lazily (an upload creates the
    /// folders it needs; reads of a missing root find nothing).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Bytes per stored part (each part is flushed to disk and answers a
    /// resumable state); at least 1.
    pub fn with_part_size(mut self, part_size: usize) -> Self {
        self.part_size = part_size.max(1);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// The object's path and the temp file path of upload `upload_id` to it.
    fn upload_paths(&self, key: &str, upload_id: &str) -> Result<(PathBuf, PathBuf)> {
        if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StorageError::UploadGone {
                key: key.to_string(),
                reason: format!("{upload_id:?} is not a local upload id"),
            });
        }
        let dest = self.path_of(key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let temp = dest.with_file_name(format!(".{name}{TEMP_MARKER}{upload_id}"));
        Ok((dest, temp))
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
    upload_id: String,
    temp: PathBuf,
    dest: PathBuf,
    file: tokio::fs::File,
    part_size: usize,
    parts: Vec<UploadedPart>,
    /// Bytes in stored parts.
    stored: u64,
    hasher: ResumableSha256,
}

impl LocalUpload {
    fn state(&self) -> UploadState {
        UploadState::at(
            &self.key,
            &self.upload_id,
            &self.parts,
            self.stored,
            &self.hasher,
        )
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, bytes: Bytes) -> Result<Option<UploadState>> {
        self.file
            .write_all(&bytes)
            .await
            .map_err(io("writing an upload"))?;
        self.hasher.update(&bytes);
        let pending = self.hasher.len() - self.stored;
        if pending < self.part_size as u64 {
            return Ok(None);
        }
        // A part is stored once it is on disk: a state answered here must
        // survive a crash of this process.
        self.file
            .sync_data()
            .await
            .map_err(io("flushing an upload part"))?;
        self.parts.push(UploadedPart {
            number: self.parts.len() as i32 + 1,
            etag: None,
            size: pending,
        });
        self.stored += pending;
        Ok(Some(self.state()))
    }

    fn written(&self) -> u64 {
        self.hasher.len()
    }

    fn buffered(&self) -> u64 {
        self.hasher.len() - self.stored
    }

    fn part_size(&self) -> usize {
        self.part_size
    }

    async fn complete(mut self: Box<Self>) -> Result<StoredObject> {
        let finished = async {
            self.file.flush().await?;
            self.file.sync_all().await?;
            tokio::fs::rename(&self.temp, &self.dest).await
        }
        .await;
        finished.map_err(io("completing an upload"))?;
        let size = self.hasher.len();
        Ok(StoredObject {
            key: std::mem::take(&mut self.key),
            size,
            sha256: std::mem::take(&mut self.hasher).finalize_hex(),
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let LocalUpload { temp, file, .. } = *self;
        drop(file);
        match tokio::fs::remove_file(&temp).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("aborting an upload")(e)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>> {
        let upload_id = format!("{:016x}", fastrand::u64(..));
        let (dest, temp) = self.upload_paths(key, &upload_id)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(io("creating the object's folder"))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
            .map_err(io("creating an upload's temp file"))?;
        Ok(Box::new(LocalUpload {
            key: key.to_string(),
            upload_id,
            temp,
            dest,
            file,
            part_size: self.part_size,
            parts: Vec::new(),
            stored: 0,
            hasher: ResumableSha256::new(),
        }))
    }

    async fn resume_upload(&self, state: &UploadState) -> Result<Box<dyn Upload>> {
        let gone = |reason: String| state.gone(reason);
        let (dest, temp) = self.upload_paths(&state.key, &state.upload_id)?;
        let hasher = state.restore_hasher()?;
        let mut file = match tokio::fs::OpenOptions::new().write(true).open(&temp).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(gone("its temp file is gone".into()))
            }
            Err(e) => return Err(io("reopening an upload")(e)),
        };
        let on_disk = file.metadata().await.map_err(io("reading metadata"))?.len();
        if on_disk < state.size {
            return Err(gone(format!(
                "its temp file holds {on_disk} bytes, fewer than the {} stored",
                state.size
            )));
        }
        // Bytes after the last stored part were written by an attempt that
        // did not get to save them: cut them off.
        file.set_len(state.size)
            .await
            .map_err(io("truncating an upload"))?;
        file.seek(SeekFrom::End(0))
            .await
            .map_err(io("seeking an upload"))?;
        Ok(Box::new(LocalUpload {
            key: state.key.clone(),
            upload_id: state.upload_id.clone(),
            temp,
            dest,
            file,
            part_size: self.part_size,
            parts: state.parts.clone(),
            stored: state.size,
            hasher,
        }))
    }

    async fn abort_uploads(&self, key: &str) -> Result<()> {
        let dest = self.path_of(key)?;
        let name = key.rsplit('/').next().unwrap_or(key);
        let temp_prefix = format!(".{name}{TEMP_MARKER}");
        let Some(dir) = dest.parent() else {
            return Ok(());
        };
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("listing an object's folder")(e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(io("listing"))? {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&temp_prefix)
            {
                match tokio::fs::remove_file(entry.path()).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("aborting an upload")(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<ObjectReader> {
        let (file, size) = self.open_existing(key).await?;
        Ok(ObjectReader {
            size,
            body: Box::pin(file),
        })
    }

    async fn presigned_url(&self, key: &str, _expires_in: Duration) -> Result<Option<String>> {
        validate_key(key)?;
        Ok(None)
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
                    let metadata = entry.metadata().await.map_err(io("listing"))?;
                    out.push(ObjectInfo {
                        key,
                        size: metadata.len(),
                        last_modified: metadata.modified().ok().map(chrono::DateTime::from),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}
