//! The demo tenant's data bucket in `longhaul dev`: a folder
//! `LONGHAUL_DATA_DIR/buckets/demo/` with a few small sample files (a CSV of
//! made-up customers with e-mail addresses and phone numbers, a config file
//! with test secrets from the corpus generator), named in the tenant's
//! `settings.dataBuckets` as `demo`, so classification and leakage scans
//! work on the first start. The samples are written only when the folder
//! does not exist yet: files added or removed there are kept as they are.

use std::path::{Path, PathBuf};

use anyhow::Context;
use longhaul_core::audit::Actor;
use longhaul_core::config::ArtifactBackend;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{Tenant, TenantPatch};
use longhaul_core::Config;
use serde_json::json;

/// The bucket's name in scans (`"buckets": ["demo"]`) and its folder.
pub const BUCKET: &str = "demo";

pub struct DemoBucket {
    pub name: &'static str,
    pub folder: PathBuf,
    /// The sample files, relative to the folder (when they were written now).
    pub samples: Vec<&'static str>,
}

/// The sample files: path in the bucket and content.
fn samples() -> Vec<(&'static str, String)> {
    let customers = "id,name,email,phone,signup_date\n\
                     1,Ada Example,ada.example@example.com,+1 415 555 0123,2024-03-01\n\
                     2,Ben Sample,ben.sample@example.org,+44 20 7946 0958,2024-05-17\n\
                     3,Chloe Placeholder,chloe@example.net,+49 30 1234 5678,2024-09-30\n"
        .to_string();
    // Secrets that pass the built-in rules' checks (checksums included),
    // made by the corpus generator: always the same ones.
    let github = longhaul_scan::corpus::sample_secret("github-token", 19).unwrap_or_default();
    let aws = longhaul_scan::corpus::sample_secret("aws-access-key-id", 19).unwrap_or_default();
    let config = format!(
        "# Test secrets made by `longhaul scan corpus`'s generator: not real credentials.\n\
         APP_ENV=staging\n\
         GITHUB_TOKEN={github}\n\
         AWS_ACCESS_KEY_ID={aws}\n\
         LOG_LEVEL=info\n"
    );
    vec![("customers.csv", customers), ("config/app.env", config)]
}

/// Makes sure the demo bucket exists and the tenant names it; None when
/// data buckets are not local folders (`LONGHAUL_ARTIFACT_STORE=s3`).
pub async fn demo_bucket(
    stores: &dyn Stores,
    tenant: &Tenant,
    config: &Config,
) -> anyhow::Result<Option<DemoBucket>> {
    if !matches!(config.artifacts.backend, ArtifactBackend::Local { .. }) {
        return Ok(None);
    }
    let folder = config.data_dir.join("buckets").join(BUCKET);
    let written = if folder.exists() {
        Vec::new()
    } else {
        write_samples(&folder)?
    };
    if tenant.settings["dataBuckets"][BUCKET] != BUCKET {
        // A merge patch: the tenant's other settings and buckets stay.
        stores
            .update_tenant(
                &tenant.id,
                TenantPatch {
                    settings: Some(json!({"dataBuckets": {BUCKET: BUCKET}})),
                    ..TenantPatch::default()
                },
                &Actor::system(),
            )
            .await
            .context("naming the demo data bucket in the demo tenant's settings")?;
    }
    Ok(Some(DemoBucket {
        name: BUCKET,
        folder,
        samples: written,
    }))
}

fn write_samples(folder: &Path) -> anyhow::Result<Vec<&'static str>> {
    let mut written = Vec::new();
    for (name, content) in samples() {
        let path = folder.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        written.push(name);
    }
    Ok(written)
}
