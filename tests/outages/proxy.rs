//! A TCP proxy standing for what moves clients to a new primary in a
//! failover (a virtual IP, a DNS name, PgBouncer): the services connect to it,
//! and [`Proxy::switch`] cuts every open connection and sends new ones to
//! another port.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    pub port: u16,
    target: Arc<AtomicU16>,
    cut: watch::Sender<u64>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port, forwarding to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
        let port = parley_event_log::testing::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let target = Arc::new(AtomicU16::new(target));
        let (cut, _) = watch::channel(0u64);
        let accepting = tokio::spawn({
            let (target, cut) = (target.clone(), cut.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = target.load(Ordering::SeqCst);
                    tokio::spawn(forward(client, to, cut.subscribe()));
                }
            }
        });
        Self {
            port,
            target,
            cut,
            accepting,
        }
    }

    /// Cuts every connection open now; new ones go to `target`.
    pub fn switch(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut.send_modify(|n| *n += 1);
    }
}

async fn forward(mut client: TcpStream, to: u16, mut cut: watch::Receiver<u64>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = cut.changed() => {}
    }
}
