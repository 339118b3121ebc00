//! Reading and encoding the export's rows one keyset page ahead: the next
//! page is queried and encoded (in its own task, so on the database and
//! another core) while this page is compressed and uploaded. Rows are encoded
//! straight from the database rows, borrowed: no owned event per row. At most
//! two pages are held at once.

use std::sync::Arc;

use longhaul_core::audit::export::ExportFormat;
use longhaul_core::audit::{AuditCursor, AuditFilter, Order};
use longhaul_core::store::Stores;
use tokio::task::JoinHandle;

use super::encode::encode_row;
use crate::handler::JobError;

/// One page, encoded.
pub struct EncodedPage {
    pub bytes: Vec<u8>,
    pub rows: usize,
    /// The page's last event (None: the page is empty).
    pub last: Option<AuditCursor>,
}

pub struct PageReader {
    stores: Arc<dyn Stores>,
    tenant_id: String,
    filter: AuditFilter,
    format: ExportFormat,
    page_rows: u32,
}

/// A page being read; dropping it stops the read.
pub struct PendingPage(JoinHandle<Result<EncodedPage, JobError>>);

impl Drop for PendingPage {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PendingPage {
    pub async fn wait(&mut self) -> Result<EncodedPage, JobError> {
        match (&mut self.0).await {
            Ok(page) => page,
            Err(error) => Err(JobError::retryable(format!(
                "reading a page of events: {error}"
            ))),
        }
    }
}

impl PageReader {
    pub fn new(
        stores: Arc<dyn Stores>,
        tenant_id: &str,
        filter: AuditFilter,
        format: ExportFormat,
        page_rows: u32,
    ) -> Self {
        Self {
            stores,
            tenant_id: tenant_id.to_string(),
            filter,
            format,
            page_rows,
        }
    }

    /// Starts reading and encoding the page after `cursor`, oldest first.
    pub fn start(&self, cursor: Option<AuditCursor>) -> PendingPage {
        let stores = self.stores.clone();
        let tenant_id = self.tenant_id.clone();
        let filter = self.filter.clone();
        let (format, limit) = (self.format, self.page_rows);
        PendingPage(tokio::spawn(async move {
            let mut bytes = Vec::with_capacity(limit as usize * 256);
            let mut last = None;
            let mut failed = None;
            let rows = stores
                .scan_audit_events(
                    &tenant_id,
                    &filter,
                    cursor,
                    Order::OldestFirst,
                    limit,
                    &mut |event| {
                        if let Err(error) = encode_row(format, event, &mut bytes) {
                            failed.get_or_insert(error);
                        }
                        last = Some(event.cursor());
                        Ok(())
                    },
                )
                .await?;
            if let Some(error) = failed {
                return Err(JobError::permanent(error));
            }
            Ok(EncodedPage { bytes, rows, last })
        }))
    }
}
