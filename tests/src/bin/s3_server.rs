//! `slotcon-s3-server`: a real S3 server (`s3s-fs`, as a library) over a folder, on
//! 127.0.0.1, for the remote-store tests and benchmarks. It can add latency and a
//! bandwidth cap to every answer, and faults to every k-th GET with a `Range` header
//! (the block reads, not the manifest or the indexes), or a 503 to every k-th PUT (an
//! object, or one part of a multipart upload).
//!
//! ```text
//! slotcon-s3-server ROOT [--port N] [--latency-ms MS] [--bandwidth BYTES_PER_S]
//!                        [--fail-every K] [--reset-every K] [--truncate-every K]
//!                        [--fail-put-every K] [--access-key KEY --secret-key SECRET]
//! ```
//! A bucket is a folder of ROOT. The server prints `listening on 127.0.0.1:PORT` and
//! serves until its standard input closes (its parent died or let go) or it is killed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

/// The faults and the throttle.
#[derive(Clone, Debug, Default)]
struct Faults {
    latency: Duration,
    bandwidth: Option<f64>,
    fail_every: Option<u64>,
    reset_every: Option<u64>,
    truncate_every: Option<u64>,
    fail_put_every: Option<u64>,
    /// The PUTs answered so far.
    puts: Arc<AtomicU64>,
}

struct Options {
    root: PathBuf,
    port: u16,
    faults: Faults,
    keys: Option<(String, String)>,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut root = None;
    let mut o = Options {
        root: PathBuf::new(),
        port: 0,
        faults: Faults::default(),
        keys: None,
    };
    let (mut access, mut secret) = (None, None);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let mut number = |name: &str| -> Result<u64, String> {
            let v = value(name)?;
            v.parse().map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match a.as_str() {
            "--port" => o.port = number("--port")? as u16,
            "--latency-ms" => o.faults.latency = Duration::from_millis(number("--latency-ms")?),
            "--bandwidth" => o.faults.bandwidth = Some(number("--bandwidth")?.max(1) as f64),
            "--fail-every" => o.faults.fail_every = Some(number("--fail-every")?.max(1)),
            "--reset-every" => o.faults.reset_every = Some(number("--reset-every")?.max(1)),
            "--truncate-every" => o.faults.truncate_every = Some(number("--truncate-every")?.max(1)),
            "--fail-put-every" => o.faults.fail_put_every = Some(number("--fail-put-every")?.max(1)),
            "--access-key" => access = Some(value("--access-key")?),
            "--secret-key" => secret = Some(value("--secret-key")?),
            "-h" | "--help" => return Err("usage: slotcon-s3-server ROOT [--port N] [--latency-ms MS] [--bandwidth B/s] [--fail-every K] [--reset-every K] [--truncate-every K] [--fail-put-every K] [--access-key K --secret-key S]".into()),
            other if root.is_none() && !other.starts_with('-') => root = Some(PathBuf::from(other)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    o.root = root.ok_or("no ROOT folder given")?;
    o.keys = access.zip(secret);
    Ok(o)
}

fn main() -> std::process::ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("slotcon-s3-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Exit when the parent closes our standard input (or dies): no server outlives a test.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(serve(o)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slotcon-s3-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Response = hyper::Response<s3s::Body>;

async fn serve(o: Options) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let fs = s3s_fs::FileSystem::new(&o.root).map_err(|e| format!("{}: {e:?}", o.root.display()))?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    if let Some((ak, sk)) = o.keys {
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ak, sk));
    }
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", o.port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let faults = Arc::new(o.faults);
    let root = Arc::new(o.root.clone());
    let ranged = Arc::new(AtomicU64::new(0));
    let http = Builder::new(TokioExecutor::new());
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => continue,
        };
        // As object stores do: a throttled body's pieces go out at once, not after the
        // client's delayed ACK (Nagle).
        let _ = socket.set_nodelay(true);
        let (service, faults, ranged, root) = (service.clone(), faults.clone(), ranged.clone(), root.clone());
        let handler = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (service, faults, ranged, root) = (service.clone(), faults.clone(), ranged.clone(), root.clone());
            answer(root.clone(), service, faults, ranged, req)
        });
        let conn = http.serve_connection(TokioIo::new(socket), handler).into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

/// Why an answer was cut: hyper then drops the connection mid-body.
#[derive(Debug)]
struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by the fault injector")
    }
}

impl std::error::Error for Cut {}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

async fn answer(
    root: Arc<PathBuf>,
    service: s3s::service::S3Service,
    faults: Arc<Faults>,
    ranged: Arc<AtomicU64>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<Response, BoxError> {
    tokio::time::sleep(faults.latency).await;
    let is_ranged = req.method() == hyper::Method::GET && req.headers().contains_key(hyper::header::RANGE);
    let k = if is_ranged {
        ranged.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let hit = |every: Option<u64>| is_ranged && every.is_some_and(|e| k % e == 0);
    let put_failed = || {
        let every = faults.fail_put_every?;
        let k = faults.puts.fetch_add(1, Ordering::SeqCst) + 1;
        Some(k.is_multiple_of(every))
    };
    if hit(faults.fail_every) || (req.method() == hyper::Method::PUT && put_failed() == Some(true)) {
        let mut r = hyper::Response::new(s3s::Body::from("SlowDown: injected fault".to_string()));
        *r.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    if hit(faults.reset_every) {
        return Err(Box::new(Cut));
    }
    let object = root.join(req.uri().path().trim_start_matches('/'));
    let response = match hyper::service::Service::call(&service, req).await {
        Ok(r) => r,
        Err(e) => return Err(format!("{e:?}").into()),
    };
    let truncate = hit(faults.truncate_every);
    if faults.bandwidth.is_none() && !truncate {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    // A ranged answer's bytes are read here in one go: collecting s3s-fs's body (4 KiB
    // reads through tokio's blocking pool) took about 200 ms per MiB on 2 cores.
    let range = parts
        .headers
        .get(hyper::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(content_range);
    let bytes = match range {
        Some((start, end)) if parts.status == hyper::StatusCode::PARTIAL_CONTENT => {
            drop(body);
            read_range(&object, start, end)?
        }
        _ => match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Err(format!("{e}").into()),
        },
    };
    let keep = if truncate { bytes.len() / 2 } else { bytes.len() };
    Ok(hyper::Response::from_parts(
        parts,
        throttled(bytes, keep, truncate, faults.bandwidth),
    ))
}

/// `bytes START-END/SIZE` as `(START, END)` (END inclusive).
fn content_range(v: &str) -> Option<(u64, u64)> {
    let (range, _) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_range(path: &std::path::Path, start: u64, end: u64) -> Result<Bytes, BoxError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut buf = vec![0; (end + 1 - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf.into())
}

/// A body that sends the first `keep` bytes of `bytes` in 64 KiB pieces at `bandwidth`
/// bytes per second, then ends, or fails when `cut` (a truncated answer).
fn throttled(bytes: Bytes, keep: usize, cut: bool, bandwidth: Option<f64>) -> s3s::Body {
    const PIECE: usize = 64 << 10;
    // Each piece is due when the bandwidth allows its last byte, counted from the start:
    // the timer's rounding does not add up.
    let start = tokio::time::Instant::now();
    let stream = futures::stream::unfold((0usize, false), move |(at, done)| {
        let bytes = bytes.clone();
        async move {
            if done {
                return None;
            }
            if at >= keep {
                return cut.then(|| (Err::<Frame<Bytes>, BoxError>(Box::new(Cut)), (at, true)));
            }
            let end = (at + PIECE).min(keep);
            if let Some(b) = bandwidth {
                tokio::time::sleep_until(start + Duration::from_secs_f64(end as f64 / b)).await;
            }
            Some((Ok(Frame::data(bytes.slice(at..end))), (end, false)))
        }
    });
    s3s::Body::http_body(http_body_util::StreamBody::new(stream))
}
