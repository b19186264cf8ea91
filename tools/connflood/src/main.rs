//! connflood: WebSocket load generator (being written; see issue 4).
fn main() {
    eprintln!("connflood: not built yet");
    std::process::exit(2);
}
