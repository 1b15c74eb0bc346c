//! A TCP forwarder on 127.0.0.1:0 in front of a real server, which a test can cut and
//! restore: a database outage without mocking the database. Cut, it drops every
//! forwarded connection and closes new ones as soon as they are accepted. (Refusing
//! them at the TCP level instead would make sqlx retry its connect for the pool's
//! 30 s acquire timeout, a different outage than the one a test wants to be quick.)

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Forwarder {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    /// Forwards to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = watch::channel(true);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*up_rx.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target.clone(), up_rx.clone()));
            }
        });
        Self { addr, up, accept }
    }

    /// Drops every connection and closes new ones until `restore`.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn forward(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(&target).await else {
        return;
    };
    // Either side closing, or a cut, ends the pair; dropping both sockets closes them.
    // The cut is checked first, so not one byte crosses after it.
    tokio::select! {
        biased;
        _ = up.wait_for(|up| !*up) => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
