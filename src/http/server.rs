//! The HTTP server: our own accept loop over hyper's HTTP/1 and HTTP/2 (cleartext) connections,
//! so that every connection has time limits, their number is capped, and shutdown reaches each
//! of them, in three stages ([`Stages`]): draining (answers tell clients to leave), closing (the
//! listener closes and each connection ends after its requests) and aborting (the grace period
//! is over: every connection and request still running is dropped).

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, Response, Version, header},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tower_http::compression::Compression;

/// Connections admitted beyond `--max-connections` for probes. On them `/health`, `/livez` and
/// the other probe routes are answered as usual, API requests get 503, and every answer closes
/// its connection (HTTP/1 `Connection: close`, HTTP/2 GOAWAY), and one idle for
/// [`RESERVE_IDLE_TIMEOUT`] is closed, so that a client holding many idle keep-alive connections
/// cannot make readiness, then liveness, fail. Connections beyond these are closed as soon as
/// they are accepted, which keeps file descriptors for the reserve.
pub(crate) const PROBE_RESERVE: usize = 32;

/// How long a connection from [`PROBE_RESERVE`] may stay without a request in flight: a probe
/// sends its request as soon as it connects, while idle connections parked there (a client's
/// keep-alive pool grown past the cap) would otherwise hold the reserve for `--idle-timeout`
/// and shut probes out.
const RESERVE_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest header block (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`); inference requests carry a
/// few short headers.
const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 32 << 10;

/// HTTP/2 keep-alive pings find peers that vanished without closing (a node gone, a NAT entry
/// expired), whose connections would otherwise count against the cap until the idle timeout.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause after an accept error other than a connection's own (out of file descriptors, say), so
/// the loop does not spin while nothing can be accepted.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits applied to every connection (`--header-read-timeout`, `--idle-timeout`,
/// `--max-connections`, `--http2-max-concurrent-streams`).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) http2_max_concurrent_streams: u32,
}

/// The shutdown stages, each cancelled once, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stages {
    /// Draining: every answer ends its connection, so keep-alive clients move elsewhere before
    /// the listener closes.
    pub(crate) drain: CancellationToken,
    /// Stop accepting; each connection ends once its requests are answered.
    pub(crate) close: CancellationToken,
    /// The grace period is over: every connection and request still running is dropped.
    pub(crate) abort: CancellationToken,
}

/// Marks requests that arrived on a connection admitted from [`PROBE_RESERVE`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverCapacity {
    pub(crate) limit: usize,
}

/// Serves `router` on `listener` until [`Stages::close`], then waits for every connection (and
/// every HTTP/2 stream) to end, which [`Stages::abort`] forces.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stages: Stages,
) {
    let tasks = TaskTracker::new();
    let executor = AbortingExecutor {
        tasks: tasks.clone(),
        abort: stages.abort.clone(),
    };
    let builder = Arc::new(connection_builder(&limits, executor.clone()));
    let admission = Admission::new(limits.max_connections);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stages.close.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                accept_failed(&err, &stages.close).await;
                continue;
            }
        };
        let Some(slot) = admission.admit() else {
            tracing::debug!("connection refused: at the connection limit and the probe reserve");
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            limits: limits.clone(),
            stages: stages.clone(),
            slot,
        };
        executor.spawn(connection.run(stream, Arc::clone(&builder)));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

fn connection_builder(
    limits: &ConnectionLimits,
    executor: AbortingExecutor,
) -> auto::Builder<AbortingExecutor> {
    let mut builder = auto::Builder::new(executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    builder
}

/// Errors of one connection (reset before it was accepted) are skipped; others (such as running
/// out of file descriptors) are logged and the loop pauses.
async fn accept_failed(err: &std::io::Error, close: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "cannot accept a connection");
    tokio::select! {
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
        () = close.cancelled() => {}
    }
}

/// Spawns hyper's tasks (HTTP/2 streams) and ours (connections) so that they can be waited for
/// and are dropped when the grace period ends.
#[derive(Clone)]
struct AbortingExecutor {
    tasks: TaskTracker,
    abort: CancellationToken,
}

impl AbortingExecutor {
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .spawn(self.abort.clone().run_until_cancelled_owned(task));
    }
}

impl<F> hyper::rt::Executor<F> for AbortingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        self.spawn(async move {
            task.await;
        });
    }
}

/// Connection slots: `max_connections` for everything, then [`PROBE_RESERVE`] for probes.
struct Admission {
    limit: usize,
    regular: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

/// A connection's place under the cap, given back when the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    over_capacity: Option<OverCapacity>,
}

impl Admission {
    fn new(limit: usize) -> Admission {
        Admission {
            limit,
            regular: Arc::new(Semaphore::new(limit)),
            reserve: Arc::new(Semaphore::new(PROBE_RESERVE)),
        }
    }

    fn admit(&self) -> Option<Slot> {
        if let Ok(permit) = Arc::clone(&self.regular).try_acquire_owned() {
            return Some(Slot {
                _permit: permit,
                over_capacity: None,
            });
        }
        let permit = Arc::clone(&self.reserve).try_acquire_owned().ok()?;
        Some(Slot {
            _permit: permit,
            over_capacity: Some(OverCapacity { limit: self.limit }),
        })
    }
}

struct Connection {
    router: Router,
    limits: ConnectionLimits,
    stages: Stages,
    slot: Slot,
}

impl Connection {
    /// Serves the connection until it ends: closed by the client, idle too long, asked to leave
    /// by an answer, or shut down.
    async fn run(self, stream: TcpStream, builder: Arc<auto::Builder<AbortingExecutor>>) {
        // Small request/response pairs must not wait on Nagle's algorithm.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let (busy, mut activity) = watch::channel(0_usize);
        let leave = self.stages.close.child_token();
        let service = ConnectionService {
            router: self.router,
            busy: Arc::new(busy),
            leave: leave.clone(),
            drain: self.stages.drain,
            over_capacity: self.slot.over_capacity,
        };
        let idle_timeout = match self.slot.over_capacity {
            Some(_) => self.limits.idle_timeout.min(RESERVE_IDLE_TIMEOUT),
            None => self.limits.idle_timeout,
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut open = true;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = idle(&mut activity, idle_timeout), if open => {}
                () = leave.cancelled(), if open => {}
            }
            connection.as_mut().graceful_shutdown();
            open = false;
        }
    }
}

/// Resolves once no request has been in flight for `limit`.
async fn idle(activity: &mut watch::Receiver<usize>, limit: Duration) {
    loop {
        if activity
            .wait_for(|in_flight| *in_flight == 0)
            .await
            .is_err()
        {
            return std::future::pending().await;
        }
        match tokio::time::timeout(limit, activity.changed()).await {
            Err(_) => return,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return std::future::pending().await,
        }
    }
}

/// One connection's view of the router: counts its requests in flight (for the idle timeout),
/// marks requests on reserve connections, and ends the connection after an answer when draining
/// or over capacity.
#[derive(Clone)]
struct ConnectionService {
    router: Router,
    busy: Arc<watch::Sender<usize>>,
    leave: CancellationToken,
    drain: CancellationToken,
    over_capacity: Option<OverCapacity>,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let in_flight = InFlight::start(Arc::clone(&self.busy));
        let mut request = request.map(Body::new);
        if let Some(marker) = self.over_capacity {
            request.extensions_mut().insert(marker);
        }
        let version = request.version();
        let service = self.clone();
        Box::pin(async move {
            let mut response = if request.headers().contains_key(header::ACCEPT_ENCODING) {
                // Answers are compressed only for clients that ask (Triton's
                // response_compression_algorithm), and not when tiny; the rest skip the wrapper.
                let compressed = Compression::new(service.router.clone())
                    .gzip(true)
                    .deflate(true);
                let response = compressed.oneshot(request).await;
                response
                    .unwrap_or_else(|never| match never {})
                    .map(Body::new)
            } else {
                let response = service.router.clone().oneshot(request).await;
                response.unwrap_or_else(|never| match never {})
            };
            if service.over_capacity.is_some() || service.drain.is_cancelled() {
                service.ask_to_leave(version, &mut response);
            }
            drop(in_flight);
            Ok(response)
        })
    }
}

impl ConnectionService {
    /// HTTP/1 clients read `Connection: close`; HTTP/2 ones get GOAWAY once this answer is sent.
    fn ask_to_leave(&self, version: Version, response: &mut Response<Body>) {
        if version < Version::HTTP_2 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.leave.cancel();
    }
}

/// A request in flight on a connection, counted until its answer is ready.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(busy: Arc<watch::Sender<usize>>) -> InFlight {
        busy.send_modify(|in_flight| *in_flight += 1);
        InFlight(busy)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|in_flight| *in_flight -= 1);
    }
}

/// Raises the soft limit on open files to the hard one: some container runtimes leave the soft
/// limit at 1024, which a few hundred idle connections exhaust. Logs the limit, and warns when
/// `--max-connections` plus [`PROBE_RESERVE`] does not fit in it.
pub(crate) fn raise_open_file_limit(max_connections: usize) {
    match raise_nofile() {
        Ok((before, after)) => {
            tracing::info!(before, after, "open file limit");
            let needed = max_connections + PROBE_RESERVE;
            if u64::try_from(needed).is_ok_and(|needed| needed >= after) {
                tracing::warn!(
                    limit = after,
                    max_connections,
                    "the open file limit is below --max-connections plus the probe reserve; \
                     lower --max-connections or raise the limit"
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot raise the open file limit"),
    }
}

/// Sets RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit before and after.
fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_nofile.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let hard = limit.rlim_max;
        limit.rlim_cur = limit.rlim_cur.min(256);
        // SAFETY: as in raise_nofile.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let (before, after) = raise_nofile().unwrap();
        assert_eq!((before, after), (limit.rlim_cur, hard));
    }

    #[test]
    fn connections_beyond_the_cap_come_from_the_reserve_then_are_refused() {
        let admission = Admission::new(2);
        let regular: Vec<_> = (0..2).map(|_| admission.admit().unwrap()).collect();
        assert!(regular.iter().all(|slot| slot.over_capacity.is_none()));
        let reserve: Vec<_> = (0..PROBE_RESERVE)
            .map(|_| admission.admit().unwrap())
            .collect();
        assert!(reserve.iter().all(|slot| slot.over_capacity.is_some()));
        assert!(admission.admit().is_none());
        drop(regular);
        assert!(admission.admit().unwrap().over_capacity.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_flight_for_the_whole_timeout() {
        let (busy, mut activity) = watch::channel(0_usize);
        let busy = Arc::new(busy);
        let limit = Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        let request = InFlight::start(Arc::clone(&busy));
        let finish = async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            drop(request);
        };
        tokio::join!(idle(&mut activity, limit), finish);
        assert_eq!(started.elapsed(), Duration::from_secs(35));
    }
}
