//! Replica mode on a real Redis Cluster: three masters with a replica each
//! (redis-server 7, cluster mode, on free loopback ports, created with
//! `redis-cli --cluster create`). Rooms spread over the three shards; two
//! server replicas act as one chat through a master failover, a killed
//! master and a resharding; a REDIS_CLUSTER_NODES that points at a
//! standalone Redis stops the server. A restart of every node (ignored: a
//! known race, see the test) is here to reproduce it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tracker::{Report, Tracker};
use common::*;
use websocket_server::replica::topology::room_slot;

/// Six redis-servers in cluster mode: masters first, then their replicas.
struct Cluster {
    nodes: Vec<(u16, Child)>,
    dir: PathBuf,
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (tools/test.sh installs redis-server, which has it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One redis-server in cluster mode on `port`, without persistence: its
/// cluster configuration (`nodes-I.conf` in `dir`) survives a restart, its
/// data does not.
fn spawn_node(dir: &std::path::Path, i: usize, port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            dir.join(format!("nodes-{i}.conf")).to_str().unwrap(),
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(|_| (0..6).map(|_| free_port()).collect())
    }

    /// A cluster that will be restarted whole ([`Cluster::restart_all`]):
    /// its ports (and bus ports, 10,000 above) lie below the kernel's
    /// ephemeral range, so that while its nodes are down no other test's
    /// [`free_port`] can hand one of them out (a node of another cluster
    /// there would meet this cluster's nodes when they come back).
    fn start_for_restart() -> Cluster {
        Cluster::start_with(|attempt| {
            let mut ports: Vec<u16> = Vec::new();
            let mut candidate = 20_000 + ((std::process::id() + 311 * attempt) % 2_000) as u16;
            while ports.len() < 6 {
                candidate = if candidate >= 22_700 { 20_000 } else { candidate + 7 };
                let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
                if !ports.contains(&candidate) && free(candidate) && free(candidate + 10_000) {
                    ports.push(candidate);
                }
            }
            ports
        })
    }

    /// Starts six nodes on the ports `pick(attempt)` gives and makes them a
    /// cluster. A port found free can be taken by another test's process
    /// (or an outgoing connection can take the bus port) before the node
    /// binds it: that node exits, and the start is tried again on others.
    fn start_with(pick: impl Fn(u32) -> Vec<u16>) -> Cluster {
        for attempt in 0..4 {
            if let Some(c) = Cluster::try_start_on(pick(attempt)) {
                return c;
            }
        }
        panic!("no cluster could be started in 4 attempts (see the stderr above)");
    }

    fn try_start_on(ports: Vec<u16>) -> Option<Cluster> {
        let dir = std::env::temp_dir().join(format!("ws-cluster-{}-{}", std::process::id(), ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<(u16, Child)> =
            ports.into_iter().enumerate().map(|(i, port)| (port, spawn_node(&dir, i, port))).collect();
        // From here on, dropping `c` ends the nodes.
        let mut c = Cluster { nodes, dir };
        let up = |(port, child): &mut (u16, Child)| {
            let start = Instant::now();
            while start.elapsed() < STARTUP_WAIT {
                if redis_cli(*port, &["ping"]).trim() == "PONG" {
                    return true;
                }
                if child.try_wait().unwrap().is_some() {
                    eprintln!(
                        "redis-server on {port} exited at start-up (its port or bus port was taken); trying others"
                    );
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("redis-server on {port} did not answer in {STARTUP_WAIT:?}");
            false
        };
        if !c.nodes.iter_mut().all(up) {
            return None;
        }
        let nodes = &c.nodes;
        let addrs: Vec<String> = nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = Command::new("redis-cli").args(&args).output().unwrap();
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        c.await_ok();
        Some(c)
    }

    fn await_ok(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let ok = self.nodes.iter().all(|(p, _)| redis_cli(*p, &["cluster", "info"]).contains("cluster_state:ok"));
            let masters = self.masters();
            if ok && masters.len() == 3 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cluster not ok in time");
    }

    /// Master ports with their slot ranges.
    fn masters(&self) -> Vec<(u16, Vec<(u16, u16)>)> {
        let text = redis_cli(self.nodes[0].0, &["cluster", "nodes"]);
        text.lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port: u16 = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
                let ranges = f[8..]
                    .iter()
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect::<Vec<(u16, u16)>>();
                (!ranges.is_empty()).then_some((port, ranges))
            })
            .collect()
    }

    fn seeds(&self) -> String {
        self.nodes[..2].iter().map(|(p, _)| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// SIGKILLs the node on `port` (no failover handshake: its replica
    /// takes over after the cluster's node timeout).
    fn kill(&mut self, port: u16) {
        let (_, child) = self.nodes.iter_mut().find(|(p, _)| *p == port).expect("a node of the cluster");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGKILLs every node, then starts each again on its port: the slot
    /// map comes back from the nodes' configuration files, the data is lost
    /// (as in a crash of a cluster without persistence). Returns once the
    /// cluster is `ok` again.
    fn restart_all(&mut self) {
        for (_, child) in &mut self.nodes {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        for (i, (port, child)) in self.nodes.iter_mut().enumerate() {
            *child = spawn_node(&self.dir, i, *port);
        }
        for (port, _) in &self.nodes {
            eventually("redis-server up again", || redis_cli(*port, &["ping"]).trim() == "PONG");
        }
        self.await_ok();
    }

    /// Moves `slot` from the master on `from` to the one on `to` as
    /// `redis-cli --cluster reshard` does (IMPORTING, MIGRATING, `MIGRATE`
    /// key by key, then `SETSLOT NODE` everywhere), with `pause` after each
    /// key so that traffic meets the slot mid-migration.
    fn move_slot(&self, slot: u16, from: u16, to: u16, pause: Duration) {
        let id = |port: u16| redis_cli(port, &["cluster", "myid"]).trim().to_string();
        let (from_id, to_id, slot) = (id(from), id(to), slot.to_string());
        assert!(redis_cli(to, &["cluster", "setslot", &slot, "importing", &from_id]).contains("OK"));
        assert!(redis_cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]).contains("OK"));
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < Duration::from_secs(30), "slot {slot} not moved in time");
            let keys = redis_cli(from, &["cluster", "getkeysinslot", &slot, "1"]);
            if let Some(key) = keys.lines().next().filter(|k| !k.is_empty()) {
                let out = redis_cli(from, &["migrate", "127.0.0.1", &to.to_string(), key, "0", "5000"]);
                assert!(out.contains("OK") || out.contains("NOKEY"), "migrate {key}: {out}");
                std::thread::sleep(pause);
                continue;
            }
            // Target first, then source (a key created meanwhile makes the
            // source refuse: migrate it too), then the other masters.
            assert!(redis_cli(to, &["cluster", "setslot", &slot, "node", &to_id]).contains("OK"));
            if redis_cli(from, &["cluster", "setslot", &slot, "node", &to_id]).contains("OK") {
                break;
            }
        }
        for (port, _) in &self.nodes {
            redis_cli(*port, &["cluster", "setslot", &slot, "node", &to_id]);
        }
    }

    /// The replica of the master on `master_port`, once the master's view
    /// of the cluster lists it (`cluster_state:ok` can come before the
    /// gossip that tells a master about its replica).
    fn replica_of(&self, master_port: u16) -> u16 {
        let find = || {
            let text = redis_cli(master_port, &["cluster", "nodes"]);
            let id = text.lines().find(|l| l.contains("myself"))?.split_whitespace().next()?.to_string();
            let line = text.lines().find(|l| l.contains("slave") && l.contains(&id))?;
            line.split_whitespace().nth(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()
        };
        eventually("the master lists its replica", || find().is_some());
        find().expect("listed above")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The index in `masters` (as [`Cluster::masters`] lists them) of the
/// master that owns `room`'s slot.
fn owner_of(masters: &[(u16, Vec<(u16, u16)>)], room: &str) -> usize {
    let s = room_slot(room);
    masters.iter().position(|(_, r)| r.iter().any(|&(a, b)| a <= s && s <= b)).expect("every slot has a master")
}

/// Two server replicas, `pod-0` and `pod-1`, on the cluster of `seeds`,
/// and their ports.
fn two_pods(seeds: &str, extra: &[(&str, &str)]) -> (Vec<Server>, Vec<u16>) {
    let servers: Vec<Server> = (0..2).map(|i| replica_with(&format!("pod-{i}"), seeds, extra)).collect();
    let ports = servers.iter().map(|s| s.port).collect();
    (servers, ports)
}

fn replica_with(pod: &str, seeds: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("REDIS_CLUSTER_NODES", seeds),
        ("POD_NAME", pod),
        ("RATE_LIMIT", "1000"),
        ("RATE_BURST", "1000"),
        ("WORKERS", "2"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Every report gapless; no seq carries two texts; every text sent was
/// delivered or refused with an error frame.
fn assert_no_loss(room: &str, reports: &[Report]) {
    let mut seen: HashMap<u64, String> = HashMap::new();
    for (i, r) in reports.iter().enumerate() {
        r.assert_gapless(&format!("{room} client {i}"));
        for (seq, text) in r.seqs.iter().zip(&r.texts) {
            let prev = seen.insert(*seq, text.clone());
            assert!(prev.is_none() || prev.as_ref() == Some(text), "{room}: seq {seq} carried two messages");
        }
    }
    let delivered: BTreeSet<&String> = seen.values().collect();
    assert_eq!(delivered.len(), seen.len(), "{room}: a message was sequenced twice");
    let refused: usize = reports.iter().map(|r| r.refused.len()).sum();
    let lost: Vec<&String> = reports.iter().flat_map(|r| &r.sent).filter(|t| !delivered.contains(t)).collect();
    assert!(lost.len() <= refused, "{room}: {} messages lost, {refused} refused: {lost:?}", lost.len());
}

#[test]
fn two_replicas_on_a_three_master_cluster_act_as_one_through_a_failover() {
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let (servers, ports) = two_pods(&seeds, &[]);
    // Rooms on every master.
    let masters = cluster.masters();
    let owner = |room: &str| owner_of(&masters, room);
    let mut rooms: Vec<String> = Vec::new();
    for m in 0..3 {
        rooms.extend((0..200).map(|i| format!("r{i}")).filter(|r| owner(r) == m).take(2));
    }
    assert_eq!(rooms.len(), 6);
    let mut clients: Vec<(usize, Tracker)> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for i in 0..2 {
            clients.push((r, Tracker::start(ports.clone(), i % 2, room, &format!("c{i}"))));
        }
    }
    let send_round = |clients: &[(usize, Tracker)], round: usize| {
        for (i, (r, c)) in clients.iter().enumerate() {
            c.send(&format!("{}:{i}:{round}", rooms[*r]));
        }
    };
    for round in 0..5 {
        send_round(&clients, round);
        std::thread::sleep(Duration::from_millis(30));
    }
    eventually("every client saw 10 messages", || clients.iter().all(|(_, c)| c.last_seq() >= 10));
    for s in &servers {
        assert_eq!(s.metric("websocket_redis_connected"), 1.0);
        let rooms = s.metric("websocket_redis_subscribed_rooms");
        assert_eq!(rooms, 6.0, "{:#?}", s.log.lock().unwrap());
    }

    // Fail over the master of the first two rooms to its replica, mid-traffic.
    let (old_master, _) = masters[owner(&rooms[0])];
    let promoted = cluster.replica_of(old_master);
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 5..25 {
                send_round(&clients, round);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(redis_cli(promoted, &["cluster", "failover"]).contains("OK"));
    });
    eventually("the replica took over", || redis_cli(promoted, &["role"]).starts_with("master"));
    for round in 25..30 {
        send_round(&clients, round);
        std::thread::sleep(Duration::from_millis(30));
    }
    // Deliveries settle: every client at 60, or nothing new for 2 s (a
    // message may be refused with `unavailable` if the shard stays
    // unwritable past the publisher's hold time on a slow machine).
    let (start, mut last, mut changed) = (Instant::now(), Vec::new(), Instant::now());
    while start.elapsed() < Duration::from_secs(20) {
        let seen: Vec<u64> = clients.iter().map(|(_, c)| c.last_seq()).collect();
        if seen.iter().all(|&s| s >= 60) || changed.elapsed() > Duration::from_secs(2) {
            break;
        }
        if seen != last {
            (last, changed) = (seen, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logged_failover =
        servers.iter().all(|s| s.logged("Redis Cluster slot map") && s.logged("Redis ended its subscription"));
    assert!(logged_failover, "the replicas followed the failover: new slot map, subscriptions moved");
    let reports: Vec<(usize, Report)> = clients.into_iter().map(|(r, c)| (r, c.finish())).collect();
    let mut refused_total = 0;
    for (r, room) in rooms.iter().enumerate() {
        let mine: Vec<Report> = reports.iter().filter(|(x, _)| *x == r).map(|(_, rep)| rep.clone()).collect();
        let refused: usize = mine.iter().map(|rep| rep.refused.len()).sum();
        refused_total += refused;
        let n = mine[0].seqs.len() as u64;
        if n + (refused as u64) < 60 {
            let logs: Vec<String> = servers.iter().flat_map(|s| s.log.lock().unwrap().clone()).collect();
            let lens: Vec<usize> = mine.iter().map(|m| m.seqs.len()).collect();
            panic!("{room}: {n} delivered + {refused} refused of 60 sent {lens:?}\n{logs:#?}");
        }
        for rep in &mine {
            assert!(rep.refused.iter().all(|c| c == "unavailable"), "{room}: {:?}", rep.refused);
            if rep.seqs != (1..=n).collect::<Vec<u64>>() {
                let logs: Vec<String> = servers.iter().flat_map(|s| s.log.lock().unwrap().clone()).collect();
                panic!("{room}: one order, exactly once: {:?} vs {n}; {:?}\n{logs:#?}", rep.seqs, rep.closes);
            }
            assert_eq!(rep.texts, mine[0].texts, "{room}: both replicas deliver the same order");
        }
        assert_no_loss(room, &mine);
    }
    assert!(refused_total <= 6, "a manual failover refuses at most what was in flight: {refused_total}");
}

/// A master killed outright: while its replica is not yet promoted, the
/// rooms of the other masters are published as usual (only the dead
/// master's slots are held), and what is sent into its rooms waits for the
/// failover: nothing refused, nothing lost, one order. The hold is set to
/// 30 s here, as a busy machine (tests niced under other work) can stretch
/// the failover past the derived one (2 × 1 s + 5 s);
/// tools/localcluster-cluster-test.sh runs with the derived hold.
#[test]
fn a_killed_master_holds_only_its_rooms_and_costs_no_message() {
    let mut cluster = Cluster::start();
    let seeds = cluster.seeds();
    let hold = [("REDIS_FAILOVER_HOLD_MS", "30000")];
    let (servers, ports) = two_pods(&seeds, &hold);
    let masters = cluster.masters();
    let owner = |room: &str| owner_of(&masters, room);
    let rooms: Vec<String> =
        (0..3).map(|m| (0..200).map(|i| format!("k{i}")).find(|r| owner(r) == m).unwrap()).collect();
    let clients: Vec<Tracker> =
        rooms.iter().enumerate().map(|(i, room)| Tracker::start(ports.clone(), i % 2, room, "c")).collect();
    for (i, c) in clients.iter().enumerate() {
        c.send(&format!("{}:before", rooms[i]));
    }
    eventually("every room's first message", || clients.iter().all(|c| c.last_seq() >= 1));

    let (dead, _) = masters[0];
    let promoted = cluster.replica_of(dead);
    cluster.kill(dead);
    let killed = Instant::now();
    // The dead master's room first, so each pod has met the dead node.
    clients[0].send(&format!("{}:during-0", rooms[0]));
    std::thread::sleep(Duration::from_millis(100));
    clients[1].send(&format!("{}:during-0", rooms[1]));
    clients[2].send(&format!("{}:during-0", rooms[2]));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) && !(clients[1].last_seq() >= 2 && clients[2].last_seq() >= 2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let other_rooms_took = start.elapsed();
    let promoted_yet = redis_cli(promoted, &["role"]).starts_with("master");
    assert!(
        clients[1].last_seq() >= 2 && clients[2].last_seq() >= 2,
        "the other masters' rooms were held while one master was down ({other_rooms_took:?})"
    );
    assert!(!promoted_yet, "the replica was promoted before the check: it proves nothing (timing)");
    // More into every room while the failover runs.
    for round in 1..20 {
        for (i, c) in clients.iter().enumerate() {
            c.send(&format!("{}:during-{round}", rooms[i]));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    while killed.elapsed() < Duration::from_secs(30) && !redis_cli(promoted, &["role"]).starts_with("master") {
        std::thread::sleep(Duration::from_millis(100));
    }
    let failover = killed.elapsed();
    assert!(redis_cli(promoted, &["role"]).starts_with("master"), "no failover in {failover:?}");
    eventually("every message delivered", || clients.iter().all(|c| c.last_seq() >= 21));
    for (i, c) in clients.into_iter().enumerate() {
        let rep = c.finish();
        assert!(rep.refused.is_empty(), "{}: refused {:?} (failover took {failover:?})", rooms[i], rep.refused);
        assert_eq!(rep.seqs, (1..=21).collect::<Vec<u64>>(), "{}: one order, exactly once", rooms[i]);
        assert_eq!(
            rep.texts, rep.sent,
            "{}: every message, in the order sent (connections {}, closes {:?})",
            rooms[i], rep.connections, rep.closes
        );
    }
    for s in &servers {
        assert_eq!(s.metric("websocket_redis_held"), 0.0);
        assert_eq!(s.metric("websocket_redis_held_overflow_total"), 0.0);
    }
}

/// The publish script on a cluster node: one call carries the rooms of
/// several of the node's slots (its `allow-cross-slot-keys` flag); a room
/// the node does not own ends the call before anything of it is written,
/// and the rooms after it do not run either: the answer is shorter, and
/// what it answers for ran whole.
#[test]
fn one_call_carries_a_nodes_slots_and_stops_before_a_room_it_does_not_own() {
    let cluster = Cluster::start();
    let masters = cluster.masters();
    let owner = |room: &str| owner_of(&masters, room);
    let names = || (0..400).map(|i| format!("s{i}"));
    let mine: Vec<String> = names().filter(|r| owner(r) == 0).take(2).collect();
    assert_ne!(room_slot(&mine[0]), room_slot(&mine[1]), "two slots of one node");
    let other = names().find(|r| owner(r) == 1).unwrap();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", masters[0].0)).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys = |port: u16| {
        let mut k: Vec<String> = redis_cli(port, &["--scan"]).lines().map(str::to_string).collect();
        k.sort();
        k
    };

    fn part<'a>(room: &'a str, id: &str) -> RoomPart<'a> {
        (room, 0, vec![(chat_message(room, id, Some(&format!("c-{id}"))), false)])
    }
    let got = publish_call(&mut con, true, &[part(&mine[0], "1"), part(&other, "2"), part(&mine[1], "3")]);
    assert_eq!(got, vec![1], "only the first room ran");
    let mut expected = vec![
        format!("chat:{{{}}}:client:c-1", mine[0]),
        format!("chat:{{{}}}:history", mine[0]),
        format!("chat:{{{}}}:seq", mine[0]),
    ];
    expected.sort();
    assert_eq!(keys(masters[0].0), expected, "the first room whole, nothing of the others");
    assert!(keys(masters[1].0).is_empty(), "nothing written for a room of another node");

    let got = publish_call(&mut con, true, &[part(&mine[0], "4"), part(&mine[1], "5")]);
    assert_eq!(got, vec![2, 1], "two slots of the node in one call");
}

/// A room's slot moves to another master mid-traffic (a resharding), key
/// by key, while the same publish calls carry rooms of the source's other
/// slots: the moving room's messages are sent again where Redis says (a
/// shorter answer, `ASK`, `TRYAGAIN`, then `MOVED`), its subscriptions
/// follow `sunsubscribe`, and every client sees one gapless order with
/// nothing lost, refused or doubled.
#[test]
fn a_room_whose_slot_moves_mid_traffic_loses_nothing() {
    let cluster = Cluster::start();
    let seeds = cluster.seeds();
    let (servers, ports) = two_pods(&seeds, &[]);
    let masters = cluster.masters();
    let owner = |room: &str| owner_of(&masters, room);
    let names = || (0..400).map(|i| format!("m{i}"));
    let mut rooms: Vec<String> = names().filter(|r| owner(r) == 0).take(2).collect();
    rooms.push(names().find(|r| owner(r) == 1).unwrap());
    let moving = room_slot(&rooms[0]);
    assert_ne!(moving, room_slot(&rooms[1]));
    let clients: Vec<(usize, Tracker)> =
        (0..rooms.len() * 2).map(|i| (i / 2, Tracker::start(ports.clone(), i % 2, &rooms[i / 2], "c"))).collect();
    let rounds = 40;
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..rounds {
                for (i, (r, c)) in clients.iter().enumerate() {
                    c.send(&format!("{}:{i}:{round}", rooms[*r]));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(400));
        cluster.move_slot(moving, masters[0].0, masters[1].0, Duration::from_millis(150));
    });
    assert_eq!(redis_cli(masters[1].0, &["cluster", "countkeysinslot", &moving.to_string()]).trim(), "2");
    let per_room = 2 * rounds as u64;
    eventually_within(Duration::from_secs(30), "every message delivered", || {
        clients.iter().all(|(_, c)| c.last_seq() >= per_room)
    });
    assert!(
        servers.iter().all(|s| s.logged("Redis ended its subscription")),
        "the pods' subscriptions followed the slot"
    );
    let rerouted: f64 = servers.iter().map(|s| s.metric("websocket_redis_rerouted_total")).sum();
    assert!(rerouted > 0.0, "traffic met the slot mid-move (else this test proves nothing)");
    let reports: Vec<(usize, Report)> = clients.into_iter().map(|(r, c)| (r, c.finish())).collect();
    for (r, room) in rooms.iter().enumerate() {
        let mine: Vec<Report> = reports.iter().filter(|(x, _)| *x == r).map(|(_, rep)| rep.clone()).collect();
        for rep in &mine {
            assert!(rep.refused.is_empty(), "{room}: refused {:?}", rep.refused);
            assert_eq!(rep.seqs, (1..=per_room).collect::<Vec<u64>>(), "{room}: one order, exactly once");
            assert_eq!(rep.texts, mine[0].texts, "{room}: both replicas deliver the same order");
        }
        assert_no_loss(room, &mine);
    }
}

/// Every node of the cluster killed and started again mid-traffic (no
/// persistence: the slot map comes back, the data does not), as the single
/// Redis of replica.rs is: nothing lost or doubled (what could not be
/// published while the cluster was down is refused with `unavailable`, its
/// sender told), one gapless order per room on both pods, and each room's
/// sequence goes on from the pods' floors instead of starting again at 1.
///
/// Ignored: it can meet the window that is left open (docs/architecture.md,
/// "When Redis fails"). A seq whose publish reached one pod's subscription
/// at the moment of the kill and not the other's is known to that pod only:
/// safe once it has subscribed again and raised the counter; if the other
/// pod numbers the room first, the seq is given twice and MongoDB's unique
/// `(room, seq)` keeps one of the two. (A seq only the publisher got is
/// handled: `replica::echo`.) Run the whole file with it
/// (`cargo test -p websocket-server --test cluster -- --include-ignored`)
/// beside two busy loops: it failed 3 of 14 runs so before (2026-12-03),
/// and passed 12 of 12 after the resubscribe raise and 6 of 6 after the
/// echo change (2026-12-04) — too rare now to measure, not closed.
#[test]
#[ignore = "a seq known to one pod only when Redis loses its data can be given again (docs/architecture.md)"]
fn a_whole_cluster_restart_mid_traffic_loses_nothing_and_the_sequences_continue() {
    let mut cluster = Cluster::start_for_restart();
    let seeds = cluster.seeds();
    // With the store, as in production: after Redis lost its data a pod
    // numbers a room only once it knows the room's latest seq.
    let mongo = MongoWire::start();
    let uri = mongo.uri();
    let (servers, ports) = two_pods(&seeds, &[("MONGO_URI", &uri)]);
    let masters = cluster.masters();
    let rooms: Vec<String> =
        (0..3).map(|m| (0..200).map(|i| format!("w{i}")).find(|r| owner_of(&masters, r) == m).unwrap()).collect();
    let clients: Vec<(usize, Tracker)> =
        (0..rooms.len() * 2).map(|i| (i / 2, Tracker::start(ports.clone(), i % 2, &rooms[i / 2], "c"))).collect();
    let send_round = |round: usize| {
        for (i, (r, c)) in clients.iter().enumerate() {
            c.send(&format!("{}:{i}:{round}", rooms[*r]));
        }
    };
    for round in 0..10 {
        send_round(round);
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually("every client saw the first rounds", || clients.iter().all(|(_, c)| c.last_seq() >= 20));
    let mut rounds = 10;
    std::thread::scope(|s| {
        let restarted = s.spawn(|| cluster.restart_all());
        while !restarted.is_finished() && rounds < 200 {
            send_round(rounds);
            rounds += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        restarted.join().expect("the cluster came back");
    });
    assert!(rounds > 11, "traffic went on while the cluster restarted (else this test proves nothing)");
    let during = rounds - 10;
    // After the restart: traffic again, until every pod publishes and
    // delivers (a last round seen by every client).
    let last = loop {
        send_round(rounds);
        rounds += 1;
        std::thread::sleep(Duration::from_millis(100));
        let delivered = |(_, c): &(usize, Tracker)| c.last_seq() > 0;
        if rounds > 400
            || (clients.iter().all(delivered) && servers.iter().all(|s| s.metric("websocket_redis_connected") == 1.0))
        {
            break rounds - 1;
        }
    };
    // Settled: everything delivered, or nothing held by either pod (a held
    // message is published when its node is back, or refused after the
    // hold) and nothing new for 3 s.
    let per_room = 2 * rounds as u64;
    let (start, mut seen, mut changed) = (Instant::now(), Vec::new(), Instant::now());
    while start.elapsed() < Duration::from_secs(40) {
        let now: Vec<u64> = clients.iter().map(|(_, c)| c.last_seq()).collect();
        let held: f64 = servers.iter().map(|s| s.metric("websocket_redis_held")).sum();
        if now.iter().all(|&n| n >= per_room) || (held == 0.0 && changed.elapsed() > Duration::from_secs(3)) {
            break;
        }
        if now != seen {
            (seen, changed) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reports: Vec<(usize, Report)> = clients.into_iter().map(|(r, c)| (r, c.finish())).collect();
    for (r, room) in rooms.iter().enumerate() {
        let mine: Vec<Report> = reports.iter().filter(|(x, _)| *x == r).map(|(_, rep)| rep.clone()).collect();
        for rep in &mine {
            assert!(rep.refused.iter().all(|c| c == "unavailable"), "{room}: {:?}", rep.refused);
            assert!(
                rep.texts.iter().any(|t| t.ends_with(&format!(":{last}"))),
                "{room}: the last round ({last}) was delivered after the restart ({} of {} sent delivered)",
                rep.texts.len(),
                rep.sent.len()
            );
            assert_eq!(rep.texts, mine[0].texts, "{room}: both pods deliver the same order");
        }
        assert_no_loss(room, &mine);
        let n = mine[0].seqs.len() as u64;
        assert_eq!(mine[0].seqs, (1..=n).collect::<Vec<u64>>(), "{room}: the sequence went on from before the restart");
    }
    for s in &servers {
        assert!(s.metric("websocket_redis_reconnects_total") >= 1.0, "the pods reconnected");
    }
    let refused: usize = reports.iter().map(|(_, r)| r.refused.len()).sum();
    eprintln!("{during} rounds sent while the cluster restarted, {last} in all; {refused} messages refused");
}

#[test]
fn cluster_nodes_that_are_not_a_cluster_stop_the_server_at_start_up() {
    let redis = Redis::start();
    let bin = env!("CARGO_BIN_EXE_websocket-server");
    let out = Command::new(bin)
        .env_clear()
        .env("PORT", "0")
        .env("BIND_ADDR", "127.0.0.1")
        .env("REDIS_CLUSTER_NODES", redis.url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "it must not start: {stderr}");
    assert!(stderr.contains("REDIS_CLUSTER_NODES"), "the message names the variable: {stderr}");
}
