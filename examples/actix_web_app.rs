//! An actix-web service that hands work to errands.
//!
//! ```text
//! cargo run --example actix_web_app
//! curl -X POST 'localhost:8080/thumbnails?count=100'
//! curl -X POST 'localhost:8080/reminders?user=7&delay_secs=5'
//! curl localhost:8080/jobs/counts
//! curl localhost:8080/jobs/1
//! curl -X POST localhost:8080/jobs/1/cancel
//! curl localhost:8080/admin/controls
//! curl -X POST 'localhost:8080/admin/kinds/thumbnail/concurrency?n=1'
//! ```
//!
//! The `/admin` routes turn errands' live knobs; mount them behind your own
//! authentication in a real service.
//!
//! Stopping: actix-web stops the HTTP server on SIGTERM gracefully (it
//! waits for requests in flight) and on SIGINT (Ctrl-C) at once; either way
//! `run()` then returns and errands drains: running jobs get up to 30 s to
//! finish, and whatever still runs after that goes back to the queue for the
//! next start. After SIGKILL nothing drains; the next start puts the jobs
//! that were running back at once.

use std::time::Duration;

use actix_web::{get, post, web, App, HttpResponse, HttpServer, Responder};
use errands::{Errands, Job, JobConfig, JobContext, JobResult};
use serde::{Deserialize, Serialize};

/// Renders a thumbnail (pretend: 200 ms of work).
#[derive(Serialize, Deserialize)]
struct Thumbnail {
    upload: u32,
}

impl Job for Thumbnail {
    const KIND: &'static str = "thumbnail";
    const QUEUE: &'static str = "media";

    async fn run(self, ctx: JobContext) -> JobResult {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        log::info!(
            "thumbnail for upload {} done (job {})",
            self.upload,
            ctx.id()
        );
        Ok(())
    }
}

/// Reminds a user of something, later.
#[derive(Serialize, Deserialize)]
struct Reminder {
    user: u64,
}

impl Job for Reminder {
    const KIND: &'static str = "reminder";

    async fn run(self, ctx: JobContext) -> JobResult {
        log::info!("reminding user {} (job {})", self.user, ctx.id());
        Ok(())
    }
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    count: u32,
}

#[post("/thumbnails")]
async fn thumbnails(errands: web::Data<Errands>, q: web::Query<ThumbnailQuery>) -> impl Responder {
    match errands
        .enqueue_many((0..q.count).map(|upload| Thumbnail { upload }))
        .await
    {
        Ok(ids) => HttpResponse::Accepted().json(ids),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

#[derive(Deserialize)]
struct ReminderQuery {
    user: u64,
    delay_secs: u64,
}

#[post("/reminders")]
async fn reminders(errands: web::Data<Errands>, q: web::Query<ReminderQuery>) -> impl Responder {
    let delay = Duration::from_secs(q.delay_secs);
    match errands.enqueue_in(Reminder { user: q.user }, delay).await {
        Ok(id) => HttpResponse::Accepted().json(id),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

#[get("/jobs/counts")]
async fn counts(errands: web::Data<Errands>) -> impl Responder {
    // `Counts` is `Serialize`: by queue and kind, a number per state.
    match errands.counts().await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[get("/jobs/{id}")]
async fn job(errands: web::Data<Errands>, id: web::Path<i64>) -> impl Responder {
    // `status` tells a finished job (its row deleted) from one that never
    // existed; `JobStatus` serialises as {"status": "completed"}, or
    // {"status": "stored", "state": "running", "attempts": 1, ...}.
    match errands.status(*id).await {
        Ok(errands::JobStatus::NotFound) => HttpResponse::NotFound().body("no such job"),
        Ok(status) => HttpResponse::Ok().json(status),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[post("/jobs/{id}/cancel")]
async fn cancel(errands: web::Data<Errands>, id: web::Path<i64>) -> impl Responder {
    // A waiting job is cancelled at once; a running one's handler is told
    // (and aborted after its grace period). Either way it ends `cancelled`.
    match errands.cancel_because(*id, "cancelled over HTTP").await {
        Ok(done) => HttpResponse::Accepted().body(format!("{done:?}")),
        Err(errands::Error::NotFound(_)) => HttpResponse::NotFound().body("no such job"),
        Err(e @ errands::Error::WrongState { .. }) => HttpResponse::Conflict().body(e.to_string()),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[get("/admin/controls")]
async fn controls(errands: web::Data<Errands>) -> impl Responder {
    // Per kind: the code's limit, any stored override, the limit in force,
    // pauses and throttles. `KindControls` is `Serialize`.
    match errands.controls().await {
        Ok(rows) => HttpResponse::Ok().json(rows),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[derive(Deserialize)]
struct ConcurrencyQuery {
    n: usize,
}

#[post("/admin/kinds/{kind}/concurrency")]
async fn set_concurrency(
    errands: web::Data<Errands>,
    kind: web::Path<String>,
    q: web::Query<ConcurrencyQuery>,
) -> impl Responder {
    // Stored: every process on the database takes it up within its poll.
    match errands.set_concurrency(&kind, q.n).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e @ (errands::Error::UnknownKind(_) | errands::Error::Config(_))) => {
            HttpResponse::BadRequest().body(e.to_string())
        }
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let errands = Errands::builder()
        .sqlite("data/actix_web_app.db")
        .register_with::<Thumbnail>(JobConfig::new().concurrency(4))
        .register::<Reminder>()
        .start()
        .await
        .map_err(std::io::Error::other)?;

    let data = web::Data::new(errands.clone());
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(thumbnails)
            .service(reminders)
            .service(counts)
            .service(job)
            .service(cancel)
            .service(controls)
            .service(set_concurrency)
    })
    .bind(("127.0.0.1", 8080))?
    .run()
    .await?;

    log::info!("HTTP server stopped; draining jobs (up to 30 s)");
    match errands.shutdown(Duration::from_secs(30)).await {
        Ok(()) => log::info!("all running jobs finished"),
        Err(e) => log::warn!("{e}; unfinished jobs will run after the next start"),
    }
    Ok(())
}
