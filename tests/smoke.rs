use cairn::{Options, Store};
use serde_json::json;

#[test]
fn round_trip_reopen_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().segment_size(64 * 1024);
    let mut seqs = Vec::new();
    {
        let store = Store::open_with(dir.path(), opts()).unwrap();
        for i in 0..2000u64 {
            seqs.push(
                store
                    .save(
                        &format!("job{}", i % 7),
                        "p",
                        &json!({"i": i, "pad": "x".repeat(50)}),
                    )
                    .unwrap(),
            );
        }
        assert!(store.segment_count() > 3, "{}", store.segment_count());
        assert_eq!(store.latest("job3").unwrap().unwrap().data["i"], 1998);
    }
    let store = Store::open_with(dir.path(), opts()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.latest("job3").unwrap().unwrap().data["i"], 1998);
    let h = store.history("job0").unwrap();
    assert_eq!(h.len(), 286);
    assert!(h.windows(2).all(|w| w[0].seq < w[1].seq));
    let s = store.save("job0", "p", &json!(1)).unwrap();
    assert!(s > *seqs.last().unwrap());
    drop(store);
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.latest("job0").unwrap().unwrap().seq, s);
    assert_eq!(ro.jobs().unwrap().len(), 7);
    let report = Store::verify(dir.path()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}
