//! Real databases for tests: an SQLite file in a temporary directory, and a fresh database
//! on the PostgreSQL server named by `SETTLEWATCH_TEST_PG` (or `DATABASE_URL`), dropped
//! afterwards. Without that variable PostgreSQL tests say they were skipped; under CI
//! (`CI` set) a missing server is a failure, not a skip.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use settlement::store::Store;
use sqlx::Executor;

pub struct TestStore {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    cleanup: Option<(String, String)>,
}

pub async fn sqlite() -> TestStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    let store = Store::open(&url).await.expect("open SQLite store");
    TestStore { store, url, _dir: Some(dir), cleanup: None }
}

pub fn postgres_admin_url() -> Option<String> {
    let url = std::env::var("SETTLEWATCH_TEST_PG").or_else(|_| std::env::var("DATABASE_URL")).ok();
    if url.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but SETTLEWATCH_TEST_PG is not: the PostgreSQL tests must run in CI");
        }
        eprintln!(
            "skipped: PostgreSQL test (set SETTLEWATCH_TEST_PG=postgres://postgres@127.0.0.1:5432/test to run it)"
        );
    }
    url
}

static DATABASE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new empty database on the test server, or `None` (skipped) when none is configured.
pub async fn postgres() -> Option<TestStore> {
    let admin_url = postgres_admin_url()?;
    sqlx::any::install_default_drivers();
    let name = format!(
        "settlewatch_test_{}_{}_{}",
        std::process::id(),
        DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    let mut admin =
        <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await.expect("connect to PostgreSQL");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    let base = admin_url.rsplit_once('/').map(|(base, _)| base.to_string()).expect("URL with a database");
    let url = format!("{base}/{name}");
    let store = Store::open(&url).await.expect("open PostgreSQL store");
    Some(TestStore { store, url, _dir: None, cleanup: Some((admin_url, name)) })
}

impl TestStore {
    pub async fn drop_database(self) {
        self.store.close().await;
        if let Some((admin_url, name)) = self.cleanup {
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url).await.expect("connect");
            admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.expect("drop");
        }
    }
}

/// Defines `$name::sqlite` and `$name::postgres`, running the same async test body against
/// both stores.
#[macro_export]
macro_rules! store_test {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let test_store = common::sqlite().await;
                ($body)(test_store.store.clone()).await;
                test_store.drop_database().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(test_store) = common::postgres().await else { return };
                ($body)(test_store.store.clone()).await;
                test_store.drop_database().await;
            }
        }
    };
}
