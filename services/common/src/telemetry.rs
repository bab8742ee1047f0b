//! Logging setup: `RUST_LOG` filters (default `info`), `LIFEBOAT_LOG_FORMAT=json` for JSON lines.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn,async_nats=warn"));
    let json = std::env::var("LIFEBOAT_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    // A second init (tests build several services in one process) is not an error.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
