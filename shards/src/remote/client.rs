//! Requests to the object store: `object_store` for S3, GCS, Azure and HTTP, with a
//! deadline and counted retries of our own (object_store's are turned off, so that every
//! retry is counted and the deadline covers them all).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use super::stats::Stats;
use super::RemoteSettings;
use crate::error::{Error, Result};

/// One store's connection: the object store, the key prefix, a small runtime.
pub(crate) struct Client {
    store: Arc<dyn ObjectStore>,
    /// The keys' prefix inside the bucket (or below the server's root), `""` or `a/b/`.
    prefix: String,
    /// The store's URL with a trailing slash, for messages.
    base: String,
    timeout: Duration,
    retries: u32,
    pub(crate) stats: Arc<Stats>,
    pub(crate) runtime: tokio::runtime::Runtime,
}

/// The first pause between two attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Client {
    /// Connects to the store at `url` (nothing is requested yet).
    pub fn new(url: &Url, settings: &RemoteSettings, stats: Arc<Stats>) -> Result<Self> {
        let base = with_slash(url.as_str());
        let bad = |reason: String| Error::Url {
            url: base.clone(),
            reason,
        };
        let timeout = Duration::from_secs_f64(settings.timeout_s);
        let (store, prefix) = build(url, timeout, &settings.storage_options).map_err(|e| bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slotcon-remote")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Client {
            store,
            prefix,
            base,
            timeout,
            retries: settings.retries,
            stats,
            runtime,
        })
    }

    /// The URL of the store's file `name`.
    pub fn url_of(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    /// How long one request may take, its retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The store's URL, with a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn key(&self, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{name}", self.prefix))
    }

    /// The object's size and ETag.
    pub async fn head(&self, name: &str) -> Result<ObjectMeta> {
        let key = self.key(name);
        self.attempts(name, || async {
            let meta = self.store.head(&key).await.map_err(Failure::from)?;
            Ok(meta)
        })
        .await
    }

    /// The whole object `name`, which must hold at most `max` bytes.
    pub async fn get_all(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let key = self.key(name);
        let bytes = self
            .attempts(name, || async {
                let got = self.store.get_opts(&key, GetOptions::default()).await?;
                if got.meta.size > max {
                    let reason = format!("{} bytes, more than the {max} allowed", got.meta.size);
                    return Err(Failure::Permanent(Error::Invalid {
                        path: self.url_of(name).into(),
                        reason,
                    }));
                }
                let size = got.meta.size;
                let bytes = got.bytes().await?;
                if bytes.len() as u64 != size {
                    return Err(Failure::Short(bytes.len() as u64, size));
                }
                Ok(bytes)
            })
            .await?;
        Ok(bytes.to_vec())
    }

    /// Bytes `range` of object `name`, whose ETag must still be `etag` (when the store
    /// gives ETags): a changed object is [`Error::Changed`], never other bytes.
    pub async fn get_range(&self, name: &str, range: Range<u64>, etag: Option<&str>) -> Result<bytes::Bytes> {
        let key = self.key(name);
        let want = range.end - range.start;
        self.attempts(name, || async {
            let options = GetOptions {
                range: Some(GetRange::Bounded(range.clone())),
                ..GetOptions::default()
            };
            let got = self.store.get_opts(&key, options).await?;
            if let (Some(was), Some(now)) = (etag, got.meta.e_tag.as_deref()) {
                if was != now {
                    let reason = format!("its ETag was {was} when the store was opened, now {now}");
                    return Err(Failure::Permanent(self.changed(name, reason)));
                }
            }
            let bytes = got.bytes().await?;
            if bytes.len() as u64 != want {
                return Err(Failure::Short(bytes.len() as u64, want));
            }
            Ok(bytes)
        })
        .await
    }

    /// Writes object `name` whole: one PUT for a small one, a multipart upload (parts
    /// of [`PART_BYTES`]) for a large one, so that it appears whole or not at all.
    pub async fn put(&self, name: &str, bytes: bytes::Bytes) -> Result<()> {
        let key = self.key(name);
        self.attempts(name, || async {
            if bytes.len() as u64 <= PART_BYTES {
                self.store.put(&key, bytes.clone().into()).await?;
                return Ok(Written);
            }
            let mut upload = self.store.put_multipart(&key).await?;
            let mut parts = Vec::new();
            for start in (0..bytes.len()).step_by(PART_BYTES as usize) {
                let end = (start + PART_BYTES as usize).min(bytes.len());
                parts.push(upload.put_part(bytes.slice(start..end).into()));
            }
            for part in parts {
                if let Err(e) = part.await {
                    let _ = upload.abort().await;
                    return Err(e.into());
                }
            }
            upload.complete().await?;
            Ok(Written)
        })
        .await
        .map(drop)
    }

    /// [`Error::Changed`] for object `name`.
    pub fn changed(&self, name: &str, reason: String) -> Error {
        Error::Changed {
            url: self.url_of(name),
            reason,
        }
    }

    /// Runs `op` until it succeeds, fails for good, or the deadline passes; counts each
    /// request and retry.
    async fn attempts<T, F, Fut>(&self, name: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
        T: Sized + Len,
    {
        let start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1u32;
        loop {
            let left = self.timeout.saturating_sub(start.elapsed());
            Stats::add(&self.stats.requests, 1);
            let failure = match tokio::time::timeout(left, op()).await {
                Ok(Ok(value)) => {
                    Stats::add(&self.stats.bytes_fetched, value.len());
                    return Ok(value);
                }
                Ok(Err(Failure::Permanent(e))) => return Err(e),
                Ok(Err(Failure::Store(e))) if !transient(&e) => {
                    return Err(Error::Remote {
                        url: self.url_of(name),
                        source: e,
                    })
                }
                Ok(Err(other)) => other.to_string(),
                Err(_) => format!("no answer within {:.1} s", left.as_secs_f64()),
            };
            let spent = start.elapsed() + backoff;
            if attempt > self.retries || spent >= self.timeout {
                return Err(Error::Unreachable {
                    url: self.url_of(name),
                    attempts: attempt,
                    seconds: start.elapsed().as_secs_f64(),
                    last: failure,
                });
            }
            Stats::add(&self.stats.retries, 1);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    /// Runs `future` on this client's runtime, from a thread outside it.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

/// The size of a multipart upload's parts; smaller objects are one PUT.
pub(crate) const PART_BYTES: u64 = 32 << 20;

/// A finished upload (counts no fetched byte).
struct Written;

impl Len for Written {
    fn len(&self) -> u64 {
        0
    }
}

/// What a retried request returns: its length in bytes, for the counters.
pub(crate) trait Len {
    fn len(&self) -> u64;
}

impl Len for bytes::Bytes {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

impl Len for ObjectMeta {
    fn len(&self) -> u64 {
        0
    }
}

/// Why one attempt failed.
enum Failure {
    /// The store's error (transient or not, [`transient`] decides).
    Store(object_store::Error),
    /// A body shorter than asked (a connection cut mid-body): retried.
    Short(u64, u64),
    /// An error no retry can mend.
    Permanent(Error),
}

impl From<object_store::Error> for Failure {
    fn from(e: object_store::Error) -> Self {
        Failure::Store(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(e) => write!(f, "{}", with_causes(e)),
            Failure::Short(got, want) => write!(f, "the body ended after {got} of {want} bytes"),
            Failure::Permanent(e) => write!(f, "{e}"),
        }
    }
}

/// `e`'s message, then each of its sources' that it does not already contain (what a
/// connection error hides: a refused certificate, a reset, a DNS failure).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

/// Errors worth another attempt: object_store's generic errors (5xx answers, connection
/// errors and resets, timeouts, bodies cut short). A missing object or bucket, refused
/// credentials and failed preconditions are not.
fn transient(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

/// The object store for `url` and the key prefix below it, configured from the usual
/// environment variables of its kind (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
fn build(
    url: &Url,
    timeout: Duration,
    options: &std::collections::BTreeMap<String, String>,
) -> std::result::Result<(Arc<dyn ObjectStore>, String), object_store::Error> {
    use object_store::{ClientConfigKey, ClientOptions, RetryConfig};
    let retry = RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    };
    // object_store's own timeout comes a second after ours, so that a request that hangs
    // is reported by the deadline that covers the retries ("no answer within").
    let timeout = timeout + Duration::from_secs(1);
    let timeout_text = format!("{}ms", timeout.as_millis().max(1));
    let path = url.path().trim_start_matches('/');
    let prefix = |p: &str| if p.is_empty() { String::new() } else { with_slash(p) };
    // The three cloud builders take the same calls, with their own key types: the URL,
    // no retries of their own, the timeouts, then the options over their environment.
    macro_rules! cloud {
        ($builder:ty, $key:ident) => {{
            let mut b = <$builder>::from_env()
                .with_url(url.as_str())
                .with_retry(retry)
                .with_config($key::Client(ClientConfigKey::Timeout), &timeout_text)
                .with_config($key::Client(ClientConfigKey::ConnectTimeout), &timeout_text);
            for (k, v) in options {
                b = b.with_config(k.parse()?, v);
            }
            Arc::new(b.build()?)
        }};
    }
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            cloud!(AmazonS3Builder, AmazonS3ConfigKey)
        }
        "gs" => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            cloud!(GoogleCloudStorageBuilder, GoogleConfigKey)
        }
        "az" | "azure" | "abfs" | "abfss" | "adl" => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            cloud!(MicrosoftAzureBuilder, AzureConfigKey)
        }
        "http" | "https" => {
            let mut client = ClientOptions::new()
                .with_allow_http(url.scheme() == "http")
                .with_timeout(timeout)
                .with_connect_timeout(timeout);
            for (k, v) in options {
                client = client.with_config(k.parse()?, v);
            }
            // The keys are appended as path segments: without its trailing slash, a
            // folder's URL would give `folder//key`.
            let mut base = url.clone();
            if let Ok(mut segments) = base.path_segments_mut() {
                segments.pop_if_empty();
            }
            let b = object_store::http::HttpBuilder::new()
                .with_url(base.as_str())
                .with_retry(retry)
                .with_client_options(client);
            // The HTTP store's keys are relative to the URL itself.
            return Ok((Arc::new(b.build()?), String::new()));
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("unsupported URL scheme {other}:// (s3, gs, az, http and https are)").into(),
            })
        }
    };
    // For the bucket stores the URL's path is the prefix inside the bucket.
    Ok((store, prefix(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of an `http(s)://` store are below its folder, with one slash between.
    #[test]
    fn an_http_stores_keys_are_below_its_folder() {
        for (url, want) in [
            ("http://127.0.0.1:9/coco/", "http://127.0.0.1:9/coco/manifest.json"),
            ("http://127.0.0.1:9/a/b", "http://127.0.0.1:9/a/b/manifest.json"),
            ("http://127.0.0.1:9/", "http://127.0.0.1:9/manifest.json"),
        ] {
            let url = Url::parse(url).unwrap();
            let (store, prefix) = build(&url, Duration::from_secs(1), &Default::default()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let key = ObjectPath::from(format!("{prefix}manifest.json"));
            let err = rt.block_on(store.get(&key)).unwrap_err().to_string();
            assert!(err.contains(&format!("{want} ")), "{url}: {err}");
        }
    }
}
