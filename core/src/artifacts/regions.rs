//! The artifact stores of one deployment, by tenant region (data residency:
//! a tenant's artifacts go to its region's bucket), and the download links
//! handed to clients: the store's own presigned link where it has one (S3),
//! else an HMAC-signed token the API serves (`/v1/artifacts/{token}`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    validate_component, DownloadGrant, DownloadSigner, LocalStore, ObjectStore, Result, S3Config,
    S3Store, S3Timeouts, StorageError, TokenError,
};
use crate::config::{ArtifactBackend, ArtifactConfig};

/// A link a client downloads an artifact from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadLink {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

enum Regions {
    /// One folder; region `r` is the sub-folder `r` (any region is served).
    Local {
        root: PathBuf,
        part_size: usize,
        opened: std::sync::Mutex<BTreeMap<String, Arc<dyn ObjectStore>>>,
    },
    /// A configured store per region; other regions have none.
    Fixed(BTreeMap<String, Arc<dyn ObjectStore>>),
}

/// Where tenants' data buckets (scanned by classification and leakage
/// scans, never written) are.
enum DataBuckets {
    /// Folders: bucket `b` is `<root>/b`.
    Local(PathBuf),
    /// S3 buckets on the artifact stores' endpoint, in the AWS region of the
    /// tenant's region.
    S3 {
        endpoint_url: Option<String>,
        force_path_style: bool,
        timeouts: S3Timeouts,
        aws_regions: BTreeMap<String, String>,
        /// The artifact buckets: never a tenant's data bucket (they hold
        /// every tenant's artifacts).
        reserved: std::collections::BTreeSet<String>,
    },
    None,
}

pub struct ArtifactStores {
    regions: Regions,
    data_buckets: DataBuckets,
    opened_buckets: tokio::sync::Mutex<BTreeMap<(String, String), Arc<dyn ObjectStore>>>,
    signer: DownloadSigner,
    public_url: String,
    link_ttl: Duration,
}

impl std::fmt::Debug for ArtifactStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let regions = match &self.regions {
            Regions::Local { root, .. } => format!("local {}", root.display()),
            Regions::Fixed(stores) => format!("{:?}", stores.keys().collect::<Vec<_>>()),
        };
        f.debug_struct("ArtifactStores")
            .field("regions", &regions)
            .field("public_url", &self.public_url)
            .field("link_ttl", &self.link_ttl)
            .finish_non_exhaustive()
    }
}

impl ArtifactStores {
    /// Local folders under `root`, one per region.
    pub fn local(root: impl Into<PathBuf>, signer: DownloadSigner) -> Self {
        let root: PathBuf = root.into();
        Self {
            data_buckets: DataBuckets::Local(root.join(".buckets")),
            opened_buckets: Default::default(),
            regions: Regions::Local {
                root,
                part_size: super::DEFAULT_PART_SIZE,
                opened: Default::default(),
            },
            signer,
            public_url: "http://127.0.0.1:8080".into(),
            link_ttl: Duration::from_secs(300),
        }
    }

    /// The given store per region.
    pub fn fixed(stores: BTreeMap<String, Arc<dyn ObjectStore>>, signer: DownloadSigner) -> Self {
        Self {
            regions: Regions::Fixed(stores),
            data_buckets: DataBuckets::None,
            opened_buckets: Default::default(),
            signer,
            public_url: "http://127.0.0.1:8080".into(),
            link_ttl: Duration::from_secs(300),
        }
    }

    /// The base URL of token links (the API as clients reach it).
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = url.into().trim_end_matches('/').to_string();
        self
    }

    pub fn with_link_ttl(mut self, ttl: Duration) -> Self {
        self.link_ttl = ttl;
        self
    }

    /// Data buckets are the folders under `root` (local stores).
    pub fn with_local_data_buckets(mut self, root: impl Into<PathBuf>) -> Self {
        self.data_buckets = DataBuckets::Local(root.into());
        self
    }

    /// Data buckets are S3 buckets on `endpoint_url`; a tenant region's
    /// buckets are in `aws_regions[region]`.
    pub fn with_s3_data_buckets(
        mut self,
        endpoint_url: Option<String>,
        force_path_style: bool,
        timeouts: S3Timeouts,
        aws_regions: BTreeMap<String, String>,
        artifact_buckets: impl IntoIterator<Item = String>,
    ) -> Self {
        self.data_buckets = DataBuckets::S3 {
            endpoint_url,
            force_path_style,
            timeouts,
            aws_regions,
            reserved: artifact_buckets.into_iter().collect(),
        };
        self
    }

    /// Bucket `bucket` is `store` in every region (tests, and deployments
    /// that wrap a bucket's store).
    pub async fn with_data_bucket(self, bucket: &str, store: Arc<dyn ObjectStore>) -> Self {
        self.opened_buckets
            .lock()
            .await
            .insert((String::new(), bucket.to_string()), store);
        self
    }

    /// The store of a tenant's data bucket (`settings.dataBuckets` names it;
    /// the caller checks the tenant may read it).
    pub async fn data_bucket(&self, region: &str, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
        validate_component(bucket)?;
        let mut opened = self.opened_buckets.lock().await;
        let entry = (region.to_string(), bucket.to_string());
        let everywhere = (String::new(), bucket.to_string());
        if let Some(store) = opened.get(&entry).or_else(|| opened.get(&everywhere)) {
            return Ok(store.clone());
        }
        let store: Arc<dyn ObjectStore> = match &self.data_buckets {
            DataBuckets::Local(root) => Arc::new(LocalStore::at(root.join(bucket))),
            DataBuckets::S3 {
                endpoint_url,
                force_path_style,
                timeouts,
                aws_regions,
                reserved,
            } => {
                if reserved.contains(bucket) {
                    return Err(StorageError::InvalidKey {
                        key: bucket.to_string(),
                        reason: "an artifact bucket is never a tenant's data bucket",
                    });
                }
                let aws_region = aws_regions
                    .get(region)
                    .ok_or_else(|| StorageError::NoRegion(region.to_string()))?;
                let mut s3 = S3Config::new(bucket, aws_region);
                s3.endpoint_url = endpoint_url.clone();
                s3.force_path_style = *force_path_style;
                s3.timeouts = *timeouts;
                Arc::new(S3Store::connect(&s3).await?)
            }
            DataBuckets::None => return Err(StorageError::NoRegion(region.to_string())),
        };
        opened.insert(entry, store.clone());
        Ok(store)
    }

    /// The key of a tenant's leakage fingerprints: derived from the
    /// deployment's signing secret, one per tenant, so a fingerprint cannot
    /// be recomputed from a guessed secret without the key, nor matched
    /// across tenants. None when the secret is this process's own (S3
    /// without `LONGHAUL_DOWNLOAD_SIGNING_KEY`): fingerprints are then plain
    /// hashes, stable across processes.
    pub fn fingerprint_key(&self, tenant_id: &str) -> Option<[u8; 32]> {
        self.signer
            .derive_key(&format!("leakage fingerprints v1\n{tenant_id}"))
    }

    /// The local stores' part size (each part is a resumable checkpoint).
    pub fn with_local_part_size(mut self, size: usize) -> Self {
        if let Regions::Local { part_size, .. } = &mut self.regions {
            *part_size = size.max(1);
        }
        self
    }

    /// The stores the configuration names; S3 buckets are not created here
    /// (production buckets come with their region's policies).
    pub async fn from_config(config: &ArtifactConfig, data_dir: &std::path::Path) -> Result<Self> {
        let signer_error = |message: String| StorageError::Io {
            context: "the download signing secret",
            source: std::io::Error::other(message),
        };
        let signer = match (&config.signing_secret, &config.backend) {
            (Some(secret), _) => {
                DownloadSigner::new(secret.0.clone().into_bytes()).map_err(signer_error)?
            }
            // S3 links are presigned by S3: no token is ever signed, so no
            // secret file is written.
            (None, ArtifactBackend::S3 { .. }) => DownloadSigner::random().map_err(signer_error)?,
            (None, ArtifactBackend::Local { .. }) => DownloadSigner::load_or_create(
                &data_dir.join("download-signing.key"),
            )
            .map_err(|source| StorageError::Io {
                context: "reading the download signing secret",
                source,
            })?,
        };
        let stores = match &config.backend {
            ArtifactBackend::Local { dir } => {
                Self::local(dir.clone(), signer).with_local_data_buckets(data_dir.join("buckets"))
            }
            ArtifactBackend::S3 {
                buckets,
                endpoint_url,
                force_path_style,
                timeouts,
            } => {
                let mut stores: BTreeMap<String, Arc<dyn ObjectStore>> = BTreeMap::new();
                for (region, bucket) in buckets {
                    let mut s3 = S3Config::new(&bucket.bucket, &bucket.aws_region);
                    s3.endpoint_url = endpoint_url.clone();
                    s3.force_path_style = *force_path_style;
                    s3.timeouts = *timeouts;
                    stores.insert(region.clone(), Arc::new(S3Store::connect(&s3).await?));
                }
                let aws_regions = buckets
                    .iter()
                    .map(|(region, bucket)| (region.clone(), bucket.aws_region.clone()))
                    .collect();
                Self::fixed(stores, signer).with_s3_data_buckets(
                    endpoint_url.clone(),
                    *force_path_style,
                    *timeouts,
                    aws_regions,
                    buckets.values().map(|b| b.bucket.clone()),
                )
            }
        };
        Ok(stores
            .with_public_url(config.public_url.clone())
            .with_link_ttl(config.download_link_ttl))
    }

    /// The store holding region `region`'s artifacts.
    pub fn store(&self, region: &str) -> Result<Arc<dyn ObjectStore>> {
        match &self.regions {
            Regions::Fixed(stores) => stores
                .get(region)
                .cloned()
                .ok_or_else(|| StorageError::NoRegion(region.to_string())),
            Regions::Local {
                root,
                part_size,
                opened,
            } => {
                validate_component(region).map_err(|_| StorageError::NoRegion(region.into()))?;
                let mut opened = opened.lock().unwrap_or_else(|p| p.into_inner());
                let store = opened.entry(region.to_string()).or_insert_with(|| {
                    Arc::new(LocalStore::at(root.join(region)).with_part_size(*part_size))
                });
                Ok(store.clone())
            }
        }
    }

    /// A link to download `key` from `region`'s store, valid for the
    /// configured time from `now`.
    pub async fn download_link(
        &self,
        region: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<DownloadLink> {
        // Whole seconds: a token carries its expiry in seconds.
        let expires_at = now
            + chrono::Duration::from_std(self.link_ttl).unwrap_or(chrono::Duration::seconds(300));
        let expires_at = DateTime::from_timestamp(expires_at.timestamp(), 0).unwrap_or(expires_at);
        let store = self.store(region)?;
        if let Some(url) = store.presigned_url(key, self.link_ttl).await? {
            return Ok(DownloadLink { url, expires_at });
        }
        let token = self.signer.sign(&DownloadGrant {
            region: region.to_string(),
            key: key.to_string(),
            expires_at,
        });
        Ok(DownloadLink {
            url: format!("{}/v1/artifacts/{token}", self.public_url),
            expires_at,
        })
    }

    /// The object a token links to, if the token is genuine and unexpired.
    pub fn verify_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<DownloadGrant, TokenError> {
        self.signer.verify(token, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> DownloadSigner {
        DownloadSigner::new(b"a test secret long enough for hmac!!".to_vec()).unwrap()
    }

    #[tokio::test]
    async fn an_artifact_bucket_is_never_a_data_bucket() {
        let stores = ArtifactStores::fixed(BTreeMap::new(), signer()).with_s3_data_buckets(
            Some("http://127.0.0.1:9".into()),
            true,
            S3Timeouts::default(),
            [("eu".to_string(), "eu-central-1".to_string())].into(),
            ["lh-eu".to_string()],
        );
        let refused = stores.data_bucket("eu", "lh-eu").await;
        assert!(
            matches!(refused, Err(StorageError::InvalidKey { .. })),
            "{:?}",
            refused.err()
        );
        // A region without a bucket has no data buckets either.
        assert!(matches!(
            stores.data_bucket("us", "customer").await,
            Err(StorageError::NoRegion(_))
        ));
    }

    #[tokio::test]
    async fn local_data_buckets_are_folders_and_names_are_checked() {
        let root = std::env::temp_dir().join(format!("longhaul-regions-{}", uuid::Uuid::now_v7()));
        let stores = ArtifactStores::local(&root, signer());
        assert!(stores.data_bucket("eu", "../escape").await.is_err());
        let bucket = stores.data_bucket("eu", "customer").await.unwrap();
        std::fs::create_dir_all(root.join(".buckets/customer/a")).unwrap();
        std::fs::write(root.join(".buckets/customer/a/b.txt"), b"x").unwrap();
        let listed = bucket.list("a/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/b.txt");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
