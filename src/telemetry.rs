//! The one place tracing is set up: pretty logs for `dev`, JSON lines
//! elsewhere; OTLP traces when an endpoint is configured. (The Prometheus
//! recorder is `parley_http_kit::prometheus`.)

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Where traces go, when anywhere.
#[derive(Debug, Clone)]
pub struct Traces {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is added).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` wins).
    pub service: &'static str,
}

/// OTLP over HTTP, in protobuf (what collectors expect by default) or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    HttpProtobuf,
    HttpJson,
}

/// Keeps the trace pipeline alive; [`Telemetry::shutdown`] sends what is left.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans (at most a few seconds) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: traces not all sent: {e}");
            }
        }
    }
}

/// Sets up logs (to stderr when `stderr`, for commands whose stdout is data)
/// and, with `traces`, OpenTelemetry spans exported over OTLP: each request's
/// span continues the caller's W3C `traceparent`, and projectors' spans join the
/// trace of the request that wrote the event. Call it before the async runtime
/// starts (the exporter's blocking HTTP client must not live on a runtime thread).
pub fn init(format: LogFormat, stderr: bool, traces: Option<Traces>) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::try_from_env("PARLEY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let fmt = tracing_subscriber::fmt::layer();
    let logs = match (format, stderr) {
        (LogFormat::Pretty, false) => fmt.compact().boxed(),
        (LogFormat::Pretty, true) => fmt.compact().with_writer(std::io::stderr).boxed(),
        (LogFormat::Json, false) => fmt.json().flatten_event(true).boxed(),
        (LogFormat::Json, true) => fmt
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = match traces {
        None => (None, None),
        Some(traces) => {
            let provider = tracer_provider(&traces)?;
            let tracer = provider.tracer("parley");
            opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
            parley_projections::traces::enable();
            parley_http_kit::application::join_caller_traces();
            // Spans at info and above, whatever PARLEY_LOG says about logs; never
            // the exporter's own HTTP client (it would trace itself).
            let spans = EnvFilter::new(
                "info,sqlx=warn,hyper=off,hyper_util=off,h2=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off",
            );
            (
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(spans),
                ),
                Some(provider),
            )
        }
    };
    // sqlx reports each pool acquire's wait as a TRACE event: only this layer
    // listens to them.
    let acquires = tracing_subscriber::filter::Targets::new()
        .with_target(POOL_ACQUIRE_TARGET, tracing::Level::TRACE);
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(PoolWaits.with_filter(acquires))
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

/// Where sqlx reports pool acquires (the pools enable it: `acquire_time_level`).
const POOL_ACQUIRE_TARGET: &str = "sqlx::pool::acquire";

/// Turns sqlx's pool-acquire events into `parley_db_pool_acquire_seconds`:
/// how long queries wait for a connection (sqlx counts no waiters itself).
struct PoolWaits;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PoolWaits {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != POOL_ACQUIRE_TARGET {
            return;
        }
        let mut wait = WaitField(None);
        event.record(&mut wait);
        if let Some(secs) = wait.0 {
            metrics::histogram!(parley_http_kit::prometheus::DB_POOL_ACQUIRE_SECONDS).record(secs);
        }
    }
}

/// The `aquired_after_secs` field (sqlx's spelling) of an acquire event.
struct WaitField(Option<f64>);

impl tracing::field::Visit for WaitField {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "aquired_after_secs" {
            self.0 = Some(value);
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

fn tracer_provider(traces: &Traces) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let base = traces.endpoint.trim_end_matches('/');
    let endpoint = if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(match traces.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        })
        .with_endpoint(&endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("PARLEY_OTLP_ENDPOINT ({endpoint}): {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(traces.service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
