//! PostgreSQL over TLS (rustls): the store's connections are encrypted
//! when `PostgresOptions::tls` is given, and a server the configuration
//! does not trust is refused at `start()`. The local server's certificate
//! (`ssl_cert_file`, self-signed for `localhost`) is the trust anchor here.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, TestStore};
use errands::rustls::pki_types::{pem::PemObject, CertificateDer};
use errands::{rustls, Errands, Event, Job, JobContext, JobResult, PostgresOptions};
use serde::{Deserialize, Serialize};

/// Whether the handler's own connection (errands' pool) is encrypted.
#[derive(Default)]
struct Seen(Mutex<Option<bool>>);

#[derive(Serialize, Deserialize)]
struct AskSsl;

impl Job for AskSsl {
    const KIND: &'static str = "ask_ssl";
    async fn run(self, ctx: JobContext) -> JobResult {
        let ssl = ctx
            .pg_transaction(async |tx| {
                let row = tx
                    .query_one(
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        &[],
                    )
                    .await?;
                Ok(row.get::<_, bool>(0))
            })
            .await?;
        *ctx.data::<Arc<Seen>>()?.0.lock().unwrap() = Some(ssl);
        Ok(())
    }
}

/// The local server's certificate, from its own settings.
async fn server_certificate() -> CertificateDer<'static> {
    let (client, connection) =
        errands::tokio_postgres::connect(&common::pg_url(), errands::tokio_postgres::NoTls)
            .await
            .unwrap();
    actix_rt::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(ssl, "on", "the test server must have TLS on");
    let path: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    CertificateDer::from_pem_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn trusting(cert: CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

const URL: &str = "postgres://postgres@localhost:5432/test?sslmode=require";

#[actix_rt::test]
async fn jobs_run_over_tls_when_it_is_configured() {
    let store = TestStore::new(Backend::Postgres);
    let seen = Arc::new(Seen::default());
    let errands = Errands::builder()
        .postgres_options(
            PostgresOptions::new(URL)
                .schema(store.schema.clone())
                .tls(trusting(server_certificate().await)),
        )
        .register::<AskSsl>()
        .data(seen.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(AskSsl).await.unwrap();
    let event = common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert!(matches!(event, Event::Completed { .. }), "{event:?}");
    assert_eq!(
        *seen.0.lock().unwrap(),
        Some(true),
        "the connection is encrypted"
    );
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[actix_rt::test]
async fn a_server_the_tls_configuration_does_not_trust_is_refused() {
    let store = TestStore::new(Backend::Postgres);
    let refused = Errands::builder()
        .postgres_options(
            PostgresOptions::new(URL)
                .schema(store.schema.clone())
                .tls_public_roots(),
        )
        .register::<AskSsl>()
        .start()
        .await;
    match refused {
        Err(errands::Error::Connect { source, .. }) => {
            let message = format!("{source}");
            assert!(
                message.to_lowercase().contains("certificate"),
                "the error says why: {message}"
            );
        }
        other => panic!("expected a connect error, got {:?}", other.err()),
    }
}

/// The check above can tell: without `tls`, the same job sees a plain
/// connection.
#[actix_rt::test]
async fn without_tls_the_connection_is_plain() {
    let store = TestStore::new(Backend::Postgres);
    let seen = Arc::new(Seen::default());
    let errands = store
        .apply(Errands::builder())
        .register::<AskSsl>()
        .data(seen.clone())
        .start()
        .await
        .unwrap();
    let mut events = errands.subscribe();
    let id = errands.enqueue(AskSsl).await.unwrap();
    common::wait_for(&mut events, |e| e.id() == Some(id)).await;
    assert_eq!(*seen.0.lock().unwrap(), Some(false));
    errands.shutdown(Duration::from_secs(10)).await.unwrap();
}
