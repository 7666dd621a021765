//! Prometheus metrics of the front-end: HTTP request counts and latencies per route, and
//! storage request latencies per operation, in the text exposition format.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openchat_media::shard::delay::DelaySnapshot;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardDelayLabels {
    pub shard: u32,
    /// `each`: every copy; `last`: the last copy of a step's datagrams.
    pub copy: &'static str,
}

/// A histogram kept elsewhere (a shard's atomics), copied in at each scrape.
#[derive(Debug, Clone, Default)]
pub struct CopiedHistogram(Arc<Mutex<Option<DelaySnapshot>>>);

impl CopiedHistogram {
    pub fn set(&self, snapshot: DelaySnapshot) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
    }
}

impl TypedMetric for CopiedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CopiedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match snapshot.as_ref() {
            Some(s) => encoder.encode_histogram::<NoLabelSet>(s.sum_seconds, s.count, &s.per_bucket(), None),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
    pub store: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric the front-end exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub storage_duration: Family<StorageLabels, Histogram, fn() -> Histogram>,
    pub storage_queue_depth: Gauge,
    pub http_connections: Gauge,
    /// Connections closed at once because their address held too many.
    pub http_connections_refused: Counter,
    pub realtime_sockets: Gauge,
    pub rtc_active_rooms: Gauge,
    pub rtc_active_participants: Gauge,
    pub rtc_shard_rooms: Family<ShardLabels, Gauge>,
    pub rtc_tickets_issued: Counter,
    pub rtc_join_failures: Family<ReasonLabels, Counter>,
    pub rtc_media_packets_in: Family<ShardLabels, Counter>,
    pub rtc_media_packets_out: Family<ShardLabels, Counter>,
    pub rtc_media_packets_dropped: Family<ShardLabels, Counter>,
    pub rtc_media_bytes_in: Family<ShardLabels, Counter>,
    pub rtc_media_bytes_out: Family<ShardLabels, Counter>,
    pub rtc_forwarded_packets: Family<ShardLabels, Counter>,
    pub rtc_forward_drops: Family<ShardLabels, Counter>,
    pub rtc_negotiation_errors: Family<ShardLabels, Counter>,
    pub rtc_shard_tracks: Family<ShardLabels, Gauge>,
    pub rtc_forward_delay: Family<ForwardDelayLabels, CopiedHistogram>,
    encode_lock: Mutex<()>,
}

impl Metrics {
    pub fn new(build: BuildLabels) -> Self {
        let mut registry = Registry::with_prefix("openchat");
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            prometheus_client::registry::Unit::Seconds,
            http_duration.clone(),
        );
        let storage_duration =
            Family::<StorageLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "storage_request_duration",
            "Round trip of a storage request as seen by the front-end, by operation and outcome",
            prometheus_client::registry::Unit::Seconds,
            storage_duration.clone(),
        );
        let storage_queue_depth = Gauge::default();
        registry.register(
            "storage_queue_depth",
            "Requests waiting for the storage thread",
            storage_queue_depth.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections_open",
            "Open HTTP connections",
            http_connections.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "Connections refused because their client address held too many",
            http_connections_refused.clone(),
        );
        let realtime_sockets = Gauge::default();
        registry.register(
            "realtime_sockets",
            "Open realtime WebSocket connections",
            realtime_sockets.clone(),
        );
        let rtc_active_rooms = Gauge::default();
        registry.register(
            "rtc_active_rooms",
            "Voice rooms with participants",
            rtc_active_rooms.clone(),
        );
        let rtc_active_participants = Gauge::default();
        registry.register(
            "rtc_active_participants",
            "Participants in voice rooms",
            rtc_active_participants.clone(),
        );
        let rtc_shard_rooms = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "rtc_shard_rooms",
            "Voice rooms per media shard",
            rtc_shard_rooms.clone(),
        );
        let rtc_tickets_issued = Counter::default();
        registry.register(
            "rtc_join_ticket_issued",
            "Join tickets issued",
            rtc_tickets_issued.clone(),
        );
        let rtc_join_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rtc_join_fail",
            "Refused joins, by reason",
            rtc_join_failures.clone(),
        );
        let rtc_media_packets_in = Family::<ShardLabels, Counter>::default();
        registry.register(
            "rtc_media_packets_in",
            "UDP datagrams received by a media shard",
            rtc_media_packets_in.clone(),
        );
        let rtc_media_packets_out = Family::<ShardLabels, Counter>::default();
        registry.register(
            "rtc_media_packets_out",
            "UDP datagrams sent by a media shard",
            rtc_media_packets_out.clone(),
        );
        let rtc_media_packets_dropped = Family::<ShardLabels, Counter>::default();
        registry.register(
            "rtc_media_packets_dropped",
            "Datagrams a media shard dropped (queue full) or could not route",
            rtc_media_packets_dropped.clone(),
        );
        let shard_counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ShardLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        };
        let rtc_media_bytes_in = shard_counter(
            &mut registry,
            "rtc_media_bytes_in",
            "UDP payload bytes received by a media shard",
        );
        let rtc_media_bytes_out = shard_counter(
            &mut registry,
            "rtc_media_bytes_out",
            "UDP payload bytes sent by a media shard",
        );
        let rtc_forwarded_packets = shard_counter(
            &mut registry,
            "rtc_forwarded_packets",
            "RTP packets a shard's SFU wrote to subscribers",
        );
        let rtc_forward_drops = shard_counter(
            &mut registry,
            "rtc_forward_drops",
            "RTP packets a shard's SFU could not forward to a subscriber carrying their track",
        );
        let rtc_negotiation_errors = shard_counter(
            &mut registry,
            "rtc_negotiation_errors",
            "Offers a shard's SFU refused (rtc_negotiation_failed)",
        );
        let rtc_shard_tracks = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "rtc_shard_tracks",
            "Published tracks in a shard's rooms",
            rtc_shard_tracks.clone(),
        );
        let rtc_forward_delay = Family::<ForwardDelayLabels, CopiedHistogram>::default();
        registry.register_with_unit(
            "rtc_forward_delay",
            "From the kernel's receive time of a publisher's RTP datagram to each copy handed \
             back to the kernel, by shard (copy=each), and for the last copy of a step (copy=last)",
            prometheus_client::registry::Unit::Seconds,
            rtc_forward_delay.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&build).set(1);
        registry.register(
            "build_info",
            "Build of this openchatd (value is always 1)",
            build_info,
        );
        Self {
            registry,
            http_requests,
            http_duration,
            storage_duration,
            storage_queue_depth,
            http_connections,
            http_connections_refused,
            realtime_sockets,
            rtc_active_rooms,
            rtc_active_participants,
            rtc_shard_rooms,
            rtc_tickets_issued,
            rtc_join_failures,
            rtc_media_packets_in,
            rtc_media_packets_out,
            rtc_media_packets_dropped,
            rtc_media_bytes_in,
            rtc_media_bytes_out,
            rtc_forwarded_packets,
            rtc_forward_drops,
            rtc_negotiation_errors,
            rtc_shard_tracks,
            rtc_forward_delay,
            encode_lock: Mutex::new(()),
        }
    }

    pub fn observe_request(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        elapsed: Duration,
    ) {
        let method = match *method {
            http::Method::GET => "GET",
            http::Method::POST => "POST",
            http::Method::PUT => "PUT",
            http::Method::DELETE => "DELETE",
            http::Method::OPTIONS => "OPTIONS",
            http::Method::HEAD => "HEAD",
            _ => "OTHER",
        };
        self.http_requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_storage(&self, op: &'static str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.storage_duration
            .get_or_create(&StorageLabels { op, outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Brings a counter up to a cumulative value counted elsewhere (the shards' atomics).
    pub fn counter_to(counter: &Counter, value: i64) {
        let current = counter.get();
        let value = value.max(0) as u64;
        if value > current {
            counter.inc_by(value - current);
        }
    }

    /// The text exposition (`text/plain; version=0.0.4` compatible OpenMetrics text).
    pub fn encode(&self) -> String {
        let _guard = self
            .encode_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}
