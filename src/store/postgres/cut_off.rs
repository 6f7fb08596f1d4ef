//! A round whose `COMMIT` was cut off.
//!
//! If the connection dies while a round's `COMMIT` is on its way, whether
//! it committed is unknown: the rows it claimed may now be this owner's,
//! running, with no handler that will ever finish them, and no recovery
//! either (the owner is alive). Each round's claims carry a random token;
//! after such a failure this puts them back, by token, not started and
//! their attempt not counted, once the server answers again. Outcomes and
//! marks need nothing: the dispatcher writes them again, and a second
//! write of an outcome that did commit changes nothing.

use std::sync::Arc;

use super::{writes, Shared};

/// Puts back what a round whose commit may or may not have happened
/// claimed (see [`super::PgStore::finish_and_claim`]), trying until the server
/// answers (or the store is dropped, and its runtime with it).
pub(super) async fn release_round(shared: Arc<Shared>, token: i64) {
    let mut delay = std::time::Duration::from_millis(50);
    loop {
        let released = async {
            let client = shared.client().await?;
            writes::release_round(&**client, &shared.schema, &shared.owner, token).await
        }
        .await;
        match released {
            Ok(0) => return,
            Ok(n) => {
                log::warn!(
                    "errands: put back {n} jobs claimed by a round whose commit was cut off"
                );
                return;
            }
            Err(e) => {
                log::warn!("errands: could not yet put back a cut-off round's claims: {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }
}
