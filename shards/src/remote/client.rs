//! Requests to the object store: `object_store` for S3, GCS, Azure and HTTP, with a
//! deadline and counted retries of our own (object_store's are turned off, so that every
//! retry is counted and the deadline covers them all).

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use super::stats::Stats;
use super::RemoteSettings;
use crate::error::{Error, Result};

/// One store's connection: the object store, the key prefix, a small runtime.
pub(crate) struct Client {
    store: Arc<dyn ObjectStore>,
    /// The same store's multipart API, where it has one.
    multipart: Option<Arc<dyn MultipartStore>>,
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
        let (store, multipart, prefix) =
            build(url, timeout, &settings.storage_options).map_err(|e| bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slotcon-remote")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Client {
            store,
            multipart,
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

    /// Writes object `name` in one PUT (it appears whole or not at all).
    pub async fn put(&self, name: &str, bytes: bytes::Bytes) -> Result<()> {
        let key = self.key(name);
        self.attempts(name, || async {
            self.store.put(&key, bytes.clone().into()).await?;
            Ok(Written(()))
        })
        .await
        .map(drop)
    }

    /// Writes object `name`, `size` bytes that `read(range)` gives, so that it appears
    /// whole or not at all: one PUT up to `part_bytes` (or to a store without multipart
    /// uploads, HTTP's), else a multipart upload of parts of `part_bytes` (more where
    /// S3's 10 000 parts would not hold the object). At most [`PARTS_IN_FLIGHT`] parts
    /// are read and sent at once, so memory does not grow with the object. Each request
    /// (the start, each part, the completion) is retried on its own within the
    /// deadline; an upload that fails for good is aborted.
    pub async fn put_from<R>(&self, name: &str, size: u64, part_bytes: u64, read: R) -> Result<()>
    where
        R: Fn(Range<u64>) -> Result<bytes::Bytes>,
    {
        use futures::{StreamExt, TryStreamExt};
        let store = match self.multipart.as_deref() {
            Some(store) if size > part_bytes => store,
            _ => return self.put(name, read(0..size)?).await,
        };
        let part_bytes = part_bytes.max(size.div_ceil(MAX_PARTS));
        let key = self.key(name);
        let id = self
            .attempts(name, || async { Ok(Written(store.create_multipart(&key).await?)) })
            .await?
            .0;
        let part = |index: u64| {
            let (key, id, read) = (&key, &id, &read);
            async move {
                let start = index * part_bytes;
                let bytes = read(start..size.min(start + part_bytes))?;
                let put = || async {
                    let payload = bytes.clone().into();
                    Ok(Written(store.put_part(key, id, index as usize, payload).await?))
                };
                Ok::<_, Error>(self.attempts(name, put).await?.0)
            }
        };
        let done = async {
            let parts: Vec<_> = futures::stream::iter(0..size.div_ceil(part_bytes))
                .map(part)
                .buffered(PARTS_IN_FLIGHT)
                .try_collect()
                .await?;
            let complete = || async { Ok(Written(store.complete_multipart(&key, &id, parts.clone()).await?)) };
            self.attempts(name, complete).await.map(drop)
        }
        .await;
        if done.is_err() {
            // Best effort: the parts sent would otherwise stay billed until the bucket's
            // lifecycle rules drop them.
            let _ = tokio::time::timeout(self.timeout, store.abort_multipart(&key, &id)).await;
        }
        done
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

/// How many parts of one multipart upload are read and sent at once.
pub(crate) const PARTS_IN_FLIGHT: usize = 4;

/// The most parts one multipart upload has (S3's limit; GCS and Azure allow as many).
const MAX_PARTS: u64 = 10_000;

/// What a write returns (counts no fetched byte).
struct Written<T = ()>(T);

impl<T> Len for Written<T> {
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

/// What [`build`] makes: the store, its multipart API where it has one, the key prefix.
type Built = (Arc<dyn ObjectStore>, Option<Arc<dyn MultipartStore>>, String);

/// The object store for `url` (and its multipart API) and the key prefix below it, configured from the usual
/// environment variables of its kind (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
fn build(
    url: &Url,
    timeout: Duration,
    options: &std::collections::BTreeMap<String, String>,
) -> std::result::Result<Built, object_store::Error> {
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
            let store = Arc::new(b.build()?);
            (
                store.clone() as Arc<dyn ObjectStore>,
                Some(store as Arc<dyn MultipartStore>),
            )
        }};
    }
    let (store, multipart) = match url.scheme() {
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
            return Ok((Arc::new(b.build()?), None, String::new()));
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("unsupported URL scheme {other}:// (s3, gs, az, http and https are)").into(),
            })
        }
    };
    // For the bucket stores the URL's path is the prefix inside the bucket.
    Ok((store, multipart, prefix(path)))
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
            let (store, _, prefix) = build(&url, Duration::from_secs(1), &Default::default()).unwrap();
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
