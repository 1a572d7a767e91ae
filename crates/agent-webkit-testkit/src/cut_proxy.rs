//! A loopback TCP proxy that can cut every open connection at once: the "network drops"
//! half of reconnect tests (a browser or client talks to the proxy, the proxy to the server).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

use crate::Result;

/// A running proxy; stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct CutProxy {
    /// `http://127.0.0.1:PORT`, to use instead of the server's URL.
    pub base_url: String,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let tracked = Arc::clone(&connections);
        let accept = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let handle = tasks.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                if let Ok(mut list) = tracked.lock() {
                    list.retain(|h| !h.is_finished());
                    list.push(handle);
                }
                while tasks.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            base_url,
            connections,
            accept,
        })
    }

    /// Closes every connection open right now (both sockets, no goodbye); returns how many.
    /// New connections are served as before.
    pub fn cut(&self) -> usize {
        let Ok(mut list) = self.connections.lock() else {
            return 0;
        };
        let open = list.iter().filter(|h| !h.is_finished()).count();
        for handle in list.drain(..) {
            handle.abort();
        }
        open
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
