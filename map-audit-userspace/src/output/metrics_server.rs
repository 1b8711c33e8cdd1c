//! Serves `GET /metrics` (Prometheus text format) on `--metrics-addr`, from its own
//! thread and runtime so a slow scraper never delays the ring-buffer reader.

use std::{convert::Infallible, net::TcpListener};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;

use crate::output::metrics;

/// Binds now (a bad address fails the start with one sentence), serves from a thread.
pub fn start(addr: &str) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).with_context(|| {
        format!(
            "cannot listen on --metrics-addr {addr}; give a free HOST:PORT such as 127.0.0.1:9464"
        )
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    metrics::enable();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(serve(listener)),
                Err(err) => log::error!("the metrics server could not start: {err}"),
            }
        })
        .context("starting the metrics thread failed")?;
    Ok(local)
}

async fn serve(listener: TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => return log::error!("the metrics server could not start: {err}"),
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            // A scraper that hangs up mid-response is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(respond))
                .await;
        });
    }
}

async fn respond(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.uri().path(), metrics::get()) {
        ("/metrics", Some(metrics)) => (StatusCode::OK, metrics.encode()),
        _ => (
            StatusCode::NOT_FOUND,
            "map-audit serves /metrics only\n".to_string(),
        ),
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response");
    Ok(response)
}
