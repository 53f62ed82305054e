//! The connection to the CRM database: SQLite (embedded, a file) or PostgreSQL (production), chosen by
//! the URL, and the migrations of each. Every repository method runs the same SQL on both backends
//! through [`with_pool!`], which expands its body once per concrete pool type.

use crate::error::{Result, StoreError};
use crate::phone::CountryCode;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Database, Pool, QueryBuilder};
use std::str::FromStr;
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The embedded default: a SQLite file under `./data/`.
pub const DEFAULT_SQLITE_URL: &str = "sqlite:./data/crm.db";

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

/// The pool of one backend.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of the store's backend.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Starts a transaction that will write. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`), so a transaction that reads before it writes waits its turn instead of failing with
/// "database is locked" when another writer got there between its read and its write.
pub(crate) trait BeginWrite {
    type Db: Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// A query builder for the database of `pool`, so generated SQL infers its backend.
pub(crate) fn builder_for<DB: Database>(_pool: &Pool<DB>, init: &str) -> QueryBuilder<DB>
where
    <DB as Database>::Arguments: Default,
{
    QueryBuilder::new(init)
}

/// The CRM store: cheap to clone, shared by every task that reads or writes the CRM.
#[derive(Debug, Clone)]
pub struct CrmStore {
    pub(crate) backend: Backend,
    pub(crate) country: CountryCode,
}

impl CrmStore {
    /// Connects to `sqlite:PATH` (the file and its folder are created if missing) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            Self::connect_postgres_with(options).await
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Connects to PostgreSQL with every connection's `search_path` set to `schema`, creating the schema
    /// if needed. Lets several stores (tenants, parallel test runs) share one database.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self> {
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Invalid(
                "schema names are letters, digits and '_'".into(),
            ));
        }
        let options = PgConnectOptions::from_str(url)?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        // The name was checked above: it can only be letters, digits and '_'.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .execute(&admin)
        .await?;
        admin.close().await;
        Self::connect_postgres_with(options.options([("search_path", schema)])).await
    }

    async fn connect_sqlite(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the journal segment is deleted once SQL has the events, so the commit must survive
            // a power cut, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // An in-memory database lives only as long as a connection does: keep exactly one, forever.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            let path = options.get_filename();
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                crate::files::create_private_dir(dir)?;
            }
            // Made here, private, before SQLite opens it: SQLite gives its -wal and -shm files the
            // database's mode.
            crate::files::private_options()
                .create(true)
                .append(true)
                .open(path)?;
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.as_os_str().to_owned();
                file.push(suffix);
                if crate::files::make_private(std::path::Path::new(&file))? {
                    tracing::warn!(file = suffix, "the CRM database was readable by others; now 0600");
                }
            }
        }
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options.journal_mode(SqliteJournalMode::Memory))
                .await?
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?
        };
        Ok(Self {
            backend: Backend::Sqlite(pool),
            country: CountryCode::default(),
        })
    }

    async fn connect_postgres_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        Ok(Self {
            backend: Backend::Postgres(pool),
            country: CountryCode::default(),
        })
    }

    /// Sets the country code given to national numbers (caller ids, imports, lookups). Default: 1.
    pub fn with_default_country(mut self, country: CountryCode) -> Self {
        self.country = country;
        self
    }

    /// The country code used for national numbers.
    pub fn default_country(&self) -> CountryCode {
        self.country
    }

    /// Which backend this store uses.
    pub fn backend_kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Applies the migrations not yet applied. Safe to call on every start.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}
