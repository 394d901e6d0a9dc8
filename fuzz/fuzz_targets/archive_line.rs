//! Archive lines from any text: an archived record or an error; what an archive line holds
//! reads back unchanged.
#![no_main]

use kafka_ops_dlq::purge::ArchivedRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(line) = serde_json::from_str::<ArchivedRecord>(text)
    {
        let _ = line.to_record();
    }
    let record = kafka_ops_fuzz::record(data);
    let line = ArchivedRecord::from_record(&record);
    let text = serde_json::to_string(&line).expect("an archived record serializes");
    let back: ArchivedRecord = serde_json::from_str(&text).expect("and parses back");
    assert_eq!(back.to_record().expect("and decodes"), record);
});
