//! Prometheus metrics: a small registry of counters, gauges and histograms, and its text
//! exposition (format 0.0.4), served by [`super::monitor`] on `--metrics-addr`.
//!
//! Written by hand rather than with a crate: the format is a few lines of text, and the crates
//! that produce it bring a lock crate, a derive macro or protobuf for what is here a handful of
//! atomics. A test runs the output through Python's `prometheus_client` parser.
//!
//! Label values are `&'static str`, so a label can only take values written in this program:
//! an OpenID, an EventKey or any other text from a push cannot become a label, and every label
//! set stays bounded. The request counters are [`Grid`]s: the typed outcome (a MsgType's
//! place in the message model's list, an [`Answered`], a [`CallOutcome`]) says where to
//! count, so counting a request searches no label by name. Unknown MsgType and Event names
//! count as `other`.
//!
//! # Adding a metric
//! Add a field to [`Metrics`], register it in [`Metrics::new`] (name, help, and the metric),
//! then update it where the event happens:
//! ```
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # use wxmp::server::metrics::{Counter, Family, Gauge, Histogram, Registry, DEADLINE_BUCKETS};
//! let registry = Registry::default();
//! let calls: Arc<Family<Counter>> = registry.register(
//!     "wxmp_api_calls_total",
//!     "WeChat API calls, by errcode.",
//!     Family::counters(&["errcode"]),
//! );
//! let took: Arc<Histogram> = registry.register(
//!     "wxmp_forward_duration_seconds",
//!     "Time a forward took.",
//!     Histogram::new(DEADLINE_BUCKETS),
//! );
//! let expires: Arc<Gauge> = registry.register(
//!     "wxmp_access_token_expiry_seconds",
//!     "Seconds until the access token expires.",
//!     Gauge::default(),
//! );
//! calls.with(&["0"]).inc();
//! took.observe(Duration::from_millis(300));
//! expires.set(7200.0);
//! assert!(registry.render().contains("wxmp_api_calls_total{errcode=\"0\"} 1\n"));
//! ```
//! A value read at scrape time (the retry store's fill) is a [`GaugeFn`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::protocol::envelope::Mode;
use crate::protocol::message::{EVENTS, MSG_TYPES};
use crate::server::forward::CallOutcome;
use crate::server::pipeline::{Answered, Name, PushKind};
use crate::server::store::{Limits, Usage};

const API_CALLS_HELP: &str = "WeChat API requests (token fetches and retries included), by errcode: 0 ok, -1 WeChat busy, -2 no answer, -3 not WeChat's JSON, WeChat's code for a refusal (codes wxmp has no sentence for are counted as other).";
const API_EXPIRY_HELP: &str =
    "Seconds until the access token the server holds expires; 0 while it holds none.";

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The errcodes that get a label of their own (the ones wxmp explains); the rest are `other`,
/// so the label set stays bounded whatever WeChat answers.
const ERRCODES: &[(i64, &str)] = &[
    (0, "0"),
    (-1, "-1"),
    (-2, "-2"),
    (-3, "-3"),
    (40001, "40001"),
    (40003, "40003"),
    (40013, "40013"),
    (40014, "40014"),
    (40125, "40125"),
    (40164, "40164"),
    (40243, "40243"),
    (42001, "42001"),
    (43004, "43004"),
    (45002, "45002"),
    (45008, "45008"),
    (45009, "45009"),
    (45011, "45011"),
    (45015, "45015"),
    (45047, "45047"),
    (46003, "46003"),
    (48001, "48001"),
    (61004, "61004"),
    (89503, "89503"),
];

/// Counts by errcode, read when scraped from a source that keeps them (the API client).
struct ErrcodeCounts(Box<dyn Fn() -> BTreeMap<i64, u64> + Send + Sync>);

impl Metric for ErrcodeCounts {
    fn kind(&self) -> &'static str {
        "counter"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        write_errcodes((self.0)(), name, labels, out);
    }
}

/// Counts by errcode as samples, each code wxmp has no label for as `other`.
fn write_errcodes(counts: BTreeMap<i64, u64>, name: &str, labels: &str, out: &mut String) {
    let mut by_label: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (code, n) in counts {
        let label = ERRCODES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or("other", |(_, l)| *l);
        *by_label.entry(label).or_default() += n;
    }
    let sep = if labels.is_empty() { "" } else { "," };
    for (label, n) in by_label {
        sample(
            out,
            name,
            &format!("{labels}{sep}errcode=\"{label}\""),
            &n.to_string(),
        );
    }
}

/// Buckets (seconds) for anything measured against WeChat's 5 s deadline. Sub-millisecond
/// buckets resolve the usual push (tens of microseconds to a millisecond); 4, 4.5 and 5 tell
/// "close to the deadline" (a retry joining an attempt waits up to 4.5 s) from "answered in
/// time" and "too late: WeChat had already given up"; 7.5 to 15 show how late.
pub const DEADLINE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    4.0, 4.5, 5.0, 7.5, 10.0, 15.0,
];

/// Something the registry can write: its type and its samples.
pub trait Metric: Send + Sync {
    /// `counter`, `gauge` or `histogram`.
    fn kind(&self) -> &'static str;
    /// Appends the sample lines for `name`; `labels` is `a="x",b="y"` or empty.
    fn write(&self, name: &str, labels: &str, out: &mut String);
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    fn kind(&self) -> &'static str {
        "counter"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, labels, &self.get().to_string());
    }
}

/// A value that is set (e.g. seconds until a token expires).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Metric for Gauge {
    fn kind(&self) -> &'static str {
        "gauge"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, labels, &number(self.get()));
    }
}

/// A gauge read when scraped.
pub struct GaugeFn(Box<dyn Fn() -> f64 + Send + Sync>);

impl GaugeFn {
    pub fn new(f: impl Fn() -> f64 + Send + Sync + 'static) -> GaugeFn {
        GaugeFn(Box::new(f))
    }
}

impl Metric for GaugeFn {
    fn kind(&self) -> &'static str {
        "gauge"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, labels, &number((self.0)()));
    }
}

/// A counter read when scraped, from a count kept elsewhere.
pub struct CounterFn(Box<dyn Fn() -> u64 + Send + Sync>);

impl CounterFn {
    pub fn new(f: impl Fn() -> u64 + Send + Sync + 'static) -> CounterFn {
        CounterFn(Box::new(f))
    }
}

impl Metric for CounterFn {
    fn kind(&self) -> &'static str {
        "counter"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        sample(out, name, labels, &(self.0)().to_string());
    }
}

/// A histogram of durations, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `bounds` ascending, in seconds, without `+Inf`.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Metric for Histogram {
    fn kind(&self) -> &'static str {
        "histogram"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        let bucket = format!("{name}_bucket");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_owned(), |b| number(*b));
            let labels = format!("{labels}{sep}le=\"{le}\"");
            sample(out, &bucket, &labels, &cumulative.to_string());
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        sample(out, &format!("{name}_sum"), labels, &number(sum));
        // The count is the +Inf bucket, so the two always agree.
        sample(
            out,
            &format!("{name}_count"),
            labels,
            &cumulative.to_string(),
        );
    }
}

/// Counters over fixed lists of label values, found by position: one atomic per combination,
/// no lock and no search by string when counting.
pub struct Grid {
    label_names: &'static [&'static str],
    /// Each label's values, in the order its positions count.
    values: Vec<Vec<&'static str>>,
    /// How many combinations there are.
    cells: usize,
    /// One count per combination, made at the first count: an idle account's grids (one per
    /// account with an accounts file) take no room for them.
    counts: OnceLock<Box<[AtomicU64]>>,
    /// Expose every combination from the start (a rate over a series that appears late misses
    /// its first increase); otherwise only those counted.
    preset: bool,
}

impl Grid {
    /// `values[i]` lists the values of `label_names[i]`.
    pub fn new(label_names: &'static [&'static str], values: Vec<Vec<&'static str>>) -> Grid {
        let cells = values.iter().map(Vec::len).product();
        Grid {
            label_names,
            values,
            cells,
            counts: OnceLock::new(),
            preset: false,
        }
    }

    /// Exposes every combination at 0 before its first event.
    pub fn preset(mut self) -> Grid {
        self.preset = true;
        self
    }

    /// The place of `at` among the combinations.
    fn index(&self, at: &[usize]) -> Option<usize> {
        let mut i = 0;
        for (dim, values) in self.values.iter().enumerate() {
            let p = *at.get(dim)?;
            if p >= values.len() {
                return None;
            }
            i = i * values.len() + p;
        }
        Some(i)
    }

    /// The count of combination `i`: 0 before the first count.
    fn count(&self, i: usize) -> u64 {
        let cell = self.counts.get().and_then(|c| c.get(i));
        cell.map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one at `at`, one position per label (out of range: not counted).
    pub fn inc(&self, at: &[usize]) {
        let Some(i) = self.index(at) else {
            return;
        };
        let counts = self
            .counts
            .get_or_init(|| (0..self.cells).map(|_| AtomicU64::new(0)).collect());
        if let Some(c) = counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count at `at`.
    pub fn get(&self, at: &[usize]) -> u64 {
        self.index(at).map_or(0, |i| self.count(i))
    }
}

impl Grid {
    /// Writes the rows after the labels `labels` (`a="x"` or empty), every combination when
    /// `preset`, else only those counted.
    fn write_rows(&self, name: &str, labels: &str, preset: bool, out: &mut String) {
        let mut rows: Vec<(Vec<&'static str>, u64)> = Vec::new();
        for i in 0..self.cells {
            let n = self.count(i);
            if n == 0 && !preset {
                continue;
            }
            let mut key = Vec::with_capacity(self.values.len());
            let mut rest = i;
            for values in self.values.iter().rev() {
                key.push(values.get(rest % values.len()).copied().unwrap_or(""));
                rest /= values.len();
            }
            key.reverse();
            rows.push((key, n));
        }
        rows.sort();
        for (values, n) in rows {
            let mut all = labels.to_owned();
            for (n, v) in self.label_names.iter().zip(&values) {
                if !all.is_empty() {
                    all.push(',');
                }
                let _ = write!(all, "{n}=\"{}\"", escape_label(v));
            }
            sample(out, name, &all, &n.to_string());
        }
    }
}

impl Metric for Grid {
    fn kind(&self) -> &'static str {
        "counter"
    }

    fn write(&self, name: &str, labels: &str, out: &mut String) {
        self.write_rows(name, labels, self.preset, out);
    }
}

type Child<M> = (Vec<&'static str>, Arc<M>);

/// One metric per combination of label values (`requests{class="2xx",mode="plain"}`).
pub struct Family<M> {
    label_names: &'static [&'static str],
    kind: &'static str,
    make: Box<dyn Fn() -> M + Send + Sync>,
    children: RwLock<Vec<Child<M>>>,
}

impl Family<Counter> {
    pub fn counters(label_names: &'static [&'static str]) -> Family<Counter> {
        Family::new(label_names, Counter::default)
    }
}

impl Family<Histogram> {
    pub fn histograms(
        label_names: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Family<Histogram> {
        Family::new(label_names, move || Histogram::new(bounds))
    }
}

impl<M: Metric> Family<M> {
    /// `make` builds the metric for a new combination of label values.
    pub fn new(
        label_names: &'static [&'static str],
        make: impl Fn() -> M + Send + Sync + 'static,
    ) -> Family<M> {
        Family {
            label_names,
            kind: make().kind(),
            make: Box::new(make),
            children: RwLock::new(Vec::new()),
        }
    }

    /// Creates the children for these label values now, so they are exposed as 0 before
    /// their first event (a rate over a series that appears late misses its first increase).
    pub fn preset(self, values: &[&[&'static str]]) -> Family<M> {
        for v in values {
            let _ = self.with(v);
        }
        self
    }

    /// The metric for `values`, one per label name, in order (missing values are `""`).
    pub fn with(&self, values: &[&'static str]) -> Arc<M> {
        let wanted = |c: &Child<M>| {
            c.0.iter()
                .enumerate()
                .all(|(i, v)| *v == values.get(i).copied().unwrap_or(""))
        };
        if let Ok(children) = self.children.read() {
            if let Some(c) = children.iter().find(|c| wanted(c)) {
                return Arc::clone(&c.1);
            }
        }
        let mut children = match self.children.write() {
            Ok(c) => c,
            // A panic while inserting leaves a valid Vec; keep counting.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(c) = children.iter().find(|c| wanted(c)) {
            return Arc::clone(&c.1);
        }
        let mut key: Vec<&'static str> = values.to_vec();
        key.resize(self.label_names.len(), "");
        let metric = Arc::new((self.make)());
        children.push((key, Arc::clone(&metric)));
        metric
    }
}

impl<M: Metric> Metric for Family<M> {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn write(&self, name: &str, _labels: &str, out: &mut String) {
        let mut children: Vec<Child<M>> = match self.children.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (values, metric) in children {
            let mut labels = String::new();
            for (i, (n, v)) in self.label_names.iter().zip(&values).enumerate() {
                if i > 0 {
                    labels.push(',');
                }
                let _ = write!(labels, "{n}=\"{}\"", escape_label(v));
            }
            metric.write(name, &labels, out);
        }
    }
}

struct Registered {
    name: &'static str,
    help: &'static str,
    metric: Arc<dyn Metric>,
}

/// The metrics to expose, in registration order.
#[derive(Default)]
pub struct Registry(Mutex<Vec<Registered>>);

impl Registry {
    /// Adds a metric under `name` (Prometheus style: `_total` for counters, base units such as
    /// `_seconds` and `_bytes`) and returns the handle to update it through.
    pub fn register<M: Metric + 'static>(
        &self,
        name: &'static str,
        help: &'static str,
        metric: M,
    ) -> Arc<M> {
        let metric = Arc::new(metric);
        let entry = Registered {
            name,
            help,
            metric: Arc::clone(&metric) as Arc<dyn Metric>,
        };
        match self.0.lock() {
            Ok(mut all) => all.push(entry),
            Err(poisoned) => poisoned.into_inner().push(entry),
        }
        metric
    }

    /// The text exposition format: `# HELP`, `# TYPE`, then the samples, for every metric.
    pub fn render(&self) -> String {
        let all = match self.0.lock() {
            Ok(all) => all,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = String::with_capacity(4096);
        for r in all.iter() {
            let _ = writeln!(out, "# HELP {} {}", r.name, escape_help(r.help));
            let _ = writeln!(out, "# TYPE {} {}", r.name, r.metric.kind());
            r.metric.write(r.name, "", &mut out);
        }
        out
    }

    /// The registered names, for tests.
    pub fn names(&self) -> Vec<&'static str> {
        match self.0.lock() {
            Ok(all) => all.iter().map(|r| r.name).collect(),
            Err(poisoned) => poisoned.into_inner().iter().map(|r| r.name).collect(),
        }
    }
}

/// One sample line: `name{labels} value`, or `name value` without labels.
fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A float as the format wants it: Rust's shortest round-trip form (never an exponent), `+Inf`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `wxmp_http_requests_total`'s classes and modes, in [`Series::request`]'s order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const MODES: [&str; 4] = ["plain", "compat", "safe", "none"];

/// The API client's counts, read at each scrape: calls by errcode, and the seconds until its
/// access token expires (`None` while it holds none).
pub struct ApiWatch {
    calls: Box<dyn Fn() -> BTreeMap<i64, u64> + Send + Sync>,
    expires_in: Box<dyn Fn() -> Option<f64> + Send + Sync>,
}

impl ApiWatch {
    pub fn new(
        calls: impl Fn() -> BTreeMap<i64, u64> + Send + Sync + 'static,
        expires_in: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) -> ApiWatch {
        ApiWatch {
            calls: Box::new(calls),
            expires_in: Box::new(expires_in),
        }
    }
}

/// One account's per-push counts: the requests on its path, its pushes, how they were
/// answered, its calls to the user's code and (with an accounts file) its API client. With an
/// accounts file each is exposed with `account="NAME"`; with one account, and for the paths no
/// account has, without the label, as before there were accounts.
pub struct Series {
    /// Every request, by status class and mode ([`Series::request`]).
    pub requests: Grid,
    /// Pushes that were read, by MsgType and Event ([`Series::push`]).
    pub pushes: Grid,
    /// From a push's arrival to its answer, for answered pushes.
    pub push_duration: Histogram,
    /// Answered pushes, by fresh / cached / joined ([`Series::answered`]).
    pub answers: Grid,
    /// Calls to the user's own code (`reply.forward` / `reply.command`), by how they ended.
    pub forwards: Grid,
    /// How long those calls took, from start to answer (or failure).
    pub forward_duration: Histogram,
    /// The account's API client, with an accounts file (one account's is registered alone).
    api: RwLock<Option<Arc<ApiWatch>>>,
}

impl Series {
    fn new() -> Series {
        Series {
            requests: Grid::new(&["class", "mode"], vec![CLASSES.to_vec(), MODES.to_vec()]),
            pushes: Grid::new(
                &["msg_type", "event"],
                vec![
                    MSG_TYPES.iter().copied().chain(["other"]).collect(),
                    [""].into_iter()
                        .chain(EVENTS.iter().copied())
                        .chain(["other"])
                        .collect(),
                ],
            ),
            push_duration: Histogram::new(DEADLINE_BUCKETS),
            answers: Grid::new(
                &["answered"],
                vec![Answered::ALL.map(Answered::as_str).to_vec()],
            )
            .preset(),
            forwards: Grid::new(
                &["outcome"],
                vec![CallOutcome::ALL.map(CallOutcome::as_str).to_vec()],
            )
            .preset(),
            forward_duration: Histogram::new(DEADLINE_BUCKETS),
            api: RwLock::new(None),
        }
    }

    /// A finished call to the user's own code.
    pub fn forward(&self, outcome: CallOutcome, took: Duration) {
        self.forwards.inc(&[outcome as usize]);
        self.forward_duration.observe(took);
    }

    /// A request on the public port: its status class, and its mode when it was a push.
    pub fn request(&self, status: u16, mode: Option<Mode>) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let mode = match mode {
            Some(Mode::Plain) => 0,
            Some(Mode::Compat) => 1,
            Some(Mode::Safe) => 2,
            None => 3,
        };
        self.requests.inc(&[class, mode]);
    }

    /// A push that was read, by its MsgType and Event.
    pub fn push(&self, kind: &PushKind) {
        let other_type = MSG_TYPES.len();
        let event = match &kind.event {
            None => 0,
            Some(Name::Listed(i)) => i + 1,
            Some(Name::Other(_)) => EVENTS.len() + 1,
        };
        self.pushes
            .inc(&[kind.msg_type_label().unwrap_or(other_type), event]);
    }

    /// An answered push, by how it was answered.
    pub fn answered(&self, a: Answered) {
        self.answers.inc(&[a as usize]);
    }

    /// Reads the account's API client at each scrape (a changed account brings a new one).
    pub fn watch_api(&self, api: ApiWatch) {
        let api = Some(Arc::new(api));
        match self.api.write() {
            Ok(mut g) => *g = api,
            Err(poisoned) => *poisoned.into_inner() = api,
        }
    }

    fn api(&self) -> Option<Arc<ApiWatch>> {
        match self.api.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The series in force: the unlabelled one, and one per account of the accounts file.
#[derive(Default)]
struct SeriesSet {
    unlabelled: Arc<Series>,
    /// `(account="NAME", series)`, in the order the accounts were first seen.
    accounts: RwLock<Vec<(String, Arc<Series>)>>,
}

impl Default for Series {
    fn default() -> Self {
        Series::new()
    }
}

impl SeriesSet {
    fn accounts(&self) -> Vec<(String, Arc<Series>)> {
        match self.accounts.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn write_accounts(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(String, Arc<Series>)>> {
        self.accounts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One of [`Series`]'s metrics, written for every series in force.
struct BySeries {
    set: Arc<SeriesSet>,
    kind: &'static str,
    /// Writes the series' metric after the given labels; `full`: its preset rows and an empty
    /// histogram too (not for the unlabelled series beside accounts, which shows what it
    /// counted).
    write: fn(&Series, &str, &str, bool, &mut String),
}

impl Metric for BySeries {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn write(&self, name: &str, _labels: &str, out: &mut String) {
        let accounts = self.set.accounts();
        (self.write)(&self.set.unlabelled, name, "", accounts.is_empty(), out);
        for (label, series) in &accounts {
            (self.write)(series, name, label, true, out);
        }
    }
}

fn write_grid(g: &Grid, name: &str, labels: &str, full: bool, out: &mut String) {
    g.write_rows(name, labels, full && g.preset, out);
}

fn write_histogram(h: &Histogram, name: &str, labels: &str, full: bool, out: &mut String) {
    if full || h.count() > 0 {
        h.write(name, labels, out);
    }
}

/// The server's metrics. Handles are public so the parts that see an event update them; the
/// README's Metrics section lists each one.
pub struct Metrics {
    registry: Registry,
    /// The per-push series: unlabelled, and one per account ([`Metrics::account`]).
    series: Arc<SeriesSet>,
    /// Rules-file reloads, by outcome.
    pub reloads: Arc<Family<Counter>>,
    /// Calls through the API gateway (`--api-proxy`), by how they ended.
    pub gateway: Arc<Family<Counter>>,
    /// The accounts' API metrics are registered (with the first account of an accounts file).
    accounts_api: std::sync::atomic::AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::default();
        registry.register(
            "wxmp_build_info",
            "The running version; always 1.",
            Family::new(&["version"], || {
                let g = Gauge::default();
                g.set(1.0);
                g
            })
            .preset(&[&[env!("CARGO_PKG_VERSION")]]),
        );
        let series = Arc::new(SeriesSet::default());
        let by = |kind: &'static str, write: fn(&Series, &str, &str, bool, &mut String)| BySeries {
            set: Arc::clone(&series),
            kind,
            write,
        };
        registry.register(
            "wxmp_http_requests_total",
            "Requests on the public port, by status class (2xx, 4xx, 5xx) and mode (plain, compat, safe; none for requests that are not pushes).",
            by("counter", |s, n, l, f, o| write_grid(&s.requests, n, l, f, o)),
        );
        registry.register(
            "wxmp_pushes_total",
            "Pushes read, by MsgType and Event (empty for messages); unknown names are counted as other.",
            by("counter", |s, n, l, f, o| write_grid(&s.pushes, n, l, f, o)),
        );
        registry.register(
            "wxmp_push_duration_seconds",
            "From a push's arrival to its answer, for pushes answered with 200; WeChat gives up after 5 s.",
            by("histogram", |s, n, l, f, o| write_histogram(&s.push_duration, n, l, f, o)),
        );
        registry.register(
            "wxmp_answers_total",
            "Answered pushes: fresh (decided now), cached (a retry answered from the retry store), joined (a retry that took the answer of the attempt in flight).",
            by("counter", |s, n, l, f, o| write_grid(&s.answers, n, l, f, o)),
        );
        let reloads = registry.register(
            "wxmp_rules_reloads_total",
            "Rules-file reloads, by outcome: ok, or failed (the old rules stay in force).",
            Family::counters(&["outcome"]).preset(&[&["ok"], &["failed"]]),
        );
        registry.register(
            "wxmp_forward_calls_total",
            "Calls to your own code, by outcome: on_time (answered within the first attempt), late_stretched (answered on a retry WeChat held open), late_kf (sent later as a customer-service message), fallback (the fallback stood: too late, or no capacity), error (the call failed or its answer was refused).",
            by("counter", |s, n, l, f, o| write_grid(&s.forwards, n, l, f, o)),
        );
        registry.register(
            "wxmp_forward_call_duration_seconds",
            "How long calls to your own code took, from the call to its answer or failure.",
            by("histogram", |s, n, l, f, o| {
                write_histogram(&s.forward_duration, n, l, f, o)
            }),
        );
        let gateway = registry.register(
            "wxmp_api_gateway_calls_total",
            "Calls through the API gateway (--api-proxy), by outcome: ok (errcode 0 or a file), errcode (WeChat refused it), retried (the token was replaced once after 40001/40014/42001), unanswered (WeChat did not answer: 502 or 504), busy (too many in flight: 503), refused (a peer, host, method or body the gateway does not serve), other. Their errcodes are counted in wxmp_api_calls_total too.",
            Family::counters(&["outcome"]).preset(&[
                &["ok"],
                &["errcode"],
                &["retried"],
                &["unanswered"],
                &["busy"],
                &["refused"],
                &["other"],
            ]),
        );
        Metrics {
            registry,
            series,
            gateway,
            reloads,
            accounts_api: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The series without an account label: the one account's without an accounts file, and
    /// the paths no account has beside them.
    pub fn unlabelled(&self) -> &Arc<Series> {
        &self.series.unlabelled
    }

    /// The series of the account `name` of the accounts file, exposed with `account="NAME"`
    /// from now on (the same one for a changed account, so its counts go on); `""`, the one
    /// account of the flags, is [`Metrics::unlabelled`]. Names come from the accounts file only,
    /// so the label stays bounded.
    pub fn account(&self, name: &str) -> Arc<Series> {
        if name.is_empty() {
            return Arc::clone(&self.series.unlabelled);
        }
        let label = format!("account=\"{}\"", escape_label(name));
        let series = {
            let mut accounts = self.series.write_accounts();
            if let Some((_, s)) = accounts.iter().find(|(l, _)| *l == label) {
                return Arc::clone(s);
            }
            let series = Arc::new(Series::new());
            accounts.push((label, Arc::clone(&series)));
            series
        };
        // Outside the accounts' lock: a scrape takes the registry's lock, then that one.
        if !self.accounts_api.swap(true, Ordering::Relaxed) {
            self.watch_accounts_api();
        }
        series
    }

    /// Drops the series of the accounts not in `names` (removed from the accounts file): they
    /// leave `/metrics`. Their pushes still in flight count into a series no one shows.
    pub fn keep_accounts(&self, names: &[&str]) {
        let labels: Vec<String> = names
            .iter()
            .map(|n| format!("account=\"{}\"", escape_label(n)))
            .collect();
        self.series
            .write_accounts()
            .retain(|(l, _)| labels.contains(l));
    }

    /// Each account's API client, by account: its calls by errcode and its token's expiry,
    /// read from what [`Series::watch_api`] was given (with an accounts file).
    fn watch_accounts_api(&self) {
        let (a, b) = (Arc::clone(&self.series), Arc::clone(&self.series));
        self.registry.register(
            "wxmp_api_calls_total",
            API_CALLS_HELP,
            BySeries {
                set: a,
                kind: "counter",
                write: |s, name, labels, _, out| {
                    if let Some(api) = s.api() {
                        write_errcodes((api.calls)(), name, labels, out);
                    }
                },
            },
        );
        self.registry.register(
            "wxmp_access_token_expiry_seconds",
            API_EXPIRY_HELP,
            BySeries {
                set: b,
                kind: "gauge",
                write: |s, name, labels, _, out| {
                    if let Some(api) = s.api() {
                        let left = (api.expires_in)().unwrap_or(0.0).max(0.0);
                        sample(out, name, labels, &number(left));
                    }
                },
            },
        );
    }

    /// Forwarding's bounded counts, read at each scrape.
    pub fn watch_forwarding(
        &self,
        in_flight: impl Fn() -> usize + Send + Sync + 'static,
        held: impl Fn() -> usize + Send + Sync + 'static,
    ) {
        self.registry.register(
            "wxmp_forward_in_flight",
            "Calls to your own code running now (at most --forward-capacity).",
            GaugeFn::new(move || in_flight() as f64),
        );
        self.registry.register(
            "wxmp_forward_held_attempts",
            "WeChat attempts held open now, waiting for your code's answer.",
            GaugeFn::new(move || held() as f64),
        );
    }

    /// The WeChat API client: its calls by errcode (read at each scrape from the client's own
    /// counts) and the seconds until its access token expires (0 while it holds none).
    pub fn watch_api(
        &self,
        calls: impl Fn() -> BTreeMap<i64, u64> + Send + Sync + 'static,
        expires_in: impl Fn() -> Option<f64> + Send + Sync + 'static,
    ) {
        self.registry.register(
            "wxmp_api_calls_total",
            API_CALLS_HELP,
            ErrcodeCounts(Box::new(calls)),
        );
        self.registry.register(
            "wxmp_access_token_expiry_seconds",
            API_EXPIRY_HELP,
            GaugeFn::new(move || expires_in().unwrap_or(0.0).max(0.0)),
        );
    }

    /// The log lines the stderr queue dropped, read at each scrape from the log's own count.
    pub fn watch_log(&self, dropped: impl Fn() -> u64 + Send + Sync + 'static) {
        self.registry.register(
            "wxmp_log_lines_dropped_total",
            "Log lines dropped because stderr was not read fast enough and the log queue was full (or stderr refused them); requests are never held up for the log.",
            CounterFn::new(dropped),
        );
    }

    /// Where more metrics are registered (the retry store's gauges at start, for example).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The retry store's fill against its budget, read at each scrape.
    pub fn watch_store(&self, usage: impl Fn() -> Usage + Send + Sync + 'static, limits: Limits) {
        let usage = Arc::new(usage);
        let u = Arc::clone(&usage);
        self.registry.register(
            "wxmp_retry_store_entries",
            "Answers kept for WeChat's retries.",
            GaugeFn::new(move || u().entries as f64),
        );
        self.registry.register(
            "wxmp_retry_store_bytes",
            "Bytes the kept answers account for.",
            GaugeFn::new(move || usage().bytes as f64),
        );
        self.registry.register(
            "wxmp_retry_store_limit_entries",
            "The most answers kept; the oldest is evicted beyond it.",
            GaugeFn::new(move || limits.max_entries as f64),
        );
        self.registry.register(
            "wxmp_retry_store_limit_bytes",
            "The retry store's byte budget (--cache-mb); the oldest answers are evicted beyond it.",
            GaugeFn::new(move || limits.max_bytes as f64),
        );
    }

    /// The replay window's memory: queries remembered, and those evicted early because it was
    /// full (each could be replayed on a forged body until its timestamp left the window).
    pub fn watch_replay(
        &self,
        entries: impl Fn() -> usize + Send + Sync + 'static,
        evictions: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.registry.register(
            "wxmp_replay_entries",
            "Signed queries remembered to refuse a replay on another body (--replay-window).",
            GaugeFn::new(move || entries() as f64),
        );
        self.registry.register(
            "wxmp_replay_evictions_total",
            "Signed queries forgotten before their window ended because the memory was full; a rising count means replays could slip through.",
            CounterFn::new(evictions),
        );
    }

    /// The shared store (`--store redis://...`): operations that fell back to local memory, and
    /// whether it is degraded now.
    pub fn watch_shared(
        &self,
        failures: impl Fn() -> u64 + Send + Sync + 'static,
        degraded: impl Fn() -> bool + Send + Sync + 'static,
    ) {
        self.registry.register(
            "wxmp_store_failures_total",
            "Store operations that could not use Redis (failed, or skipped while it was unreachable); the push was handled with this instance's memory.",
            CounterFn::new(failures),
        );
        self.registry.register(
            "wxmp_store_degraded",
            "1 while Redis is unreachable and this instance works alone, else 0.",
            GaugeFn::new(move || if degraded() { 1.0 } else { 0.0 }),
        );
    }

    /// A rules reload and whether it took.
    pub fn reload(&self, ok: bool) {
        self.reloads.with(&[if ok { "ok" } else { "failed" }]).inc();
    }

    pub fn render(&self) -> String {
        self.registry.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_families_and_histograms_render_in_the_text_format() {
        let r = Registry::default();
        let c = r.register("a_total", "A \\ help\nline.", Counter::default());
        let f = r.register("b_total", "B.", Family::counters(&["x", "y"]));
        let h = r.register("c_seconds", "C.", Histogram::new(&[0.5, 1.0]));
        c.add(3);
        f.with(&["2", "q\"\\\n"]).inc();
        f.with(&["1", "p"]).add(2);
        f.with(&["1", "p"]).inc();
        h.observe(Duration::from_millis(250));
        h.observe(Duration::from_millis(1000));
        h.observe(Duration::from_secs(7));
        let text = r.render();
        assert_eq!(
            text,
            "# HELP a_total A \\\\ help\\nline.\n# TYPE a_total counter\na_total 3\n\
             # HELP b_total B.\n# TYPE b_total counter\n\
             b_total{x=\"1\",y=\"p\"} 3\nb_total{x=\"2\",y=\"q\\\"\\\\\\n\"} 1\n\
             # HELP c_seconds C.\n# TYPE c_seconds histogram\n\
             c_seconds_bucket{le=\"0.5\"} 1\nc_seconds_bucket{le=\"1\"} 2\n\
             c_seconds_bucket{le=\"+Inf\"} 3\nc_seconds_sum 8.25\nc_seconds_count 3\n"
        );
    }

    #[test]
    fn a_histogram_family_puts_le_after_its_labels() {
        let r = Registry::default();
        let f = r.register("d_seconds", "D.", Family::histograms(&["outcome"], &[1.0]));
        f.with(&["late"]).observe(Duration::from_secs(2));
        let text = r.render();
        assert!(
            text.contains("d_seconds_bucket{outcome=\"late\",le=\"1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{outcome=\"late\",le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_count{outcome=\"late\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE d_seconds histogram\n"), "{text}");
    }

    #[test]
    fn a_value_on_a_bucket_bound_counts_in_that_bucket() {
        let h = Histogram::new(DEADLINE_BUCKETS);
        h.observe(Duration::from_secs(5));
        h.observe(Duration::from_millis(4500));
        let mut out = String::new();
        h.write("h", "", &mut out);
        assert!(out.contains("h_bucket{le=\"4\"} 0\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"4.5\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"5\"} 2\n"), "{out}");
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn the_server_metrics_follow_prometheus_naming() {
        let m = Metrics::new();
        let valid = |n: &str| {
            n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
        };
        let text = m.render();
        for name in m.registry().names() {
            assert!(valid(name) && name.starts_with("wxmp_"), "{name}");
            let kind = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap();
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            if kind == "histogram" {
                assert!(name.ends_with("_seconds"), "{name}");
            }
        }
        // Preset series exist before their first event.
        assert!(
            text.contains("wxmp_answers_total{answered=\"joined\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("wxmp_rules_reloads_total{outcome=\"failed\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn pushes_are_counted_by_their_place_and_unknown_names_as_other() {
        use crate::protocol::message::Message;
        let m = Metrics::new();
        for xml in [
            "<xml><MsgType>TEXT</MsgType></xml>",
            "<xml><MsgType>o'brien</MsgType></xml>",
            "<xml><MsgType>event</MsgType><Event>scan</Event></xml>",
            "<xml><MsgType>event</MsgType><Event>user_get_card</Event></xml>",
            "<xml><MsgType>event</MsgType></xml>",
            "<xml><MsgType>text</MsgType></xml>",
        ] {
            m.unlabelled()
                .push(&PushKind::of(&Message::parse(xml).unwrap()));
        }
        let text = m.render();
        for line in [
            "wxmp_pushes_total{msg_type=\"event\",event=\"SCAN\"} 1\n",
            "wxmp_pushes_total{msg_type=\"event\",event=\"other\"} 2\n",
            "wxmp_pushes_total{msg_type=\"other\",event=\"\"} 1\n",
            "wxmp_pushes_total{msg_type=\"text\",event=\"\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("wxmp_pushes_total{").count(), 4, "{text}");
    }

    #[test]
    fn accounts_get_a_labelled_series_each_until_they_are_removed() {
        let m = Metrics::new();
        let one = m.render();
        assert!(!one.contains("account="), "{one}");
        m.account("shop").request(200, Some(Mode::Plain));
        m.account("shop").answered(Answered::Fresh);
        m.account("school")
            .forward(CallOutcome::OnTime, Duration::from_millis(3));
        // `/healthz` beside the accounts: counted without a label, and only what was counted.
        m.unlabelled().request(200, None);
        let text = m.render();
        for line in [
            "wxmp_http_requests_total{account=\"shop\",class=\"2xx\",mode=\"plain\"} 1\n",
            "wxmp_answers_total{account=\"shop\",answered=\"fresh\"} 1\n",
            "wxmp_answers_total{account=\"school\",answered=\"fresh\"} 0\n",
            "wxmp_forward_calls_total{account=\"school\",outcome=\"on_time\"} 1\n",
            "wxmp_forward_call_duration_seconds_count{account=\"school\"} 1\n",
            "wxmp_http_requests_total{class=\"2xx\",mode=\"none\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("wxmp_answers_total{answered="), "{text}");
        assert!(
            !text.contains("wxmp_push_duration_seconds_count 0"),
            "{text}"
        );
        m.keep_accounts(&["school"]);
        let text = m.render();
        assert!(!text.contains("shop"), "{text}");
        assert!(text.contains("account=\"school\""), "{text}");
        // The one account of the flags is the unlabelled series.
        assert!(Arc::ptr_eq(&m.account(""), m.unlabelled()));
    }

    #[test]
    fn a_grid_takes_room_for_its_counts_only_at_its_first_count() {
        let g = Grid::new(&["x"], vec![vec!["a", "b"]]).preset();
        let mut out = String::new();
        g.write("g_total", "", &mut out);
        assert_eq!(out, "g_total{x=\"a\"} 0\ng_total{x=\"b\"} 0\n");
        assert_eq!(g.get(&[1]), 0);
        assert!(
            g.counts.get().is_none(),
            "an idle grid allocated its counts"
        );
        g.inc(&[1]);
        g.inc(&[2]);
        assert_eq!((g.get(&[0]), g.get(&[1])), (0, 1));
        assert_eq!(g.counts.get().map(|c| c.len()), Some(2));
    }

    #[test]
    fn a_grid_renders_like_a_family_sorted_by_its_values() {
        let r = Registry::default();
        let g = r.register(
            "g_total",
            "G.",
            Grid::new(&["x", "y"], vec![vec!["b", "a"], vec!["", "q"]]),
        );
        g.inc(&[0, 1]);
        g.inc(&[1, 0]);
        g.inc(&[1, 0]);
        g.inc(&[2, 0]);
        assert_eq!(g.get(&[1, 0]), 2);
        assert_eq!(
            r.render(),
            "# HELP g_total G.\n# TYPE g_total counter\n\
             g_total{x=\"a\",y=\"\"} 2\ng_total{x=\"b\",y=\"q\"} 1\n"
        );
    }

    #[test]
    fn the_event_list_is_the_protocol_s_own_names() {
        use crate::protocol::message::Message;
        for name in EVENTS {
            let xml = format!(
                "<xml><FromUserName>u</FromUserName><MsgType>event</MsgType><Event>{name}</Event></xml>"
            );
            let msg = Message::parse(&xml).unwrap();
            let e = msg.event().unwrap();
            assert!(
                !matches!(e, crate::protocol::message::Event::Other { .. }),
                "{name} is not one wxmp reads"
            );
            assert_eq!(e.name(), *name);
        }
    }
}
