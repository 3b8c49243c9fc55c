//! Fault injection on the network: a TCP proxy put between two tiers, or
//! between a tier and a backend (PostgreSQL, NATS, Redis, Tryton), that a
//! test switches at will between passing traffic and the ways a network
//! fails: added latency, every connection reset, and a blackhole that
//! takes bytes and never answers (a peer frozen or a route gone). A proxy
//! rather than a fake: the product's real clients, pools and deadlines
//! meet the fault.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What a proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Passes every byte at once.
    Pass,
    /// Holds every chunk this long before passing it on.
    Latency(Duration),
    /// Resets every open connection (TCP RST) and each new one at once.
    Reset,
    /// Accepts connections and bytes, passes and answers nothing.
    Blackhole,
}

/// A proxy in front of `upstream`, listening on its own port 0.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: std::sync::Arc<std::sync::Mutex<SocketAddr>>,
    fault: watch::Sender<Fault>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts passing traffic to `upstream` (inside a Tokio runtime).
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("addr");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let (fault, watching) = watch::channel(Fault::Pass);
        let upstream = std::sync::Arc::new(std::sync::Mutex::new(upstream));
        let task = tokio::spawn({
            let upstream = upstream.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *upstream.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    tokio::spawn(relay(client, to, watching.clone()));
                }
            }
        });
        Self { addr, upstream, fault, task }
    }

    /// Sends new connections to `upstream` from now on (a server that came
    /// back on another port); open ones stay where they are.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = upstream;
    }

    /// Where callers connect instead of `upstream`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` from now on, to open connections too.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection through the proxy, under whatever fault is set.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>) {
    let _ = client.set_nodelay(true);
    if !healed(&mut fault).await {
        return reset(client);
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return reset(client) };
    let _ = server.set_nodelay(true);
    let (mut up, mut down) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    loop {
        if !healed(&mut fault).await {
            break;
        }
        let (read, to_server) = tokio::select! {
            read = client.read(&mut up) => (read, true),
            read = server.read(&mut down) => (read, false),
            changed = fault.changed() => {
                if changed.is_err() || *fault.borrow() == Fault::Reset {
                    break;
                }
                continue;
            }
        };
        // One side closed (or failed): close the other, as a network would.
        let Ok(n @ 1..) = read else { break };
        let current = *fault.borrow();
        if let Fault::Latency(delay) = current {
            tokio::time::sleep(delay).await;
        }
        // A chunk read as a blackhole began waits for its end.
        if !healed(&mut fault).await {
            break;
        }
        let (to, bytes) = if to_server { (&mut server, &up[..n]) } else { (&mut client, &down[..n]) };
        if to.write_all(bytes).await.is_err() {
            break;
        }
    }
    reset(server);
    reset(client);
}

/// Waits while a blackhole lasts: nothing is read, so nothing moves, as
/// in a partition (TCP delivers what was held once it heals). `false`
/// when the connection is to be reset instead.
async fn healed(fault: &mut watch::Receiver<Fault>) -> bool {
    loop {
        let current = *fault.borrow_and_update();
        match current {
            Fault::Pass | Fault::Latency(_) => return true,
            Fault::Reset => return false,
            Fault::Blackhole => {
                if fault.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Closes `stream` with a TCP RST rather than a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
