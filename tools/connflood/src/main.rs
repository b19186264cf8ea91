//! connflood: an event-loop WebSocket load generator and delivery checker
//! for websocket-server. `main` turns the arguments and environment into a
//! [`config::Config`], checks what can be checked before starting (URLs
//! resolve, enough file descriptors), runs the [`driver`], prints the
//! [`report`] and exits 0 (passed), 1 (failed) or 2 (usage error).
//!
//! Modules, one responsibility each:
//! - [`config`]: environment variables and flags, `--help`.
//! - [`url`]: `ws://` URL parsing and resolution.
//! - [`handshake`]: the upgrade request template and the 101 check.
//! - [`protocol`]: the chat JSON frames and the message marker.
//! - [`client`]: one client's state, assignment and reconnect policy.
//! - [`driver`]: the mio event loop, ramp, timers, phases.
//! - [`checker`]: sequence, loss and duplicate accounting.
//! - [`stats`]: latency histogram and counters.
//! - [`report`]: verdict, text, JSON and the progress line.
//! - [`rng`]: the seedable random generator.
//! - [`token`]: JWTs for servers with authentication on (`--token-secret`,
//!   the `mint-token` sub-command).

#![forbid(unsafe_code)]

mod checker;
mod client;
mod config;
mod driver;
mod handshake;
mod protocol;
mod report;
mod rng;
mod stats;
mod token;
mod url;

use std::process::exit;

use websocket_server::procfs::open_file_limit;

use config::{Command, Config};
use report::Report;

/// File descriptors kept free for stdio, the poll instance and the JSON file.
const SPARE_FDS: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mint-token") {
        match token::parse_mint(&args[1..], |name| std::env::var(name).ok()) {
            Ok(Some((secret, claims))) => println!("{}", token::mint(secret.as_bytes(), &claims)),
            Ok(None) => println!("{}", token::help()),
            Err(e) => usage_error(&e.to_string()),
        }
        return;
    }
    let cfg = match config::parse(&args, |name| std::env::var(name).ok()) {
        Ok(Command::Help) => {
            println!("{}", config::help());
            return;
        }
        Ok(Command::Run(cfg)) => cfg,
        Err(e) => usage_error(&e.to_string()),
    };
    if let Some(limit) = open_file_limit() {
        if cfg.connections + SPARE_FDS > limit {
            usage_error(&format!(
                "{} connections need {} file descriptors but this process may open {limit} \
                 (ulimit -n); raise the limit or split the load over several processes",
                cfg.connections,
                cfg.connections + SPARE_FDS
            ));
        }
    }
    let want_v4 = cfg.binds.first().is_none_or(|b| b.is_ipv4());
    let addrs = match cfg.urls.iter().map(|u| u.resolve(want_v4)).collect::<Result<Vec<_>, _>>() {
        Ok(a) => a,
        Err(e) => usage_error(&e.to_string()),
    };
    if !cfg.quiet {
        eprintln!("connflood: {}", plan(&cfg));
    }
    let outcome = match driver::run(&cfg, addrs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("connflood: {e}");
            exit(1);
        }
    };
    let report = Report::build(&cfg, &outcome);
    print!("{}", report.to_text());
    if let Some(path) = &cfg.json {
        if let Err(e) = std::fs::write(path, report.to_json() + "\n") {
            eprintln!("connflood: cannot write {}: {e}", path.display());
            exit(1);
        }
    }
    exit(report.exit_code());
}

fn usage_error(message: &str) -> ! {
    eprintln!("connflood: {message}\n(see connflood --help)");
    exit(2);
}

/// One line saying what is about to happen.
fn plan(cfg: &Config) -> String {
    format!(
        "{} connections to {} over {:.1} s, {} rooms, {} senders every {} ms, sending for {:.1} s after the ramp, \
         settle {:.1} s",
        cfg.connections,
        cfg.urls.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "),
        cfg.ramp_up.as_secs_f64(),
        cfg.rooms,
        cfg.senders,
        cfg.msg_interval.as_millis(),
        cfg.duration.as_secs_f64(),
        cfg.settle.as_secs_f64()
    )
}
