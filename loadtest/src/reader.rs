//! One simulated reader: opens the job's SSE stream, decodes chunked HTTP and SSE, checks each
//! line's counter and records its latency, and behaves per its [`Behavior`] (follow, stall,
//! trickle, churn, resume). Reads go through one thread-local buffer, so an idle reader costs
//! only its parser state.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, Instant};

use crate::accounting::SeqTracker;
use crate::cli::Target;
use crate::connect::{self, io_kind, Content, OpenStream};
use crate::http1::BodyDecoder;
use crate::latency::unix_micros;
use crate::line;
use crate::plan::{Behavior, ReaderSpec};
use crate::sse::{Event, SseParser};
use crate::tally::{Group, Tally};
use crate::target::TargetClient;

/// Read buffer shared by all readers on one thread.
const READ_BUF: usize = 64 * 1024;
/// Unplanned reconnects a following reader makes before giving up, as EventSource would.
const MAX_RECONNECTS: u32 = 5;
/// Trickle readers get their byte budget in slices this often.
const TRICKLE_TICK: Duration = Duration::from_millis(100);

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: vec![0; READ_BUF],
        latencies: Vec::with_capacity(1024),
    });
}

struct Scratch {
    buf: Vec<u8>,
    latencies: Vec<u64>,
}

/// What the run tells readers once publishing is over.
#[derive(Debug, Clone)]
pub struct EndInfo {
    /// Lines published per job (the last counter).
    pub published: Arc<Vec<u64>>,
    /// Readers still reading after this instant stop (and count what they miss as lost).
    pub deadline: Instant,
}

/// Everything readers of one process share.
#[derive(Debug, Clone)]
pub struct ReaderEnv {
    pub target: Arc<TargetClient>,
    pub tally: Arc<Tally>,
    /// Caps connects in flight.
    pub gate: Arc<Semaphore>,
    /// Read path per job.
    pub paths: Arc<Vec<String>>,
    /// Job name per job index (readers mint their token for it, one subject per reader).
    pub jobs: Arc<Vec<String>>,
    /// Set when publishing is over.
    pub end: watch::Receiver<Option<EndInfo>>,
    /// `Last-Event-ID` of a follower's first connection (`--start-after`).
    pub start_after: Option<Arc<str>>,
    /// `Accept-Encoding` sent (`--compression`), if any.
    pub accept_encoding: Option<String>,
}

/// How one connection's pumping ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pumped {
    /// Terminal status received (tailgate), or every published line (nchan).
    Complete,
    /// The planned hold time is over (churn, resume).
    HoldOver,
    /// Publishing ended and churn stops.
    Stopped,
    /// The drain deadline passed.
    DrainTimeout,
    /// The connection broke: error kind.
    Broken(String),
}

/// Runs one reader to its end and adds its counts to the tally.
pub async fn run_reader(env: ReaderEnv, spec: ReaderSpec) {
    match spec.behavior {
        Behavior::Churn { hold } => churn(env, spec, hold).await,
        _ => follow(env, spec).await,
    }
}

/// Follow, stall, trickle and resume: one tracker across every connection of the reader.
async fn follow(mut env: ReaderEnv, spec: ReaderSpec) {
    let tally = env.tally.clone();
    let mut state = StreamState::new(&env, spec, SeqTracker::from_start());
    let mut first = true;
    let mut reconnects = 0;
    loop {
        let last_id = if first {
            env.start_after.as_deref().map(str::to_owned)
        } else {
            (!state.parser.last_id().is_empty())
                .then(|| String::from_utf8_lossy(state.parser.last_id()).into_owned())
        };
        let opened = open(&env, spec.index, spec.job, last_id.as_deref()).await;
        if first {
            tally.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let mut conn = match opened {
            Ok(c) => c,
            Err(()) => {
                tally.error("reader_gave_up");
                break;
            }
        };
        if conn.no_content {
            tally.completed.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let hold = match spec.behavior {
            Behavior::Resume { hold } => Some(Instant::now() + jitter(hold)),
            _ => None,
        };
        tally.open.fetch_add(1, Ordering::Relaxed);
        let pumped = state.pump(&mut env, &mut conn, hold, false).await;
        tally.open.fetch_sub(1, Ordering::Relaxed);
        match pumped {
            Pumped::Complete => {
                tally.completed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Pumped::HoldOver => continue,
            Pumped::Stopped => break,
            Pumped::DrainTimeout => {
                if env.target.kind == Target::Tailgate {
                    tally.error("stream_not_ended");
                }
                break;
            }
            Pumped::Broken(kind) => {
                tally.error(&kind);
                reconnects += 1;
                let past_deadline = env
                    .end
                    .borrow()
                    .as_ref()
                    .is_some_and(|e| Instant::now() >= e.deadline);
                if reconnects > MAX_RECONNECTS || past_deadline {
                    break;
                }
            }
        }
    }
    let published = env
        .end
        .borrow()
        .as_ref()
        .map(|e| e.published[spec.job])
        .unwrap_or_else(|| state.tracker.highest());
    tally.finish_reader(spec.group, &state.tracker.finish(Some(published)));
}

/// Connect, read for a while, leave; again until publishing ends. Each connection is checked
/// on its own: no holes inside what it received (and for Tailgate, it starts at line 1).
async fn churn(mut env: ReaderEnv, spec: ReaderSpec, hold: Duration) {
    let tally = env.tally.clone();
    let mut first = true;
    while env.end.borrow().is_none() {
        let opened = open(&env, spec.index, spec.job, None).await;
        if first {
            tally.ready.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let Ok(mut conn) = opened else {
            tally.error("reader_gave_up");
            break;
        };
        let tracker = match env.target.kind {
            Target::Tailgate => SeqTracker::from_start(),
            Target::Nchan => SeqTracker::starts_anywhere(),
        };
        let mut state = StreamState::new(&env, spec, tracker);
        tally.open.fetch_add(1, Ordering::Relaxed);
        let pumped = state
            .pump(
                &mut env,
                &mut conn,
                Some(Instant::now() + jitter(hold)),
                true,
            )
            .await;
        tally.open.fetch_sub(1, Ordering::Relaxed);
        if let Pumped::Broken(kind) = &pumped {
            tally.error(kind);
        }
        tally.finish_reader(spec.group, &state.tracker.finish(None));
        if pumped == Pumped::Complete {
            break;
        }
    }
    tally.completed.fetch_add(1, Ordering::Relaxed);
}

fn jitter(mean: Duration) -> Duration {
    mean.mul_f64(rand::rng().random_range(0.5..1.5))
}

async fn open(
    env: &ReaderEnv,
    reader: usize,
    job: usize,
    last_id: Option<&str>,
) -> Result<OpenStream, ()> {
    let auth = env
        .target
        .read_auth(&env.jobs[job], reader)
        .map_err(|_| env.tally.error("token_mint"))?;
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(2);
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    if let Some(id) = last_id {
        headers.push(("Last-Event-ID", id));
    }
    if let Some(coding) = &env.accept_encoding {
        headers.push(("Accept-Encoding", coding));
    }
    connect::open(
        &env.target,
        reader,
        &env.gate,
        &env.tally,
        &env.paths[job],
        &headers,
    )
    .await
    .map_err(|_| ())
}

/// A reader's parsing and accounting state, kept across reconnects.
struct StreamState {
    target: Target,
    job: usize,
    index: usize,
    group: Group,
    behavior: Behavior,
    parser: SseParser,
    tracker: SeqTracker,
    /// Terminal status seen.
    ended: bool,
    /// Lines sent before this connection opened are not timed (they were history, not live).
    timed_from_us: u64,
}

impl StreamState {
    fn new(env: &ReaderEnv, spec: ReaderSpec, tracker: SeqTracker) -> Self {
        Self {
            target: env.target.kind,
            job: spec.job,
            index: spec.index,
            group: spec.group,
            behavior: spec.behavior,
            parser: SseParser::new(),
            tracker,
            ended: false,
            timed_from_us: 0,
        }
    }

    /// Reads `conn` until the stream completes, breaks, the hold time passes, or the run's
    /// drain deadline passes. `stop_at_end`: return as soon as publishing ends (churn).
    async fn pump(
        &mut self,
        env: &mut ReaderEnv,
        conn: &mut OpenStream,
        hold: Option<Instant>,
        stop_at_end: bool,
    ) -> Pumped {
        self.timed_from_us = unix_micros();
        let tally = env.tally.clone();
        let early = std::mem::take(&mut conn.early_body);
        tally
            .wire_bytes
            .fetch_add(early.len() as u64, Ordering::Relaxed);
        if let Err(kind) = self.consume(&mut conn.decoder, &mut conn.content, &early, &tally) {
            return Pumped::Broken(kind);
        }
        let mut trickle_budget: u64 = 0;
        let mut trickle_tick = tokio::time::interval(TRICKLE_TICK);
        loop {
            if self.ended {
                return Pumped::Complete;
            }
            let end = env.end.borrow().clone();
            if let Some(end) = &end {
                if stop_at_end {
                    return Pumped::Stopped;
                }
                if self.target == Target::Nchan && self.tracker.highest() >= end.published[self.job]
                {
                    return Pumped::Complete;
                }
            }
            let publishing = end.is_none();
            let deadline = end.as_ref().map(|e| e.deadline);
            let (may_read, limit) = match self.behavior {
                Behavior::Stall if publishing => (false, 0),
                Behavior::Trickle { .. } if publishing => (
                    trickle_budget > 0,
                    usize::try_from(trickle_budget).unwrap_or(usize::MAX),
                ),
                _ => (true, usize::MAX),
            };
            let trickling = publishing && matches!(self.behavior, Behavior::Trickle { .. });
            tokio::select! {
                ready = conn.stream.readable(), if may_read => {
                    if let Err(e) = ready {
                        return Pumped::Broken(format!("read_{}", io_kind(e.kind())));
                    }
                    match self.read_once(conn, limit, &tally) {
                        Ok(ReadOutcome::Data(n)) => {
                            trickle_budget = trickle_budget.saturating_sub(n as u64);
                        }
                        Ok(ReadOutcome::WouldBlock) => {}
                        Ok(ReadOutcome::Eof) => {
                            if self.ended {
                                return Pumped::Complete;
                            }
                            return Pumped::Broken("eof_before_end".into());
                        }
                        Err(kind) => return Pumped::Broken(kind),
                    }
                }
                changed = env.end.changed(), if publishing => {
                    if changed.is_err() {
                        return Pumped::Stopped;
                    }
                }
                _ = trickle_tick.tick(), if trickling => {
                    if let Behavior::Trickle { bytes_per_sec } = self.behavior {
                        trickle_budget = (bytes_per_sec / 10).max(1);
                    }
                }
                _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    return Pumped::DrainTimeout;
                }
                _ = sleep_until(hold.unwrap_or_else(far_future)), if hold.is_some() => {
                    return Pumped::HoldOver;
                }
            }
        }
    }

    /// One non-blocking read through the thread-local buffer, processed at once.
    fn read_once(
        &mut self,
        conn: &mut OpenStream,
        limit: usize,
        tally: &Tally,
    ) -> Result<ReadOutcome, String> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { buf, latencies } = &mut *scratch;
            let cap = buf.len().min(limit.max(1));
            match conn.stream.try_read(&mut buf[..cap]) {
                Ok(0) => Ok(ReadOutcome::Eof),
                Ok(n) => {
                    latencies.clear();
                    tally.wire_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    self.process(
                        &mut conn.decoder,
                        &mut conn.content,
                        &buf[..n],
                        latencies,
                        tally,
                    )?;
                    Ok(ReadOutcome::Data(n))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
                Err(e) => Err(format!("read_{}", io_kind(e.kind()))),
            }
        })
    }

    /// Processes bytes that did not come through the scratch buffer (sent with the head).
    fn consume(
        &mut self,
        decoder: &mut BodyDecoder,
        content: &mut Option<Content>,
        bytes: &[u8],
        tally: &Tally,
    ) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut latencies = Vec::new();
        self.process(decoder, content, bytes, &mut latencies, tally)
    }

    fn process(
        &mut self,
        decoder: &mut BodyDecoder,
        content: &mut Option<Content>,
        bytes: &[u8],
        latencies: &mut Vec<u64>,
        tally: &Tally,
    ) -> Result<(), String> {
        let now_us = unix_micros();
        let before = self.tracker.delivered();
        let mut events = EventSink {
            state_target: self.target,
            tracker: &mut self.tracker,
            ended: &mut self.ended,
            latencies,
            now_us,
            timed_from_us: self.timed_from_us,
            tally,
        };
        let parser = &mut self.parser;
        let mut undecodable = false;
        decoder
            .feed(bytes, &mut |body| match content {
                Some(Content(c)) => match c.feed(body) {
                    Ok(plain) => parser.feed(&plain, &mut |ev| events.on_event(ev)),
                    Err(_) => undecodable = true,
                },
                None => parser.feed(body, &mut |ev| events.on_event(ev)),
            })
            .map_err(|_| "protocol".to_string())?;
        if undecodable {
            return Err("content_decoding".into());
        }
        let delivered = self.tracker.delivered() - before;
        if delivered > 0 {
            tally.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
        tally.latency(self.group).record_all(self.index, latencies);
        Ok(())
    }
}

enum ReadOutcome {
    Data(usize),
    WouldBlock,
    Eof,
}

/// Borrowed pieces of a [`StreamState`] that SSE events update.
struct EventSink<'a> {
    state_target: Target,
    tracker: &'a mut SeqTracker,
    ended: &'a mut bool,
    latencies: &'a mut Vec<u64>,
    now_us: u64,
    timed_from_us: u64,
    tally: &'a Tally,
}

impl EventSink<'_> {
    fn on_event(&mut self, ev: Event<'_>) {
        match (self.state_target, ev.kind) {
            (Target::Tailgate, b"log") | (Target::Nchan, _) => {
                let parsed = match self.state_target {
                    Target::Tailgate => line::parse_tailgate_data(ev.data),
                    Target::Nchan => line::parse_line(ev.data),
                };
                match parsed {
                    Some((counter, sent_us)) => {
                        self.tracker.record(counter);
                        if sent_us >= self.timed_from_us {
                            self.latencies.push(self.now_us.saturating_sub(sent_us));
                        }
                    }
                    None => self.tally.error("unparsable_line"),
                }
            }
            (Target::Tailgate, b"status") if line::is_terminal_status(ev.data) => {
                *self.ended = true;
            }
            (Target::Tailgate, b"gap") => match line::parse_gap(ev.data) {
                Some((from, to)) => {
                    self.tracker.record_gap(from, to);
                    self.tally.error("gap_event");
                }
                None => self.tally.error("unparsable_gap"),
            },
            (Target::Tailgate, b"reset") => self.tally.error("reset_event"),
            _ => {}
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
