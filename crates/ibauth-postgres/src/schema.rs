//! The tables, created and migrated by the program itself.
//!
//! `ibauth_schema` holds one row: the schema version. Every start runs [`migrate`] in one
//! transaction under a transaction-level advisory lock, so processes starting together
//! take turns: the first creates or upgrades the tables, the others find them current. A
//! version newer than this build knows is refused ([`CoordError::Schema`]) rather than used.

use ibauth::coord::CoordError;
use tokio_postgres::Client;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 3;

/// The advisory lock key migrations hold (`ibauth` in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x6962_6175_7468;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: leases, sessions, members, pacing.
    "
    -- A row per identity that was ever leased: kept on release (holder NULL) so the
    -- generation, the fencing token, only ever grows.
    CREATE TABLE ibauth_leases (
        identity   TEXT PRIMARY KEY,
        holder     TEXT,
        generation BIGINT NOT NULL CHECK (generation >= 1),
        expires_at TIMESTAMPTZ NOT NULL
    );
    -- A row per identity that ever stored a document: kept on removal (key_id and sealed
    -- NULL, a tombstone) so the version only ever grows.
    CREATE TABLE ibauth_sessions (
        identity   TEXT PRIMARY KEY,
        key_id     TEXT,
        sealed     BYTEA,
        version    BIGINT NOT NULL CHECK (version >= 1),
        generation BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        CHECK ((key_id IS NULL) = (sealed IS NULL))
    );
    CREATE TABLE ibauth_members (
        identity   TEXT NOT NULL,
        member     TEXT NOT NULL,
        leader     BOOLEAN NOT NULL,
        about      TEXT NOT NULL,
        seen_at    TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (identity, member)
    );
    CREATE TABLE ibauth_pacing (
        account    TEXT PRIMARY KEY,
        doc        BYTEA,
        updated_at TIMESTAMPTZ
    );
    ",
    // 2: the work queue of a multi-session runner (`WorkQueue`): when each identity is due.
    // Who works on it is its lease in ibauth_leases.
    "
    CREATE TABLE ibauth_work (
        identity TEXT PRIMARY KEY,
        due_at   TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX ibauth_work_due ON ibauth_work (due_at);
    ",
    // 3: the consumer that works each queued identity, so a claim only takes what the
    // claiming runner can work. Rows queued before are the default consumer's ('').
    "
    ALTER TABLE ibauth_work ADD COLUMN consumer TEXT NOT NULL DEFAULT '';
    ",
];

/// Creates or upgrades the tables (on `client`, outside any transaction; the caller bounds
/// the time). `Err(Ok(e))` is a refusal to use the store; `Err(Err(e))` a database error.
pub(crate) async fn migrate(
    client: &Client,
    store: &str,
) -> Result<(), Result<CoordError, tokio_postgres::Error>> {
    client.batch_execute("BEGIN").await.map_err(Err)?;
    let result = migrate_in_transaction(client, store).await;
    match result {
        Ok(()) => client.batch_execute("COMMIT").await.map_err(Err),
        Err(e) => {
            // Best effort: the caller closes the connection anyway.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn migrate_in_transaction(
    client: &Client,
    store: &str,
) -> Result<(), Result<CoordError, tokio_postgres::Error>> {
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
             CREATE TABLE IF NOT EXISTS ibauth_schema (
                 singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                 version    BIGINT NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(Err)?;
    let found: i64 = match client
        .query_opt("SELECT version FROM ibauth_schema", &[])
        .await
        .map_err(Err)?
    {
        Some(row) => row.try_get(0).map_err(|e| {
            Ok(CoordError::Corrupt {
                store: store.to_owned(),
                detail: format!("ibauth_schema.version: {e}"),
            })
        })?,
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(Ok(CoordError::Schema {
            store: store.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }));
    }
    if found < 0 {
        return Err(Ok(CoordError::Corrupt {
            store: store.to_owned(),
            detail: format!("ibauth_schema.version is {found}"),
        }));
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!("{store}: migrating the ibauth schema to version {}", i + 1);
        client.batch_execute(migration).await.map_err(Err)?;
    }
    client
        .execute(
            "INSERT INTO ibauth_schema (singleton, version) VALUES (TRUE, $1)
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(Err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_has_its_migration() {
        assert_eq!(MIGRATIONS.len() as i64, SCHEMA_VERSION);
    }
}
