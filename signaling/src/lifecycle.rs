//! Shutdown of long-lived sockets: on SIGTERM every realtime and signaling WebSocket is
//! closed with 1001 (Going Away) instead of being cut (1006), so clients reconnect or rejoin
//! (WIRE.md §0 item 7), and the server waits for them, within its grace period.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// Sockets tracked at once (far above `SOCKETS_MAX` plus every possible signaling socket).
const TRACKED_SOCKETS_MAX: u32 = 1 << 20;

#[derive(Debug)]
pub struct Lifecycle {
    closing: watch::Sender<bool>,
    open: Arc<Semaphore>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            closing: watch::Sender::new(false),
            open: Arc::new(Semaphore::new(TRACKED_SOCKETS_MAX as usize)),
        }
    }
}

/// Held by a socket's task for its whole life; tells it when the server is going away.
#[derive(Debug)]
pub struct SocketGuard {
    closing: watch::Receiver<bool>,
    _open: Option<OwnedSemaphorePermit>,
}

impl SocketGuard {
    /// Resolves once the server begins to shut down (at once if it already has).
    pub async fn closing(&mut self) {
        let _ = self.closing.wait_for(|closing| *closing).await;
    }
}

impl Lifecycle {
    /// Registers a socket.
    pub fn socket(&self) -> SocketGuard {
        SocketGuard {
            closing: self.closing.subscribe(),
            // Never fails below the tracked maximum; beyond it the socket is just not waited for.
            _open: self.open.clone().try_acquire_owned().ok(),
        }
    }

    /// Tells every socket that the server is going away.
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once every registered socket's task has ended.
    pub async fn sockets_closed(&self) {
        let _ = self.open.acquire_many(TRACKED_SOCKETS_MAX).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_are_told_and_waited_for() {
        let lifecycle = Lifecycle::default();
        let mut socket = lifecycle.socket();
        let task = tokio::spawn(async move {
            socket.closing().await;
        });
        lifecycle.begin_shutdown();
        task.await.unwrap();
        lifecycle.sockets_closed().await;
        // A socket that arrives late learns at once.
        lifecycle.socket().closing().await;
    }
}
