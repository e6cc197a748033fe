//! A [`Change`]: one transaction with the effects its transitions collected. Committing a change is the one
//! place effects are applied: its events are written to the outbox inside the transaction,
//! workers are woken by a notification delivered at commit, and metrics and logs follow the
//! commit.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres, Transaction};

use super::Engine;
use crate::effects::Effects;
use crate::error::Result;
use crate::store::queue;

/// One state change in progress: its connection and what it causes. Dropped without a
/// commit, it rolls back and causes nothing.
pub struct Change {
    conn: Conn,
    effects: Effects,
}

enum Conn {
    Transaction(Transaction<'static, Postgres>),
    /// A change that is one statement on its own (autocommit): nothing to write beside it.
    Single(PoolConnection<Postgres>),
}

impl Change {
    pub async fn begin(engine: &Engine) -> Result<Change> {
        Ok(Change {
            conn: Conn::Transaction(engine.pool.begin().await?),
            effects: Effects::default(),
        })
    }

    /// A change that is a single statement about a run of `project_id`: it runs on its own,
    /// without BEGIN and COMMIT, unless its events are to be written to the outbox, which
    /// must commit with it.
    pub async fn single(engine: &Engine, project_id: i64) -> Result<Change> {
        if engine.outbox.wanted(project_id) {
            return Change::begin(engine).await;
        }
        Ok(Change {
            conn: Conn::Single(engine.pool.acquire().await?),
            effects: Effects::default(),
        })
    }

    /// The connection the change's statements run on, and its effects.
    pub fn parts(&mut self) -> (&mut PgConnection, &mut Effects) {
        let conn: &mut PgConnection = match &mut self.conn {
            Conn::Transaction(tx) => tx,
            Conn::Single(conn) => conn,
        };
        (conn, &mut self.effects)
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.parts().0
    }

    pub fn effects(&mut self) -> &mut Effects {
        &mut self.effects
    }

    /// Commits the change with its outbox job and wake-up, then applies its effects.
    pub async fn commit(self, engine: &Engine) -> Result<()> {
        let Change { conn, effects } = self;
        match conn {
            Conn::Transaction(mut tx) => {
                engine.outbox.write(&mut tx, &effects.events).await?;
                if effects.wake {
                    queue::notify(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            // Each statement has committed by itself already.
            Conn::Single(mut conn) => {
                if effects.wake {
                    queue::notify(&mut *conn).await?;
                }
            }
        }
        effects.apply();
        Ok(())
    }

    /// Gives up the change: nothing it wrote stays, nothing it caused happens.
    pub async fn rollback(self) -> Result<()> {
        if let Conn::Transaction(tx) = self.conn {
            tx.rollback().await?;
        }
        Ok(())
    }
}
