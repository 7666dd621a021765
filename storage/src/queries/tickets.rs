//! Join tickets used once across a cluster ([`UseTicket`]).

use openchat_core::UnixSeconds;

use crate::db::{Db, Param, in_transaction};
use crate::error::StorageError;
use crate::query::Query;

/// Longest ticket id stored (a UUID is 36 characters).
pub const TICKET_ID_BYTES_MAX: usize = 64;

/// Records the use of ticket `jti` (valid until `expires_at`); answers whether this was its
/// first use. Expired records are dropped in the same transaction, so the table holds at
/// most the tickets of the last TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseTicket {
    pub jti: String,
    pub expires_at: UnixSeconds,
    pub now: UnixSeconds,
}

impl Query for UseTicket {
    type Output = bool;
    const NAME: &'static str = "use_ticket";

    async fn run<D: Db>(self, db: &mut D) -> Result<bool, StorageError> {
        if self.jti.is_empty() || self.jti.len() > TICKET_ID_BYTES_MAX {
            return Err(StorageError::invalid(
                "invalid_ticket",
                "a ticket id is 1 to 64 bytes",
            ));
        }
        in_transaction(db, async |db: &mut D| {
            db.execute(
                "DELETE FROM used_tickets WHERE expires_at < $1",
                &[Param::Int(self.now)],
            )
            .await?;
            let inserted = db
                .execute(
                    "INSERT INTO used_tickets (jti, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (jti) DO NOTHING",
                    &[Param::Text(&self.jti), Param::Int(self.expires_at)],
                )
                .await?;
            Ok(inserted == 1)
        })
        .await
    }
}
