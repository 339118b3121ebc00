//! Tenancy on both stores: tenants (create, get, list, update, suspend,
//! resume), validation that writes nothing, API keys (issue, authenticate,
//! revoke, rotate with a grace period on an explicit clock, last use), and the
//! tenant's running cap reaching the claim through `tenant_limits`.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use longhaul_core::audit::Actor;
use longhaul_core::client::EnqueueRequest;
use longhaul_core::job::ClaimRequest;
use longhaul_core::store::{connect_stores, Stores};
use longhaul_core::tenancy::{
    parse_token, ApiKey, IssuedKey, KeyMode, NewTenant, Quotas, Role, Tenant, TenantPatch,
    TenantStatus,
};
use longhaul_core::JobKind;
use longhaul_core::{Error, Job, JobClient, JobState};
use longhaul_worker::jobs::noop::Noop;
use serde_json::json;

use crate::harness::TestDb;

const DAY: Duration = Duration::from_secs(24 * 3600);

// ---- helpers -------------------------------------------------------------------

/// The test database as one store with both faces.
async fn stores(db: &TestDb) -> Arc<dyn Stores> {
    connect_stores(&db.url, 4)
        .await
        .expect("connecting to the test store")
}

/// A controllable clock: whole seconds, so that stored times compare exactly.
fn clock() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).expect("a time in range")
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn acme() -> NewTenant {
    NewTenant {
        name: "Acme Corp".into(),
        region: "eu-west".into(),
        plan: "pro".into(),
        quotas: Quotas {
            max_running: None,
            max_queued: Some(1000),
            creations_per_minute: Some(60),
            max_schedules: Some(20),
        },
        settings: json!({"auditLogRetentionDays": 365, "theme": "dark"}),
    }
}

async fn create(stores: &Arc<dyn Stores>, name: &str) -> Tenant {
    stores
        .create_tenant(NewTenant::new(name, "us", "free"), &Actor::system())
        .await
        .expect("create tenant")
}

async fn issue(stores: &Arc<dyn Stores>, tenant: &Tenant, role: Role) -> IssuedKey {
    stores
        .issue_api_key(
            Some(&tenant.id),
            "ci",
            role,
            KeyMode::Live,
            &Actor::system(),
        )
        .await
        .expect("issue key")
}

async fn auth(
    stores: &Arc<dyn Stores>,
    token: &str,
    now: DateTime<Utc>,
) -> Option<(ApiKey, Option<Tenant>)> {
    stores.authenticate(token, now).await.expect("authenticate")
}

#[track_caller]
fn assert_validation<T: Debug>(result: Result<T, Error>, expected_field: &str) {
    match result {
        Err(Error::Validation { field, .. }) if field == expected_field => {}
        other => panic!("expected a validation error on {expected_field}, got {other:?}"),
    }
}

#[track_caller]
fn assert_no_such<T: Debug>(result: Result<T, Error>, expected_kind: &str, expected_id: &str) {
    match result {
        Err(Error::NoSuchResource { kind, id }) if kind == expected_kind && id == expected_id => {}
        other => panic!("expected {expected_kind} {expected_id} not found, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: Debug>(result: Result<T, Error>) {
    match result {
        Err(Error::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The token with its last secret character changed (same shape, wrong secret).
fn wrong_secret(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    let other = if last == "a" { "b" } else { "a" };
    format!("{head}{other}")
}

// ---- tenants -------------------------------------------------------------------

async fn tenant_create_get_and_update(db: TestDb) {
    let stores = stores(&db).await;
    let created = stores
        .create_tenant(acme(), &Actor::system())
        .await
        .expect("create");
    let hex = created.id.strip_prefix("tnt_").expect("tnt_ prefix");
    assert_eq!(hex.len(), 32);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(created.name, "Acme Corp");
    assert_eq!(created.region, "eu-west");
    assert_eq!(created.plan, "pro");
    assert_eq!(created.status, TenantStatus::Active);
    assert_eq!(created.suspended_reason, None);
    assert_eq!(created.quotas, acme().quotas);
    assert_eq!(created.settings, acme().settings);
    assert_eq!(created.created_at, created.updated_at);
    assert!((Utc::now() - created.created_at).num_seconds().abs() < 60);

    let got = stores.get_tenant(&created.id).await.expect("get");
    assert_eq!(got, created);
    assert_eq!(
        serde_json::to_value(&got).expect("serialize")["quotas"],
        json!({"maxRunning": null, "maxQueued": 1000, "creationsPerMinute": 60, "maxSchedules": 20})
    );

    // One field changes; the others stay.
    let renamed = stores
        .update_tenant(
            &created.id,
            TenantPatch {
                name: Some("Acme Inc".into()),
                ..TenantPatch::default()
            },
            &Actor::system(),
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, "Acme Inc");
    assert_eq!(
        (
            &renamed.region,
            &renamed.plan,
            &renamed.quotas,
            &renamed.settings
        ),
        (
            &created.region,
            &created.plan,
            &created.quotas,
            &created.settings
        )
    );
    assert_eq!(renamed.created_at, created.created_at);
    assert!(renamed.updated_at >= created.updated_at);

    // Quotas are replaced whole; settings are merged (RFC 7396).
    let replaced = stores
        .update_tenant(
            &created.id,
            TenantPatch {
                region: Some("us".into()),
                plan: Some("enterprise".into()),
                quotas: Some(Quotas {
                    max_running: Some(4),
                    ..Quotas::default()
                }),
                settings: Some(json!({"auditLogRetentionDays": 90})),
                ..TenantPatch::default()
            },
            &Actor::system(),
        )
        .await
        .expect("replace");
    assert_eq!(replaced.name, "Acme Inc");
    assert_eq!(replaced.region, "us");
    assert_eq!(replaced.plan, "enterprise");
    assert_eq!(
        replaced.quotas,
        Quotas {
            max_running: Some(4),
            max_queued: None,
            creations_per_minute: None,
            max_schedules: None,
        }
    );
    assert_eq!(
        replaced.settings,
        json!({"auditLogRetentionDays": 90, "theme": "dark"})
    );
    assert_eq!(stores.get_tenant(&created.id).await.expect("get"), replaced);

    // An empty patch changes nothing.
    let same = stores
        .update_tenant(&created.id, TenantPatch::default(), &Actor::system())
        .await
        .expect("empty patch");
    assert_eq!(same, replaced);

    // Unknown and malformed ids are "not found", never a database error.
    let unknown = format!("tnt_{}", "0".repeat(32));
    assert_no_such(stores.get_tenant(&unknown).await, "tenant", &unknown);
    assert_no_such(
        stores
            .update_tenant(&unknown, TenantPatch::default(), &Actor::system())
            .await,
        "tenant",
        &unknown,
    );
    assert_no_such(
        stores
            .update_tenant(
                &unknown,
                TenantPatch {
                    name: Some("x".into()),
                    ..TenantPatch::default()
                },
                &Actor::system(),
            )
            .await,
        "tenant",
        &unknown,
    );
    assert_no_such(
        stores
            .set_tenant_status(&unknown, TenantStatus::Suspended, None, &Actor::system())
            .await,
        "tenant",
        &unknown,
    );
    for bad in ["nope", "", "tnt_\0", "job_0193a4b2c3d47e8f9a0b1c2d3e4f5a6b"] {
        assert_no_such(stores.get_tenant(bad).await, "tenant", bad);
    }
}

/// A `settings` patch is a JSON Merge Patch of the stored settings: one
/// setting changes without erasing the others, nested objects merge key by
/// key, `null` removes a key, and the merged whole is validated (a refusal
/// changes nothing).
async fn tenant_settings_patch_merges(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = stores
        .create_tenant(acme(), &Actor::system())
        .await
        .expect("create");
    let patch = |settings: serde_json::Value| TenantPatch {
        settings: Some(settings),
        ..TenantPatch::default()
    };

    let with_bucket = stores
        .update_tenant(
            &tenant.id,
            patch(json!({"dataBuckets": {"code": "code-bucket"}})),
            &Actor::system(),
        )
        .await
        .expect("add a data bucket");
    assert_eq!(
        with_bucket.settings,
        json!({
            "auditLogRetentionDays": 365,
            "theme": "dark",
            "dataBuckets": {"code": "code-bucket"},
        })
    );

    let merged = stores
        .update_tenant(
            &tenant.id,
            patch(json!({
                "dataBuckets": {"files": "files-bucket"},
                "theme": null,
                "artifactRetentionDays": 30,
            })),
            &Actor::system(),
        )
        .await
        .expect("merge");
    let want = json!({
        "auditLogRetentionDays": 365,
        "artifactRetentionDays": 30,
        "dataBuckets": {"code": "code-bucket", "files": "files-bucket"},
    });
    assert_eq!(merged.settings, want);
    assert_eq!(
        stores.get_tenant(&tenant.id).await.expect("get").settings,
        want
    );

    let removed = stores
        .update_tenant(
            &tenant.id,
            patch(json!({"dataBuckets": {"code": null}, "nothing": null})),
            &Actor::system(),
        )
        .await
        .expect("remove a bucket");
    assert_eq!(
        removed.settings["dataBuckets"],
        json!({"files": "files-bucket"})
    );
    assert_eq!(removed.settings["auditLogRetentionDays"], 365);

    // The merged settings are checked whole; a refusal writes nothing.
    for (bad, field) in [
        (
            json!({"dataBuckets": {"x": "Not A Bucket"}}),
            "settings.dataBuckets.x",
        ),
        (
            json!({"auditLogRetentionDays": 1}),
            "settings.auditLogRetentionDays",
        ),
        (
            json!({"dataBuckets": "code-bucket"}),
            "settings.dataBuckets",
        ),
        (json!(["not", "an", "object"]), "settings"),
    ] {
        assert_validation(
            stores
                .update_tenant(&tenant.id, patch(bad), &Actor::system())
                .await,
            field,
        );
    }
    assert_eq!(stores.get_tenant(&tenant.id).await.expect("get"), removed);
}

async fn tenant_list_pages_by_id(db: TestDb) {
    let stores = stores(&db).await;
    assert!(stores
        .list_tenants(None, 10)
        .await
        .expect("list")
        .is_empty());
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(create(&stores, &format!("tenant {n}")).await.id);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = stores
            .list_tenants(after.as_deref(), 2)
            .await
            .expect("list page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        pages += 1;
        after = page.last().map(|t| t.id.clone());
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every tenant once, in id order");

    let all = stores.list_tenants(None, 100).await.expect("list all");
    assert_eq!(all.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids);
    let tail = stores
        .list_tenants(Some(&ids[3]), 100)
        .await
        .expect("list after");
    assert_eq!(
        tail.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        vec![ids[4].as_str()]
    );
    for bad in ["tnt_\0", "garbage", "tnt_xyz"] {
        assert_validation(stores.list_tenants(Some(bad), 10).await, "cursor");
    }
}

async fn tenant_suspend_and_resume(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Globex").await;
    let key = issue(&stores, &tenant, Role::Admin).await;

    let suspended = stores
        .set_tenant_status(
            &tenant.id,
            TenantStatus::Suspended,
            Some("unpaid invoice".into()),
            &Actor::system(),
        )
        .await
        .expect("suspend");
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(
        suspended.suspended_reason.as_deref(),
        Some("unpaid invoice")
    );
    assert_eq!(stores.get_tenant(&tenant.id).await.expect("get"), suspended);
    assert_eq!(
        serde_json::to_value(&suspended).expect("serialize")["status"],
        json!("suspended")
    );

    // A suspended tenant's key still authenticates, and says so.
    let (_, seen) = auth(&stores, &key.secret, clock())
        .await
        .expect("a suspended tenant's key authenticates");
    let seen = seen.expect("a tenant key comes with its tenant");
    assert_eq!(seen.status, TenantStatus::Suspended);
    assert_eq!(seen.suspended_reason.as_deref(), Some("unpaid invoice"));

    let resumed = stores
        .set_tenant_status(
            &tenant.id,
            TenantStatus::Active,
            Some("ignored".into()),
            &Actor::system(),
        )
        .await
        .expect("resume");
    assert_eq!(resumed.status, TenantStatus::Active);
    assert_eq!(resumed.suspended_reason, None);
    assert_eq!(stores.get_tenant(&tenant.id).await.expect("get"), resumed);

    assert_validation(
        stores
            .set_tenant_status(
                &tenant.id,
                TenantStatus::Suspended,
                Some(" ".into()),
                &Actor::system(),
            )
            .await,
        "reason",
    );
    assert_eq!(
        stores.get_tenant(&tenant.id).await.expect("get").status,
        TenantStatus::Active
    );
}

async fn invalid_tenants_are_refused_and_write_nothing(db: TestDb) {
    let stores = stores(&db).await;
    let with = |f: &dyn Fn(&mut NewTenant)| {
        let mut new = acme();
        f(&mut new);
        new
    };
    let cases: Vec<(NewTenant, &str)> = vec![
        (with(&|t| t.name = String::new()), "name"),
        (with(&|t| t.name = "   ".into()), "name"),
        (with(&|t| t.name = "x".repeat(201)), "name"),
        (with(&|t| t.name = "a\0b".into()), "name"),
        (with(&|t| t.region = "usa".into()), "region"),
        (with(&|t| t.region = "EU".into()), "region"),
        (with(&|t| t.region = "eu-".into()), "region"),
        (with(&|t| t.region = String::new()), "region"),
        (with(&|t| t.plan = String::new()), "plan"),
        (with(&|t| t.plan = "p".repeat(65)), "plan"),
        (
            with(&|t| t.quotas.max_running = Some(0)),
            "quotas.maxRunning",
        ),
        (
            with(&|t| t.quotas.max_queued = Some(-1)),
            "quotas.maxQueued",
        ),
        (
            with(&|t| t.quotas.creations_per_minute = Some(0)),
            "quotas.creationsPerMinute",
        ),
        (with(&|t| t.settings = json!([1, 2])), "settings"),
        (with(&|t| t.settings = json!(null)), "settings"),
        (
            with(&|t| t.settings = json!({"note": "a\u{0}b"})),
            "settings",
        ),
        (
            with(&|t| t.settings = json!({"auditLogRetentionDays": 89})),
            "settings.auditLogRetentionDays",
        ),
        (
            with(&|t| t.settings = json!({"auditLogRetentionDays": 2556})),
            "settings.auditLogRetentionDays",
        ),
        (
            with(&|t| t.settings = json!({"auditLogRetentionDays": "365"})),
            "settings.auditLogRetentionDays",
        ),
    ];
    for (new, field) in cases {
        assert_validation(stores.create_tenant(new, &Actor::system()).await, field);
    }
    // The limits themselves are accepted.
    let edge = stores
        .create_tenant(
            with(&|t| {
                t.name = "é".repeat(200);
                t.plan = "p".repeat(64);
                t.settings = json!({"auditLogRetentionDays": 2555});
            }),
            &Actor::system(),
        )
        .await
        .expect("names at the limit");
    let all = stores.list_tenants(None, 100).await.expect("list");
    assert_eq!(all, vec![edge.clone()], "no refused tenant was written");

    // A refused patch leaves the tenant as it was.
    let patches: Vec<(TenantPatch, &str)> = vec![
        (
            TenantPatch {
                name: Some(String::new()),
                ..TenantPatch::default()
            },
            "name",
        ),
        (
            TenantPatch {
                name: Some("fine".into()),
                region: Some("Europe".into()),
                ..TenantPatch::default()
            },
            "region",
        ),
        (
            TenantPatch {
                quotas: Some(Quotas {
                    max_running: Some(-3),
                    ..Quotas::default()
                }),
                ..TenantPatch::default()
            },
            "quotas.maxRunning",
        ),
        (
            TenantPatch {
                plan: Some("ok".into()),
                settings: Some(json!("not an object")),
                ..TenantPatch::default()
            },
            "settings",
        ),
    ];
    for (patch, field) in patches {
        assert_validation(
            stores
                .update_tenant(&edge.id, patch, &Actor::system())
                .await,
            field,
        );
    }
    assert_eq!(stores.get_tenant(&edge.id).await.expect("get"), edge);
}

// ---- keys ----------------------------------------------------------------------

async fn issued_key_authenticates(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Initech").await;
    let issued = stores
        .issue_api_key(
            Some(&tenant.id),
            "deploy bot",
            Role::Developer,
            KeyMode::Test,
            &Actor::system(),
        )
        .await
        .expect("issue");
    let key = &issued.key;
    assert!(key.id.starts_with("key_") && key.id.len() == 36);
    assert_eq!(key.tenant_id.as_deref(), Some(tenant.id.as_str()));
    assert_eq!(key.name, "deploy bot");
    assert_eq!(key.role, Role::Developer);
    assert_eq!(key.mode, KeyMode::Test);
    assert_eq!(
        (key.last_used_at, key.expires_at, key.revoked_at),
        (None, None, None)
    );
    assert!(issued.secret.starts_with("lh_test_"));
    assert_eq!(
        parse_token(&issued.secret),
        Some((KeyMode::Test, key.prefix.as_str()))
    );
    assert_eq!(key.display_prefix(), issued.secret[..20]);

    let (found, found_tenant) = auth(&stores, &issued.secret, clock())
        .await
        .expect("the issued token authenticates");
    assert_eq!(found.id, key.id);
    assert_eq!(found.role, Role::Developer);
    assert_eq!(found.tenant_id, key.tenant_id);
    assert_eq!(found_tenant, Some(tenant.clone()));

    // The listing has the key, never its secret or hash.
    let listed = stores.list_api_keys(&tenant.id).await.expect("list keys");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, key.id);
    let secret_part = &issued.secret[21..];
    let text = serde_json::to_string(&listed).expect("serialize");
    assert!(!text.contains(secret_part));
    assert!(text.contains("\"tenantId\"") && text.contains("\"lastUsedAt\""));
    assert_eq!(
        serde_json::to_value(&listed[0]).expect("serialize")["role"],
        json!("developer")
    );

    // Operator keys have no tenant.
    let operator = stores
        .issue_api_key(None, "ops", Role::Operator, KeyMode::Live, &Actor::system())
        .await
        .expect("operator key");
    assert_eq!(operator.key.tenant_id, None);
    let (found, found_tenant) = auth(&stores, &operator.secret, clock())
        .await
        .expect("the operator token authenticates");
    assert_eq!((found.id, found.role), (operator.key.id, Role::Operator));
    assert_eq!(found_tenant, None);
    assert_eq!(
        stores.list_api_keys(&tenant.id).await.expect("list").len(),
        1,
        "operator keys are no tenant's"
    );

    // Keys of another tenant are not listed.
    let other = create(&stores, "Umbrella").await;
    assert!(stores
        .list_api_keys(&other.id)
        .await
        .expect("list")
        .is_empty());
    let unknown = format!("tnt_{}", "f".repeat(32));
    assert_no_such(stores.list_api_keys(&unknown).await, "tenant", &unknown);
}

async fn wrong_and_malformed_tokens_are_refused(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Hooli").await;
    let issued = issue(&stores, &tenant, Role::Admin).await;
    let now = clock();
    assert!(auth(&stores, &issued.secret, now).await.is_some());

    let token = &issued.secret;
    let refused = [
        // The right prefix with a wrong secret.
        wrong_secret(token),
        // The right prefix and secret under the other mode.
        token.replacen("lh_live_", "lh_test_", 1),
        // A well-formed token nobody was issued.
        format!("lh_live_abcdefghijkl_{}", "A".repeat(32)),
        // Malformed.
        String::new(),
        "lh_live_".to_string(),
        "garbage".to_string(),
        format!("{token} "),
        format!("Bearer {token}"),
        token.to_uppercase(),
        token[..token.len() - 1].to_string(),
        format!("{token}\0"),
        format!("lh_live_{}_{}", "\0".repeat(12), "A".repeat(32)),
    ];
    // Two minutes later, when a use would be recorded again.
    let later = now + secs(120);
    for bad in &refused {
        assert!(
            auth(&stores, bad, later).await.is_none(),
            "{bad:?} must not authenticate"
        );
    }
    assert_eq!(
        last_used_of(&stores, &tenant).await,
        Some(now),
        "failed attempts record no use"
    );
}

async fn invalid_key_requests_are_refused_and_write_nothing(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Vandelay").await;
    let id = Some(tenant.id.as_str());
    assert_validation(
        stores
            .issue_api_key(id, "", Role::Viewer, KeyMode::Live, &Actor::system())
            .await,
        "name",
    );
    assert_validation(
        stores
            .issue_api_key(
                id,
                &"k".repeat(201),
                Role::Viewer,
                KeyMode::Live,
                &Actor::system(),
            )
            .await,
        "name",
    );
    assert_validation(
        stores
            .issue_api_key(id, "ops", Role::Operator, KeyMode::Live, &Actor::system())
            .await,
        "role",
    );
    assert_validation(
        stores
            .issue_api_key(None, "ops", Role::Admin, KeyMode::Live, &Actor::system())
            .await,
        "role",
    );
    let unknown = format!("tnt_{}", "a".repeat(32));
    assert_no_such(
        stores
            .issue_api_key(
                Some(&unknown),
                "ci",
                Role::Viewer,
                KeyMode::Live,
                &Actor::system(),
            )
            .await,
        "tenant",
        &unknown,
    );
    assert_no_such(
        stores
            .issue_api_key(
                Some("tnt_\0"),
                "ci",
                Role::Viewer,
                KeyMode::Live,
                &Actor::system(),
            )
            .await,
        "tenant",
        "tnt_\0",
    );
    assert!(stores
        .list_api_keys(&tenant.id)
        .await
        .expect("list")
        .is_empty());
}

async fn revoked_key_stops_at_once(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Stark").await;
    let other = create(&stores, "Wayne").await;
    let keep = issue(&stores, &tenant, Role::Viewer).await;
    let issued = issue(&stores, &tenant, Role::Admin).await;
    let now = clock();
    assert!(auth(&stores, &issued.secret, now).await.is_some());

    // Another tenant cannot revoke it.
    assert_no_such(
        stores
            .revoke_api_key(&other.id, &issued.key.id, now, &Actor::system())
            .await,
        "api key",
        &issued.key.id,
    );
    assert!(auth(&stores, &issued.secret, now).await.is_some());

    let revoked = stores
        .revoke_api_key(&tenant.id, &issued.key.id, now, &Actor::system())
        .await
        .expect("revoke");
    assert_eq!(revoked.revoked_at, Some(now));
    assert!(auth(&stores, &issued.secret, now).await.is_none());
    assert!(auth(&stores, &issued.secret, now - secs(3600))
        .await
        .is_none());
    assert!(
        auth(&stores, &keep.secret, now).await.is_some(),
        "the tenant's other key still works"
    );

    // Revoking again keeps the first time.
    let again = stores
        .revoke_api_key(&tenant.id, &issued.key.id, now + secs(60), &Actor::system())
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_at, Some(now));

    let listed = stores.list_api_keys(&tenant.id).await.expect("list");
    let listed = listed
        .iter()
        .find(|k| k.id == issued.key.id)
        .expect("a revoked key is still listed");
    assert_eq!(listed.revoked_at, Some(now));

    let unknown = format!("key_{}", "0".repeat(32));
    assert_no_such(
        stores
            .revoke_api_key(&tenant.id, &unknown, now, &Actor::system())
            .await,
        "api key",
        &unknown,
    );
    assert_no_such(
        stores
            .revoke_api_key(&tenant.id, "key_\0", now, &Actor::system())
            .await,
        "api key",
        "key_\0",
    );
}

async fn rotated_key_works_until_the_grace_ends(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Cyberdyne").await;
    let other = create(&stores, "Tyrell").await;
    let old = stores
        .issue_api_key(
            Some(&tenant.id),
            "billing",
            Role::Admin,
            KeyMode::Test,
            &Actor::system(),
        )
        .await
        .expect("issue");
    let t0 = clock();

    assert_no_such(
        stores
            .rotate_api_key(&other.id, &old.key.id, t0, DAY, &Actor::system())
            .await,
        "api key",
        &old.key.id,
    );

    let new = stores
        .rotate_api_key(&tenant.id, &old.key.id, t0, DAY, &Actor::system())
        .await
        .expect("rotate");
    assert_ne!(new.key.id, old.key.id);
    assert_ne!(new.key.prefix, old.key.prefix);
    assert_ne!(new.secret, old.secret);
    assert_eq!(
        (
            &new.key.tenant_id,
            &new.key.name,
            new.key.role,
            new.key.mode
        ),
        (
            &old.key.tenant_id,
            &old.key.name,
            Role::Admin,
            KeyMode::Test
        )
    );
    assert_eq!(new.key.expires_at, None);
    assert!(new.secret.starts_with("lh_test_"));

    let grace_end = t0 + secs(24 * 3600);
    assert!(auth(&stores, &old.secret, t0).await.is_some());
    assert!(
        auth(&stores, &old.secret, grace_end - secs(1))
            .await
            .is_some(),
        "the old key works during the grace period"
    );
    assert!(
        auth(&stores, &old.secret, grace_end).await.is_none(),
        "the old key stops when the grace period ends"
    );
    assert!(auth(&stores, &old.secret, grace_end + secs(3600))
        .await
        .is_none());
    let (found, _) = auth(&stores, &new.secret, grace_end + secs(3600))
        .await
        .expect("the new key keeps working");
    assert_eq!(found.id, new.key.id);

    let listed = stores.list_api_keys(&tenant.id).await.expect("list");
    assert_eq!(listed.len(), 2);
    let listed_old = listed.iter().find(|k| k.id == old.key.id).expect("old key");
    assert_eq!(listed_old.expires_at, Some(grace_end));

    // A rotated key is not rotated again; nor is a revoked one.
    assert_conflict(
        stores
            .rotate_api_key(&tenant.id, &old.key.id, t0, DAY, &Actor::system())
            .await,
    );
    stores
        .revoke_api_key(&tenant.id, &new.key.id, t0, &Actor::system())
        .await
        .expect("revoke");
    assert_conflict(
        stores
            .rotate_api_key(&tenant.id, &new.key.id, t0, DAY, &Actor::system())
            .await,
    );
    assert_eq!(
        stores.list_api_keys(&tenant.id).await.expect("list").len(),
        2,
        "refused rotations issue nothing"
    );

    // A zero grace ends the old key at once.
    let third = issue(&stores, &tenant, Role::Viewer).await;
    let fourth = stores
        .rotate_api_key(
            &tenant.id,
            &third.key.id,
            t0,
            Duration::ZERO,
            &Actor::system(),
        )
        .await
        .expect("rotate without grace");
    assert!(auth(&stores, &third.secret, t0).await.is_none());
    assert!(auth(&stores, &fourth.secret, t0).await.is_some());
}

/// The `last_used_at` of the tenant's only key, as listed.
async fn last_used_of(stores: &Arc<dyn Stores>, tenant: &Tenant) -> Option<DateTime<Utc>> {
    let keys = stores.list_api_keys(&tenant.id).await.expect("list keys");
    assert_eq!(keys.len(), 1);
    keys[0].last_used_at
}

async fn last_use_is_recorded_at_most_once_a_minute(db: TestDb) {
    let stores = stores(&db).await;
    let tenant = create(&stores, "Soylent").await;
    let issued = issue(&stores, &tenant, Role::Viewer).await;
    let listed = || last_used_of(&stores, &tenant);
    assert_eq!(listed().await, None);

    let t0 = clock();
    let (key, _) = auth(&stores, &issued.secret, t0).await.expect("auth");
    assert_eq!(key.last_used_at, Some(t0));
    assert_eq!(listed().await, Some(t0));

    let (key, _) = auth(&stores, &issued.secret, t0 + secs(30))
        .await
        .expect("auth");
    assert_eq!(key.last_used_at, Some(t0), "not rewritten within a minute");
    assert_eq!(listed().await, Some(t0));

    let (key, _) = auth(&stores, &issued.secret, t0 + secs(61))
        .await
        .expect("auth");
    assert_eq!(key.last_used_at, Some(t0 + secs(61)));
    assert_eq!(listed().await, Some(t0 + secs(61)));
}

// ---- quotas reach the claim ----------------------------------------------------

/// Claims with no default cap; every claimed job is running.
async fn claim_running(stores: &Arc<dyn Stores>, request: &ClaimRequest) -> Vec<Job> {
    let claimed = stores.claim(request, None).await.expect("claim");
    assert!(claimed.iter().all(|job| job.state == JobState::Running));
    claimed
}

async fn running_jobs_of(stores: &Arc<dyn Stores>, tenant_id: String) -> i64 {
    stores
        .running_by_tenant()
        .await
        .expect("running by tenant")
        .into_iter()
        .find(|(t, _)| *t == tenant_id)
        .map_or(0, |(_, n)| n)
}

async fn tenant_max_running_caps_the_claim(db: TestDb) {
    let stores = stores(&db).await;
    let client = JobClient::new(
        stores.clone().job_store(),
        Arc::new(longhaul_worker::jobs::catalogue()),
    );
    let tenant = stores
        .create_tenant(
            NewTenant {
                quotas: Quotas {
                    max_running: Some(2),
                    ..Quotas::default()
                },
                ..NewTenant::new("Capped", "us", "free")
            },
            &Actor::system(),
        )
        .await
        .expect("create");
    let uncapped = create(&stores, "Uncapped").await;
    client
        .enqueue_many(
            (0..5)
                .map(|_| EnqueueRequest::new(&tenant.id, Noop::NAME, json!({})))
                .chain((0..3).map(|_| EnqueueRequest::new(&uncapped.id, Noop::NAME, json!({}))))
                .collect(),
        )
        .await
        .expect("enqueue");
    let request = ClaimRequest {
        queues: vec!["default".into()],
        limit: 5,
        worker_id: "worker-1".into(),
        lease: Duration::from_secs(60),
    };
    let claim = || claim_running(&stores, &request);
    let running_of = |tenant: &Tenant| running_jobs_of(&stores, tenant.id.clone());

    let first = claim().await;
    assert_eq!(first.len(), 5);
    assert_eq!(running_of(&tenant).await, 2, "the cap from creation holds");
    assert_eq!(running_of(&uncapped).await, 3);

    // A refused patch leaves the cap as it was.
    assert_validation(
        stores
            .update_tenant(
                &tenant.id,
                TenantPatch {
                    quotas: Some(Quotas {
                        max_running: Some(0),
                        ..Quotas::default()
                    }),
                    ..TenantPatch::default()
                },
                &Actor::system(),
            )
            .await,
        "quotas.maxRunning",
    );
    assert!(claim().await.is_empty());

    let raise = TenantPatch {
        quotas: Some(Quotas {
            max_running: Some(3),
            ..Quotas::default()
        }),
        ..TenantPatch::default()
    };
    stores
        .update_tenant(&tenant.id, raise, &Actor::system())
        .await
        .expect("raise");
    assert_eq!(claim().await.len(), 1);
    assert_eq!(running_of(&tenant).await, 3, "the raised cap holds");

    // A patch without quotas keeps the cap.
    let rename = TenantPatch {
        name: Some("Still capped".into()),
        ..TenantPatch::default()
    };
    stores
        .update_tenant(&tenant.id, rename, &Actor::system())
        .await
        .expect("rename");
    assert!(claim().await.is_empty());

    // Quotas without max_running remove the cap.
    let uncap = TenantPatch {
        quotas: Some(Quotas {
            max_queued: Some(100),
            ..Quotas::default()
        }),
        ..TenantPatch::default()
    };
    stores
        .update_tenant(&tenant.id, uncap, &Actor::system())
        .await
        .expect("uncap");
    assert_eq!(claim().await.len(), 2);
    assert_eq!(running_of(&tenant).await, 5);
}

both_stores!(
    tenant_create_get_and_update,
    tenant_settings_patch_merges,
    tenant_list_pages_by_id,
    tenant_suspend_and_resume,
    invalid_tenants_are_refused_and_write_nothing,
    issued_key_authenticates,
    wrong_and_malformed_tokens_are_refused,
    invalid_key_requests_are_refused_and_write_nothing,
    revoked_key_stops_at_once,
    rotated_key_works_until_the_grace_ends,
    last_use_is_recorded_at_most_once_a_minute,
    tenant_max_running_caps_the_claim,
);
