//! The `websocket-server` binary: reads the environment into a [`Config`],
//! sets up logging and signals, and hands over to the library.

use websocket_server::config::{Config, ENV_VARS};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--list-env") => {
            for var in ENV_VARS {
                println!("{}", var.name);
            }
            return;
        }
        Some("-h") | Some("--help") => {
            print_help();
            return;
        }
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
    println!("{}", config.summary());
}

fn print_help() {
    println!("websocket-server: WebSocket chat server (thread-per-core, Redis fan-out, MongoDB persistence)\n");
    println!("Configured through environment variables:\n");
    for var in ENV_VARS {
        let default = if var.default.is_empty() { "unset" } else { var.default };
        println!("  {:<24} {}  [default: {}]", var.name, var.help, default);
    }
}
