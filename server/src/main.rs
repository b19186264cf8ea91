//! The `websocket-server` binary: reads the environment into a [`Config`],
//! sets up logging and signals, and hands over to [`Server`].

use std::io::Write;

use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};
use websocket_server::config::{Config, ENV_VARS};
use websocket_server::server::{signal_channel, Server};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--list-env") => print_or_exit(|out| ENV_VARS.iter().try_for_each(|var| writeln!(out, "{}", var.name))),
        Some("-h") | Some("--help") => print_or_exit(print_help),
        Some(other) => {
            eprintln!(
                "websocket-server: unknown argument {other:?}; it is configured through the environment (see --help)"
            );
            std::process::exit(2);
        }
        None => {}
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("websocket-server: {e}");
            std::process::exit(2);
        }
    };
    init_logging(config.log_level);
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        log::error!("panic in thread {}: {}", thread.name().unwrap_or("?"), info.to_string().replace('\n', " "));
    }));
    log::info!("starting websocket-server {}: {}", env!("CARGO_PKG_VERSION"), config.summary());
    let signals = match signal_channel() {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(server.serve(signals));
}

/// One line per event on stdout: RFC 3339 time, level, message. Only this
/// crate's records (the drivers' own logging stays out of `kubectl logs`).
fn init_logging(level: log::LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .add_filter_allow_str("websocket_server")
        .build();
    let _ = TermLogger::init(level, config, TerminalMode::Stdout, ColorChoice::Never);
}

/// Writes to stdout with `write` and exits: 0 when done, and also when the
/// reader went away (`websocket-server --help | head -1`: a closed pipe is
/// not an error of ours); 1 on any other write error.
fn print_or_exit(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> ! {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => std::process::exit(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("websocket-server: writing to stdout failed: {e}");
            std::process::exit(1);
        }
    }
}

fn print_help(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "websocket-server: WebSocket chat server (thread-per-core, Redis fan-out, MongoDB persistence)\n")?;
    writeln!(out, "Configured through environment variables:\n")?;
    for var in ENV_VARS {
        let default = if var.default.is_empty() { "unset" } else { var.default };
        writeln!(out, "  {:<24} {}  [default: {}]", var.name, var.help, default)?;
    }
    Ok(())
}
