//! The demo tenant's admin key in `longhaul dev`: kept in
//! `LONGHAUL_DATA_DIR/dev-api-key` (mode 0600) and printed again on every
//! start, so restarts neither pile up valid keys nor break a shell's `$KEY`.
//! When the kept key no longer authenticates as the demo tenant's admin
//! (revoked, or the folder now goes with another database), a new key is
//! issued and kept there, and the tenant's older dev keys are revoked: one
//! dev key is valid at a time.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use longhaul_core::audit::Actor;
use longhaul_core::store::Stores;
use longhaul_core::tenancy::{KeyMode, Role, Tenant};

/// The file, in the data folder, that holds the key.
pub const KEY_FILE: &str = "dev-api-key";
/// The name of dev keys (older ones are found, and revoked, by it).
const KEY_NAME: &str = "dev session";

pub struct DevKey {
    pub secret: String,
    /// Kept from an earlier start (false: issued now).
    pub reused: bool,
    pub path: PathBuf,
}

/// The kept key if it still works, else a new one (kept, older ones revoked).
pub async fn demo_key(
    stores: &dyn Stores,
    tenant: &Tenant,
    data_dir: &Path,
) -> anyhow::Result<DevKey> {
    let path = data_dir.join(KEY_FILE);
    if let Some(secret) = read_kept(&path)? {
        let authenticated = stores
            .authenticate(&secret, Utc::now())
            .await
            .context("checking the kept dev key")?;
        let works = authenticated.is_some_and(|(key, owner)| {
            key.role == Role::Admin && owner.is_some_and(|owner| owner.id == tenant.id)
        });
        if works {
            return Ok(DevKey {
                secret,
                reused: true,
                path,
            });
        }
    }
    let now = Utc::now();
    for key in stores.list_api_keys(&tenant.id).await? {
        if key.name == KEY_NAME && key.is_valid_at(now) {
            stores
                .revoke_api_key(&tenant.id, &key.id, now, &Actor::system())
                .await
                .with_context(|| format!("revoking the earlier dev key {}", key.id))?;
        }
    }
    let issued = stores
        .issue_api_key(
            Some(&tenant.id),
            KEY_NAME,
            Role::Admin,
            KeyMode::Test,
            &Actor::system(),
        )
        .await?;
    write_private(&path, &issued.secret)?;
    Ok(DevKey {
        secret: issued.secret,
        reused: false,
        path,
    })
}

/// The kept token, if the file exists.
fn read_kept(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `secret` readable by this user only, replacing the file whole.
fn write_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("moving the dev key into {}", path.display()))
}
