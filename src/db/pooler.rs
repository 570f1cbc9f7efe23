//! Postgres behind a transaction pooler (PgBouncer's `pool_mode =
//! transaction`), where the server a connection talks to can change at
//! every transaction's end, and between two statements outside one.
//!
//! The driver runs a statement in two exchanges (prepare, then bind and
//! run), and keeps what it prepares by name on the server it prepared it
//! on. Behind such a pooler the second exchange may reach another server,
//! and a name another client's statement already took. So there, statements
//! are prepared unnamed, every statement runs inside a transaction (which
//! holds one server from `begin` to `commit`), and the settings a session
//! would set once are set by each transaction for itself.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};

/// Behind a transaction pooler, the statement each transaction begins with;
/// unset otherwise. A process serves one database, so the setting is the
/// process's.
static POOLED_BEGIN: OnceLock<String> = OnceLock::new();

/// Serves every later connection as behind a transaction pooler, with
/// `settings` (`set local` statements) made at the start of each transaction.
pub fn serve_behind_transaction_pooler(settings: &str) {
    let _ = POOLED_BEGIN.set(format!("begin; {settings}"));
}

/// Whether the process serves Postgres behind a transaction pooler.
pub fn behind_transaction_pooler() -> bool {
    POOLED_BEGIN.get().is_some()
}

/// Whether a statement is kept prepared on its connection, by name: not
/// behind a transaction pooler.
pub fn keep_prepared() -> bool {
    !behind_transaction_pooler()
}

/// The statement that begins a transaction.
pub fn begin_statement() -> Cow<'static, str> {
    match POOLED_BEGIN.get() {
        Some(begin) => Cow::Borrowed(begin.as_str()),
        None => Cow::Borrowed("begin"),
    }
}

/// A transaction on `pool`.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(begin_statement()).await
}

/// A connection for statements that need no transaction of their own,
/// inside one all the same behind a transaction pooler.
pub enum Session {
    Direct(PoolConnection<Postgres>),
    Pooled(Transaction<'static, Postgres>),
}

/// Opens a session on `pool`.
pub async fn open(pool: &PgPool) -> Result<Session, sqlx::Error> {
    if behind_transaction_pooler() {
        Ok(Session::Pooled(begin(pool).await?))
    } else {
        Ok(Session::Direct(pool.acquire().await?))
    }
}

/// Ends `session`: commits its transaction, if it has one.
pub async fn close(session: Session) -> Result<(), sqlx::Error> {
    match session {
        Session::Direct(_) => Ok(()),
        Session::Pooled(transaction) => transaction.commit().await,
    }
}

impl Deref for Session {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Session::Direct(connection) => connection,
            Session::Pooled(transaction) => transaction,
        }
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Session::Direct(connection) => connection,
            Session::Pooled(transaction) => transaction,
        }
    }
}
