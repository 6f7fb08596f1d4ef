//! TLS for every connection the store opens (pool, liveness, migration):
//! none, or rustls with the application's configuration. One place that
//! knows the connector's type, so the rest of the store does not.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Notification};

use crate::error::Result;

/// How the store's connections are secured.
#[derive(Clone)]
pub(crate) enum Tls {
    /// Without TLS.
    Off,
    /// With rustls.
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    pub(crate) fn new(config: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Tls {
        match config {
            Some(config) => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(
                (**config).clone(),
            )),
            None => Tls::Off,
        }
    }

    /// A pool manager connecting this way.
    pub(crate) fn manager(
        &self,
        config: Config,
        manager: deadpool_postgres::ManagerConfig,
    ) -> deadpool_postgres::Manager {
        match self {
            Tls::Off => deadpool_postgres::Manager::from_config(config, NoTls, manager),
            Tls::Rustls(tls) => {
                deadpool_postgres::Manager::from_config(config, tls.clone(), manager)
            }
        }
    }

    /// Opens one connection, driven by a task of its own that forwards the
    /// notifications it receives. The receiver ends when the connection
    /// does (the server went away, or the client was dropped).
    pub(crate) async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)> {
        match self {
            Tls::Off => drive(config.connect(NoTls).await?),
            Tls::Rustls(tls) => drive(config.connect(tls.clone()).await?),
        }
    }
}

fn drive<S, T>(
    (client, mut connection): (Client, tokio_postgres::Connection<S, T>),
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (notify, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = notify.send(n);
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("errands: a PostgreSQL connection ended: {e}");
                    break;
                }
            }
        }
    });
    Ok((client, notifications))
}
