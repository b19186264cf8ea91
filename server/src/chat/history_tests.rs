//! Unit tests of the history store (`history.rs`).

use super::*;

fn fill(h: &History, room: &str, n: u64) {
    let room: Arc<str> = Arc::from(room);
    for _ in 0..n {
        h.append_next(&room, |seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#))).expect("memory rooms are known");
    }
}

fn seqs(s: &Snapshot) -> Vec<u64> {
    s.entries.iter().map(|e| e.seq).collect()
}

#[test]
fn seqs_start_at_one_and_rise_by_one_per_room() {
    let h = History::new(10, usize::MAX, Backing::Memory);
    fill(&h, "a", 3);
    fill(&h, "b", 1);
    assert_eq!(h.last_seq("a"), 3);
    assert_eq!(h.last_seq("b"), 1);
    assert_eq!(h.last_seq("c"), 0);
    assert_eq!(h.recent("a", 10).iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);
    assert_eq!(h.recent("a", 1)[0].json(), br#"{"seq":3}"#);
}

#[test]
fn join_without_since_gets_the_last_n() {
    let h = History::new(10, usize::MAX, Backing::Memory);
    fill(&h, "a", 15);
    let s = h.snapshot("a", None, 4, &[]);
    assert_eq!((s.last_seq, seqs(&s), s.recovered), (15, vec![12, 13, 14, 15], None));
    assert_eq!(seqs(&h.snapshot("a", None, 50, &[])).len(), 10, "bounded by the ring");
    let empty = h.snapshot("none", None, 4, &[]);
    assert_eq!((empty.last_seq, empty.entries.len()), (0, 0));
}

#[test]
fn resume_within_the_ring_is_recovered() {
    let h = History::new(10, usize::MAX, Backing::Memory);
    fill(&h, "a", 15);
    let s = h.snapshot("a", Some(12), 4, &[]);
    assert_eq!((seqs(&s), s.recovered), (vec![13, 14, 15], Some(true)));
    let s = h.snapshot("a", Some(5), 4, &[]);
    assert_eq!((seqs(&s), s.recovered), (vec![6, 7, 8, 9, 10, 11, 12, 13, 14, 15], Some(true)), "exactly the ring");
    let s = h.snapshot("a", Some(15), 4, &[]);
    assert_eq!((seqs(&s), s.recovered), (vec![], Some(true)));
}

#[test]
fn resume_beyond_the_ring_or_sequence_is_not_recovered() {
    let h = History::new(10, usize::MAX, Backing::Memory);
    fill(&h, "a", 15);
    let s = h.snapshot("a", Some(4), 4, &[]);
    assert_eq!((seqs(&s).len(), s.recovered), (10, Some(false)), "what is stored, flagged as incomplete");
    let s = h.snapshot("a", Some(99), 4, &[]);
    assert_eq!((s.last_seq, s.recovered), (15, Some(false)), "since beyond last_seq: sequence restarted");
    assert_eq!(h.snapshot("new", Some(0), 4, &[]).recovered, Some(true));
    assert_eq!(h.snapshot("new", Some(3), 4, &[]).recovered, Some(false));
}

#[test]
fn memory_bound_evicts_least_recently_appended_rooms_but_keeps_their_seq() {
    let one = Entry::new(1, r#"{"seq":1}"#).frame.len();
    let h = History::new(100, one * 15, Backing::Memory);
    fill(&h, "old", 10);
    fill(&h, "new", 10);
    let (_, bytes) = h.usage();
    assert!(bytes <= one * 15, "{bytes}");
    assert_eq!(h.recent("old", 100).len(), 0, "old room evicted");
    assert_eq!(h.recent("new", 100).len(), 10);
    assert_eq!(h.last_seq("old"), 10, "sequence survives eviction");
    assert_eq!(h.snapshot("old", Some(5), 10, &[]).recovered, Some(false));
    fill(&h, "old", 1);
    assert_eq!(h.last_seq("old"), 11);
}

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#))).collect()
}

#[test]
fn a_store_backed_room_starts_cold_and_is_warmed_by_a_load() {
    let h = History::new(5, usize::MAX, Backing::Store { deep: true });
    let room: Arc<str> = Arc::from("r");
    assert!(h.needs_load("r", None), "never seen: load first");
    assert_eq!(h.known_last_seq("r"), None, "may not sequence yet");
    // Live traffic arrives before the load: known, not complete.
    assert_eq!(h.classify("r", 41), Arrival::Next);
    h.append(&room, entries(41..=41).remove(0));
    assert_eq!(h.known_last_seq("r"), Some(41));
    assert!(h.needs_load("r", None));
    // The load overlaps and precedes it; the ring keeps the latest 5, contiguous.
    h.merge_recent(&room, entries(30..=41));
    assert!(!h.needs_load("r", None));
    assert_eq!(seqs(&h.snapshot("r", None, 10, &[])), vec![37, 38, 39, 40, 41]);
    assert_eq!(h.usage().1, entries(37..=41).iter().map(|e| e.frame.len()).sum::<usize>());
    // A resume older than the ring goes to MongoDB (deep).
    assert!(h.needs_load("r", Some(30)));
    assert!(!h.needs_load("r", Some(36)));
    assert_eq!(h.first_seq("r"), 37);
}

#[test]
fn merge_keeps_only_the_contiguous_run_ending_at_the_latest() {
    let h = History::new(100, usize::MAX, Backing::Store { deep: false });
    let room: Arc<str> = Arc::from("r");
    let mut loaded = entries(1..=3);
    loaded.extend(entries(7..=9)); // 4..6 missing in the store
    h.merge_recent(&room, loaded);
    assert_eq!(seqs(&h.snapshot("r", None, 100, &[])), vec![7, 8, 9]);
    assert_eq!(h.snapshot("r", Some(2), 100, &[]).recovered, Some(false), "4..6 are not stored");
    assert!(!h.needs_load("r", Some(2)), "no MongoDB: nothing deeper to load");
}

#[test]
fn gaps_and_duplicates_are_classified_and_an_unfillable_gap_restarts_the_ring() {
    let h = History::new(10, usize::MAX, Backing::Store { deep: false });
    let room: Arc<str> = Arc::from("r");
    h.merge_recent(&room, entries(1..=5));
    assert_eq!(h.classify("r", 6), Arrival::Next);
    assert_eq!(h.classify("r", 5), Arrival::Duplicate);
    assert_eq!(h.classify("r", 9), Arrival::Gap { after: 5 });
    h.restart_after_gap(&room, 9);
    h.append(&room, entries(9..=9).remove(0));
    assert_eq!(seqs(&h.snapshot("r", None, 10, &[])), vec![9]);
    assert!(h.needs_load("r", None), "no longer complete");
    assert_eq!(h.known_last_seq("r"), Some(9));
}

#[test]
fn embedded_sequencing_refuses_a_room_whose_last_seq_is_unknown() {
    let h = History::new(10, usize::MAX, Backing::Store { deep: true });
    let room: Arc<str> = Arc::from("cold");
    assert!(h.append_next(&room, |seq| Entry::new(seq, "{}")).is_none());
    h.merge_recent(&room, entries(1..=4));
    assert_eq!(h.append_next(&room, |seq| Entry::new(seq, "{}")).map(|e| e.seq), Some(5));
}

#[test]
fn a_since_near_u64_max_never_overflows() {
    let h = History::new(5, usize::MAX, Backing::Store { deep: true });
    let room: Arc<str> = Arc::from("r");
    h.merge_recent(&room, entries(1..=20));
    for since in [u64::MAX, u64::MAX - 1] {
        assert!(!h.needs_load("r", Some(since)), "beyond the last seq: nothing older to load");
        let s = h.snapshot("r", Some(since), 50, &entries(1..=15));
        assert_eq!((seqs(&s), s.recovered), (vec![], Some(false)));
    }
    assert!(!reaches_below(u64::MAX, u64::MAX));
    assert!(reaches_below(3, 5) && !reaches_below(4, 5));
}

#[test]
fn a_resume_older_than_the_ring_combines_mongodb_entries_with_the_ring() {
    let h = History::new(5, usize::MAX, Backing::Store { deep: true });
    let room: Arc<str> = Arc::from("r");
    h.merge_recent(&room, entries(1..=20)); // ring: 16..=20
    let older = entries(9..=15);
    let s = h.snapshot("r", Some(8), 50, &older);
    assert_eq!((seqs(&s), s.recovered), ((9..=20).collect::<Vec<_>>(), Some(true)));
    let s = h.snapshot("r", Some(3), 50, &older);
    assert_eq!(s.recovered, Some(false), "4..8 were not fetched");
    assert_eq!(seqs(&s).first(), Some(&9));
}

/// The eviction order always lists exactly the rooms holding messages, by last append.
fn assert_lru_in_step(h: &History) {
    let rooms = h.lock();
    let scan: BTreeSet<(u64, Arc<str>)> =
        rooms.logs.iter().filter(|(_, l)| !l.entries.is_empty()).map(|(r, l)| (l.last_append, r.clone())).collect();
    assert_eq!(rooms.lru, scan);
}

#[test]
fn the_eviction_order_follows_appends_loads_and_restarts() {
    let one = Entry::new(1, r#"{"seq":1}"#).frame.len();
    let h = History::new(100, one * 30, Backing::Store { deep: false });
    let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"), Arc::from("c"));
    h.merge_recent(&a, entries(1..=5));
    assert_lru_in_step(&h);
    for seq in 1..=5 {
        h.append(&b, Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#)));
        h.append(&c, Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#)));
        assert_lru_in_step(&h);
    }
    h.restart_after_gap(&b, 9);
    assert_lru_in_step(&h);
    h.append(&a, Entry::new(6, r#"{"seq":6}"#));
    h.merge_recent(&c, entries(1..=8));
    assert_lru_in_step(&h);
    // Over the bound: c was appended to before a, so c goes first.
    let d: Arc<str> = Arc::from("d");
    h.merge_recent(&d, entries(1..=10));
    for seq in 11..=25 {
        h.append(&d, Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#)));
        assert_lru_in_step(&h);
    }
    assert!(h.recent("c", 100).is_empty(), "least recently appended: evicted");
    assert!(!h.recent("d", 100).is_empty());
    assert!(h.usage().1 <= one * 30 + 100);
}

/// Not a timed test: `cargo test --release --lib eviction_cost -- --ignored --nocapture`
/// prints the cost of an append that evicts, with many rooms held.
#[test]
#[ignore]
fn eviction_cost() {
    for rooms in [1_000usize, 10_000, 50_000] {
        let one = Entry::new(1, r#"{"seq":1}"#).frame.len();
        // Room for `rooms` rooms of one message each: every new room evicts one.
        let h = History::new(10, one * rooms, Backing::Memory);
        let names: Vec<Arc<str>> = (0..rooms * 2).map(|i| Arc::from(format!("room-{i}"))).collect();
        for name in &names[..rooms] {
            h.append(name, Entry::new(1, r#"{"seq":1}"#));
        }
        let start = std::time::Instant::now();
        for name in &names[rooms..] {
            h.append(name, Entry::new(1, r#"{"seq":1}"#));
        }
        let per = start.elapsed() / rooms as u32;
        println!("{rooms} rooms held: {per:?} per evicting append");
    }
}
